"""SimpleITK images and numpy arrays, one to the other, the geometry kept."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def as_3d(image: sitk.Image, spacing_z: float = 1.0) -> sitk.Image:
    """A 2D image as a 1-slice 3D image (z spacing ``spacing_z``); 3D images are returned as they are."""
    if image.GetDimension() == 3:
        return image
    if image.GetDimension() != 2:
        raise ValueError(f"expected a 2D or 3D image, got {image.GetDimension()}D")
    return sitk.JoinSeries([image], 0.0, float(spacing_z))


def image_to_array(image: sitk.Image) -> np.ndarray:
    """The voxel values as a numpy array indexed (z, y, x) (a copy)."""
    return sitk.GetArrayFromImage(image)


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image of ``array`` (z, y, x) on ``reference``'s grid (spacing, origin, direction)."""
    image = sitk.GetImageFromArray(np.asarray(array))
    image.CopyInformation(reference)
    return image
