"""Small hand-made head and chest CT phantoms for the segmentation tests.

Each phantom is built from shapes with literature HU values (brain 30-38,
CSF 5, acute blood 65, edema 18, bone 1000, air -1000), blurred with a small
point-spread function (which creates partial volume along the inner table
of the skull, as in real CT) and given Gaussian noise.  The other test files
import the builders from here; the tests below only check the phantoms.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

BRAIN_SEMI_AXES_MM = (62.0, 78.0, 48.0)  # x (left-right), y (antero-posterior), z
SKULL_MM = 6.0
SCALP_MM = 5.0


def make_head_phantom(
    shape_zyx=(10, 150, 130),
    spacing_xyz=(1.4, 1.4, 5.0),
    hematoma_radius_mm: float | None = 14.0,
    hematoma_center_mm=(25.0, 5.0, 0.0),
    hematoma_hu: float = 65.0,
    edema_mm: float = 4.0,
    calcifications: bool = True,
    second_blob_radius_mm: float | None = None,
    neck_slices: int = 0,
    noise_sd: float = 4.0,
    seed: int = 0,
):
    """Return ``(ct, hematoma_truth, brain_truth)`` as SimpleITK images (int16 HU, UInt8, UInt8).

    The head is an ellipsoidal brain (white matter 30 HU, a 3 mm cortex at
    38 HU, two CSF ventricles) inside a 6 mm skull and a 5 mm scalp.  Optional
    parts: a spherical hematoma with an edema rim, a calcified choroid plexus
    and pineal gland, a second smaller blob of blood, and extra slices below
    the skull base showing a neck (soft tissue, a vertebra around the spinal
    cord) where no skull encloses anything.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    nz_total = nz + neck_slices
    sx, sy, sz = spacing_xyz
    z = (np.arange(nz_total) - neck_slices - (nz - 1) / 2.0)[:, None, None] * sz
    y = (np.arange(ny) - (ny - 1) / 2.0)[None, :, None] * sy
    x = (np.arange(nx) - (nx - 1) / 2.0)[None, None, :] * sx
    ax, ay, az = BRAIN_SEMI_AXES_MM
    # "Radius" of each voxel relative to the brain surface (1 on the surface); scale it into mm outward.
    rho = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2)
    depth_mm = (rho - 1.0) * min(ax, ay)  # > 0 outside the brain, roughly in mm

    hu = np.full((nz_total, ny, nx), -1000.0, dtype=np.float32)
    head = depth_mm <= SKULL_MM + SCALP_MM
    hu[head] = 35.0  # scalp
    hu[(depth_mm > 0) & (depth_mm <= SKULL_MM)] = 1000.0  # skull
    brain = depth_mm <= 0
    hu[brain] = 30.0
    hu[brain & (depth_mm > -3.0)] = 38.0  # cortex
    for side in (-1, 1):
        ventricle = ((x - side * 9) / 5) ** 2 + ((y + 5) / 22) ** 2 + (z / 18) ** 2 <= 1
        hu[ventricle] = 5.0
    if calcifications:
        # choroid plexus (in a ventricle) and pineal gland: dense specks (> 100 HU).
        hu[((x - 9) / 2.5) ** 2 + ((y - 8) / 2.5) ** 2 + (z / 4) ** 2 <= 1] = 250.0
        hu[(x / 2.0) ** 2 + ((y - 22) / 2.0) ** 2 + (z / 4) ** 2 <= 1] = 180.0

    truth = np.zeros(hu.shape, dtype=bool)
    if hematoma_radius_mm:
        cx, cy, cz = hematoma_center_mm
        distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
        hu[brain & (distance <= hematoma_radius_mm + edema_mm)] = 18.0  # perihematomal edema
        truth = brain & (distance <= hematoma_radius_mm)
        hu[truth] = hematoma_hu
    if second_blob_radius_mm:
        distance = np.sqrt((x + 30) ** 2 + (y + 30) ** 2 + z**2)
        blob = brain & (distance <= second_blob_radius_mm)
        hu[blob] = hematoma_hu
        truth |= blob

    if neck_slices:
        neck = np.zeros(hu.shape, dtype=bool)
        neck[:neck_slices] = ((x / 55) ** 2 + (y / 60) ** 2 <= 1)[0]
        hu[:neck_slices] = np.where(neck[:neck_slices], 40.0, -1000.0)
        canal = ((x / 8) ** 2 + ((y - 25) / 8) ** 2 <= 1)[0]
        vertebra = ((x / 14) ** 2 + ((y - 25) / 14) ** 2 <= 1)[0] & ~canal
        hu[:neck_slices][:, vertebra] = 700.0
        hu[:neck_slices][:, canal] = 35.0
        brain = brain.copy()
        brain[:neck_slices] = False
        truth[:neck_slices] = False

    hu = ndi.gaussian_filter(hu, sigma=(0, 0.6 / sy, 0.6 / sx))  # point-spread -> partial volume
    hu += rng.normal(0.0, noise_sd, hu.shape).astype(np.float32)
    return _image(np.round(hu).astype(np.int16), spacing_xyz), _image(truth, spacing_xyz), _image(brain, spacing_xyz)


