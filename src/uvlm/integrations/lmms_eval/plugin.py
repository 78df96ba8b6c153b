"""The ``lmms_eval.models`` entry point of the uvlm package: tells lmms-eval where the ``uvlm`` model class lives.

lmms-eval (0.7 and later) reads this entry point when it builds its model registry, so ``lmms-eval --model uvlm``
works once uvlm is installed; the class itself (:mod:`uvlm.integrations.lmms_eval.model`) is imported only when the
model is asked for.
"""

from __future__ import annotations

MODEL_ID = "uvlm"
CLASS_PATH = "uvlm.integrations.lmms_eval.model.UvlmLMM"


def manifests():
    """The ``ModelManifest`` list lmms-eval's registry loads from the entry point."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)]
