"""CelebA as an attribute dataset (the paper's second dataset, section 3.1), read from a local copy.

**Files.** A CelebA folder in the standard layout (nothing is downloaded):

    ROOT/img_align_celeba/000001.jpg ...   the aligned faces, 178x218 JPEGs
    ROOT/list_attr_celeba.txt              line 1: image count; line 2: the 40 attribute names; then
                                           ``name v1 ... v40`` per image with values -1 / 1
    ROOT/list_eval_partition.txt           ``name p`` per image: 0 train, 1 valid, 2 test

Only these are read; the bounding-box, landmark and identity files are never needed.

**Attributes.** The paper's seven: Black_Hair, Eyeglasses, No_Beard, Male, Wearing_Hat, Wearing_Necklace,
Wearing_Necktie. Every one is a yes/no fact; VQA answers ``yes``/``no``, except Male, answered ``male``/``female``.

**Pools.** Training splits take their images from partitions 0 and 1, test splits from partition 2: two disjoint pools.

**One sample** (image ``j`` of a split, shared by VQA, caption and generation sample ``j`` in training splits):

1. the ground truth is drawn first, from the random stream ``(seed, split, "attributes", j)``: every attribute is
   true with probability ``positive_prob`` (0.5), independently, *conditioned on the combination being eligible*
   (below);
2. the texts are written from templates, from the stream ``(seed, split, task, i)``: VQA 1 to 4 questions, each about
   one attribute; captions stating 1 to 7 attributes; generation instructions built like the captions;
3. an image of the pool whose labels equal the drawn combination is picked uniformly at random (same stream as 1).

**Rare combinations.** Some combinations have few or no images (a woman with a beard and a necktie). A combination
is *eligible* when each of the two pools holds at least ``min_images`` images with it; the ground truth is drawn only
among eligible combinations. This is exactly rejection sampling (draw, redraw while ineligible), computed in closed
form so that one draw costs the same whatever is excluded. Every sample's image therefore matches all drawn
attributes, and train and test ground truths follow one distribution. The price: the effective distribution differs
from the independent one (excluding bearded women makes No_Beard and Male correlated); :func:`attribute_distribution`
reports it for a generated split.

**Identity.** :meth:`CelebAFiles.identity` is a SHA-256 over the two text files' bytes and the names and sizes of the
images they list, for caches and run ids.

**Registered** as the dataset ``celeba`` (:mod:`uvlm.data.datasets`): a run config with ``data.dataset = "celeba"``
and CelebA splits trains and evaluates through the same code as SmartWatch.

    >>> from uvlm.data.celeba import CelebA, CelebAConfig
    >>> ca = CelebA(CelebAConfig.train("/data/celeba", n_vqa=10, n_caption=10, n_generation=10))
    >>> s = ca.sample("vqa", 0)
    >>> s.source_image, s.attributes, s.turns[0].question, s.image.size
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from uvlm.data.config import TASKS, TaskCounts
from uvlm.data.attributes import split_code
from uvlm.data.texts import Turn
from uvlm.data.texts import conversations as texts_conversations
from uvlm.errors import UserError, check_types, require
from uvlm.io import found

#: The paper's seven attributes, in its order.
ATTRIBUTES: tuple[str, ...] = ("Black_Hair", "Eyeglasses", "No_Beard", "Male", "Wearing_Hat", "Wearing_Necklace",
                               "Wearing_Necktie")

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"

#: Which partitions of ``list_eval_partition.txt`` feed each pool.
POOLS: dict[str, tuple[int, ...]] = {"train": (0, 1), "test": (2,)}

#: The aligned faces' size (width, height).
ALIGNED_SIZE = (178, 218)

MIN_RESOLUTION = 16
MAX_RESOLUTION = 1024
MAX_COUNT = 10**9

#: Probability that a caption or an instruction states each attribute (unbiased).
CAPTION_MENTION_PROB = 0.5

#: Integer codes of the random streams; part of the determinism contract, never renumber. ``DATASET_CODE`` keeps
#: CelebA's streams apart from SmartWatch's for one seed and split name.
DATASET_CODE = 2
STREAMS = {"attributes": 1, "vqa": 2, "caption": 3, "generation": 4}

_FIX_LAYOUT = (f"a CelebA folder holds {IMAGE_DIR}/, {ATTR_FILE} and {PARTITION_FILE} (the standard layout of the "
               f"aligned images)")


def _rng(seed: int, split: str, stream: str, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [seed, split_code(split), DATASET_CODE, STREAMS[stream], index])))


# ----- texts ---------------------------------------------------------------------------------------------------------
#: VQA questions, ten per attribute. Male is asked as male-or-female, the others as yes/no.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "Black_Hair": (
        "Does the person have black hair?", "Is the person's hair black?", "Is this person black-haired?",
        "Does this person have black hair?", "Is the hair of the person in the image black?",
        "Is the colour of the person's hair black?", "Does the face in the picture have black hair?",
        "Is the hair colour black?", "Would you say this person has black hair?", "Is the person's hair colour black?",
    ),
    "Eyeglasses": (
        "Is the person wearing eyeglasses?", "Does the person wear glasses?", "Are there glasses on the person's face?",
        "Does this person have eyeglasses on?", "Is this person wearing glasses?",
        "Can you see eyeglasses on the face?", "Does the person in the image wear spectacles?",
        "Are eyeglasses visible on this person?", "Is the person in the picture wearing eyeglasses?",
        "Does the face have glasses?",
    ),
    "No_Beard": (
        "Is the person beardless?", "Does the person have no beard?", "Is this face free of a beard?",
        "Is the person's face without a beard?", "Is the person clean of any beard?",
        "Is there no beard on this face?", "Does this person lack a beard?", "Is the chin of the person beardless?",
        "Is the person in the image without a beard?", "Would you say this face has no beard?",
    ),
    "Male": (
        "Is the person male or female?", "What is the gender of the person?", "Is this a male or a female?",
        "Which gender does the person appear to be?", "Is the person in the image male or female?",
        "What gender is this person?", "Tell me the gender of the person.", "Male or female?",
        "Is the face male or female?", "What is this person's gender?",
    ),
    "Wearing_Hat": (
        "Is the person wearing a hat?", "Does the person have a hat on?", "Is there a hat on the person's head?",
        "Does this person wear a hat?", "Is the person in the picture wearing a hat?", "Can you see a hat?",
        "Is a hat visible on the head?", "Does the person in the image wear a hat?", "Is this person wearing a hat?",
        "Does the head have a hat on it?",
    ),
    "Wearing_Necklace": (
        "Is the person wearing a necklace?", "Does the person have a necklace on?", "Is there a necklace around the neck?",
        "Does this person wear a necklace?", "Is the person in the picture wearing a necklace?",
        "Can you see a necklace?", "Is a necklace visible on the person?", "Does the person in the image wear a necklace?",
        "Is this person wearing a necklace?", "Is there a necklace on this person?",
    ),
    "Wearing_Necktie": (
        "Is the person wearing a necktie?", "Does the person have a tie on?", "Is there a necktie around the collar?",
        "Does this person wear a tie?", "Is the person in the picture wearing a necktie?", "Can you see a necktie?",
        "Is a tie visible on the person?", "Does the person in the image wear a necktie?",
        "Is this person wearing a tie?", "Is there a necktie on this person?",
    ),
}

#: Caption and instruction fragments (verb phrases after "a person who"), five per value of each attribute. No
#: fragment is part of another, so :func:`stated_attributes` reads a text back exactly.
FRAGMENTS: dict[str, dict[bool, tuple[str, ...]]] = {
    "Black_Hair": {
        True: ("has black hair", "is black-haired", "has hair that is black", "wears black hair",
               "shows black hair"),
        False: ("does not have black hair", "is not black-haired", "has hair that is not black",
                "has no black hair", "shows hair of a colour other than black"),
    },
    "Eyeglasses": {
        True: ("wears eyeglasses", "is wearing glasses", "has glasses on", "has eyeglasses on the face",
               "wears spectacles"),
        False: ("does not wear eyeglasses", "is not wearing glasses", "has no glasses on", "wears no eyeglasses",
                "has a face without glasses"),
    },
    "No_Beard": {
        True: ("has no beard", "is beardless", "has a beardless face", "is clean of any beard", "wears no beard"),
        False: ("has a beard", "is bearded", "has a bearded face", "wears a beard", "shows a beard"),
    },
    "Male": {
        True: ("is a male", "is a man", "is of male gender", "looks like a man", "appears male"),
        False: ("is a female", "is a woman", "is of female gender", "looks like a woman", "appears female"),
    },
    "Wearing_Hat": {
        True: ("is wearing a hat", "wears a hat", "has a hat on", "has a hat on the head", "sports a hat"),
        False: ("is not wearing a hat", "wears no hat", "has no hat on", "has a bare head", "does not wear a hat"),
    },
    "Wearing_Necklace": {
        True: ("is wearing a necklace", "wears a necklace", "has a necklace on", "has a necklace around the neck",
               "sports a necklace"),
        False: ("is not wearing a necklace", "wears no necklace", "has no necklace on", "has a bare neck",
                "does not wear a necklace"),
    },
    "Wearing_Necktie": {
        True: ("is wearing a necktie", "wears a tie", "has a necktie on", "has a tie around the collar",
               "sports a necktie"),
        False: ("is not wearing a necktie", "wears no tie", "has no necktie on", "has a collar without a tie",
                "does not wear a tie"),
    },
}

CAPTION_QUESTIONS: tuple[str, ...] = (
    "Describe the image.", "Describe the person in the image.", "Who is in this picture?",
    "Give a short description of the face.", "Write a caption for this image.", "Describe this face.",
    "What does the person look like?", "Provide a one-sentence description of the image.",
    "Caption this photo of a person.", "Summarize what the picture shows.",
)

CAPTION_OPENINGS: tuple[str, ...] = (
    "A photo of a person who", "The image shows a person who", "A face of someone who", "This is a person who",
    "A portrait of a person who", "The picture shows someone who", "A close-up of a person who",
    "The photo shows a face of someone who", "A person who", "This picture is of someone who",
)

INSTRUCTION_OPENINGS: tuple[str, ...] = (
    "Draw a face of a person who", "Generate a photo of a person who", "Can you draw someone who",
    "Please create a portrait of a person who", "Render a face of someone who", "Make an image of a person who",
    "Produce a picture of someone who", "Could you generate a face of a person who",
    "Create a portrait of someone who", "Paint a person who",
)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def value_text(attribute: str, value: bool) -> str:
    """The answer text of one attribute: ``male``/``female`` for Male, ``yes``/``no`` otherwise."""
    if attribute == "Male":
        return "male" if value else "female"
    return "yes" if value else "no"


def sentence(rng: np.random.Generator, truth: Mapping[str, bool], mentioned: Sequence[str],
             openings: Sequence[str]) -> str:
    """``{opening} {fragment}, {fragment}, and {fragment}.`` stating each mentioned attribute's true value."""
    parts = [_pick(rng, FRAGMENTS[a][bool(truth[a])]) for a in mentioned]
    head = _pick(rng, openings)
    if len(parts) == 1:
        return f"{head} {parts[0]}."
    if len(parts) == 2:
        return f"{head} {parts[0]} and {parts[1]}."
    return f"{head} " + ", ".join(parts[:-1]) + f", and {parts[-1]}."


