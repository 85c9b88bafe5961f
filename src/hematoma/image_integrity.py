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

It also refuses what niftilib (ITK's NIfTI reader) would silently replace:
a pixdim (voxel size) of 0 or NaN becomes 1 mm, NaN/infinite voxel values become
0, non-finite qform/sform values give an arbitrary orientation, and a datatype
whose size disagrees with bitpix is read past the bytes the header promises.

Hand-written because no installed library does it: ITK zero-fills silently,
nibabel is not a dependency (and would read the voxels to find out), and
pynrrd/MetaIO have no "is this complete?" call.  Only headers are parsed
here; anything this module does not understand is left to ITK to accept or
refuse.  Uncompressed data is never read (file sizes are compared) and
compressed data is inflated in bounded chunks and discarded.
"""

from __future__ import annotations

import math
import struct
from math import prod
from pathlib import Path

import numpy as np

from .errors import InputError

try:  # zlib-ng inflates 3-20x faster than CPython's zlib (ITK inflates with zlib-ng too); same API
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - a dependency; the standard library's zlib gives the same answers
    import zlib

__all__ = ["check_image_file_complete", "dicom_pixel_data_problem"]

_READ_CHUNK = 1 << 20  # compressed bytes read at a time
_OUTPUT_CHUNK = 1 << 24  # most inflated bytes held at a time (an all-zero mask inflates ~1000x)
_GZIP_MAGIC = b"\x1f\x8b"
# zlib.decompressobj with 32 + 15 window bits accepts both gzip and zlib headers (and checks their CRC/Adler).
_AUTO_HEADER = 32 + zlib.MAX_WBITS
_COPYING = "truncated or still being copied"


def check_image_file_complete(path: str | Path, inflate_to: str | Path | None = None, header_only: bool = False) -> bool:
    """Raise :class:`InputError` if the NIfTI, NRRD or MetaImage file at ``path`` is incomplete.

    Other files (DICOM, folders, unknown formats, headers this module cannot
    parse) pass: ITK decides about them.

    For a gzip NIfTI: ``inflate_to`` (a ``.nii`` path) receives the inflated
    file as it is checked, so that ITK reads the plain copy instead of
    inflating the stream a second time (returns True when it was written);
    ``header_only`` (for a caller that needs the grid, not the voxels) accepts
    a stream whose gzip trailer records exactly the length the header promises
    without inflating it (a truncated stream's last 4 bytes match that with
    odds of 2**-32), and inflates it as usual otherwise.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _check_nifti(path, inflate_to, header_only)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)
    return False


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


# ------------------------------------------------------------------------------------- NIfTI

# Bits per voxel of each NIfTI datatype code (nifti1.h, NIFTI_TYPE_*).
_NIFTI_BITS = {2: 8, 4: 16, 8: 32, 16: 32, 64: 64, 32: 64, 128: 24, 256: 8, 512: 16, 768: 32,
               1024: 64, 1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32}
# Floating-point datatypes (float32/64/128, complex64/128/256): niftilib turns their non-finite values into 0.
_NIFTI_FLOATS = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}


def _check_nifti(path: Path, inflate_to: str | Path | None = None, header_only: bool = False) -> bool:
    # niftilib (ITK's reader) opens a NIfTI through zlib whatever its name: gzip is told by its magic.
    compressed = _starts_with_gzip(path)
    if compressed:
        header = _inflate_head(path, 540)
    else:
        with open(path, "rb") as handle:
            header = handle.read(540)
    fields = _nifti_fields(header)
    if fields is None:
        return False  # not a NIfTI header this module understands: ITK decides
    _check_nifti_fields(path, fields)
    offset, needed = fields["offset"], fields["bytes"]
    if compressed and header_only and _gzip_trailer_length(path) == (offset + needed) % (1 << 32):
        return False
    floats = _NIFTI_FLOATS.get(fields["datatype"])
    counter = _NonFinite(offset, needed, fields["order"] + floats) if floats else None
    copy = None
    if compressed:
        try:
            copy = open(inflate_to, "wb") if inflate_to is not None else None
            visitors = [visit for visit in (counter, copy.write if copy else None) if visit is not None]
            length, _ = _inflate(path, visit=(lambda chunk: [visit(chunk) for visit in visitors]) if visitors else None)
        finally:
            if copy is not None:
                copy.close()
    else:
        length = path.stat().st_size
        if counter is not None and length - offset >= needed:
            _visit_plain(path, counter)
    if length - offset < needed:
        raise _short_of(path, max(length - offset, 0), needed)
    if counter is not None and counter.count:
        raise InputError(path, f"{counter.count} voxel value(s) are NaN or infinite; ITK's NIfTI reader would "
                               "silently read them as 0 (replace them with a real value first)")
    return copy is not None


