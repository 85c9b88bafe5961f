"""Refuse image files that hold less voxel data than their header promises.

ITK reads a truncated NIfTI (plain or gzip) without a word and fills the
missing voxels with zeros, so half a scan gives a wrong volume, label or
radiomics row; a truncated MetaImage fails with an unrelated "No such file or
directory" after raw lines on stderr.  This module checks a file *before*
ITK reads it:

- a gzip/zlib stream must decompress to its end with a valid checksum
  (Python's ``zlib`` tells: a stream that ends early, a CRC/Adler mismatch);
- the voxel bytes present must be at least what the header promises
  (NIfTI-1/2 ``vox_offset`` + prod(dim) x bitpix/8; MetaImage ``DimSize`` x
  ``ElementType`` x ``ElementNumberOfChannels``; NRRD ``sizes`` x ``type``
  after ``line skip``/``byte skip``).

Hand-written because no installed library does it: ITK zero-fills silently,
nibabel is not a dependency (and would read the voxels to find out), and
pynrrd/MetaIO have no "is this complete?" call.  Only headers are parsed
here; anything this module does not understand is left to ITK to accept or
refuse.  Uncompressed data is never read (file sizes are compared) and
compressed data is inflated in bounded chunks and discarded.
"""

from __future__ import annotations

import struct
import zlib
from math import prod
from pathlib import Path

from .errors import InputError

__all__ = ["check_image_file_complete"]

_READ_CHUNK = 1 << 20  # compressed bytes read at a time
_OUTPUT_CHUNK = 1 << 24  # most inflated bytes held at a time (an all-zero mask inflates ~1000x)
_GZIP_MAGIC = b"\x1f\x8b"
# zlib.decompressobj with 32 + 15 window bits accepts both gzip and zlib headers (and checks their CRC/Adler).
_AUTO_HEADER = 32 + zlib.MAX_WBITS
_COPYING = "truncated or still being copied"


def check_image_file_complete(path: str | Path) -> None:
    """Raise :class:`InputError` if the NIfTI, NRRD or MetaImage file at ``path`` is incomplete.

    Other files (DICOM, folders, unknown formats, headers this module cannot
    parse) pass: ITK decides about them.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


# ----------------------------------------------------------------------------------- helpers


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


def _inflate(path: Path, offset: int = 0, keep: int = 0, kind: str = "gzip") -> tuple[int, bytes]:
    """Inflate the gzip/zlib stream(s) of ``path`` from ``offset``: (inflated byte count, first ``keep`` bytes).

    Concatenated gzip members are read in turn, as zlib's gzread does.
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


def _starts_with_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def _file_size(path: Path, named_by: Path) -> int:
    if not path.is_file():
        raise InputError(named_by, f"data file {path.name} named by the header is missing")
    return path.stat().st_size


# ------------------------------------------------------------------------------------- NIfTI


def _check_nifti(path: Path) -> None:
    # niftilib (ITK's reader) opens a NIfTI through zlib whatever its name: gzip is told by its magic.
    if _starts_with_gzip(path):
        length, header = _inflate(path, keep=540)
    else:
        length = path.stat().st_size
        with open(path, "rb") as handle:
            header = handle.read(540)
    layout = _nifti_layout(header)
    if layout is None:
        return
    offset, needed = layout
    if length - offset < needed:
        raise _short_of(path, max(length - offset, 0), needed)


