"""Brain extraction on small head phantoms (closed or opened skull, a head holder, lone slices), and the bad
inputs it must name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hematoma.errors import InputError
from hematoma.segmentation import brain_mask
from hematoma.segmentation.brain import convex_hull_inplane
from test_segmentation_phantoms import dice, make_chest_phantom, make_head_phantom

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def head():
    return make_head_phantom(neck_slices=3)


def test_brain_mask_matches_the_brain(head):
    ct, _, brain = head
    mask = brain_mask(ct)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == ct.GetSize() and mask.GetSpacing() == ct.GetSpacing()
    assert dice(mask, brain) > 0.97


def test_scalp_skull_and_neck_are_outside(head):
    ct, _, _ = head
    hu = sitk.GetArrayFromImage(ct)
    mask = sitk.GetArrayFromImage(brain_mask(ct)) > 0
    assert not mask[hu > 300].any()  # no bone
    assert not mask[:3].any()  # the neck slices below the skull base (vertebra around the cord)
    # the scalp (soft tissue outside the skull) is not brain: the mask's extent stays inside the skull
    columns = np.nonzero(mask[8].any(axis=0))[0]
    bone_columns = np.nonzero((hu[8] > 300).any(axis=0))[0]
    assert columns.min() > bone_columns.min() and columns.max() < bone_columns.max()


def test_single_axial_slice(head):
    ct, _, brain = head
    slice_2d = ct[:, :, 8]
    mask = brain_mask(slice_2d)
    assert mask.GetDimension() == 2 and mask.GetSize() == slice_2d.GetSize()
    assert dice(mask, brain[:, :, 8]) > 0.97


def test_other_orientation_gives_the_same_mask(head):
    ct, _, _ = head
    reference = brain_mask(ct)
    flipped = sitk.DICOMOrient(ct, "RAI")  # same voxels stored in another order, with another direction
    mask = brain_mask(flipped)
    assert mask.GetDirection() == flipped.GetDirection()
    back = sitk.DICOMOrient(mask, "LPS")
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(reference))


def test_thin_slices():
    ct, _, brain = make_head_phantom(shape_zyx=(24, 110, 96), spacing_xyz=(1.9, 1.9, 1.25), hematoma_radius_mm=None)
    assert dice(brain_mask(ct), brain) > 0.95


def test_chest_ct_has_no_brain():
    with pytest.raises(InputError, match="no brain found"):
        brain_mask(make_chest_phantom(), source="chest.nii.gz")


def test_real_chest_ct_has_no_brain():
    image = SHARED_DATA / "ibsi1_ct_phantom" / "nifti" / "image.nii.gz"
    if not image.exists():
        pytest.skip(f"reference data not available: {image}")
    with pytest.raises(InputError, match="no brain found"):
        brain_mask(sitk.ReadImage(str(image)), source=image)


def test_offset_by_1024_is_named(head):
    ct, _, _ = head
    raw = sitk.Cast(sitk.Cast(ct, sitk.sitkInt32) + 1024, sitk.sitkUInt16)
    with pytest.raises(InputError, match=r"offset by \+1024.*subtract 1024") as error:
        brain_mask(raw, source="raw.nii.gz")
    assert str(error.value).startswith("raw.nii.gz: ")


def test_skull_stripped_image_is_refused(head):
    ct, _, brain = head
    stripped = sitk.Mask(sitk.Clamp(ct, lowerBound=0), brain)
    with pytest.raises(InputError, match="no voxel below 0 HU"):
        brain_mask(stripped)


def test_vector_image_is_refused(head):
    ct, _, _ = head
    rgb = sitk.Compose([ct, ct, ct])
    with pytest.raises(InputError, match="components per voxel"):
        brain_mask(rgb)


# --- an open skull, a head holder, lone slices (issue 12) --------------------------------------------


def _with_skull_gap(ct: sitk.Image, width_mm: float, side: int = 1) -> sitk.Image:
    """The phantom with the skull's bone replaced by scalp over a slab ``width_mm`` wide on one side (+x)."""
    hu = sitk.GetArrayFromImage(ct).astype(np.int16)
    spacing_x, spacing_y = ct.GetSpacing()[:2]
    y = (np.arange(hu.shape[1]) - (hu.shape[1] - 1) / 2.0)[:, None] * spacing_y
    x = (np.arange(hu.shape[2]) - (hu.shape[2] - 1) / 2.0)[None, :] * spacing_x
    slab = (np.abs(y) <= width_mm / 2) & (side * x > 0)
    hu[:, slab & (hu[0] > -500)] = np.minimum(hu[:, slab & (hu[0] > -500)], 35)
    image = sitk.GetImageFromArray(hu)
    image.CopyInformation(ct)
    return image


