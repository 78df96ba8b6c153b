"""Typed configuration of a SmartWatch split."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from uvlm.data.attributes import TEXT_ATTRIBUTES
from uvlm.errors import UserError, check_keys, check_types, require

TASKS: tuple[str, ...] = ("vqa", "caption", "generation")

#: Below this side length the battery text and the clock hands are no longer legible (see benchmarks/legibility.py).
MIN_RESOLUTION = 48

#: Above this side length one image no longer fits a training batch in memory (the paper uses 224 and 256).
MAX_RESOLUTION = 1024

#: Most samples of one task in a split (the paper's splits have 60K; a larger count is almost surely a typo).
MAX_COUNT = 10**9

#: The attribute mention probability in captions and generation instructions (time is always stated).
CAPTION_MENTION_PROB = 0.5


@dataclass(frozen=True)
class Bias:
    """Under-represent one attribute in the *understanding* data (knowledge-transfer experiment, paper sec. 4.2).

    Generation data is never changed by a bias.
    """

    attribute: str
    """Which attribute: one of ``time``, ``weather``, ``battery``, ``weather_position``, ``battery_position``."""
    vqa_share: float = 0.05
    """Probability that a VQA question asks about this attribute (unbiased: 0.2). The other four attributes share the
    rest equally. The paper's "0.05 probability of appearance in VQA data" is read literally by default (5% of
    questions); the other reading, 5% of the normal share, is ``vqa_share=0.01``."""
    caption_share: float = 0.0
    """Probability that a caption states this attribute (unbiased: 0.5, or 1.0 for time). Paper: 0."""

    def __post_init__(self) -> None:
        require(self.attribute in TEXT_ATTRIBUTES,
                f"unknown bias attribute {self.attribute!r}: use one of {', '.join(TEXT_ATTRIBUTES)}")
        for name in ("vqa_share", "caption_share"):
            v = getattr(self, name)
            require(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0,
                    f"bias {name} must be a number in [0, 1], got {v!r}")

    @classmethod
    def parse(cls, text: str) -> "Bias":
        """Parse ``attribute[:vqa_share[:caption_share]]``, e.g. ``weather``, ``battery:0.01``, ``time:0.1:0.5``."""
        parts = text.strip().split(":")
        require(1 <= len(parts) <= 3 and parts[0] != "",
                f"bad bias {text!r}: write attribute[:vqa_share[:caption_share]], e.g. weather or weather:0.01")
        attr = parts[0].replace("-", "_")
        try:
            nums = [float(p) for p in parts[1:]]
        except ValueError:
            raise UserError(f"bad bias {text!r}: the shares must be numbers in [0, 1], e.g. weather:0.05:0") from None
        return cls(attr, *nums)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TaskCounts:
    """What a split derives from its per-task counts (``n_vqa``, ``n_caption``, ``n_generation``) and
    ``share_images``: any dataset's split config mixes this in."""

    n_vqa: int
    n_caption: int
    n_generation: int
    share_images: bool

    def count(self, task: str) -> int:
        require(task in TASKS, f"unknown task {task!r}: use one of {', '.join(TASKS)}")
        return {"vqa": self.n_vqa, "caption": self.n_caption, "generation": self.n_generation}[task]

    def image_index(self, task: str, i: int) -> int:
        """The image that sample ``i`` of ``task`` shows."""
        if self.share_images:
            return i
        offset = 0
        for t in TASKS:
            if t == task:
                return offset + i
            offset += self.count(t)
        raise KeyError(task)

    @property
    def n_images(self) -> int:
        if self.share_images:
            return max(self.n_vqa, self.n_caption, self.n_generation)
        return self.n_vqa + self.n_caption + self.n_generation


