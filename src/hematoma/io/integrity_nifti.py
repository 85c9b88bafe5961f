"""A NIfTI-1/2 file (plain or gzip) checked before ITK reads it: its voxel data all there, and no header
field or voxel value that niftilib would silently replace (see :mod:`.integrity`)."""

from __future__ import annotations

import math
import struct
from math import prod
from pathlib import Path

import numpy as np

from ..errors import InputError
from .integrity_streams import (
    _inflate,
    _inflate_head,
    _short_of,
    _starts_with_gzip,
    _visit_plain,
)

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