def make_chest_phantom(shape_zyx=(8, 120, 150), spacing_xyz=(2.0, 2.0, 5.0), seed: int = 0):
    """A chest CT: body, lungs, ribs around them and a vertebra around the spinal cord, no skull."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    sx, sy, _ = spacing_xyz
    y = (np.arange(ny) - (ny - 1) / 2.0)[:, None] * sy
    x = (np.arange(nx) - (nx - 1) / 2.0)[None, :] * sx
    body = (x / 140) ** 2 + (y / 100) ** 2 <= 1
    plane = np.where(body, 40.0, -1000.0)
    plane[body & ((x / 140) ** 2 + (y / 100) ** 2 > 0.85)] = -100.0  # subcutaneous fat
    for side in (-1, 1):
        plane[((x - side * 65) / 50) ** 2 + (y / 70) ** 2 <= 1] = -850.0
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for angle in angles:  # ribs: separate dense dots 2 cm apart
        rx, ry = 125 * np.cos(angle), 88 * np.sin(angle)
        plane[((x - rx) / 6) ** 2 + ((y - ry) / 6) ** 2 <= 1] = 700.0
    canal = (x / 8) ** 2 + ((y - 70) / 8) ** 2 <= 1
    plane[((x / 16) ** 2 + ((y - 70) / 16) ** 2 <= 1) & ~canal] = 700.0
    plane[canal] = 35.0
    hu = np.repeat(plane[None].astype(np.float32), nz, axis=0) + rng.normal(0, 5, (nz, ny, nx)).astype(np.float32)
    return _image(np.round(hu).astype(np.int16), spacing_xyz)


def _image(array: np.ndarray, spacing_xyz) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8) if array.dtype == bool else array)
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    return image


def dice(a: sitk.Image, b: sitk.Image) -> float:
    x = sitk.GetArrayViewFromImage(a) > 0
    y = sitk.GetArrayViewFromImage(b) > 0
    total = x.sum() + y.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(x, y).sum() / total


def test_head_phantom_has_literature_values():
    ct, truth, brain = make_head_phantom(noise_sd=0.0, calcifications=False)
    hu = sitk.GetArrayFromImage(ct)
    blood = hu[sitk.GetArrayFromImage(truth) > 0]
    assert 55 <= np.median(blood) <= 70
    assert hu.min() == -1000 and hu.max() >= 900
    assert sitk.GetArrayFromImage(brain).sum() > 0


def test_chest_phantom_has_no_skull_ring():
    hu = sitk.GetArrayFromImage(make_chest_phantom())
    assert (hu < -700).mean() > 0.2  # air and lungs