@dataclass(frozen=True)
class SplitConfig(TaskCounts):
    """One SmartWatch split. Sample i of a task depends only on (seed, name, i) and these fields."""

    name: str = "train"
    """Split name; part of every sample's random stream, so ``train`` and ``test`` are independent for one seed."""
    seed: int = 0
    """Base seed."""
    resolution: int = 64
    """Image side in pixels (paper: 224 for SigLIP, 256 for VQ-16; 64 is the CPU default)."""
    n_vqa: int = 60_000
    """Number of VQA conversations."""
    n_caption: int = 60_000
    """Number of caption samples."""
    n_generation: int = 60_000
    """Number of text-to-image samples."""
    bias: Bias | None = None
    """Optional under-representation of one attribute in VQA and captions."""
    max_extra_turns: int = 3
    """A VQA conversation has one question, then up to this many more."""
    extra_turn_prob: float = 0.4
    """Probability of each extra VQA question."""
    share_images: bool = True
    """True: VQA, caption and generation sample i all show image i (the authors' data). False: each task has its own
    images (VQA first, then captions, then generation), as in the test split."""

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and self.name != "" and "/" not in self.name,
                f"bad split name {self.name!r}: use a non-empty name without '/'")
        require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**32,
                f"seed must be an integer in [0, 2^32), got {self.seed!r}")
        for n in ("n_vqa", "n_caption", "n_generation", "max_extra_turns"):
            v = getattr(self, n)
            top = MAX_COUNT if n.startswith("n_") else 100
            require(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top,
                    f"{n} must be a non-negative integer (at most {top:,}), got {v!r}")
        require(isinstance(self.resolution, int) and not isinstance(self.resolution, bool),
                f"resolution must be an integer number of pixels, got {self.resolution!r}")
        require(self.resolution >= MIN_RESOLUTION,
                f"resolution {self.resolution!r} is below the legible minimum of {MIN_RESOLUTION} px: use "
                f"--resolution {MIN_RESOLUTION} or more (64 is the CPU default)")
        require(self.resolution <= MAX_RESOLUTION,
                f"resolution {self.resolution!r} is above the maximum of {MAX_RESOLUTION} px: use at most "
                f"{MAX_RESOLUTION} (the paper uses 224 and 256, the CPU default 64)")
        require(isinstance(self.extra_turn_prob, (int, float)) and not isinstance(self.extra_turn_prob, bool)
                and 0.0 <= self.extra_turn_prob <= 1.0, f"extra_turn_prob must be in [0, 1], got {self.extra_turn_prob!r}")
        require(isinstance(self.share_images, bool), f"share_images must be true or false, got {self.share_images!r}")

    # ----- presets -------------------------------------------------------------------------------------------------
    @classmethod
    def train(cls, **kw: Any) -> "SplitConfig":
        """The paper's default training split: 60K VQA + 60K caption + 60K generation sharing images."""
        return cls(**{"name": "train", **kw})

    @classmethod
    def test(cls, **kw: Any) -> "SplitConfig":
        """The paper's test split: 1,000 single-question VQA samples and 500 generation samples on their own images."""
        base = dict(name="test", n_vqa=1000, n_caption=0, n_generation=500, max_extra_turns=0, share_images=False,
                    bias=None)
        return cls(**{**base, **kw})

    def question_probs(self) -> dict[str, float]:
        """Probability that a VQA question asks about each attribute."""
        if self.bias is None:
            return {a: 1.0 / len(TEXT_ATTRIBUTES) for a in TEXT_ATTRIBUTES}
        rest = (1.0 - self.bias.vqa_share) / (len(TEXT_ATTRIBUTES) - 1)
        return {a: (self.bias.vqa_share if a == self.bias.attribute else rest) for a in TEXT_ATTRIBUTES}

    def caption_probs(self) -> dict[str, float]:
        """Probability that a caption states each attribute (time always, others 0.5, unless biased)."""
        p = {a: (1.0 if a == "time" else CAPTION_MENTION_PROB) for a in TEXT_ATTRIBUTES}
        if self.bias is not None:
            p[self.bias.attribute] = self.bias.caption_share
        return p

    def instruction_probs(self) -> dict[str, float]:
        """Probability that a generation instruction states each attribute (never biased)."""
        return {a: (1.0 if a == "time" else CAPTION_MENTION_PROB) for a in TEXT_ATTRIBUTES}

    def with_(self, **kw: Any) -> "SplitConfig":
        return replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bias"] = None if self.bias is None else self.bias.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SplitConfig":
        check_types(cls, d, "split config", prefix="")
        d = dict(d)
        if d.get("bias") is not None:
            b = d["bias"]
            if isinstance(b, dict):
                check_types(Bias, b, "bias")
                require("attribute" in b, "bias needs an attribute, e.g. {\"attribute\": \"weather\"}")
                d["bias"] = Bias(**b)
            else:
                require(isinstance(b, str), f"bias must be an object or a string such as 'weather:0.05', got {b!r}")
                d["bias"] = Bias.parse(b)
        return cls(**d)


def parse_count(text: str) -> int:
    """Parse a sample count such as ``60000``, ``60K``, ``1.5M``, ``200M``."""
    t = str(text).strip().upper().replace("_", "").replace(",", "")
    mult = 1
    if t and t[-1] in "KMB":
        mult = {"K": 10**3, "M": 10**6, "B": 10**9}[t[-1]]
        t = t[:-1]
    try:
        v = float(t) * mult
    except ValueError:
        raise UserError(f"bad count {text!r}: write an integer such as 60000, 60K or 1.5M") from None
    require(v >= 0 and math.isfinite(v) and v == int(v), f"bad count {text!r}: sizes must be non-negative integers")
    require(v <= MAX_COUNT, f"count {text!r} is above the maximum of {MAX_COUNT:,}: use a smaller size")
    return int(v)
