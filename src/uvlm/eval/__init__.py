"""Evaluation of trained models: the VQA score on the test split (:mod:`uvlm.eval.vqa`)."""

from __future__ import annotations

from importlib import import_module

_LAZY = {"evaluate_vqa": "uvlm.eval.vqa", "vqa_predictions": "uvlm.eval.vqa", "vqa_questions": "uvlm.eval.vqa"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uvlm.eval' has no attribute {name!r}")
