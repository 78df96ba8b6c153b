"""LLaVA-format training data from local paths: LLaVA-1.5's pretraining and instruction JSON, and ShareGPT4V-PT
captions reversed into generation samples (the paper's section 4.3).

A LLaVA JSON file is a list of records::

    {"id": "004539375", "image": "00453/004539375.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nRender a clear and concise summary of the photo."},
                       {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]}

- ``blip_laion_cc_sbu_558k.json`` (stage 1) and ``llava_v1_5_mix665k.json`` (stage 2) are read by
  :func:`read_llava_json`: turns alternate ``human`` / ``gpt`` starting with ``human``; a record with an ``image``
  holds exactly one ``<image>`` token, in its first human turn (removed from the question: the model puts the image
  positions first); a record without ``image`` (the text-only ShareGPT part of the 665K mix) must hold none.
- ShareGPT4V-PT (``share-captioner_coco_lcs_sam_1246k_1107.json``, the same layout) is read by
  :func:`read_reversed_captions`: each record's first ``gpt`` answer (the caption) becomes a generation instruction
  and its image the generation target.
- :func:`generation_subsets` draws the paper's disjoint generation samples from one caption file, seeded: stage 1
  takes the first ``n1`` of one permutation, stage 2 the next ``n2`` (paper: 150K and 200K of 1.2M).

Every image path is checked when the file is read (a missing file is a one-line error naming the record), so a run
never fails half-way on a missing image. Images are opened only when a batch needs them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from uvlm.errors import UserError, require

IMAGE_TOKEN = "<image>"

#: Salt of the generation-subset permutation (part of its definition: changing it changes every subset).
_SUBSET_SALT = 0x5A4E


@dataclass(frozen=True)
class LlavaRecord:
    """One understanding sample: a conversation, about one image or text only."""

    id: str
    image: Path | None
    """Absolute path of the image, or ``None`` for a text-only conversation."""
    turns: tuple[tuple[str, str], ...]
    """``(question, answer)`` pairs; the first question without its ``<image>`` token."""


@dataclass(frozen=True)
class CaptionRecord:
    """One reversed caption: generate ``image`` from ``caption``."""

    id: str
    image: Path
    caption: str


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a data file (recorded in run folders, so stage 2 knows it reads stage 1's caption file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _load_records(path: Path) -> list:
    require(path.is_file(), f"LLaVA data file {str(path)!r} not found: give a local JSON file such as "
                            f"blip_laion_cc_sbu_558k.json")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{str(path)!r} is not valid JSON ({str(e).splitlines()[0]}): give a LLaVA data file (a "
                        f"JSON list of records)") from None
    require(isinstance(records, list), f"{str(path)!r} holds a JSON {type(records).__name__}, not a list of records: "
                                       f"give a LLaVA data file")
    require(len(records) > 0, f"{str(path)!r} holds no records")
    return records


def _image_path(path: Path, root: Path, k: int, rec: dict, rid: str) -> Path:
    name = rec["image"]
    require(isinstance(name, str) and name, f"{path.name} record {rid} (#{k}): 'image' must be a relative path")
    f = (root / name)
    require(f.is_file(), f"{path.name} record {rid} (#{k}): image {str(f)!r} is missing: put the images under "
                         f"{str(root)!r} (--images) or fix the record")
    return f


def _conversation(path: Path, k: int, rec: dict, rid: str) -> list[tuple[str, str]]:
    conv = rec.get("conversations")
    where = f"{path.name} record {rid} (#{k})"
    require(isinstance(conv, list) and len(conv) >= 2 and len(conv) % 2 == 0,
            f"{where}: malformed conversation (need human/gpt turn pairs, got "
            f"{len(conv) if isinstance(conv, list) else type(conv).__name__}): fix the record")
    turns = []
    for i in range(0, len(conv), 2):
        h, g = conv[i], conv[i + 1]
        ok = (isinstance(h, dict) and isinstance(g, dict) and h.get("from") == "human" and g.get("from") == "gpt"
              and isinstance(h.get("value"), str) and isinstance(g.get("value"), str))
        require(ok, f"{where}: malformed conversation at turn {i // 2} (expected {{'from': 'human', 'value': ...}} "
                    f"then {{'from': 'gpt', 'value': ...}}): fix the record")
        turns.append((h["value"], g["value"]))
    return turns


def read_llava_json(path: str | os.PathLike, image_root: str | os.PathLike | None) -> list[LlavaRecord]:
    """The understanding records of a LLaVA JSON file (rules in the module doc); images under ``image_root``."""
    path = Path(path).expanduser()
    records = _load_records(path)
    root = Path(image_root).expanduser() if image_root is not None else None
    out = []
    for k, rec in enumerate(records):
        require(isinstance(rec, dict), f"{path.name} record #{k} is a {type(rec).__name__}, not an object")
        rid = str(rec.get("id", k))
        turns = _conversation(path, k, rec, rid)
        n_tokens = sum(q.count(IMAGE_TOKEN) + a.count(IMAGE_TOKEN) for q, a in turns)
        image = None
        if "image" in rec:
            require(n_tokens == 1 and IMAGE_TOKEN in turns[0][0],
                    f"{path.name} record {rid} (#{k}) has an image but {n_tokens} {IMAGE_TOKEN} tokens"
                    f"{'' if n_tokens != 1 else ' outside its first human turn'}: put exactly one {IMAGE_TOKEN} in the "
                    f"first human turn")
            require(root is not None, f"{path.name} has image records: pass the image folder (--images)")
            image = _image_path(path, root, k, rec, rid)
            q0 = turns[0][0].replace(IMAGE_TOKEN, "").strip()
            turns[0] = (q0, turns[0][1])
        else:
            require(n_tokens == 0, f"{path.name} record {rid} (#{k}) has an {IMAGE_TOKEN} token but no 'image': add "
                                   f"the image path or remove the token")
        out.append(LlavaRecord(rid, image, tuple(turns)))
    return out


def read_reversed_captions(path: str | os.PathLike, image_root: str | os.PathLike) -> list[CaptionRecord]:
    """ShareGPT4V-PT records reversed: the first ``gpt`` answer is the instruction, the image the target."""
    path = Path(path).expanduser()
    records = _load_records(path)
    root = Path(image_root).expanduser()
    out = []
    for k, rec in enumerate(records):
        require(isinstance(rec, dict), f"{path.name} record #{k} is a {type(rec).__name__}, not an object")
        rid = str(rec.get("id", k))
        require("image" in rec, f"{path.name} record {rid} (#{k}) has no image: a caption record needs the image it "
                                f"describes")
        turns = _conversation(path, k, rec, rid)
        caption = turns[0][1].strip()
        require(caption != "", f"{path.name} record {rid} (#{k}) has an empty caption: fix or drop the record")
        out.append(CaptionRecord(rid, _image_path(path, root, k, rec, rid), caption))
    return out


def generation_subsets(n_records: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of sizes ``sizes`` (in order: stage 1, stage 2) from one seeded permutation of
    ``range(n_records)``; together they may not exceed the file."""
    need = int(sum(sizes))
    require(need <= n_records, f"the stages ask {' + '.join(f'{s:,}' for s in sizes)} = {need:,} generation samples "
                               f"but the caption file has {n_records:,}: lower --generation-samples")
    perm = np.random.default_rng([int(seed), _SUBSET_SALT]).permutation(n_records)
    out, start = [], 0
    for s in sizes:
        out.append(perm[start:start + int(s)])
        start += int(s)
    return out


def open_image(path: Path):
    """An image file as RGB ``PIL`` (a file that does not decode is a one-line error)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"image {str(path)!r} does not decode ({e}): replace the file") from None


__all__ = ["IMAGE_TOKEN", "LlavaRecord", "CaptionRecord", "file_digest", "read_llava_json", "read_reversed_captions",
           "generation_subsets", "open_image"]