_FRAGMENT_RES = [(a, v, re.compile(r"(?<![\w-])" + re.escape(f) + r"(?![\w-])"))
                 for a, by_value in FRAGMENTS.items() for v, frags in by_value.items() for f in frags]


def stated_attributes(text: str) -> dict[str, bool | None]:
    """What a caption or instruction written from :data:`FRAGMENTS` states: ``{attribute: value}``, with ``None`` for
    an attribute stated both ways. Attributes it does not state are absent."""
    out: dict[str, bool | None] = {}
    for a, v, pattern in _FRAGMENT_RES:
        if pattern.search(text):
            out[a] = v if out.get(a, v) == v else None
    return out


# ----- reading the files ---------------------------------------------------------------------------------------------
def _name_some(items: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(repr(i) for i in items[:k])
    return f"{len(items)} ({shown}{', ...' if len(items) > k else ''})"


def _read_lines(path: Path) -> list[str]:
    require(path.is_file(), f"CelebA file {str(path)!r} not found ({found(path)} there): {_FIX_LAYOUT}")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()  # a BOM or CRLF lines are fine
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not a CelebA text file ({e.reason} at byte {e.start}): restore the original "
                        f"{path.name}") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}): check its permissions") from None


@dataclass(frozen=True)
class CelebAFiles:
    """The parsed CelebA files: image names, their labels on the chosen attributes and their partitions."""

    root: Path
    attributes: tuple[str, ...]
    names: tuple[str, ...]
    """Image file names, in the attribute file's order."""
    labels: np.ndarray = field(repr=False)
    """``bool`` array ``(n_images, n_attributes)``: ``labels[k, a]`` is attribute ``a`` of image ``names[k]``."""
    partition: np.ndarray = field(repr=False)
    """``int8`` array ``(n_images,)``: 0 train, 1 valid, 2 test."""

    def pool(self, pool: str) -> np.ndarray:
        """Indices (into :attr:`names`) of the images of a pool, ``train`` (partitions 0, 1) or ``test`` (2)."""
        require(pool in POOLS, f"unknown CelebA pool {pool!r}: use one of {', '.join(POOLS)}")
        return np.flatnonzero(np.isin(self.partition, POOLS[pool]))

    def image_path(self, k: int) -> Path:
        return self.root / IMAGE_DIR / self.names[k]

    def truth(self, k: int) -> dict[str, bool]:
        return {a: bool(v) for a, v in zip(self.attributes, self.labels[k])}

    @cached_property
    def identity(self) -> str:
        """SHA-256 (hex) over the attribute and partition files' bytes and every listed image's name and size."""
        h = hashlib.sha256()
        for name in (ATTR_FILE, PARTITION_FILE):
            h.update(name.encode() + b"\0" + hashlib.sha256((self.root / name).read_bytes()).digest())
        for k, name in enumerate(self.names):
            h.update(f"{name}\0{self.image_path(k).stat().st_size}\n".encode())
        return h.hexdigest()


