"""lmms-eval, both directions.

**SmartWatch as an lmms-eval task.** The task ships in this package (``tasks/smartwatch/``: a YAML template and the
``utils.py`` whose hooks are :mod:`uvlm.integrations.lmms_eval.task`). :func:`write_task` (CLI:
``uvlm harness lmms-task SPLIT_DIR TASK_DIR``) writes a task file naming one materialised split, which lmms-eval
picks up with ``--include_path TASK_DIR``::

    uvlm data generate data/test --split test
    uvlm harness lmms-task data/test lmms-tasks
    lmms-eval --model uvlm --model_args run=runs/siglip --include_path lmms-tasks --tasks smartwatch

Any model lmms-eval supports can then be scored on SmartWatch with uvlm's exact VQA score.

**uvlm runs as lmms-eval models.** :mod:`uvlm.integrations.lmms_eval.model` registers ``uvlm`` with lmms-eval
(``@register_model("uvlm")``, and the ``lmms_eval.models`` entry point of this package so the ``lmms-eval`` command
finds it without a plugin flag).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from uvlm.errors import require

#: The task folder shipped in the package (the template and ``utils.py``).
TASK_DIR = Path(__file__).resolve().parent / "tasks" / "smartwatch"
TEMPLATE = TASK_DIR / "smartwatch_template.yaml"

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _yaml_string(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False)  # a JSON string is a YAML string


def task_yaml(split_dir: str | os.PathLike, name: str = "smartwatch", folder: str | os.PathLike | None = None) -> str:
    """The text of the task file for the split folder ``split_dir`` (its VQA shards, by absolute path); ``folder``
    is where it will be written (named in its comment)."""
    from uvlm.data.storage import read_manifest

    require(isinstance(name, str) and _NAME_RE.fullmatch(name) is not None,
            f"task name {name!r} is not a plain identifier: use letters, digits and underscores, e.g. smartwatch")
    split_dir = Path(split_dir)
    manifest = read_manifest(split_dir)
    n = int(manifest["counts"].get("vqa", 0))
    require(n > 0, f"the split in {str(split_dir)!r} has no VQA samples: generate a test split with uvlm data "
                   f"generate DIR --split test")
    cfg = manifest["config"]
    shards = str(split_dir.resolve() / "vqa" / "*.parquet")
    return "\n".join([
        f"# SmartWatch VQA on {split_dir.resolve()} (split {cfg.get('name')!r}, seed {cfg.get('seed')}, {n:,} VQA",
        "# conversations), scored with uvlm's VQA score. Written by uvlm harness lmms-task; use it with",
        f"#   lmms-eval --include_path {folder if folder is not None else 'THIS_FOLDER'} --tasks {name} ...",
        f"include: {_yaml_string(str(TEMPLATE))}",
        f"task: {name}",
        "dataset_path: parquet",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {_yaml_string(shards)}",
        "",
    ])


def write_task(split_dir: str | os.PathLike, out: str | os.PathLike, name: str = "smartwatch",
               overwrite: bool = False) -> Path:
    """Write ``out/{name}.yaml``, the lmms-eval task of the split folder ``split_dir``; returns its path.

    ``out`` is what ``lmms-eval --include_path`` takes. An existing task file of that name is replaced only with
    ``overwrite``.
    """
    from uvlm.io import write_text_atomic

    out = Path(out)
    text = task_yaml(split_dir, name, out)
    require(not out.exists() or out.is_dir(), f"task folder {str(out)!r} exists and is not a folder: choose a "
                                              f"folder for the task file")
    path = out / f"{name}.yaml"
    require(overwrite or not path.exists(), f"{path} exists: pass --overwrite to replace it, or choose another "
                                            f"folder or --name")
    write_text_atomic(path, text)
    return path


__all__ = ["TASK_DIR", "TEMPLATE", "task_yaml", "write_task"]
