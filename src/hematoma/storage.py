"""Atomic writes: a result appears whole or not at all.

Each writer writes to a temporary file in the destination's folder and renames
it into place (``os.replace`` is atomic on POSIX and Windows), so a run killed
mid-write never leaves a truncated file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


@contextlib.contextmanager
def atomic_path(destination: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it there on success."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix(es) so that writers choosing a format by extension
    # (SimpleITK, pandas) pick the right one.
    suffix = suffix if suffix is not None else "".join(destination.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".tmp{suffix}", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, destination)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(destination: str | Path, text: str) -> Path:
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(destination)


def write_json(destination: str | Path, data: Any) -> Path:
    return write_text(destination, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and paths show up in results; store them as plain JSON.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def refuse_overwrite(destination: str | Path, overwrite: bool) -> None:
    """Raise unless ``destination`` is absent or the user allowed overwriting it."""
    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise InputError(destination, "already exists; pass --overwrite to replace it")


def sha1_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file, or of every file under a folder (sorted by name)."""
    path = Path(path)
    digest = hashlib.sha1()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    return digest.hexdigest()