@pytest.mark.parametrize("width_mm", [10.0, 30.0])
def test_a_craniotomy_does_not_hide_the_brain(head, width_mm):
    ct, _, brain = head
    opened = _with_skull_gap(ct, width_mm)
    assert dice(brain_mask(opened), brain) > 0.96
    assert dice(brain_mask(opened[:, :, 8]), brain[:, :, 8]) > 0.96  # a lone slice through the gap
    # The scalp over the gap stays out: the mask ends inside the skull's outer line.
    columns = np.nonzero((sitk.GetArrayFromImage(brain_mask(opened))[8] > 0).any(axis=0))[0]
    outer = np.nonzero((sitk.GetArrayFromImage(ct)[8] > 300).any(axis=0))[0]
    assert columns.max() < outer.max()


def test_a_head_holder_is_not_taken_for_skull(head):
    ct, _, brain = head
    hu = sitk.GetArrayFromImage(ct).astype(np.int16)
    holder_rows = slice(hu.shape[1] - 8, hu.shape[1] - 4)  # behind the occiput, across the field, in air
    assert (hu[:, holder_rows] < -900).all()
    hu[:, holder_rows] = 300  # carbon fibre
    held = sitk.GetImageFromArray(hu)
    held.CopyInformation(ct)
    assert dice(brain_mask(held), brain) == pytest.approx(dice(brain_mask(ct), brain), abs=0.005)


def test_a_ring_below_bone_density_is_not_a_skull(head):
    ct, _, _ = head
    hu = sitk.GetArrayFromImage(ct).astype(np.int16)
    hu[hu > 120] = 150  # "bone" everywhere at 150 HU: dense tissue, no skull
    soft = sitk.GetImageFromArray(hu)
    soft.CopyInformation(ct)
    with pytest.raises(InputError, match=r"no brain found: .* not surrounded by a skull"):
        brain_mask(soft)


def test_volume_slices_without_brain_are_empty(head):
    ct, _, brain = head  # three neck slices below the skull base; two slices of air added above the vertex
    hu = sitk.GetArrayFromImage(ct)
    taller = sitk.GetImageFromArray(np.concatenate([hu, np.full((2,) + hu.shape[1:], -1000, hu.dtype)]))
    taller.SetOrigin(ct.GetOrigin())
    taller.SetSpacing(ct.GetSpacing())
    mask = sitk.GetArrayFromImage(brain_mask(taller)) > 0
    assert not mask[:3].any() and not mask[-2:].any()
    truth = sitk.GetArrayFromImage(brain) > 0
    assert 2.0 * (mask[:-2] & truth).sum() / (mask.sum() + truth.sum()) > 0.97


def test_lone_slices_without_brain_keep_the_clear_error(head):
    ct, _, _ = head
    for lone in (ct[:, :, 0], make_chest_phantom()[:, :, 3]):  # the neck, a chest
        with pytest.raises(InputError, match="no brain found"):
            brain_mask(lone)


def test_no_slice_of_a_real_chest_ct_is_a_brain():
    image = SHARED_DATA / "ibsi1_ct_phantom" / "nifti" / "image.nii.gz"
    if not image.exists():
        pytest.skip(f"reference data not available: {image}")
    ct = sitk.ReadImage(str(image))
    with pytest.raises(InputError, match="not surrounded by a skull"):
        brain_mask(ct)
    for k in range(ct.GetSize()[2]):  # contrast-enhanced chest: muscles between scapula and ribs, liver, heart
        with pytest.raises(InputError, match="no brain found"):
            brain_mask(ct[:, :, k], source=f"slice {k}")


def test_convex_hull_inplane():
    mask = np.zeros((3, 20, 20), dtype=bool)
    mask[0, 5:15, 5:15] = True  # a square: its own hull
    rr, cc = np.mgrid[:20, :20]
    ring = np.abs(np.hypot(rr - 10, cc - 10) - 7) < 1.0
    mask[1] = ring & (cc < 15)  # a ring with a gap on one side: the hull bridges it
    mask[2, 10, 3:17] = True  # a line encloses nothing
    hull = convex_hull_inplane(mask)
    assert np.array_equal(hull[0], mask[0])
    assert hull[1, 10, 5:14].all() and not hull[1, 10, 18]
    assert not hull[2].any()
