"""Weighing the text and vision losses of a mixed run: the paper's fixed alpha, or the gradient-norm balance.

With ``loss = text + alpha x vision`` and Adam, a loss whose gradient on the shared weights is many times smaller than
the other's barely moves them. The ``grad-norm`` rule (:class:`~uvlm.train.config.BalanceConfig`) measures, every few
steps, the norm of each loss's gradient on the LLM's decoder blocks (the weights both tasks share) and weights the
vision loss so that the two running norms are equal::

    alpha_eff = alpha x clip(mean ||g_text|| / mean ||g_vision||, 1 / max_scale, max_scale)

:class:`LossBalance` holds the running means (bias-corrected exponential moving averages); its state goes into every
checkpoint, so a resumed run weighs its losses exactly as an uninterrupted one. :func:`split_backward` runs one
micro-batch's backward as two passes and returns the two gradient contributions on the blocks.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from uvlm.train.config import BalanceConfig


class LossBalance:
    """The vision-loss weight of each step of a run (``fixed``: alpha; ``grad-norm``: rescaled from measurements)."""

    def __init__(self, config: BalanceConfig, alpha: float, state: dict[str, Any] | None = None):
        self.config = config
        self.alpha = float(alpha)
        self.text = self.vision = 0.0  # raw EMAs (bias-corrected in ``scale``)
        self.measurements = 0
        if state:
            self.text, self.vision = float(state["text"]), float(state["vision"])
            self.measurements = int(state["measurements"])

    @property
    def adaptive(self) -> bool:
        return self.config.rule == "grad-norm"

    def due(self, step: int) -> bool:
        """Whether optimiser step ``step`` (1-based) measures the two gradients."""
        return self.adaptive and (step - 1) % self.config.every == 0

    def scale(self) -> float:
        """The factor applied to alpha (1 until the first measurement, and always 1 under ``fixed``)."""
        if not self.adaptive or self.measurements == 0 or self.vision <= 0:
            return 1.0
        s = self.text / self.vision  # the bias corrections of the two EMAs are equal and cancel
        m = self.config.max_scale
        return min(max(s, 1.0 / m), m) if math.isfinite(s) else m

    def weight(self) -> float:
        """The vision-loss weight this step uses."""
        return self.alpha * self.scale()

    def update(self, text_norm: float, vision_norm: float) -> None:
        """Add one measurement: the norms of the text loss's and the *unweighted* vision loss's gradients."""
        b = self.config.momentum
        self.text = b * self.text + (1 - b) * float(text_norm)
        self.vision = b * self.vision + (1 - b) * float(vision_norm)
        self.measurements += 1

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self.config.rule, "text": self.text, "vision": self.vision,
                "measurements": self.measurements, "weight": self.weight()}


def flat_grads(params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """The parameters' gradients as one float64 vector (zeros where a gradient is missing)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).double()
                      for p in params])


def split_backward(backward, text_part: torch.Tensor, vision_part: torch.Tensor, weight: float,
                   blocks: Sequence[torch.nn.Parameter]) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate ``text_part + weight x vision_part`` as two passes; return the two losses' gradient contributions
    on ``blocks`` (the vision one unweighted). ``backward`` is ``accelerator.backward`` (or ``Tensor.backward``). The
    accumulated gradients equal those of one combined pass up to float rounding."""
    g0 = flat_grads(blocks)
    if text_part.requires_grad:
        backward(text_part, retain_graph=True)
    g1 = flat_grads(blocks)
    if vision_part.requires_grad:
        backward(weight * vision_part)
    g2 = flat_grads(blocks)
    return g1 - g0, (g2 - g1) / weight


__all__ = ["LossBalance", "flat_grads", "split_backward"]