def read_celeba(root: str | os.PathLike, attributes: Sequence[str] = ATTRIBUTES) -> CelebAFiles:
    """Read and check a local CelebA folder (the module docstring gives the layout). Every problem raises a one-line
    :class:`UserError` naming the file and the fix: a missing folder or file, a wrong header, a row count that does
    not match line 1 or the images, a value other than -1/1, an unknown attribute, a partition file that names unknown
    images, leaves images out or uses a partition other than 0, 1, 2."""
    root = Path(root)
    require(root.is_dir(), f"CelebA folder {str(root)!r} not found ({found(root)} there): pass the folder that "
                           f"holds {IMAGE_DIR}/, {ATTR_FILE} and {PARTITION_FILE}")
    img_dir = root / IMAGE_DIR
    require(img_dir.is_dir(), f"CelebA image folder {str(img_dir)!r} not found ({found(img_dir)} there): "
                              f"{_FIX_LAYOUT}")
    attr_path = root / ATTR_FILE
    lines = _read_lines(attr_path)
    require(len(lines) >= 2, f"{attr_path} has {len(lines)} line(s): line 1 must be the image count and line 2 the "
                             f"attribute names; restore the original {ATTR_FILE}")
    count_text = lines[0].strip()
    require(count_text.isdigit(), f"{attr_path}: line 1 must be the image count, got {count_text[:40]!r}; restore the "
                                  f"original {ATTR_FILE}")
    header = lines[1].split()
    require(len(header) > 0 and not any(h.lstrip("-").isdigit() for h in header),
            f"{attr_path}: line 2 must be the attribute names, got {lines[1][:60]!r}; restore the original {ATTR_FILE}")
    require(len(set(header)) == len(header), f"{attr_path}: line 2 names an attribute twice; restore the original "
                                             f"{ATTR_FILE}")
    attributes = tuple(attributes)
    unknown = [a for a in attributes if a not in header]
    require(not unknown, f"attribute(s) {', '.join(map(repr, unknown))} not in {attr_path}: use names of its line 2, "
                         f"e.g. {', '.join(ATTRIBUTES[:3])}")
    cols = [header.index(a) for a in attributes]
    rows = [ln for ln in lines[2:] if ln.strip()]
    require(len(rows) == int(count_text), f"{attr_path} lists {len(rows)} images but line 1 says {int(count_text)}: "
                                          f"restore the original {ATTR_FILE}")
    names: list[str] = []
    labels = np.zeros((len(rows), len(attributes)), dtype=bool)
    ok_values = {"-1", "1"}
    width = len(header) + 1
    for r, ln in enumerate(rows):
        parts = ln.split()
        where = f"{attr_path}: line {r + 3}"
        require(len(parts) == width, f"{where} has {len(parts) - 1} values for {len(header)} attributes: restore the "
                                     f"original {ATTR_FILE}")
        require(ok_values.issuperset(parts[1:]), f"{where} has a value other than -1 or 1: restore the original "
                                                 f"{ATTR_FILE}")
        names.append(parts[0])
        labels[r] = [parts[c + 1] == "1" for c in cols]
    dup = len(names) - len(set(names))
    require(dup == 0, f"{attr_path} lists {dup} image name(s) twice: restore the original {ATTR_FILE}")
    on_disk = set(os.listdir(img_dir))
    missing = [n for n in names if n not in on_disk]
    require(not missing, f"{_name_some(missing)} images of {ATTR_FILE} are not in {img_dir}: the attribute file's rows "
                         f"must match the images; restore the missing files")

    part_path = root / PARTITION_FILE
    position = {n: k for k, n in enumerate(names)}
    partition = np.full(len(names), -1, dtype=np.int8)
    unknown_names: list[str] = []
    for r, ln in enumerate(_read_lines(part_path)):
        if not ln.strip():
            continue
        parts = ln.split()
        where = f"{part_path}: line {r + 1}"
        require(len(parts) == 2 and parts[1] in ("0", "1", "2"),
                f"{where} must be 'name 0|1|2' (0 train, 1 valid, 2 test), got {ln[:60]!r}: restore the original "
                f"{PARTITION_FILE}")
        k = position.get(parts[0])
        if k is None:
            unknown_names.append(parts[0])
            continue
        partition[k] = int(parts[1])
    require(not unknown_names, f"{part_path} names {_name_some(unknown_names)} images that {ATTR_FILE} does not list: "
                               f"use the partition file of the same CelebA copy")
    unassigned = [names[k] for k in np.flatnonzero(partition < 0)]
    require(not unassigned, f"{part_path} gives no partition to {_name_some(unassigned)} images of {ATTR_FILE}: use the "
                            f"partition file of the same CelebA copy")
    return CelebAFiles(root, attributes, tuple(names), labels, partition)


