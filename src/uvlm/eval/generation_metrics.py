"""Generation metrics of a trained run: FID and pixel faithfulness of the images it draws for test instructions.

:func:`evaluate_generation` takes the first ``n`` generation samples of the run's test split, generates the vision
tokens of each instruction (greedy by default), turns them into pixels with the run's generation source (the VQ
decoder for code ids; the pixel decoder for continuous SigLIP tokens) and compares them with the ground-truth images
of the same samples, rendered at the decoded images' side:

- ``fid``: :func:`uvlm.eval.fid.compute_fid` between the ground-truth and the generated set, through the reader's
  features (the default) or a local TorchScript Inception-v3;
- ``faithfulness``: :func:`uvlm.eval.faithfulness.faithfulness`, the reader's reading of each generated image scored
  against the attributes its instruction states;
- ``faithfulness_real``: the same on the ground-truth images, the reader's ceiling at this resolution;
- ``fid_floor`` (optional): the FID between the ground truth and as many other rendered watches, the value a perfect
  generator would get from sampling noise alone at this ``n`` (FID is biased upwards at small ``n``; with the default
  reader, two sets of 500 real images are about 600 apart).

Understanding-only runs and targets that draw nothing (``llm-embeds``: no pixel decoder) raise :class:`UserError`.

    >>> from uvlm.train.checkpoint import load_run
    >>> result = evaluate_generation(load_run("runs/VQ-VQ"), n=500)
    >>> result["fid"]["fid"], result["faithfulness"]["scores"]["total"]
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uvlm.data.datasets import open_dataset
from uvlm.errors import UserError, require
from uvlm.eval.faithfulness import faithfulness
from uvlm.eval.fid import compute_fid, inception_extractor, reader_extractor
from uvlm.model.config import SamplingConfig
from uvlm.vision.base import to_float_batch
from uvlm.vision.reader import SmartWatchReader

log = logging.getLogger(__name__)


def _reader(reader: str | os.PathLike | SmartWatchReader | None) -> SmartWatchReader:
    if isinstance(reader, SmartWatchReader):
        return reader.eval()
    if callable(getattr(reader, "read", None)) and isinstance(getattr(reader, "resolution", None), int):
        return reader  # any object with the reader interface (read, resolution)
    from uvlm.vision.reader import load_reader, train_reader

    return load_reader(train_reader() if reader is None else reader)


def _extractor(fid_extractor: str | os.PathLike | nn.Module, reader: SmartWatchReader) -> nn.Module:
    if isinstance(fid_extractor, nn.Module):
        return fid_extractor
    if isinstance(fid_extractor, str) and fid_extractor == "reader":
        require(isinstance(reader, SmartWatchReader),
                f"fid_extractor='reader' needs a SmartWatchReader, got a {type(reader).__name__}: pass a reader "
                f"artifact folder or choose another fid_extractor")
        return reader_extractor(reader)
    require(isinstance(fid_extractor, (str, os.PathLike)),
            f"fid_extractor must be 'reader', the path of a TorchScript Inception-v3 file or an nn.Module, got "
            f"{type(fid_extractor).__name__}")
    return inception_extractor(Path(fid_extractor))


def check_draws(loaded_run) -> None:
    """:class:`UserError` unless the run generates images that can be decoded to pixels (not an understanding-only
    run, not a target that draws nothing such as ``llm-embeds``)."""
    model, sources, config = loaded_run.model, loaded_run.sources, loaded_run.config
    require(getattr(model, "target", None) is not None and sources.generation is not None,
            f"run {config.variant!r} is an understanding-only model: it generates no images; evaluate generation "
            f"on a run with a generation target")
    target = config.model.target_class()
    require(target.draws(), f"run {config.variant!r} cannot draw: {target.no_drawing_reason()}")


@torch.no_grad()
def generate_pixels(loaded_run, instructions: list[str], batch_size: int = 50,
                    sampling: SamplingConfig | None = None) -> torch.Tensor:
    """Generate and decode one image per instruction: float32 ``(N, 3, R, R)`` in [0, 1].

    Raises :class:`UserError` for a run without a generation target or whose target has no pixel decoder.
    """
    from uvlm.model.generate import generate_images

    check_draws(loaded_run)
    model, sources, config = loaded_run.model, loaded_run.sources, loaded_run.config
    require(isinstance(batch_size, int) and batch_size > 0,
            f"batch_size must be a positive integer, got {batch_size!r}")
    out = []
    for b in range(0, len(instructions), batch_size):
        tokens = generate_images(model, instructions[b:b + batch_size], sampling=sampling)
        try:
            pixels = config.model.target_class().to_pixels(sources.generation, tokens)
        except NotImplementedError as e:
            raise UserError(f"the {config.model.target} generation target of run {config.variant!r} cannot be turned "
                            f"into pixels ({e}): evaluate a VQ-target run or a source with a pixel decoder") from None
        require(isinstance(pixels, torch.Tensor) and pixels.ndim == 4 and pixels.shape[1] == 3
                and pixels.shape[-1] == pixels.shape[-2],
                f"the generation source decoded to {tuple(getattr(pixels, 'shape', ()))}, not square "
                f"(B, 3, R, R) images")
        out.append(pixels.detach().float().clamp(0.0, 1.0).cpu())
        log.info("generation eval: drew %d/%d images", min(b + batch_size, len(instructions)), len(instructions))
    return torch.cat(out)


def evaluate_generation(loaded_run, n: int = 500, batch_size: int = 50,
                        fid_extractor: str | os.PathLike | nn.Module = "reader", seed: int = 0, *,
                        reader: str | os.PathLike | SmartWatchReader | None = None,
                        sampling: SamplingConfig | None = None, floor: bool = True) -> dict[str, Any]:
    """FID and reader faithfulness of a run's images for its first ``n`` test generation instructions.

    Args:
        loaded_run: a :class:`~uvlm.train.checkpoint.LoadedRun` (``load_run(run_dir)``).
        n: how many test generation samples (the first ones; the paper's test split has 500). At least 2 (FID).
        batch_size: instructions per generation call.
        fid_extractor: ``"reader"`` (the reader's penultimate features), the path of a TorchScript Inception-v3 file
            (:func:`uvlm.eval.fid.inception_extractor`), or an ``nn.Module`` with ``num_features``.
        seed: seed of the sampling generator (``SamplingConfig(seed=seed)``, greedy); ignored when ``sampling`` is
            given. Greedy generation and decoding are deterministic.
        reader: the SmartWatch reader that judges faithfulness (and gives the ``reader`` FID features): an artifact
            folder, a loaded reader, or ``None`` for the default reader (``ReaderConfig()`` from the artifact cache,
            trained first if missing, about 9 minutes). Images of another side are resized to its resolution.
        sampling: how to pick discrete vision tokens (default greedy).
        floor: also compute ``fid_floor``, the FID of the ground truth against ``n`` other rendered images (split
            ``{test name}-fid-floor``); about doubles the FID's feature extraction.

    Returns:
        ``{"fid": compute_fid(...) dict, "faithfulness": faithfulness(...) dict, "faithfulness_real": the reader on
        the ground-truth images, "fid_floor": compute_fid(...) dict or None, "n": n, "resolution": R,
        "checkpoint": path, "seconds": wall time}``.
    """
    t0 = time.perf_counter()
    check_draws(loaded_run)  # before the reader, which may have to be trained first
    config = loaded_run.config
    test = config.data.test
    require(isinstance(n, int) and not isinstance(n, bool) and n >= 2,
            f"n must be an integer >= 2 (FID needs two images per set), got {n!r}")
    require(n <= test.n_generation, f"n={n} but the test split {test.name!r} has {test.n_generation} generation "
                                    f"samples: pass n <= {test.n_generation}")
    sampling = sampling or SamplingConfig(seed=seed)
    judge = _reader(reader)
    extractor = _extractor(fid_extractor, judge)
    samples = [s for s in open_dataset(test).stream("generation", 0, n, with_image=False)]
    fake = generate_pixels(loaded_run, [s.instruction for s in samples], batch_size, sampling)
    resolution = int(fake.shape[-1])
    truth = open_dataset(test.with_(resolution=resolution))
    real = to_float_batch([truth.image(s.image_index) for s in samples], resolution)
    fid = compute_fid(real, fake, extractor, batch_size=batch_size)
    fid_floor = None
    if floor:
        other = open_dataset(test.with_(name=f"{test.name}-fid-floor", resolution=resolution, n_vqa=0, n_caption=0,
                                        n_generation=0))
        fid_floor = compute_fid(real, to_float_batch([other.image(i) for i in range(n)], resolution), extractor,
                                batch_size=batch_size)
    result = {
        "fid": fid,
        "faithfulness": faithfulness(judge, fake, samples, batch_size=batch_size),
        "faithfulness_real": faithfulness(judge, real, samples, batch_size=batch_size),
        "fid_floor": fid_floor,
        "n": n,
        "resolution": resolution,
        "checkpoint": str(getattr(loaded_run, "checkpoint", "")),
        "seconds": time.perf_counter() - t0,
    }
    log.info("generation eval: %s FID %.3f (floor %s), faithfulness total %s%% (reader on ground truth %s%%), %.0f s",
             fid["extractor"], fid["fid"], "-" if fid_floor is None else f"{fid_floor['fid']:.3f}",
             result["faithfulness"]["scores"]["total"], result["faithfulness_real"]["scores"]["total"],
             result["seconds"])
    return result


__all__ = ["check_draws", "evaluate_generation", "generate_pixels"]
