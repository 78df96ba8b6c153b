"""A small CelebA folder in the exact file format of the real one, for tests.

``write_celeba(root)`` writes ``img_align_celeba/000001.jpg ...`` (178x218 JPEGs, random flat colours with a darker
band at the top and the bottom 20 px, the part the centre crop removes), ``list_attr_celeba.txt`` (count, the 40 real
attribute names, rows of -1/1 padded as in the original) and ``list_eval_partition.txt``. Attributes are random and
seeded; the combination "female with a beard" (Male = -1 and No_Beard = -1) never occurs, so the rare-combination
rule has something to exclude. Nothing else (bounding boxes, landmarks, identities) is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: The 40 attribute names of list_attr_celeba.txt, in the original order.
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)

BAND = 20  # (218 - 178) / 2: the rows the centre crop removes at the top and at the bottom


@dataclass(frozen=True)
class Fixture:
    root: Path
    names: tuple[str, ...]
    labels: dict[str, dict[str, bool]]
    """Per file name, all 40 attributes."""
    partition: dict[str, int]
    colors: dict[str, tuple[int, int, int]]
    """The centre colour of each image."""


def write_celeba(root: str | Path, n: int = 320, seed: int = 0, shares: tuple[float, float, float] = (0.55, 0.1, 0.35),
                 *, band_color: tuple[int, int, int] = (0, 0, 0)) -> Fixture:
    """Write a CelebA folder of ``n`` images under ``root``; partitions 0/1/2 in the given shares (shuffled)."""
    root = Path(root)
    img_dir = root / "img_align_celeba"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    values = np.where(rng.random((n, len(CELEBA_ATTRIBUTES))) < 0.5, 1, -1)
    male, no_beard = CELEBA_ATTRIBUTES.index("Male"), CELEBA_ATTRIBUTES.index("No_Beard")
    values[(values[:, male] == -1) & (values[:, no_beard] == -1), no_beard] = 1
    names = tuple(f"{k + 1:06d}.jpg" for k in range(n))
    parts = rng.permutation(np.repeat([0, 1, 2], np.ceil(np.array(shares) * n).astype(int))[:n])
    colors = {}
    for name in names:
        c = tuple(int(v) for v in rng.integers(40, 216, size=3))
        arr = np.empty((218, 178, 3), dtype=np.uint8)
        arr[:] = c
        arr[:BAND] = band_color
        arr[-BAND:] = band_color
        Image.fromarray(arr).save(img_dir / name, format="JPEG", quality=95)
        colors[name] = c
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{name} {p}\n" for name, p in zip(names, parts)))
    labels = {name: {a: bool(v == 1) for a, v in zip(CELEBA_ATTRIBUTES, row)} for name, row in zip(names, values)}
    return Fixture(root, names, labels, {name: int(p) for name, p in zip(names, parts)}, colors)