def _nifti_layout(header: bytes) -> tuple[int, int] | None:
    """(voxel data offset, voxel data bytes) from a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header."""
    if len(header) < 348:
        return None
    for order in "<>":
        sizeof_hdr = struct.unpack_from(order + "i", header, 0)[0]
        if sizeof_hdr == 348 and header[344:347] == b"n+1":
            dims = struct.unpack_from(order + "8h", header, 40)
            bitpix = struct.unpack_from(order + "h", header, 72)[0]
            offset = int(struct.unpack_from(order + "f", header, 108)[0])
            break
        if sizeof_hdr == 540 and len(header) >= 540 and header[4:7] == b"n+2":
            bitpix = struct.unpack_from(order + "h", header, 14)[0]
            dims = struct.unpack_from(order + "8q", header, 16)
            offset = struct.unpack_from(order + "q", header, 168)[0]
            break
    else:
        return None  # not a single-file NIfTI (or a damaged header): ITK decides
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    voxels = prod(max(int(d), 1) for d in dims[1 : ndim + 1])
    # niftilib reads a single file's voxels no earlier than the end of its header.
    return max(offset, sizeof_hdr), -(-voxels * bitpix // 8)


# -------------------------------------------------------------------------------------- NRRD

# Bytes per value of each NRRD type name (http://teem.sourceforge.net/nrrd/format.html#type).
_NRRD_TYPES = {
    1: {"signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"},
    2: {"short", "short int", "signed short", "signed short int", "int16", "int16_t",
        "ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"},
    4: {"int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"},
    8: {"longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
        "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"},
}
_NRRD_TYPE_SIZE = {name: size for size, names in _NRRD_TYPES.items() for name in names}


def _read_text_header(path: Path, end, limit: int = 1 << 20, to_eof: bool = False) -> tuple[list[str], int] | None:
    """Lines of a text header up to the line ``end`` matches (or the file's end, if ``to_eof``), and the
    byte offset after it."""
    with open(path, "rb") as handle:
        offset, lines = 0, []
        while raw := handle.readline(1 << 16):  # bounded: a file that is not a header has no short lines
            offset += len(raw)
            line = raw.decode("latin-1").rstrip("\r\n")
            lines.append(line)
            if end(line):
                return lines, offset
            if offset > limit:
                return None
    return (lines, offset) if to_eof else None


def _check_nrrd(path: Path) -> None:
    # A detached header (.nhdr) may end at the end of its file rather than at a blank line.
    parsed = _read_text_header(path, end=lambda line: line.strip() == "", to_eof=True)
    if parsed is None or not parsed[0] or not parsed[0][0].startswith("NRRD"):
        return
    lines, data_offset = parsed
    fields = {}
    for line in lines[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        colon = line.index(":")
        if line[colon : colon + 2] == ":=":  # a key/value pair, not a field
            continue
        fields[line[:colon].strip().lower()] = line[colon + 1 :].strip()
    try:
        dimension = int(fields["dimension"])
        sizes = [int(v) for v in fields["sizes"].split()[:dimension]]
        kind = " ".join(fields["type"].lower().split())
        value_size = int(fields["block size"]) if kind == "block" else _NRRD_TYPE_SIZE[kind]
        encoding = fields.get("encoding", "raw").lower()
        line_skip = int(fields.get("line skip", fields.get("lineskip", 0)))
        byte_skip = int(fields.get("byte skip", fields.get("byteskip", 0)))
    except (KeyError, ValueError):
        return  # ITK reports a header it cannot use
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None:
        if data_file.split()[0] == "LIST" or len(data_file.split()) >= 3:
            return  # data spread over several files: not checked
        data_path, data_offset = path.parent / data_file, 0
        _file_size(data_path, path)
    else:
        data_path = path
    needed = prod(sizes) * value_size
    data_offset = _skip_lines(data_path, data_offset, line_skip)
    if encoding == "raw":
        if byte_skip < 0:  # -1: the data are the file's last bytes; only the file's size can tell
            byte_skip = 0
        held = data_path.stat().st_size - data_offset - byte_skip
        if held < needed:
            raise _short_of(path if data_path == path else data_path, max(held, 0), needed)
    elif encoding in ("gzip", "gz"):
        held, _ = _inflate(data_path, data_offset)
        held -= max(byte_skip, 0)
        if held < needed:
            raise _short_of(data_path, max(held, 0), needed, "voxel data once decompressed")
    # ascii/text/hex/bzip2: not checked (ITK reads or refuses them itself)


def _skip_lines(path: Path, offset: int, count: int) -> int:
    if count <= 0:
        return offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        for _ in range(count):
            offset += len(handle.readline())
    return offset


# -------------------------------------------------------------------------------- MetaImage

# Bytes per value of MetaIO element types (metaTypes.h).  MET_LONG/MET_ULONG are counted as 4 bytes,
# their smallest size, so that no intact file is ever refused.
_MET_TYPE_SIZE = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_ASCII_CHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2,
    "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_FLOAT": 4,
    "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_DOUBLE": 8,
}


def _check_metaimage(path: Path) -> None:
    parsed = _read_text_header(path, end=lambda line: line.split("=")[0].strip().lower() == "elementdatafile")
    if parsed is None:
        return
    lines, data_offset = parsed
    fields = {}
    for line in lines:
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip().lower()] = value.strip()
    try:
        ndims = int(fields["ndims"])
        sizes = [int(v) for v in fields["dimsize"].split()[:ndims]]
        value_size = _MET_TYPE_SIZE[fields["elementtype"].upper().removesuffix("_ARRAY")]
        channels = int(fields.get("elementnumberofchannels", 1))
        header_size = int(fields.get("headersize", 0))
    except (KeyError, ValueError):
        return
    if fields.get("binarydata", "true").lower() != "true":
        return  # ASCII voxel values: not checked
    data_file = fields["elementdatafile"]
    if data_file.upper() == "LOCAL":
        data_path = path
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        return  # data spread over several files: not checked
    else:
        data_path, data_offset = path.parent / data_file, max(header_size, 0)
        _file_size(data_path, path)
    needed = prod(sizes) * value_size * channels
    if fields.get("compresseddata", "false").lower() == "true":
        promised = int(fields["compresseddatasize"]) if fields.get("compresseddatasize", "").isdigit() else 0
        held = data_path.stat().st_size - data_offset
        if held < promised:
            raise _short_of(data_path, held, promised, "compressed data")
        inflated, _ = _inflate(data_path, data_offset, kind="zlib")
        if inflated < needed:
            raise _short_of(data_path, inflated, needed, "voxel data once decompressed")
        return
    held = data_path.stat().st_size - data_offset
    if held < needed:
        raise _short_of(data_path, max(held, 0), needed)
