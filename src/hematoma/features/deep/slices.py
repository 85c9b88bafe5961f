"""The CNN's inputs: three 3-channel 299x299 images around the hematoma's largest slice.

Slices: the axial slice with the largest hematoma area and the 3 slices below
and above it (7 slices; at the volume's edge the edge slice is repeated).
Channels are adjacent slices, so the three images are the offsets
(-3, -2, -1), (-1, 0, +1) and (+1, +2, +3): together exactly slices -3..+3,
none duplicated (the authors' code built one stack twice).

Each slice is put through a brain window (W80/L40 by default), cropped to a
square (in mm, from the in-plane spacing) around the hematoma's bounding box on
those 7 slices plus a margin, resampled to 299x299 and normalised with the
ImageNet mean and standard deviation that torchvision's weights expect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ...errors import InputError

# Offsets from the largest slice of the three images' channels.
STACK_OFFSETS = ((-3, -2, -1), (-1, 0, 1), (1, 2, 3))
HALF_SPAN = 3
N_STACKS = len(STACK_OFFSETS)
IMAGE_SIZE = 299  # Inception v3's input size
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class SliceSettings:
    """How a case becomes the CNN's three images (stored with a trained CNN)."""

    window_width: float = 80.0  # HU
    window_level: float = 40.0  # HU
    margin_mm: float = 10.0  # around the hematoma's bounding box, each side
    image_size: int = IMAGE_SIZE

    def __post_init__(self):
        if not self.window_width > 0:
            raise InputError(None, f"window width must be > 0 HU, got {self.window_width}")
        if not self.margin_mm >= 0:
            raise InputError(None, f"crop margin must be >= 0 mm, got {self.margin_mm}")
        if self.image_size < 75:  # torchvision's minimum for Inception v3
            raise InputError(None, f"image size must be >= 75 px for Inception v3, got {self.image_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SliceSettings":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass
class Stacks:
    """The three images of one case and where they came from."""

    images: np.ndarray  # (3 images, 3 channels, size, size) float32, normalised
    windowed: np.ndarray  # the same before ImageNet normalisation, in [0, 1]
    center_slice: int  # index (in the LPS-oriented volume) of the largest-area slice
    slice_indices: tuple[int, ...]  # the 7 slices -3..+3 (edge repeated)
    stack_indices: tuple[tuple[int, int, int], ...]  # the slices of each image's channels
    crop_mm: float  # side of the square crop


def orient_axial(image: sitk.Image) -> sitk.Image:
    """Reorient to LPS so that array axis 0 runs foot->head and each array slice is axial.

    Rows then run anterior->posterior and columns patient right->left (the radiological view).
    """
    if image.GetDimension() != 3:
        raise InputError(None, f"expected a 3D image, got {image.GetDimension()}D")
    return sitk.DICOMOrient(image, "LPS")


def largest_slice(mask_array: np.ndarray) -> int:
    """Index along axis 0 of the slice with the most hematoma voxels (the first if tied)."""
    areas = mask_array.reshape(mask_array.shape[0], -1).sum(axis=1)
    if areas.max() == 0:
        raise InputError(None, "the hematoma mask is empty: no slice to feed the CNN")
    return int(np.argmax(areas))


def slice_window(center: int, n_slices: int, half_span: int = HALF_SPAN) -> tuple[int, ...]:
    """Slices center-3..center+3, clipped to the volume (the edge slice repeats)."""
    return tuple(int(i) for i in np.clip(np.arange(center - half_span, center + half_span + 1), 0, n_slices - 1))


def stack_indices(window: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """The channels of the three images: offsets (-3,-2,-1), (-1,0,+1), (+1,+2,+3)."""
    return tuple(tuple(window[offset + HALF_SPAN] for offset in offsets) for offsets in STACK_OFFSETS)


def apply_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """HU -> [0, 1] through the display window (values outside it clip)."""
    low = level - width / 2.0
    return np.clip((hu.astype(np.float32) - low) / np.float32(width), 0.0, 1.0)


def crop_square(mask_slices: np.ndarray, spacing_yx: tuple[float, float], margin_mm: float):
    """Centre (row, column, in pixels) and side (mm) of the square crop around the hematoma."""
    rows, columns = np.nonzero(mask_slices.any(axis=0))
    center = ((rows.min() + rows.max()) / 2.0, (columns.min() + columns.max()) / 2.0)
    # Extent in mm includes the voxels' own width (a one-voxel hematoma is one pixel wide).
    extent_mm = max((rows.max() - rows.min() + 1) * spacing_yx[0], (columns.max() - columns.min() + 1) * spacing_yx[1])
    return center, float(extent_mm + 2.0 * margin_mm)


def resample_square(slices: np.ndarray, center: tuple[float, float], side_mm: float,
                    spacing_yx: tuple[float, float], size: int) -> np.ndarray:
    """Sample a side_mm x side_mm square centred at ``center`` onto size x size pixels.

    Outside the volume the value is 0 (air after windowing).  Hand-written with
    scipy's map_coordinates because the crop may leave the volume and the
    in-plane spacing may differ between rows and columns; a Gaussian prefilter
    avoids aliasing when the crop has more pixels than the output.
    """
    out = np.empty((slices.shape[0], size, size), dtype=np.float32)
    step = np.array([side_mm / size / spacing_yx[0], side_mm / size / spacing_yx[1]])  # input px per output px
    grid = (np.arange(size, dtype=np.float64) + 0.5 - size / 2.0)
    rows = center[0] + grid[:, None] * step[0] + np.zeros((1, size))
    columns = center[1] + grid[None, :] * step[1] + np.zeros((size, 1))
    sigma = np.maximum(step - 1.0, 0.0) / 2.0
    for k, plane in enumerate(slices):
        if sigma.any():
            plane = ndimage.gaussian_filter(plane, sigma=sigma, mode="constant", cval=0.0)
        out[k] = ndimage.map_coordinates(plane, [rows, columns], order=1, mode="constant", cval=0.0)
    return out


def normalize_imagenet(windowed: np.ndarray) -> np.ndarray:
    """[0, 1] images (..., 3, H, W) -> ImageNet-normalised (per-channel mean and std)."""
    return ((windowed - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)


def arrays_for(ct: sitk.Image, mask: sitk.Image) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """HU and mask arrays (z, y, x) in the LPS orientation, and the (row, column) spacing in mm."""
    from ...io import check_geometry

    check_geometry(ct, mask, None, None)
    ct_lps, mask_lps = orient_axial(ct), orient_axial(mask)
    spacing = ct_lps.GetSpacing()  # (x, y, z)
    # Copies, not views: a view dies with the reoriented image when this function returns.
    return (sitk.GetArrayFromImage(ct_lps), sitk.GetArrayFromImage(mask_lps) != 0,
            (float(spacing[1]), float(spacing[0])))


def make_stacks(ct: sitk.Image, mask: sitk.Image, settings: SliceSettings | None = None) -> Stacks:
    """The three CNN input images of a case (see the module's docstring)."""
    settings = settings or SliceSettings()
    hu, hematoma, spacing_yx = arrays_for(ct, mask)
    center = largest_slice(hematoma)
    window = slice_window(center, hu.shape[0])
    unique = sorted(set(window))
    crop_center, side_mm = crop_square(hematoma[unique], spacing_yx, settings.margin_mm)
    windowed_slices = apply_window(hu[unique], settings.window_width, settings.window_level)
    sampled = resample_square(windowed_slices, crop_center, side_mm, spacing_yx, settings.image_size)
    position = {index: k for k, index in enumerate(unique)}
    channels = stack_indices(window)
    windowed = np.stack([sampled[[position[i] for i in stack]] for stack in channels])
    return Stacks(images=normalize_imagenet(windowed), windowed=windowed, center_slice=center,
                  slice_indices=window, stack_indices=channels, crop_mm=side_mm)
