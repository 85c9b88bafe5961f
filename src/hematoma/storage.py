"""Atomic writes: a result appears whole or not at all; output folders locked for one run.

Each writer writes to a temporary file in the destination's folder and renames
it into place (``os.replace`` is atomic on POSIX and Windows), so a run killed
mid-write never leaves a truncated file that a rerun would trust.

:func:`folder_lock` keeps a second run out of an output folder while a run
writes into it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


def make_parent(destination: str | Path) -> None:
    """Create ``destination``'s folder, or say in one line why it cannot be (a file in the way, no permission)."""
    parent = Path(destination).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), parent)
        raise InputError(destination, f"cannot be written: {blocking} is a file, not a folder") from None
    except OSError as error:
        raise InputError(destination, f"cannot be written ({error.strerror or error})") from None


def _read_umask() -> int:
    # os.umask can only be read by setting it, which races with other threads
    # creating files; Linux shows it in /proc (kernel 4.7+), elsewhere set it
    # back at once, here at import, before the program starts any thread.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_umask_lock = threading.Lock()
UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK  # what open(path, "w") gives a new file
FOLDER_MODE = 0o777 & ~UMASK  # what mkdir gives a new folder


def plain_permissions(path: str | Path) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have, not mkstemp/mkdtemp's private 0600/0700.

    Results live in shared research folders: colleagues must read them as
    they read the user's other files.
    """
    os.chmod(path, FOLDER_MODE if Path(path).is_dir() else FILE_MODE)


@contextlib.contextmanager
def atomic_path(destination: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it there on success."""
    destination = Path(destination)
    make_parent(destination)
    if destination.is_dir():
        raise InputError(destination, "is a folder; give a file name to write")
    # Keep the real suffix(es) so that writers choosing a format by extension
    # (SimpleITK, pandas) pick the right one.
    suffix = suffix if suffix is not None else "".join(destination.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".tmp{suffix}", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # a writer may have replaced the temp file with its own (then its own mode)
            plain_permissions(tmp_path)
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


def same_file(first: str | Path, second: str | Path) -> bool:
    """True when both paths name one file: the same path once links and '..' are resolved, or a hard link."""
    first, second = Path(first), Path(second)
    if first.resolve() == second.resolve():
        return True
    try:
        return first.samefile(second)
    except OSError:  # either is missing: not one file
        return False


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


# --------------------------------------------------------------------------- folder locks

LOCK_NAME = ".hematoma.lock"
LOCK_RECORD_NAME = ".hematoma.lock.json"
_held = threading.local()  # resolved folder -> depth, for this thread's nested locks


def _command_line() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"


def _holder(folder: Path) -> str:
    try:
        record = json.loads((folder / LOCK_RECORD_NAME).read_text(encoding="utf-8"))
        return (f"pid {record['pid']} on {record['host']}, started {record['started']}: "
                f"{record['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``folder`` (created if absent) for one run; refuse at once if another run holds it.

    An OS lock (``flock``) on ``FOLDER/.hematoma.lock``, through filelock:
    the OS releases it when the holding process dies, even by SIGKILL, so a
    dead run never blocks the next one (on a file system without ``flock``
    filelock uses a marker file instead, which it breaks once it sees the
    holder's process gone).  Who holds it (pid, host, start time, command) is
    written beside it, in ``.hematoma.lock.json``, for the refusal message.
    Nested calls in the same thread (``run`` calling ``extract``) share the
    outer hold.
    Raises :class:`InputError` naming the folder and the holder.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    depths = _held.__dict__.setdefault("depths", {})
    if depths.get(key):
        depths[key] += 1
        try:
            yield folder
        finally:
            depths[key] -= 1
        return
    lock = FileLock(folder / LOCK_NAME, blocking=False)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(folder, f"is in use by another run ({_holder(folder)}); wait for it to end or "
                                 "choose another output folder") from None
    depths[key] = 1
    try:
        write_json(folder / LOCK_RECORD_NAME, {
            "pid": os.getpid(), "host": platform.node(), "command": command or _command_line(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        yield folder
    finally:
        depths.pop(key, None)
        try:
            (folder / LOCK_RECORD_NAME).unlink(missing_ok=True)  # before the release: a successor's record stays
        finally:
            lock.release()


# --------------------------------------------------------------------------- replacing a folder's results

TRASH_PREFIX = ".hematoma-trash-"


def move_to_trash(folder: str | Path, paths: list[Path]) -> Path:
    """Move ``paths`` (inside ``folder``), in the given order, into a new hidden trash folder there.

    Each rename is atomic (same file system), so a crash leaves every path
    either in place or in the trash, never half-deleted; the caller records the
    folder's new state, then calls :func:`empty_trash`.
    """
    folder = Path(folder)
    trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=folder))
    for path in paths:
        if not path.exists():
            continue
        target = trash / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    return trash


def empty_trash(folder: str | Path) -> None:
    """Delete the trash folders of :func:`move_to_trash` (also those an interrupted run left)."""
    for trash in Path(folder).glob(f"{TRASH_PREFIX}*"):
        shutil.rmtree(trash, ignore_errors=True)
