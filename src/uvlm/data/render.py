"""Rule-based SmartWatch rendering, anti-aliased by supersampling, legible at small sizes.

The layout follows the paper's 224 px picture (docs/smartwatch.md): white background; a face of radius 0.4 of the
side in the face colour; three white hands (lengths 0.5 / 0.7 / 0.9 of the radius, widths 6 / 4 / 2 px at 224 px);
a weather icon of about 30 px at its corner; a battery outline with a green bar and ``NN%`` text to its right at
the other corner; corners about 10 px from the edges. Everything is drawn at ``supersample`` times the target size
and box-filtered down. Lengths scale with the side, but widths, icon and font size have floors in output pixels
so that a 64 px image still shows a readable ``NN%`` and separable hands.

The font is the one Pillow ships (``ImageFont.load_default``), never a system font, so the same library versions
give the same bytes everywhere.
"""

from __future__ import annotations

import math
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from uvlm.data.attributes import CORNERS, WatchAttributes

PAPER_SIDE = 224.0
BACKGROUND = (255, 255, 255)
HAND_COLOR = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
BATTERY_GREEN = (40, 170, 40)
SUN = (255, 190, 0)
CLOUD = (150, 160, 175)
CLOUD_EDGE = (95, 105, 120)
RAIN = (30, 90, 230)


def default_supersample(resolution: int) -> int:
    """4x below 96 px, 3x below 160 px, else 2x: enough anti-aliasing at every size for a modest cost."""
    return 4 if resolution < 96 else 3 if resolution < 160 else 2


