"""Atomic file and folder writes: nothing half-written is ever left at the final path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    Works for files and folders. On an exception the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    except OSError as e:
        from uvlm.errors import UserError

        raise UserError(f"cannot write {str(path)!r} ({e.strerror or e}): choose a writable location") from None
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if path.is_dir() and tmp_path.is_dir():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp_path, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def found(path: str | os.PathLike) -> str:
    """What is at ``path``, for messages: ``a folder``, ``a file``, ``nothing`` ..."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        return "a broken symbolic link"
    if p.is_dir():
        return "a folder"
    if p.is_file():
        return "a file"
    if p.exists():
        return "a special file (not a regular file or folder)"
    return "nothing"


def _writable_base(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` is a folder this process can create entries in; else UserError.

    Probes by creating and removing a temporary file there, so a read-only or virtual filesystem (``/proc``) is
    caught before any work is done, and nothing is left behind either way."""
    from uvlm.errors import UserError

    base = path.parent
    while not base.exists() and not base.is_symlink() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise UserError(f"cannot write {what} {str(path)!r}: {str(base)!r} is {found(base)}, not a folder: choose "
                        f"another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".uvlm-probe-", dir=base)
    except OSError as e:
        raise UserError(f"cannot write {what} {str(path)!r}: {str(base)!r} is not writable ({e.strerror or e}): "
                        f"choose a writable location") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike, what: str = "the output") -> Path:
    """``path`` can be written as a file: it is absent or a regular file, and its folder can be created and written.
    Raises :class:`~uvlm.errors.UserError` saying what is in the way. Creates nothing."""
    from uvlm.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"cannot write {what} {str(path)!r}: it is {found(path)}, not a file: remove it or choose "
                        f"another path")
    _writable_base(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "the output") -> Path:
    """``path`` can be written as a folder: it is absent or a folder, and it (or its parent) can be written.
    Raises :class:`~uvlm.errors.UserError` saying what is in the way. Creates nothing."""
    from uvlm.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"cannot write {what} {str(path)!r}: it is {found(path)}, not a folder: remove it or choose "
                        f"another path")
    _writable_base(path / "x" if path.is_dir() else path, what)
    return path


def read_json(path: str | os.PathLike, what: str, fix: str) -> Any:
    """Parse the JSON file ``path`` (``what`` names it in messages, ``fix`` says what to do about a bad one).

    A missing path, a folder, bytes that are not UTF-8, invalid JSON or JSON nested too deeply to parse are one-line
    :class:`~uvlm.errors.UserError` s that say what was found."""
    from uvlm.errors import UserError

    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {str(path)!r} not found: {fix}")
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} is {found(path)}, not a file: {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start}): {fix}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {str(path)!r} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
                        f"{fix}") from None
    except RecursionError:
        raise UserError(f"{what} {str(path)!r} is nested too deeply to be a uvlm file: {fix}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {str(path)!r} ({e.strerror or e}): {fix}") from None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _entries(root: Path) -> set[str]:
    if not root.exists():
        return set()
    out = {str(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        out.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return out


@contextlib.contextmanager
def unchanged_on_error(*roots: str | os.PathLike) -> Iterator[None]:
    """On an exception inside the block, remove every file and folder created under ``roots`` during it (the roots
    themselves too, if they did not exist), so a failing command leaves nothing behind. Files that existed before are
    kept as they are."""
    paths = [Path(r) for r in roots]
    before = [_entries(p) for p in paths]
    try:
        yield
    except BaseException:
        for p, old in zip(paths, before):
            for new in sorted(_entries(p) - old, key=len, reverse=True):
                q = Path(new)
                if q.is_dir() and not q.is_symlink():
                    shutil.rmtree(q, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        q.unlink()
        raise