def _gzip_trailer_length(path: Path) -> int | None:
    """ISIZE, the last field of a gzip member: the inflated length modulo 2**32 (None for a tiny file)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() < 18:  # a gzip header and trailer alone take 18 bytes
            return None
        handle.seek(-4, 2)
        return struct.unpack("<I", handle.read(4))[0]


# Where each checked field sits, and its struct format, in the NIfTI-1 and NIfTI-2 headers (nifti1.h, nifti2.h).
_NIFTI_LAYOUT = {
    1: {"sizeof_hdr": (0, "i"), "dims": (40, "8h"), "datatype": (70, "h"), "bitpix": (72, "h"),
        "pixdim": (76, "8f"), "offset": (108, "f"), "scale": (112, "2f"), "codes": (252, "2h"),
        "qform": (256, "6f"), "sform": (280, "12f")},
    2: {"sizeof_hdr": (0, "i"), "datatype": (12, "h"), "bitpix": (14, "h"), "dims": (16, "8q"),
        "pixdim": (104, "8d"), "offset": (168, "q"), "scale": (176, "2d"), "codes": (344, "2i"),
        "qform": (352, "6d"), "sform": (400, "12d")},
}
_NIFTI_HEADER_SIZE = {1: 348, 2: 540}


def _nifti_fields(header: bytes) -> dict | None:
    """The fields of a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header this module checks, or None.

    The header is told by its magic and its byte order by dim[0] (1 to 7), as niftilib does: niftilib
    reads a header whose sizeof_hdr is damaged, so that field alone must not decide.
    """
    if len(header) >= 348 and header[344:347] in (b"n+1", b"ni1"):
        version, magic = 1, header[344:347]
    elif len(header) >= 540 and header[4:7] in (b"n+2", b"ni2"):
        version, magic = 2, header[4:7]
    else:
        return None  # not a NIfTI header: ITK decides
    layout, size = _NIFTI_LAYOUT[version], _NIFTI_HEADER_SIZE[version]

    def unpack(order: str, name: str):
        offset, layout_format = layout[name]
        return struct.unpack_from(order + layout_format, header, offset)

    order = next((o for o in "<>" if 1 <= unpack(o, "dims")[0] <= 7), None)
    order = order or next((o for o in "<>" if unpack(o, "sizeof_hdr")[0] == size), "<")
    fields = {name: unpack(order, name) for name in layout}
    for name in ("sizeof_hdr", "datatype", "bitpix", "offset"):
        fields[name] = fields[name][0]
    fields["order"], fields["magic"] = order, magic
    fields["offset"] = int(_finite_or(float(fields["offset"]), 0.0))
    ndim = fields["dims"][0]
    bits = _NIFTI_BITS.get(fields["datatype"], fields["bitpix"])
    voxels = prod(max(int(d), 1) for d in fields["dims"][1 : ndim + 1]) if 1 <= ndim <= 7 else 0
    # niftilib reads a single file's voxels no earlier than the end of its header.
    fields["offset"] = max(fields["offset"], size)
    fields["bytes"] = -(-voxels * max(bits, 0) // 8)
    fields["header_size"] = size
    return fields


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


def _check_nifti_fields(path: Path, fields: dict) -> None:
    """Refuse the header fields that niftilib/ITK would replace or misread without a word."""
    def refuse(problem: str) -> InputError:
        return InputError(path, f"NIfTI header: {problem} (a damaged header?)")

    if fields["sizeof_hdr"] != fields["header_size"]:
        raise refuse(f"sizeof_hdr = {fields['sizeof_hdr']}, not {fields['header_size']}")
    if fields["magic"] in (b"ni1", b"ni2"):
        raise InputError(path, "NIfTI header of a two-file pair (.hdr + .img) in a single-file name; "
                               "give the .hdr/.img pair, or a proper .nii")
    dims = fields["dims"]
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise refuse(f"dim[0] = {ndim}, the number of dimensions, must be 1 to 7")
    if any(d < 1 for d in dims[1 : ndim + 1]):
        raise refuse(f"dim = {list(dims[1 : ndim + 1])} has a size below 1")
    datatype, bitpix = fields["datatype"], fields["bitpix"]
    if datatype not in _NIFTI_BITS:
        raise refuse(f"datatype {datatype} is not a NIfTI datatype code")
    if datatype in _NIFTI_BITS and bitpix != _NIFTI_BITS[datatype]:
        raise refuse(f"datatype {datatype} has {_NIFTI_BITS[datatype]} bits per voxel, but bitpix says {bitpix}")
    # ITK replaces a spacing of 0 or NaN by 1 mm: every volume in mL would be wrong.
    spacing = fields["pixdim"][1 : min(ndim, 3) + 1]
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise refuse(f"pixdim (voxel size) {', '.join(f'{v:g}' for v in spacing)} is not positive and finite")
    qform_code, sform_code = fields["codes"]
    if qform_code > 0 and not all(math.isfinite(v) for v in fields["qform"]):
        raise refuse("qform (quatern_b/c/d, qoffset_x/y/z) holds NaN or infinite values")
    if sform_code > 0 and not all(math.isfinite(v) for v in fields["sform"]):
        raise refuse("sform (srow_x/y/z) holds NaN or infinite values")
    slope, intercept = fields["scale"]
    if math.isfinite(slope) and slope != 0 and not math.isfinite(intercept):
        raise refuse(f"scl_inter = {intercept:g} is not finite")


class _NonFinite:
    """Counts NaN/inf values of a float dtype in the voxel bytes [offset, offset + length) of a stream fed in chunks."""

    def __init__(self, offset: int, length: int, dtype: str):
        self.start, self.end, self.dtype = offset, offset + length, np.dtype(dtype)
        self.position, self.carry, self.count = 0, b"", 0

    def __call__(self, chunk: bytes) -> None:
        begin, self.position = self.position, self.position + len(chunk)
        low, high = max(self.start - begin, 0), min(self.end - begin, len(chunk))
        if low >= high:
            return
        data = self.carry + chunk[low:high]
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data[:usable], self.dtype)
        self.count += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.carry = data[usable:]


def _visit_plain(path: Path, visit) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_OUTPUT_CHUNK):
            visit(chunk)


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


# ------------------------------------------------------------------------------------- DICOM


def dicom_pixel_data_problem(path: str | Path) -> str | None:
    """Why the DICOM image file at ``path`` holds too few pixels (no PixelData, or fewer bytes than
    Rows x Columns x frames x samples x BitsAllocated promise), or None if that is not the problem.

    GDCM refuses such a file with "Cannot read requested file"; this says what is wrong.  Compressed
    (encapsulated) pixel data are not checked: their size says nothing.
    """
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path)
    except Exception:  # noqa: BLE001 - anything pydicom cannot parse: no diagnosis, GDCM's word stands
        return None
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return "has no pixel data (no PixelData element): not an image, or its pixels were stripped"
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in dataset or syntax is None or syntax.is_encapsulated:
        return None
    try:
        bits = int(dataset.BitsAllocated)
        values = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("NumberOfFrames") or 1) \
            * int(dataset.get("SamplesPerPixel") or 1)
        held = len(dataset.PixelData)
    except (AttributeError, TypeError, ValueError):
        return None
    promised = -(-values * bits // 8)
    if held < promised:
        return _short_of(Path(path), held, promised, "pixel data").problem
    return None

