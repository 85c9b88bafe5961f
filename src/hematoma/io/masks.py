"""Masks read as UInt8 0/1, and checked to lie on their image's voxel grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .arrays import array_to_image
from .formatting import _format_pair, _format_values
from .images import _image_file, read_image
from .paths import WRITE_SUFFIXES, _check_path, _is_dicom_file, _name_ends_with


def read_mask(path: str | Path, reference: sitk.Image | None = None, reference_path: str | Path | None = None,
              tolerance: float = 1e-4) -> sitk.Image:
    """Read a binary mask as UInt8 0/1; a single label value k (0/k) becomes 1.

    With ``reference`` (the image the mask belongs to), its geometry must match
    (see :func:`check_geometry`).  A DICOM SEG (:mod:`.dicom_seg`) is read onto
    ``reference``'s grid; it must hold one segment.
    """
    path = Path(path)
    if path.is_file() and _is_dicom_file(path):
        from .dicom_seg import is_dicom_seg, read_dicom_seg

        if is_dicom_seg(path):
            if reference is None:  # its frames are planes in space: only a CT gives them a voxel grid
                raise InputError(path, "is a DICOM SEG: it is read onto its CT's voxel grid, and no CT was given")
            return read_dicom_seg(path, reference, reference_path=reference_path, tolerance=tolerance)
    mask = read_image(path)
    if mask.GetDimension() != 3:  # a 2D file has no slice thickness: no volume in mL can come from it
        raise InputError(path, f"mask is a {mask.GetDimension()}D image; expected a 3D mask (a volume needs the "
                               "slice thickness)")
    array = sitk.GetArrayViewFromImage(mask)
    values = _distinct_values(array)
    if values.size > 2 or (values.size == 2 and 0 not in values) or np.isnan(values).any():  # a label may be < 0
        shown = _format_values(values[:10]) + (f", ... ({values.size} distinct values)" if values.size > 10 else "")
        raise InputError(path, f"mask is not binary: found values {shown} (expected 0 and one label value)")
    binary = array_to_image((array != 0).astype(np.uint8), mask)
    if reference is not None:
        check_geometry(reference, binary, reference_path, path, tolerance=tolerance)
        # Within tolerance, the mask lies on the CT's grid: give it that grid exactly, or a stricter library
        # downstream refuses it (pyradiomics did a NIfTI mask of a DICOM CT: NIfTI stores float32 geometry).
        if isinstance(reference, sitk.Image):
            binary.CopyInformation(reference)
        else:  # a header (ImageFileReader after ReadImageInformation)
            binary.SetOrigin(reference.GetOrigin())
            binary.SetSpacing(reference.GetSpacing())
            binary.SetDirection(reference.GetDirection())
    return binary


def _distinct_values(array: np.ndarray) -> np.ndarray:
    """``np.unique(array)``, without its sort/hash of every voxel for the usual 0/1 integer mask."""
    if array.dtype.kind in "iub" and array.size:
        low, high = array.min(), array.max()
        if low == high:
            return np.asarray([low])
        if low == 0 and high == 1:  # two values only, both present: min and max say it (~100x faster)
            return np.asarray([0, 1], dtype=array.dtype)
    return np.unique(array)


def read_geometry(path: str | Path) -> sitk.ImageFileReader | sitk.Image:
    """What :func:`check_geometry` needs of an image, reading only the header where the format allows.

    A DICOM file or folder is read whole (:func:`read_image` chooses the series and
    may resample it); other formats give an ``ImageFileReader`` after
    ``ReadImageInformation``: a follow-up CT whose mask is given is checked
    without decoding its voxels (a gzip NIfTI's trailer must record the length
    its header promises, else it is inflated once and discarded to refuse a
    truncated file: see :mod:`hematoma.io.integrity`).
    """
    path = Path(path)
    _check_path(path)
    if path.is_dir() or _is_dicom_file(path) or not _name_ends_with(path, WRITE_SUFFIXES):
        return read_image(path)
    with _image_file(path, voxels=False) as reader:
        if reader.GetDimension() == 3 and reader.GetNumberOfComponents() == 1:
            return reader  # its header information stays with it
    return read_image(path)  # 2D, 4D, vector: read_image's own handling decides what the grid is or refuses


def check_geometry(image: sitk.Image, mask: sitk.Image, image_path: str | Path | None,
                   mask_path: str | Path | None, tolerance: float = 1e-4) -> None:
    """Raise InputError unless ``mask`` lies on ``image``'s voxel grid.

    Spacing is compared relative to the image's spacing, origin in units of the
    image's spacing, direction cosines absolutely; sizes must be equal.
    """
    def mismatch(field: str, mask_value, image_value) -> InputError:
        mask_text, image_text = _format_pair(mask_value, image_value)
        image_name = "image" if image_path is None else f"image {image_path}"
        return InputError(mask_path if mask_path is not None else "mask",
                          f"does not match {image_name}: {field} {mask_text} vs {image_text}")

    if mask.GetDimension() != image.GetDimension():
        raise mismatch("dimension", mask.GetDimension(), image.GetDimension())
    if mask.GetSize() != image.GetSize():
        raise mismatch("size", mask.GetSize(), image.GetSize())
    spacing = np.array(image.GetSpacing())
    if np.any(np.abs(np.array(mask.GetSpacing()) - spacing) > tolerance * spacing):
        raise mismatch("spacing", mask.GetSpacing(), image.GetSpacing())
    if np.any(np.abs(np.array(mask.GetOrigin()) - np.array(image.GetOrigin())) > tolerance * spacing):
        raise mismatch("origin", mask.GetOrigin(), image.GetOrigin())
    if np.any(np.abs(np.array(mask.GetDirection()) - np.array(image.GetDirection())) > tolerance):
        raise mismatch("direction", mask.GetDirection(), image.GetDirection())
