"""SmartWatch ground-truth attributes and how they are drawn.

Six attributes per image, drawn independently (see docs/smartwatch.md):

- time: hour 0..12 (13 values; 0 and 12 look the same on the dial), minute 0..59, second 0..59, written ``HH:MM:SS``.
- weather: ``sunny``, ``cloudy`` or ``raining``.
- weather position and battery position: two *different* corners, drawn without replacement.
- battery: integer 0..100, written ``51%``.
- face colour: uniform random RGB; it never appears in any text.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np

WEATHERS: tuple[str, ...] = ("sunny", "cloudy", "raining")
CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
N_HOURS = 13  # 0..12 inclusive

#: The attributes a VQA question or a caption fragment can be about, in the paper's order.
TEXT_ATTRIBUTES: tuple[str, ...] = ("time", "weather", "battery", "weather_position", "battery_position")

#: Integer codes for the random streams; part of the determinism contract, never renumber.
STREAMS = {"attributes": 1, "vqa": 2, "caption": 3, "generation": 4}


def split_code(name: str) -> int:
    """A stable integer for a split name (CRC-32: the same on every machine and Python)."""
    return zlib.crc32(name.encode("utf-8"))


def rng_for(seed: int, split: str, stream: str, index: int) -> np.random.Generator:
    """The random generator of one (seed, split, stream, index): sample i depends on nothing else."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, split_code(split), STREAMS[stream], index])))


@dataclass(frozen=True)
class WatchAttributes:
    """The ground truth of one SmartWatch image."""

    hour: int
    minute: int
    second: int
    weather: str
    weather_position: str
    battery: int
    battery_position: str
    face_color: tuple[int, int, int]

    @property
    def time(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"

    @property
    def battery_text(self) -> str:
        return f"{self.battery}%"

    def value_text(self, attribute: str) -> str:
        """The answer text for one of :data:`TEXT_ATTRIBUTES` (the bare value, as the paper's answers)."""
        if attribute == "time":
            return self.time
        if attribute == "battery":
            return self.battery_text
        if attribute in ("weather", "weather_position", "battery_position"):
            return getattr(self, attribute)
        raise KeyError(f"unknown attribute {attribute!r}; expected one of {', '.join(TEXT_ATTRIBUTES)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["face_color"] = list(self.face_color)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WatchAttributes":
        fields = dict(d)
        fields["face_color"] = tuple(int(c) for c in fields["face_color"])
        return cls(**{k: fields[k] for k in cls.__dataclass_fields__})


def sample_attributes(rng: np.random.Generator) -> WatchAttributes:
    """Draw one image's attributes (independent uniform draws; two distinct corners)."""
    hour, minute, second = (int(v) for v in rng.integers([0, 0, 0], [N_HOURS, 60, 60]))
    weather = WEATHERS[int(rng.integers(len(WEATHERS)))]
    c1, c2 = (int(c) for c in rng.choice(len(CORNERS), size=2, replace=False))
    battery = int(rng.integers(0, 101))
    face = tuple(int(c) for c in rng.integers(0, 256, size=3))
    return WatchAttributes(hour, minute, second, weather, CORNERS[c1], battery, CORNERS[c2], face)  # type: ignore[arg-type]
