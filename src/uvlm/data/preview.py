"""Contact sheets: a grid of samples with their attributes written underneath."""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from uvlm.data.attributes import WatchAttributes
from uvlm.data.datasets import SampleLike

LABEL_FONT_PX = 11


def _labels(s: SampleLike) -> list[str]:
    """Three short lines of ground truth: SmartWatch's values, or a yes/no dataset's true attributes (CelebA's)."""
    a = s.attributes
    if isinstance(a, WatchAttributes):
        return [
            f"{a.time}  {a.battery}%",
            f"{a.weather} @ {a.weather_position}",
            f"batt @ {a.battery_position}",
        ]
    short = [k.replace("Wearing_", "").replace("_", " ").lower() for k, v in a.items() if v]
    lines = [", ".join(short[i:i + 2]) for i in range(0, len(short), 2)] or ["(none)"]
    if len(lines) > 3:
        lines = lines[:2] + [", ".join(short[4:])]
    return lines


def contact_sheet(samples: Sequence[SampleLike], columns: int | None = None, tile: int | None = None) -> Image.Image:
    """A grid of the samples' images (each scaled to ``tile`` px, default max(image side, 128)) with their attributes.

    Samples must carry images (``with_image=True``).
    """
    if not samples:
        raise ValueError("contact_sheet needs at least one sample")
    images = [s.image for s in samples]
    if any(im is None for im in images):
        raise ValueError("contact_sheet needs samples with images (with_image=True)")
    side = tile or max(images[0].width, 128)  # type: ignore[union-attr]
    cols = columns or min(len(samples), max(1, math.ceil(math.sqrt(len(samples)))))
    rows = math.ceil(len(samples) / cols)
    font = ImageFont.load_default(size=LABEL_FONT_PX)
    line_h = LABEL_FONT_PX + 3
    label_h = 3 * line_h + 6
    pad = 6
    sheet = Image.new("RGB", (cols * (side + pad) + pad, rows * (side + label_h + pad) + pad), (235, 235, 235))
    d = ImageDraw.Draw(sheet)
    for k, (s, im) in enumerate(zip(samples, images)):
        r, c = divmod(k, cols)
        x = pad + c * (side + pad)
        y = pad + r * (side + label_h + pad)
        sheet.paste(im.resize((side, side), Image.NEAREST if side % im.width == 0 else Image.BICUBIC), (x, y))  # type: ignore[union-attr]
        for j, line in enumerate(_labels(s)):
            d.text((x + 2, y + side + 3 + j * line_h), line, font=font, fill=(0, 0, 0))
    return sheet