class Renderer:
    """Renders :class:`WatchAttributes` to an RGB image of side ``resolution``.

    Icons and the 101 battery texts are pre-rendered once per renderer; ``render`` then costs a few drawing calls and
    one box-filter reduction.
    """

    def __init__(self, resolution: int, supersample: int | None = None):
        self.resolution = int(resolution)
        self.k = int(supersample or default_supersample(self.resolution))
        S = self.resolution
        k = self.k
        u = S / PAPER_SIDE  # output pixels per paper pixel
        self.side = S * k
        self.center = self.side / 2.0
        self.radius = 0.4 * self.side
        # hand (length fraction of radius, width in canvas px), with floors in output px for small images
        self.hands = (
            (0.5, k * max(6 * u, 2.4)),
            (0.7, k * max(4 * u, 1.7)),
            (0.9, k * max(2 * u, 1.0)),
        )
        self.margin = round(k * max(10 * u, 2.0))
        self.icon = round(k * max(30 * u, 12.0))
        font_px = max(13 * u, 8.5)
        self.font = ImageFont.load_default(size=max(1, round(k * font_px)))
        self.batt_w = round(k * max(22 * u, 9.0))
        self.batt_h = round(k * max(12 * u, 6.0))
        self.batt_line = max(1, round(k * max(1.5 * u, 0.75)))
        self.gap = round(k * max(3 * u, 1.0))
        self._icons = {w: self._draw_icon(w) for w in ("sunny", "cloudy", "raining")}
        self._battery_cache: dict[int, Image.Image] = {}

    # ----- pre-rendered parts -----------------------------------------------------------------------------------
    def _draw_icon(self, weather: str) -> Image.Image:
        n = self.icon
        img = Image.new("RGBA", (n, n), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        if weather == "sunny":
            c, r = n / 2, n * 0.24
            w = max(1, round(n * 0.07))
            for a in range(8):
                t = a * math.pi / 4
                d.line([(c + math.cos(t) * r * 1.35, c + math.sin(t) * r * 1.35),
                        (c + math.cos(t) * r * 1.95, c + math.sin(t) * r * 1.95)], fill=SUN, width=w)
            d.ellipse([c - r, c - r, c + r, c + r], fill=SUN)
        else:
            top = 0.12 if weather == "cloudy" else 0.02
            s = n * (0.86 if weather == "cloudy" else 0.7)
            x0, y0 = (n - s) / 2, n * top + (n * 0.75 - s * 0.62) / 2
            e = max(1, round(n * 0.05))
            blobs = [(0.05, 0.35, 0.45, 0.75), (0.25, 0.1, 0.7, 0.55), (0.55, 0.3, 0.95, 0.75), (0.2, 0.4, 0.8, 0.75)]
            for bx0, by0, bx1, by1 in blobs:
                d.ellipse([x0 + bx0 * s - e, y0 + by0 * s - e, x0 + bx1 * s + e, y0 + by1 * s + e], fill=CLOUD_EDGE)
            for bx0, by0, bx1, by1 in blobs:
                d.ellipse([x0 + bx0 * s, y0 + by0 * s, x0 + bx1 * s, y0 + by1 * s], fill=CLOUD)
            if weather == "raining":
                w = max(1, round(n * 0.08))
                yb = y0 + 0.8 * s
                for fx in (0.25, 0.5, 0.75):
                    xa = x0 + fx * s
                    d.line([(xa, yb), (xa - n * 0.08, min(n - 1, yb + n * 0.28))], fill=RAIN, width=w)
        return img

    def _battery(self, level: int) -> Image.Image:
        """The battery outline, its green bar and the ``NN%`` text, as one RGBA patch."""
        got = self._battery_cache.get(level)
        if got is not None:
            return got
        text = f"{level}%"
        l, t, r, b = self.font.getbbox("100%", stroke_width=0)
        tw_max = r - l
        th = b - t
        h = max(self.batt_h, th)
        w = self.batt_w + self.gap + tw_max
        img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        by0 = (h - self.batt_h) // 2
        lw = self.batt_line
        nub = max(1, self.batt_w // 10)
        bw = self.batt_w - nub
        d.rectangle([0, by0, bw - 1, by0 + self.batt_h - 1], outline=TEXT_COLOR, width=lw, fill=(255, 255, 255, 255))
        d.rectangle([bw, by0 + self.batt_h // 3, bw + nub - 1, by0 + self.batt_h - 1 - self.batt_h // 3], fill=TEXT_COLOR)
        inner = bw - 2 * lw - 2 * max(1, lw // 2)
        fill = round(inner * level / 100)
        if fill > 0:
            p = lw + max(1, lw // 2)
            d.rectangle([p, by0 + p, p + fill - 1, by0 + self.batt_h - 1 - p], fill=BATTERY_GREEN)
        tl, tt, tr, tb = self.font.getbbox(text)
        d.text((self.batt_w + self.gap - tl, (h - th) // 2 - t), text, font=self.font, fill=TEXT_COLOR)
        self._battery_cache[level] = img
        return img

    def _corner_xy(self, corner: str, w: int, h: int) -> tuple[int, int]:
        m = self.margin
        x = m if corner.endswith("left") else self.side - m - w
        y = m if corner.startswith("top") else self.side - m - h
        return x, y

    # ----- the picture ------------------------------------------------------------------------------------------
    def render(self, a: WatchAttributes) -> Image.Image:
        canvas = Image.new("RGB", (self.side, self.side), BACKGROUND)
        d = ImageDraw.Draw(canvas)
        c, r = self.center, self.radius
        d.ellipse([c - r, c - r, c + r, c + r], fill=a.face_color)
        angles = (((a.hour % 12) + a.minute / 60.0) * 30.0, a.minute * 6.0, a.second * 6.0)
        for (frac, width), deg in zip(self.hands, angles):
            t = math.radians(deg)
            x1, y1 = c + math.sin(t) * r * frac, c - math.cos(t) * r * frac
            d.line([(c, c), (x1, y1)], fill=HAND_COLOR, width=max(1, round(width)))
            rr = width / 2.0
            d.ellipse([x1 - rr, y1 - rr, x1 + rr, y1 + rr], fill=HAND_COLOR)
        hub = self.hands[0][1] * 0.75
        d.ellipse([c - hub, c - hub, c + hub, c + hub], fill=HAND_COLOR)
        icon = self._icons[a.weather]
        canvas.paste(icon, self._corner_xy(a.weather_position, icon.width, icon.height), icon)
        batt = self._battery(a.battery)
        canvas.paste(batt, self._corner_xy(a.battery_position, batt.width, batt.height), batt)
        return canvas.reduce(self.k) if self.k > 1 else canvas


@lru_cache(maxsize=8)
def renderer(resolution: int) -> Renderer:
    """A shared renderer per resolution (pre-rendered parts are reused across calls)."""
    return Renderer(resolution)


def render(attributes: WatchAttributes, resolution: int) -> Image.Image:
    """Render one image (see :class:`Renderer`)."""
    return renderer(resolution).render(attributes)


__all__ = ["Renderer", "render", "renderer", "CORNERS"]
