"""A DICOM series whose slices are not evenly spaced (a missing slice, variable spacing) or not stacked
along the slice normal (gantry tilt), resampled onto a regular grid with a warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .arrays import array_to_image
from .formatting import _format_values
from .itk_capture import ImageWarning

AIR_HU = -1024.0
# Slice gaps that differ by more than this fraction of the slice spacing are "non-uniform";
# an in-plane drift of more than this fraction of the stack's height is "gantry tilt".
SPACING_TOLERANCE = 0.01


def _regularise(image: sitk.Image, positions: np.ndarray, normal: np.ndarray, folder: Path) -> sitk.Image:
    """Resample a series with uneven slice gaps or gantry tilt onto a regular grid (else return it)."""
    heights = (positions - positions[0]) @ normal
    gaps = np.diff(heights)
    spacing_z = float(np.median(gaps))
    uneven = bool(np.any(np.abs(gaps - spacing_z) > SPACING_TOLERANCE * spacing_z))
    # In-plane drift of the last slice from the line through the first along the normal.
    drift = (positions[-1] - positions[0]) - heights[-1] * normal
    tilted = bool(np.linalg.norm(drift) > SPACING_TOLERANCE * heights[-1])
    if not (uneven or tilted):
        return image

    problems = []
    if uneven:
        problems.append(f"slice spacing is not uniform (gaps of {_format_values(np.unique(np.round(gaps, 3)))} mm)")
    if tilted:
        angle = np.degrees(np.arctan2(np.linalg.norm(drift), heights[-1]))
        problems.append(f"gantry tilt of {angle:.1f} degrees (slice positions not along the slice normal)")

    array = sitk.GetArrayViewFromImage(image)
    if uneven:
        # SimpleITK cannot sample from unevenly spaced slices, so interpolate along the stack first.
        from scipy.interpolate import interp1d  # here: ~0.2 s to import, and most scans never need it
        count = int(np.floor(heights[-1] / spacing_z + 1e-3)) + 1
        targets = np.minimum(np.arange(count) * spacing_z, heights[-1])
        array = interp1d(heights, array, axis=0, assume_sorted=True)(targets)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    row, column = direction[:, 0], direction[:, 1]
    stack = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    # The stack as if its slices were along the normal; the tilt is undone by the transform below.
    stack.SetOrigin(tuple(positions[0]))
    stack.SetSpacing((image.GetSpacing()[0], image.GetSpacing()[1], spacing_z))
    stack.SetDirection(tuple(np.column_stack([row, column, normal]).ravel()))
    result = stack
    if tilted:
        result = _untilt(stack, drift, heights[-1], row, column)
    stored_type = sitk.GetArrayViewFromImage(image).dtype
    if np.issubdtype(stored_type, np.signedinteger):  # keep HU integers (air, -1024, fits)
        result = array_to_image(np.rint(sitk.GetArrayViewFromImage(result)).astype(stored_type), result)
    spacing = tuple(round(s, 4) for s in result.GetSpacing())
    warnings.warn(f"{folder}: {'; '.join(problems)}; resampled onto a regular grid of spacing {spacing} mm "
                  f"({image.GetSize()[2]} slices -> {result.GetSize()[2]})", ImageWarning, stacklevel=4)
    return result


def _untilt(stack: sitk.Image, drift: np.ndarray, height: float, row: np.ndarray, column: np.ndarray) -> sitk.Image:
    """Resample a sheared stack (slice k shifted in-plane by drift * z_k / height) onto an orthogonal grid.

    The grid grows in-plane so that no slice's content is cut off.
    """
    origin = np.array(stack.GetOrigin())
    normal = np.cross(row, column)
    # A point x of the scanner maps to where the unsheared stack stores it: x - drift * height_of(x) / height.
    shear = sitk.AffineTransform(3)
    shear.SetMatrix(tuple((np.eye(3) - np.outer(drift, normal) / height).ravel()))
    shear.SetCenter(tuple(origin))
    spacing = np.array(stack.GetSpacing())
    size = list(stack.GetSize())
    for axis, (unit, step) in enumerate(((row, spacing[0]), (column, spacing[1]))):
        along = float(drift @ unit)
        extra = int(np.ceil(abs(along) / step - 1e-6))
        size[axis] += extra
        if along < 0:
            origin = origin - extra * step * unit
    return sitk.Resample(stack, size, shear, sitk.sitkLinear, tuple(origin), tuple(spacing),
                         stack.GetDirection(), AIR_HU, sitk.sitkFloat32)
