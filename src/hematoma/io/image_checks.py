"""What an image's header must satisfy, before its voxels are read or once they are: a size a head CT
can have, geometry a scanner writes, one grey level per voxel."""

from __future__ import annotations

from math import prod
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .formatting import _format_values

# A head CT is at most ~1024 x 1024 in-plane and ~2000 thin slices (2^31 voxels; 16 GB as float64); a
# header that promises more is damaged or not a head scan, and is refused before anything is allocated.
MAX_VOXELS = 2**31
MAX_BYTES = 16 * 2**30


def _check_size(path: Path, size: Sequence[int], components: int = 1, value_bytes: int = 8) -> None:
    voxels = prod(int(s) for s in size) * max(int(components), 1)
    if voxels > MAX_VOXELS or voxels * value_bytes > MAX_BYTES:
        shape = " x ".join(str(int(s)) for s in size) + (f" x {components} values" if components > 1 else "")
        raise InputError(path, f"header describes {shape} = {voxels:.3g} voxels ({voxels * value_bytes / 2**30:.3g} "
                               f"GiB): more than {MAX_VOXELS:.3g} voxels or {MAX_BYTES // 2**30} GiB is not a head CT "
                               "(a damaged header?)")
    if any(int(s) <= 0 for s in size):
        raise InputError(path, f"header describes an empty image (size {tuple(int(s) for s in size)})")


def _bytes_per_value(pixel_id: int) -> int:
    try:
        return int(sitk.GetArrayViewFromImage(sitk.Image(1, 1, pixel_id)).itemsize)
    except (TypeError, ValueError, RuntimeError):
        return 8  # the largest: the limit errs on the side of refusing


def _check_header_geometry(path: Path, spacing: Sequence[float], origin: Sequence[float],
                           direction: Sequence[float]) -> None:
    """Refuse the geometry no scanner writes: spacing <= 0 or not finite, origin not finite, or
    direction cosines that are not orthonormal (a volume in mL, and every resampling, depend on them)."""
    spacing, origin = np.asarray(spacing, float), np.asarray(origin, float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(path, f"voxel spacing {_format_values(spacing)} is not positive and finite (a damaged header?)")
    if not np.all(np.isfinite(origin)):
        raise InputError(path, f"origin {_format_values(origin)} is not finite (a damaged header?)")
    matrix = np.asarray(direction, float).reshape(len(spacing), len(spacing))
    if not np.all(np.isfinite(matrix)) or np.abs(matrix.T @ matrix - np.eye(len(spacing))).max() > 1e-3:
        raise InputError(path, f"direction cosines {_format_values(np.round(matrix.ravel(), 4))} are not "
                               "orthonormal (a damaged or sheared header?)")


def _check_grey_level(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(path, "holds complex values per voxel; expected a grey-level image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"has {image.GetNumberOfComponentsPerPixel()} values per voxel; "
                               "expected a grey-level image")
    if image.GetDimension() == 4:
        if image.GetSize()[3] != 1:
            raise InputError(path, f"is a 4D image with {image.GetSize()[3]} volumes; expected one 3D image")
        image = image[:, :, :, 0]
    if image.GetDimension() not in (2, 3):
        raise InputError(path, f"is a {image.GetDimension()}D image; expected a 2D or 3D image")
    return image
