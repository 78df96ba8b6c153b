"""Evaluation of trained models.

- :mod:`uvlm.eval.vqa`: the VQA score on the test split.
- :mod:`uvlm.eval.fid`: FID through ``torchmetrics`` with the in-domain reader features (default) or a local
  Inception-v3; :mod:`uvlm.eval.faithfulness`: did the drawing show what the instruction asked (reader + VQA rules);
  :mod:`uvlm.eval.generation_metrics`: both for a trained run.
- :mod:`uvlm.eval.generation`: the same question judged in feature space (a probe on generated tokens).
- :mod:`uvlm.eval.probe`: the paper's Figure 7 probe and t-SNE of the understanding adapter's output.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {"evaluate_vqa": "uvlm.eval.vqa", "vqa_predictions": "uvlm.eval.vqa", "vqa_questions": "uvlm.eval.vqa",
         "compute_fid": "uvlm.eval.fid", "frechet_distance": "uvlm.eval.fid", "faithfulness": "uvlm.eval.faithfulness",
         "evaluate_generation": "uvlm.eval.generation_metrics", "probe_run": "uvlm.eval.probe",
         "plot_tsne": "uvlm.eval.probe"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uvlm.eval' has no attribute {name!r}")