def load_image(path: Path, resolution: int) -> Image.Image:
    """A centre crop of the face: the largest centred square (178x178 of the 178x218 aligned image, 20 px off the top
    and the bottom), resized to ``resolution`` (bicubic). RGB."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read CelebA image {path} ({type(e).__name__}): restore the original file") from None
    return center_crop(im, resolution)


def center_crop(im: Image.Image, resolution: int) -> Image.Image:
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.Resampling.BICUBIC)


# ----- configuration -------------------------------------------------------------------------------------------------
def _is_share(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= float(v) <= 1.0


@dataclass(frozen=True)
class CelebABias:
    """Under-represent one attribute in the *understanding* data (as SmartWatch's bias; generation is never biased)."""

    attribute: str
    """One of the split's attributes, e.g. ``Wearing_Hat``."""
    vqa_share: float = 0.05
    """Probability that a VQA question asks about it (unbiased: 1/7; the others share the rest equally)."""
    caption_share: float = 0.0
    """Probability that a caption states it (unbiased: 0.5)."""

    def __post_init__(self) -> None:
        require(self.attribute in FRAGMENTS,
                f"unknown bias attribute {self.attribute!r}: use one of {', '.join(ATTRIBUTES)}")
        for name in ("vqa_share", "caption_share"):
            v = getattr(self, name)
            require(_is_share(v), f"bias {name} must be a number in [0, 1], got {v!r}")

    @classmethod
    def parse(cls, text: str) -> "CelebABias":
        """``attribute[:vqa_share[:caption_share]]``, e.g. ``Wearing_Hat`` or ``Eyeglasses:0.01:0``."""
        parts = text.strip().split(":")
        require(1 <= len(parts) <= 3 and parts[0] != "",
                f"bad bias {text!r}: write attribute[:vqa_share[:caption_share]], e.g. Wearing_Hat:0.05")
        try:
            nums = [float(p) for p in parts[1:]]
        except ValueError:
            raise UserError(f"bad bias {text!r}: the shares must be numbers in [0, 1], e.g. Wearing_Hat:0.05:0") from None
        return cls(parts[0], *nums)


@dataclass(frozen=True)
class CelebAConfig(TaskCounts):
    """One CelebA split. Sample i of a task depends only on these fields, i and the files under ``root``."""

    root: str
    """The local CelebA folder."""
    name: str = "train"
    """Split name; part of every random stream."""
    pool: str = "train"
    """Which images: ``train`` (partitions 0 and 1) or ``test`` (partition 2)."""
    seed: int = 0
    resolution: int = 64
    """Image side in pixels after the centre crop (224 for SigLIP, 256 for VQ-16 at full scale)."""
    n_vqa: int = 60_000
    n_caption: int = 60_000
    n_generation: int = 60_000
    attributes: tuple[str, ...] = ATTRIBUTES
    """The attributes drawn, asked and stated (a subset of the seven, which have text templates)."""
    positive_prob: float = 0.5
    """Probability that each attribute is true in a drawn ground truth, before the eligibility rule."""
    min_images: int = 10
    """A combination is drawn only if each pool holds at least this many images with it."""
    bias: CelebABias | None = None
    max_extra_turns: int = 3
    extra_turn_prob: float = 0.4
    share_images: bool = True
    """True: VQA, caption and generation sample i show image i. False: each task has its own (test splits)."""

    def __post_init__(self) -> None:
        require(isinstance(self.root, str) and self.root != "", f"CelebA root must be a folder path, got {self.root!r}")
        require(isinstance(self.name, str) and self.name != "" and "/" not in self.name,
                f"bad split name {self.name!r}: use a non-empty name without '/'")
        require(self.pool in POOLS, f"unknown CelebA pool {self.pool!r}: use one of {', '.join(POOLS)}")
        require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**32,
                f"seed must be an integer in [0, 2^32), got {self.seed!r}")
        for n in ("n_vqa", "n_caption", "n_generation", "max_extra_turns", "min_images"):
            v = getattr(self, n)
            top = MAX_COUNT if n.startswith("n_") or n == "min_images" else 100
            require(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top,
                    f"{n} must be a non-negative integer (at most {top:,}), got {v!r}")
        require(self.min_images >= 1, f"min_images must be at least 1 (a drawn combination needs an image), got "
                                      f"{self.min_images}")
        require(isinstance(self.resolution, int) and not isinstance(self.resolution, bool)
                and MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION,
                f"resolution must be an integer from {MIN_RESOLUTION} to {MAX_RESOLUTION} px, got {self.resolution!r}")
        require(isinstance(self.attributes, tuple) and len(self.attributes) > 0,
                f"attributes must be a non-empty list of names, got {self.attributes!r}")
        unknown = [a for a in self.attributes if a not in FRAGMENTS]
        require(not unknown, f"attribute(s) {', '.join(map(repr, unknown))} have no text templates: use some of "
                             f"{', '.join(ATTRIBUTES)}")
        require(len(set(self.attributes)) == len(self.attributes), "attributes names an attribute twice: list each once")
        require(_is_share(self.positive_prob) and 0.0 < self.positive_prob < 1.0,
                f"positive_prob must be a number strictly between 0 and 1, got {self.positive_prob!r}")
        require(_is_share(self.extra_turn_prob), f"extra_turn_prob must be in [0, 1], got {self.extra_turn_prob!r}")
        require(isinstance(self.share_images, bool), f"share_images must be true or false, got {self.share_images!r}")
        if self.bias is not None:
            require(isinstance(self.bias, CelebABias), f"bias must be a CelebABias, got {self.bias!r}")
            require(self.bias.attribute in self.attributes,
                    f"bias attribute {self.bias.attribute!r} is not one of the split's attributes: use one of "
                    f"{', '.join(self.attributes)}")
            require(self.n_caption == 0 or self.bias.caption_share > 0 or len(self.attributes) > 1,
                    "a caption must state an attribute: with a single attribute, caption_share must be above 0")

    @classmethod
    def train(cls, root: str | os.PathLike, **kw: Any) -> "CelebAConfig":
        """A training split on the train pool: 60K VQA + 60K captions + 60K generations sharing images."""
        return cls(**{"root": str(root), "name": "train", "pool": "train", **kw})

    @classmethod
    def test(cls, root: str | os.PathLike, **kw: Any) -> "CelebAConfig":
        """A test split on the test pool: 1,000 single-question VQA samples and 500 generations, own images."""
        base = dict(root=str(root), name="test", pool="test", n_vqa=1000, n_caption=0, n_generation=500,
                    max_extra_turns=0, share_images=False, bias=None)
        return cls(**{**base, **kw})

    def question_probs(self) -> dict[str, float]:
        """Probability that a VQA question asks about each attribute (equal, unless biased)."""
        n = len(self.attributes)
        if self.bias is None:
            return {a: 1.0 / n for a in self.attributes}
        rest = (1.0 - self.bias.vqa_share) / (n - 1) if n > 1 else 0.0
        return {a: (self.bias.vqa_share if a == self.bias.attribute else rest) for a in self.attributes}

    def caption_probs(self) -> dict[str, float]:
        p = {a: CAPTION_MENTION_PROB for a in self.attributes}
        if self.bias is not None:
            p[self.bias.attribute] = self.bias.caption_share
        return p

    def instruction_probs(self) -> dict[str, float]:
        return {a: CAPTION_MENTION_PROB for a in self.attributes}

    def with_(self, **kw: Any) -> "CelebAConfig":
        return replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attributes"] = list(self.attributes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CelebAConfig":
        check_types(cls, d, "CelebA split config", prefix="")
        d = dict(d)
        require("root" in d, "a CelebA split config needs a root: the local CelebA folder")
        if "attributes" in d:
            d["attributes"] = tuple(d["attributes"])
        b = d.get("bias")
        if isinstance(b, dict):
            check_types(CelebABias, b, "bias")
            require("attribute" in b, "bias needs an attribute, e.g. {\"attribute\": \"Wearing_Hat\"}")
            d["bias"] = CelebABias(**b)
        elif b is not None:
            require(isinstance(b, str), f"bias must be an object or a string such as 'Wearing_Hat:0.05', got {b!r}")
            d["bias"] = CelebABias.parse(b)
        return cls(**d)


