"""What every completeness check uses: the voxel data a file holds, read or inflated in bounded
chunks (gzip/zlib, checksums checked), and the "file is incomplete" message."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

try:  # zlib-ng inflates 3-20x faster than CPython's zlib (ITK inflates with zlib-ng too); same API
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - a dependency; the standard library's zlib gives the same answers
    import zlib

_READ_CHUNK = 1 << 20  # compressed bytes read at a time
_OUTPUT_CHUNK = 1 << 24  # most inflated bytes held at a time (an all-zero mask inflates ~1000x)
_GZIP_MAGIC = b"\x1f\x8b"
# zlib.decompressobj with 32 + 15 window bits accepts both gzip and zlib headers (and checks their CRC/Adler).
_AUTO_HEADER = 32 + zlib.MAX_WBITS
_COPYING = "truncated or still being copied"


def _size_text(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _short_of(path: Path, held: int, promised: int, what: str = "voxel data") -> InputError:
    held_text, promised_text = _size_text(held), _size_text(promised)
    if held_text == promised_text:  # a few bytes short: show them exactly
        held_text, promised_text = f"{held} bytes", f"{promised} bytes"
    return InputError(path, f"file is incomplete: holds {held_text} of {what}, "
                            f"the header promises {promised_text} ({_COPYING})")


def _inflate(path: Path, offset: int = 0, keep: int = 0, kind: str = "gzip", visit=None) -> tuple[int, bytes]:
    """Inflate the gzip/zlib stream(s) of ``path`` from ``offset``: (inflated byte count, first ``keep`` bytes).

    Concatenated gzip members are read in turn, as zlib's gzread does; ``visit`` (if given) is called with
    each inflated chunk in turn.
    """
    total, head = 0, b""
    decompressor = zlib.decompressobj(_AUTO_HEADER)
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            pending, at_end = b"", False
            while True:
                if not pending and not at_end:
                    pending = handle.read(_READ_CHUNK)
                    at_end = not pending
                out = decompressor.decompress(pending, _OUTPUT_CHUNK)
                pending = decompressor.unconsumed_tail
                total += len(out)
                if visit is not None and out:
                    visit(out)
                if len(head) < keep:
                    head += out[: keep - len(head)]
                if decompressor.eof:
                    rest = decompressor.unused_data + pending
                    if not rest.startswith(_GZIP_MAGIC):
                        return total, head  # trailing bytes after the stream are ignored, as by ITK
                    decompressor, pending = zlib.decompressobj(_AUTO_HEADER), rest
                elif at_end and not pending and not out:
                    break  # input used up, no output held back, and no end of stream
    except zlib.error as error:
        raise InputError(path, f"{kind} data is corrupt ({error}); the file is damaged") from None
    raise InputError(path, f"file is incomplete ({kind} stream ends early: {_COPYING})")


def _inflate_head(path: Path, size: int) -> bytes:
    """The first ``size`` inflated bytes of a gzip file (fewer if it is shorter or damaged there)."""
    decompressor = zlib.decompressobj(_AUTO_HEADER)
    head = b""
    try:
        with open(path, "rb") as handle:
            while len(head) < size and not decompressor.eof and (chunk := handle.read(1 << 12)):
                head += decompressor.decompress(chunk, size - len(head))
    except zlib.error:
        pass  # the full inflation that follows names the damage
    return head[:size]


def _starts_with_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def _file_size(path: Path, named_by: Path) -> int:
    if path.exists() and not path.is_file():  # /dev/zero, a FIFO, a folder: never voxel data
        raise InputError(named_by, f"data file {path} named by the header is not a regular file")
    if not path.is_file():
        raise InputError(named_by, f"data file {path.name} named by the header is missing")
    return path.stat().st_size


def _visit_plain(path: Path, visit) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_OUTPUT_CHUNK):
            visit(chunk)
