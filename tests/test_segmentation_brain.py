"""Brain extraction on small head phantoms, and the bad inputs it must name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hematoma.errors import InputError
from hematoma.segmentation import brain_mask
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