# ----- samples -------------------------------------------------------------------------------------------------------
@dataclass
class CelebASample:
    """One CelebA sample of one task."""

    task: str
    id: str
    """``{split}-{task}-{index:08d}``."""
    index: int
    image_index: int
    attributes: dict[str, bool]
    """The ground truth: the drawn combination, equal to the labels of ``source_image``."""
    source_image: str
    """The CelebA file the image comes from, e.g. ``000123.jpg``."""
    turns: list[Turn]
    mentioned: tuple[str, ...] = ()
    image: Image.Image | None = field(default=None, repr=False)

    @property
    def instruction(self) -> str:
        require(self.task == "generation", f"sample {self.id} is a {self.task} sample, not a generation sample")
        return self.turns[0].question

    def question_id(self, turn: int) -> str:
        return f"{self.id}.{turn}"

    def record(self) -> dict[str, Any]:
        """A JSON-ready row without the image: id, task, the CelebA file it shows, its ground truth, the turns (LLaVA
        style) and what a caption or instruction states. ``source_image`` lets a split be audited against the
        attribute file."""
        return {"id": self.id, "task": self.task, "source_image": self.source_image,
                "attributes": dict(self.attributes), "conversations": self.conversations(),
                "mentioned": list(self.mentioned)}

    def conversations(self) -> list[dict[str, str]]:
        """LLaVA-style turns, as for SmartWatch (:func:`uvlm.data.texts.conversations`)."""
        return texts_conversations(self.task, self.turns)


def _combo_codes(labels: np.ndarray) -> np.ndarray:
    """Each row of booleans as an integer, attribute 0 the lowest bit."""
    weights = 1 << np.arange(labels.shape[1], dtype=np.int64)
    return (labels.astype(np.int64) * weights).sum(axis=1)


def _cached_files(root: str, attributes: tuple[str, ...]) -> CelebAFiles:
    """:func:`read_celeba`, read once per process for one folder and attribute list while its two text files and its
    image folder keep their size and modification time (a split is opened by training, caching and evaluation)."""
    r = Path(root)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None
                  for p in (r / ATTR_FILE, r / PARTITION_FILE, r / IMAGE_DIR))
    key = (str(r.resolve()) if r.exists() else str(r), attributes)
    got = _FILES.get(key)
    if got is None or got[0] != stamp:
        got = (stamp, read_celeba(root, attributes))
        _FILES.clear()  # one CelebA copy at a time: the label arrays of 200K images are not small
        _FILES[key] = got
    return got[1]


_FILES: dict[tuple[str, tuple[str, ...]], tuple[tuple, CelebAFiles]] = {}


