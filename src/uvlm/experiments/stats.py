"""Statistics over seeds: the mean, the sample standard deviation and a Student-t confidence interval.

A sweep runs each configuration with a few seeds (typically 3). With so few values the spread must be reported
honestly: the sample standard deviation (``ddof=1``) describes the seeds, and the two-sided Student-t interval
``mean ± t_{(1+c)/2, n-1} * std / sqrt(n)`` (``c = 0.95`` by default, ``t`` from :data:`scipy.stats.t`) is the
interval for the mean under the usual normal-errors assumption. With 3 seeds ``t = 4.30``, so the interval is wide;
that is the point. One value has no spread: its standard deviation and interval are NaN and are printed as ``n/a``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from scipy import stats as _scipy_stats

from uvlm.errors import UserError, require

#: Confidence level of the intervals in tables and figures.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean, spread and confidence interval of one metric over the seeds of one configuration."""

    n: int
    """Number of values used (NaNs and ``None`` dropped)."""
    mean: float
    """Arithmetic mean; NaN when ``n == 0``."""
    std: float
    """Sample standard deviation (``ddof=1``); NaN when ``n < 2``."""
    ci_low: float
    """Lower end of the two-sided Student-t interval for the mean; NaN when ``n < 2``."""
    ci_high: float
    """Upper end of the two-sided Student-t interval for the mean; NaN when ``n < 2``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"n", "mean", "std", "ci95_low", "ci95_high"}`` with NaN as ``None``."""
        return {"n": self.n, "mean": _none_if_nan(self.mean), "std": _none_if_nan(self.std),
                "ci95_low": _none_if_nan(self.ci_low), "ci95_high": _none_if_nan(self.ci_high)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Summary":
        """Inverse of :meth:`to_dict` (``None`` back to NaN)."""
        return cls(n=int(d["n"]), mean=_nan_if_none(d["mean"]), std=_nan_if_none(d["std"]),
                   ci_low=_nan_if_none(d["ci95_low"]), ci_high=_nan_if_none(d["ci95_high"]))


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else float(x)


def clean(values: Iterable[Any]) -> np.ndarray:
    """The values as a float64 array with NaNs and ``None`` removed; anything non-numeric raises
    :class:`~uvlm.errors.UserError`."""
    out = []
    for v in values:
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise UserError(f"cannot summarise the non-numeric value {v!r}: metrics must be numbers (or null)")
        f = float(v)
        if not math.isnan(f):
            out.append(f)
    return np.asarray(out, dtype=np.float64)


def summarize(values: Iterable[Any], confidence: float = CONFIDENCE,
              bounds: tuple[float, float] | None = None) -> Summary:
    """Summarise ``values`` (one per seed) after dropping NaNs and ``None``.

    Computes ``n``, the arithmetic mean, the sample standard deviation ``sqrt(sum((x - mean)^2) / (n - 1))`` and the
    two-sided Student-t interval ``mean ± t.ppf((1 + confidence) / 2, n - 1) * std / sqrt(n)``. With ``n == 1`` the
    standard deviation and the interval are NaN; with ``n == 0`` everything but ``n`` is NaN. Identical values give
    ``std == 0`` and a zero-width interval. ``bounds`` ``(low, high)``: the range the metric cannot leave (0-100 for a
    percentage); the interval is cut to it, since the mean cannot lie outside (a score of 99.5 ± 0.8 over 3 seeds has
    a t-interval reaching 101.5).
    """
    require(0.0 < confidence < 1.0, f"confidence must be in (0, 1), got {confidence}")
    x = clean(values)
    n = int(x.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(_scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, float(bounds[0])), min(high, float(bounds[1]))
    return Summary(n, mean, std, low, high)


def fmt(x: float, digits: int = 1, missing: str = "n/a") -> str:
    """``x`` with ``digits`` decimals, or ``missing`` for NaN / ``None``."""
    if x is None or math.isnan(x):
        return missing
    return f"{x:.{digits}f}"


def format_summary(s: Summary | None, digits: int = 1, with_n: bool = False) -> str:
    """``"mean ± std [ci_low, ci_high]"`` (``"mean ± std (n=3) [lo, hi]"`` with ``with_n``); ``n/a`` for a NaN
    spread (one seed), ``-`` when there is no value at all."""
    if s is None or s.n == 0:
        return "-"
    n = f" (n={s.n})" if with_n else ""
    interval = "[n/a]" if math.isnan(s.ci_low) else f"[{fmt(s.ci_low, digits)}, {fmt(s.ci_high, digits)}]"
    return f"{fmt(s.mean, digits)} ± {fmt(s.std, digits)}{n} {interval}"


def digits_for(means: Iterable[float]) -> int:
    """Decimals for a column: 3 when every finite value is a fraction (|x| <= 1.5, e.g. a probe accuracy in [0, 1]),
    else 1 (percent scores, FID)."""
    finite = [abs(m) for m in means if m is not None and not math.isnan(m)]
    return 3 if finite and max(finite) <= 1.5 else 1


__all__ = ["CONFIDENCE", "Summary", "clean", "digits_for", "fmt", "format_summary", "summarize"]
