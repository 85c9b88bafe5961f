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

from pathlib import Path

from .integrity_nifti import _check_nifti
from .integrity_streams import _short_of
from .integrity_text_headers import _check_metaimage, _check_nrrd

__all__ = ["check_image_file_complete", "dicom_pixel_data_problem"]


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