class CelebA:
    """A CelebA split: random access (``sample``) and streaming (``stream``); the
    :class:`~uvlm.data.datasets.Dataset` registered as ``celeba``."""

    name: ClassVar[str] = "celeba"
    config_class: ClassVar[type] = CelebAConfig

    def __init__(self, config: CelebAConfig, files: CelebAFiles | None = None):
        require(isinstance(config, CelebAConfig), f"a CelebA split needs a CelebAConfig, got {type(config).__name__}")
        self.config = config
        c = config
        if files is None:
            files = _cached_files(c.root, c.attributes)
        require(files.attributes == c.attributes, f"the CelebA files were read for {files.attributes}, the split uses "
                                                  f"{c.attributes}: read them with the split's attributes")
        self.files = files
        codes = _combo_codes(files.labels)
        pools = {p: files.pool(p) for p in POOLS}
        counts = {p: np.bincount(codes[idx], minlength=1 << len(c.attributes)) for p, idx in pools.items()}
        eligible = np.flatnonzero(np.logical_and.reduce([counts[p] >= c.min_images for p in POOLS]))
        require(len(eligible) > 0, f"no combination of {', '.join(c.attributes)} has {c.min_images} or more images in "
                                   f"both the train and the test pool of {c.root}: lower min_images or use fewer "
                                   f"attributes")
        self.eligible = eligible
        """The combinations drawn, as integer codes (attribute k is bit k)."""
        bits = (eligible[:, None] >> np.arange(len(c.attributes))) & 1
        p = c.positive_prob
        weight = np.prod(np.where(bits == 1, p, 1.0 - p), axis=1)
        self.combination_probs = weight / weight.sum()
        """The probability of each eligible combination: the independent one, renormalised."""
        own = pools[c.pool]
        order = np.argsort(codes[own], kind="stable")
        self._pool_sorted = own[order]
        self._starts = np.searchsorted(codes[own][order], eligible, side="left")
        self._counts = counts[c.pool][eligible]
        self._qprobs = c.question_probs()
        self._cprobs = c.caption_probs()
        self._iprobs = c.instruction_probs()

    def __repr__(self) -> str:
        c = self.config
        return (f"CelebA(root={c.root!r}, name={c.name!r}, pool={c.pool!r}, seed={c.seed}, resolution={c.resolution}, "
                f"vqa={c.n_vqa}, caption={c.n_caption}, generation={c.n_generation}, bias={c.bias})")

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return self.config.attributes

    @property
    def identity(self) -> str:
        """The digest of the files used (:attr:`CelebAFiles.identity`)."""
        return self.files.identity

    # ----- the dataset protocol ------------------------------------------------------------------------------------
    @property
    def metric_columns(self) -> tuple[str, ...]:
        """One exact-match column per attribute, then ``total``."""
        return (*self.config.attributes, "total")

    def image_key(self) -> dict[str, Any]:
        """What image ``j`` depends on besides ``j``: the files (their digest), the seed, the split name, the pool, the
        attributes, ``positive_prob`` and ``min_images`` (which decide the eligible combinations), the resolution."""
        c = self.config
        return {"dataset": self.name, "files": self.identity, "seed": c.seed, "split": c.name, "pool": c.pool,
                "attributes": list(c.attributes), "positive_prob": c.positive_prob, "min_images": c.min_images,
                "resolution": c.resolution}

    def questions(self, samples: Iterable[CelebASample]) -> list[CelebAQuestion]:
        return questions_from_samples(samples)

    def score(self, questions: Sequence[CelebAQuestion], predictions: Mapping[str, str]) -> CelebAScoreReport:
        return score_predictions(questions, predictions, self.config.attributes)

    def reference_answers(self, questions: Iterable[CelebAQuestion]) -> dict[str, str]:
        return reference_predictions(questions)

    @classmethod
    def split(cls, kind: str, **kw: Any) -> CelebAConfig:
        """``split("train", root=DIR, ...)`` or ``split("test", root=DIR, ...)``."""
        require(kind in ("train", "test"), f"unknown split preset {kind!r}: use train or test")
        require("root" in kw, "a CelebA split needs root: the local CelebA folder")
        return CelebAConfig.test(**kw) if kind == "test" else CelebAConfig.train(**kw)

    @classmethod
    def config_from_dict(cls, d: dict[str, Any]) -> CelebAConfig:
        return CelebAConfig.from_dict(d)

    # ----- storage (uvlm.data.storage) --------------------------------------------------------------------------
    @classmethod
    def row_columns(cls, config: CelebAConfig) -> dict[str, str]:
        """The columns of a stored row beyond the shared ones, with their value types: the CelebA file the image came
        from, then one yes/no column per attribute."""
        return {"source_image": "string", **{a: "bool" for a in config.attributes}}

    @classmethod
    def row_values(cls, sample: CelebASample) -> dict[str, Any]:
        return {"source_image": sample.source_image, **{a: bool(v) for a, v in sample.attributes.items()}}

    @classmethod
    def sample_from_row(cls, row: Mapping[str, Any], config: CelebAConfig, turns: list[Turn],
                        image: Image.Image | None) -> CelebASample:
        return CelebASample(row["task"], row["id"], int(row["index"]), int(row["image_index"]),
                            {a: bool(row[a]) for a in config.attributes}, str(row["source_image"]), turns,
                            tuple(row["mentioned"]), image)

    @classmethod
    def export_fields(cls, row: Mapping[str, Any], config: CelebAConfig) -> dict[str, Any]:
        """What a LLaVA export record holds of a stored row's truth: the CelebA file and the attributes."""
        return {"source_image": row["source_image"], "attributes": {a: bool(row[a]) for a in config.attributes}}

    @classmethod
    def card(cls, config: dict[str, Any]) -> tuple[str, str, list[str]]:
        """The dataset card's title, description and tags of a stored split."""
        return (f"CelebA split `{config['name']}`",
                f"Aligned CelebA faces from `{config['root']}` (pool {config['pool']}), centre-cropped, with VQA "
                f"conversations, captions and text-to-image instructions about {', '.join(config['attributes'])}; "
                f"each row names its CelebA file (`source_image`).", ["celeba"])

    @classmethod
    def parse_bias(cls, text: str) -> CelebABias:
        return CelebABias.parse(text)

    @classmethod
    def vocabulary_words(cls) -> tuple[str, ...]:
        """Every phrasing and answer of the templates (for a word-level tokenizer)."""
        words = [q for qs in QUESTIONS.values() for q in qs]
        words += [f for by_value in FRAGMENTS.values() for fs in by_value.values() for f in fs]
        words += [*CAPTION_QUESTIONS, *CAPTION_OPENINGS, *INSTRUCTION_OPENINGS, "yes no male female , and ."]
        return tuple(words)

    def count(self, task: str) -> int:
        return self.config.count(task)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if self.count(t) > 0)

    def combination(self, image_index: int) -> tuple[dict[str, bool], int]:
        """The drawn ground truth of image ``image_index`` and the file (index into ``files.names``) showing it."""
        c = self.config
        # every index has an image, as in SmartWatch (a feature cache computes whole chunks past the last sample)
        require(isinstance(image_index, (int, np.integer)) and 0 <= image_index,
                f"image index {image_index!r} must be a non-negative integer")
        rng = _rng(c.seed, c.name, "attributes", int(image_index))
        j = int(rng.choice(len(self.eligible), p=self.combination_probs))
        code = int(self.eligible[j])
        truth = {a: bool((code >> k) & 1) for k, a in enumerate(c.attributes)}
        k = int(self._pool_sorted[self._starts[j] + int(rng.integers(self._counts[j]))])
        return truth, k

    def attributes(self, image_index: int) -> dict[str, bool]:
        return self.combination(image_index)[0]

    def source_image(self, image_index: int) -> str:
        return self.files.names[self.combination(image_index)[1]]

    def image(self, image_index: int, resolution: int | None = None) -> Image.Image:
        """The centre-cropped face of image ``image_index`` at ``resolution`` (default: the split's)."""
        return load_image(self.files.image_path(self.combination(image_index)[1]),
                          self.config.resolution if resolution is None else resolution)

    def sample(self, task: str, i: int, with_image: bool = True) -> CelebASample:
        c = self.config
        n = self.count(task)
        require(isinstance(i, (int, np.integer)) and 0 <= i < n,
                f"sample index {i!r} out of range for task {task!r} with {n} samples")
        img_i = c.image_index(task, int(i))
        truth, k = self.combination(img_i)
        rng = _rng(c.seed, c.name, task, int(i))
        mentioned: tuple[str, ...] = ()
        if task == "vqa":
            turns = self._vqa_turns(rng, truth)
        elif task == "caption":
            mentioned = self._mentions(rng, self._cprobs)
            turns = [Turn(_pick(rng, CAPTION_QUESTIONS), sentence(rng, truth, mentioned, CAPTION_OPENINGS), "caption")]
        else:
            mentioned = self._mentions(rng, self._iprobs)
            turns = [Turn(sentence(rng, truth, mentioned, INSTRUCTION_OPENINGS), "", "generation")]
        image = load_image(self.files.image_path(k), c.resolution) if with_image else None
        return CelebASample(task, f"{c.name}-{task}-{int(i):08d}", int(i), img_i, truth, self.files.names[k], turns,
                            mentioned, image)

    def stream(self, task: str, start: int = 0, stop: int | None = None,
               with_image: bool = True) -> Iterator[CelebASample]:
        stop = self.count(task) if stop is None else min(stop, self.count(task))
        for i in range(start, stop):
            yield self.sample(task, i, with_image=with_image)

    def _vqa_turns(self, rng: np.random.Generator, truth: Mapping[str, bool]) -> list[Turn]:
        c = self.config
        n = 1 + int((rng.random(c.max_extra_turns) < c.extra_turn_prob).sum()) if c.max_extra_turns else 1
        probs = np.array([self._qprobs[a] for a in c.attributes], dtype=np.float64)
        asked = rng.choice(len(c.attributes), size=n, p=probs / probs.sum())
        return [Turn(_pick(rng, QUESTIONS[c.attributes[int(a)]]), value_text(c.attributes[int(a)],
                                                                             truth[c.attributes[int(a)]]),
                     c.attributes[int(a)]) for a in asked]

    def _mentions(self, rng: np.random.Generator, probs: Mapping[str, float]) -> tuple[str, ...]:
        """Each attribute independently with its probability; if none came up, one, chosen in proportion to them
        (so every text states 1 to 7 attributes)."""
        attrs = self.config.attributes
        draws = rng.random(len(attrs))
        chosen = tuple(a for a, u in zip(attrs, draws) if u < probs[a])
        if chosen:
            return chosen
        w = np.array([probs[a] for a in attrs], dtype=np.float64)
        return (attrs[int(rng.choice(len(attrs), p=w / w.sum()))],)


