"""NRRD and MetaImage files, whose headers are text, checked to hold the voxel data their header
promises (see :mod:`.integrity`)."""

from __future__ import annotations

from math import prod
from pathlib import Path

from .integrity_streams import _file_size, _inflate, _short_of

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
