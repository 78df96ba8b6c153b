"""The unified VLM on cached frozen-encoder outputs (no pixels, no training loop).

- :mod:`uvlm.model.config`: ``UnifiedConfig``, ``LLMConfig``, ``TemplateConfig``, ``SamplingConfig``.
- :mod:`uvlm.model.unified`: ``UnifiedVLM`` (``forward(batch) -> UnifiedOutput``), ``build_llm``.
- :mod:`uvlm.model.targets`: the generation-target registry (``siglip``, ``vq``, ``llm-embeds``, and the built-ins of
  :data:`~uvlm.model.targets.BUILTIN_MODULES`); each target class owns everything its name stands for.
- :mod:`uvlm.model.adapters`: ``build_adapter``, ``AffineMap``.
- :mod:`uvlm.model.sequence`: ``SequenceBuilder`` (samples -> token sequences -> ``Batch``), ``add_vision_tokens``.
- :mod:`uvlm.model.generate`: ``answer`` (text) and ``generate_images`` (vision tokens, KV cache).
- :mod:`uvlm.model.pretrained`: ``import_gguf`` (a GGUF LLM, e.g. SmolLM2-135M from a wheel, to a transformers folder).

The heavy names (anything that imports ``transformers``) load on first use.
"""

from __future__ import annotations

from importlib import import_module

from uvlm.model.config import LLMConfig, SamplingConfig, TemplateConfig, UnifiedConfig

_LAZY = {
    "UnifiedVLM": "uvlm.model.unified", "UnifiedOutput": "uvlm.model.unified", "build_llm": "uvlm.model.unified",
    "TARGETS": "uvlm.model.targets", "Target": "uvlm.model.targets", "register_target": "uvlm.model.targets",
    "target_class": "uvlm.model.targets",
    "SequenceBuilder": "uvlm.model.sequence", "Batch": "uvlm.model.sequence", "Example": "uvlm.model.sequence",
    "add_vision_tokens": "uvlm.model.sequence",
    "answer": "uvlm.model.generate", "generate_images": "uvlm.model.generate",
    "AffineMap": "uvlm.model.adapters", "import_gguf": "uvlm.model.pretrained",
}

__all__ = ["LLMConfig", "SamplingConfig", "TemplateConfig", "UnifiedConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uvlm.model' has no attribute {name!r}")