# ----- the effective distribution ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistributionReport:
    """The attribute distribution a split actually has, against the independent one it was drawn from."""

    n_samples: int
    positive: dict[str, float]
    """Per attribute: the share of samples whose ground truth is true."""
    intended: dict[str, float]
    """Per attribute: ``positive_prob``, the share before the eligibility rule."""
    expected: dict[str, float]
    """Per attribute: the share the eligibility rule implies (the limit of ``positive`` for many samples)."""
    eligible_combinations: int
    total_combinations: int
    combinations_seen: int
    distinct_images: int
    max_image_repeats: int
    """How often the most reused image appears."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_table(self) -> str:
        lines = ["| attribute | drawn (%) | expected (%) | independent (%) |", "| --- | ---: | ---: | ---: |"]
        for a in self.positive:
            lines.append(f"| {a} | {100 * self.positive[a]:.1f} | {100 * self.expected[a]:.1f} | "
                         f"{100 * self.intended[a]:.1f} |")
        lines.append(f"\n{self.n_samples} samples; {self.eligible_combinations} of {self.total_combinations} "
                     f"combinations eligible, {self.combinations_seen} drawn; {self.distinct_images} distinct images, "
                     f"the most reused {self.max_image_repeats} times.")
        return "\n".join(lines)


def attribute_distribution(dataset: CelebA, task: str | None = None) -> DistributionReport:
    """The effective attribute distribution of a split's images (of one task, or all images of the split). Reads
    only the labels, never the images."""
    c = dataset.config
    if task is None:
        indices: Iterable[int] = range(c.n_images)
    else:
        indices = (c.image_index(task, i) for i in range(dataset.count(task)))
    truths, files = [], []
    for j in indices:
        truth, k = dataset.combination(j)
        truths.append([truth[a] for a in c.attributes])
        files.append(k)
    require(len(truths) > 0, "the split has no samples to report on: give it a positive count")
    arr = np.array(truths, dtype=bool)
    bits = (dataset.eligible[:, None] >> np.arange(len(c.attributes))) & 1
    expected = dataset.combination_probs @ bits
    _, repeats = np.unique(np.array(files), return_counts=True)
    return DistributionReport(
        n_samples=len(truths),
        positive={a: float(arr[:, k].mean()) for k, a in enumerate(c.attributes)},
        intended={a: float(c.positive_prob) for a in c.attributes},
        expected={a: float(expected[k]) for k, a in enumerate(c.attributes)},
        eligible_combinations=int(len(dataset.eligible)),
        total_combinations=1 << len(c.attributes),
        combinations_seen=int(len(np.unique(_combo_codes(arr)))),
        distinct_images=int(len(repeats)),
        max_image_repeats=int(repeats.max()),
    )


# ----- scoring -------------------------------------------------------------------------------------------------------
_YES_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_GENDER_RE = re.compile(r"\b(male|man|female|woman)\b", re.IGNORECASE)
_GENDER_OF = {"male": True, "man": True, "female": False, "woman": False}


def parse_answer(attribute: str, text: str) -> bool | None:
    """The value an answer names: for Male the whole words ``male``/``man`` (True) or ``female``/``woman`` (False),
    otherwise ``yes`` (True) or ``no`` (False), case-insensitively. ``None`` if it names neither or both (a hedge)."""
    if attribute == "Male":
        values = {_GENDER_OF[m.group(1).lower()] for m in _GENDER_RE.finditer(text)}
    else:
        require(attribute in FRAGMENTS, f"unknown attribute {attribute!r}: use one of {', '.join(ATTRIBUTES)}")
        values = {m.group(1).lower() == "yes" for m in _YES_RE.finditer(text)}
    return next(iter(values)) if len(values) == 1 else None


def score_answer(attribute: str, truth: Mapping[str, bool], prediction: str) -> float:
    """1 if the answer names the true value and no other, else 0 (exact match)."""
    value = parse_answer(attribute, prediction)
    return 1.0 if value is not None and value == bool(truth[attribute]) else 0.0


@dataclass(frozen=True)
class CelebAQuestion:
    id: str
    attribute: str
    truth: dict[str, bool]


def questions_from_samples(samples: Iterable[CelebASample]) -> list[CelebAQuestion]:
    out = []
    for s in samples:
        require(s.task == "vqa", f"sample {s.id} is a {s.task} sample: only VQA samples have scored questions")
        out += [CelebAQuestion(s.question_id(k), t.attribute, s.attributes) for k, t in enumerate(s.turns)]
    return out


def reference_predictions(questions: Iterable[CelebAQuestion]) -> dict[str, str]:
    """The ground-truth answers: a perfect model, scoring 100."""
    return {q.id: value_text(q.attribute, q.truth[q.attribute]) for q in questions}


@dataclass(frozen=True)
class CelebAScoreReport:
    """Exact-match accuracy per attribute and in total (percent)."""

    attributes: tuple[str, ...]
    correct: dict[str, int]
    counts: dict[str, int]
    unparsed: dict[str, int]

    @property
    def columns(self) -> tuple[str, ...]:
        """The metric columns: one per attribute, then ``total``."""
        return (*self.attributes, "total")

    def count(self, column: str) -> int:
        return sum(self.counts.values()) if column == "total" else self.counts[column]

    def score(self, column: str) -> float | None:
        n = self.count(column)
        if n == 0:
            return None
        hits = sum(self.correct.values()) if column == "total" else self.correct[column]
        return 100.0 * hits / n

    @property
    def total(self) -> float | None:
        return self.score("total")

    def format_table(self) -> str:
        """A Markdown table of the columns: score (%), number of questions, unparsable answers."""
        lines = ["| metric | score (%) | questions | unparsed |", "| --- | ---: | ---: | ---: |"]
        unparsed = {**self.unparsed, "total": sum(self.unparsed.values())}
        for c in self.columns:
            s = self.score(c)
            lines.append(f"| {c} | {'-' if s is None else f'{s:.2f}'} | {self.count(c)} | {unparsed[c]} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"unit": "percent", "scores": {c: self.score(c) for c in self.columns},
                "counts": {c: self.count(c) for c in self.columns},
                "unparsed": {**self.unparsed, "total": sum(self.unparsed.values())}}


def score_predictions(questions: Sequence[CelebAQuestion], predictions: Mapping[str, str],
                      attributes: Sequence[str] = ATTRIBUTES) -> CelebAScoreReport:
    """Score one answer per question; every question needs an answer and every answer a question."""
    require(len(questions) > 0, "there are no questions to score: pass a test split with VQA samples")
    ids = [q.id for q in questions]
    require(len(set(ids)) == len(ids), "duplicate question ids: each VQA question must have its own id")
    missing = [i for i in ids if i not in predictions]
    require(not missing, f"the predictions lack answers for {_name_some(missing)} of {len(ids)} questions: answer "
                         f"every VQA question of the test split")
    unknown = sorted(set(predictions) - set(ids))
    require(not unknown, f"{_name_some(unknown)} prediction ids are not questions of the test split: check that the "
                         f"predictions were made on this test split")
    attributes = tuple(attributes)
    correct = {a: 0 for a in attributes}
    counts = {a: 0 for a in attributes}
    unparsed = {a: 0 for a in attributes}
    for q in questions:
        require(q.attribute in counts, f"question {q.id} asks about {q.attribute!r}, not one of the scored "
                                       f"attributes {', '.join(attributes)}: score with the split's attributes")
        value = parse_answer(q.attribute, predictions[q.id])
        counts[q.attribute] += 1
        if value is None:
            unparsed[q.attribute] += 1
        elif value == bool(q.truth[q.attribute]):
            correct[q.attribute] += 1
    return CelebAScoreReport(attributes, correct, counts, unparsed)


__all__ = ["ATTRIBUTES", "POOLS", "CelebA", "CelebABias", "CelebAConfig", "CelebAFiles", "CelebASample",
           "DistributionReport", "attribute_distribution", "center_crop", "load_image", "parse_answer",
           "questions_from_samples", "read_celeba", "reference_predictions", "score_answer", "score_predictions",
           "stated_attributes"]
