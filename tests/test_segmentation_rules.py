"""The rule-based hemorrhage segmenter, one rule at a time, on small phantoms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from hematoma.errors import InputError
from hematoma.io import write_image
from hematoma.segmentation import NoHemorrhageWarning, mask_for_case, segment_hemorrhage
from hematoma.segmentation.hemorrhage import (
    SKULL_MARGIN_MM,
    distance_from_edge_at_least,
    keep_index_hematoma,
    near_calcification,
)
from hematoma.volume import mask_volume_ml
from test_segmentation_phantoms import dice, make_head_phantom


def _segment_quietly(ct, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoHemorrhageWarning)
        return segment_hemorrhage(ct, **kwargs)


def _array(image):
    return sitk.GetArrayFromImage(image) > 0


def test_index_hematoma_is_found_on_the_image_grid():
    ct, truth, _ = make_head_phantom()
    mask = segment_hemorrhage(ct)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == ct.GetSize() and mask.GetOrigin() == ct.GetOrigin()
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}
    assert dice(mask, truth) > 0.95
    assert mask_volume_ml(mask) == pytest.approx(mask_volume_ml(truth), rel=0.05)


def test_edema_is_not_included():
    ct, truth, _ = make_head_phantom(edema_mm=5.0)
    hu = sitk.GetArrayFromImage(ct)
    mask = _array(segment_hemorrhage(ct))
    truth = _array(truth)
    # Edema: the rim just outside the hematoma, 18 HU; the mask may not spread into it
    # by more than the partial-volume voxel at the edge.
    rim = np.zeros_like(truth)
    for shift in range(2, 4):
        for axis in (1, 2):
            rim |= np.roll(truth, shift, axis=axis) | np.roll(truth, -shift, axis=axis)
    rim &= ~truth
    assert np.median(hu[rim]) < 30  # the rim really is edema
    assert (mask & rim).sum() < 0.02 * rim.sum()


def test_calcifications_are_removed():
    # Choroid plexus and pineal calcifications (> 100 HU), no blood: nothing is found.
    ct, _, _ = make_head_phantom(hematoma_radius_mm=None, calcifications=True)
    with pytest.warns(NoHemorrhageWarning):
        mask = segment_hemorrhage(ct)
    assert not _array(mask).any()


def test_calcification_next_to_blood_density_is_removed():
    # A dense spot with a partial-volume halo in the 40-80 HU range (vessel-wall calcification).
    ct, _, _ = make_head_phantom(hematoma_radius_mm=None, calcifications=False, noise_sd=2.0)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    z, y, x = 5, 60, 50
    hu[z, y - 2 : y + 3, x - 2 : x + 3] = 70.0  # halo
    hu[z, y - 1 : y + 2, x - 1 : x + 2] = 400.0  # calcium
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.CopyInformation(ct)
    assert not _array(_segment_quietly(image)).any()


def test_partial_volume_along_the_skull_is_removed():
    ct, _, _ = make_head_phantom(hematoma_radius_mm=None, calcifications=False)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    # Strong partial volume / beam hardening: the brain's outer ~4 mm (3 voxels) at 70 HU.
    bone = hu > 300
    near = bone.copy()
    for _ in range(3):
        grown = near.copy()
        for axis in (1, 2):
            for shift in (1, -1):
                grown |= np.roll(near, shift, axis=axis)
        near = grown
    rim = near & ~bone & (hu > 0) & (hu < 100)
    hu[rim] = 70.0
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.CopyInformation(ct)
    assert rim.sum() > 2000
    assert not _array(_segment_quietly(image)).any()


def test_skull_margin_rule_directly():
    brain = np.zeros((1, 41, 41), dtype=bool)
    brain[0, 5:36, 5:36] = True
    inner = distance_from_edge_at_least(brain, SKULL_MARGIN_MM, spacing_zyx=(5.0, 1.0, 1.0))
    assert inner[0, 8:33, 8:33].all()
    assert not inner[0, 5:8].any() and not inner[0, :, 33:36].any()
    # Thick slices: the slab next to the skull base / vault (or the scan's end) is margin too.
    stack = np.repeat(brain, 4, axis=0)
    inner = distance_from_edge_at_least(stack, SKULL_MARGIN_MM, spacing_zyx=(5.0, 1.0, 1.0))
    assert inner[1:3, 8:33, 8:33].all() and not inner[0].any() and not inner[3].any()


def test_calcification_rule_directly():
    hu = np.full((1, 30, 30), 65.0, dtype=np.float32)  # clot
    hu[0, 14:16, 14:16] = 300.0  # calcification
    hu[0, 3, 3] = 115.0  # one noisy clot voxel above 100 HU: not a calcification
    brain = np.ones_like(hu, dtype=bool)
    near = near_calcification(hu, brain, spacing_zyx=(5.0, 1.0, 1.0))
    assert near[0, 12:18, 12:18].all()
    assert not near[0, 0:8, 0:8].any() and not near[0, 20:, 20:].any()


def test_hematoma_touching_the_skull_is_kept():
    ct, truth, _ = make_head_phantom(hematoma_radius_mm=14.0, hematoma_center_mm=(52.0, 0.0, 0.0))
    assert dice(segment_hemorrhage(ct), truth) > 0.85


def test_isolated_specks_are_removed():
    ct, _, _ = make_head_phantom(hematoma_radius_mm=None, noise_sd=2.0)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    for y, x in ((40, 40), (100, 80), (55, 95)):
        hu[6, y : y + 3, x : x + 3] = 65.0  # 3x3 voxels of blood density: 0.09 mL, blurred to less
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.CopyInformation(ct)
    with pytest.warns(NoHemorrhageWarning):
        mask = segment_hemorrhage(image)
    assert not _array(mask).any()


def test_specks_next_to_a_hematoma_are_not_added():
    ct, truth, _ = make_head_phantom(noise_sd=2.0)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    hu[6, 40:43, 40:43] = 65.0
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.CopyInformation(ct)
    mask = _array(segment_hemorrhage(image))
    assert not mask[6, 38:45, 38:45].any()
    assert dice(sitk.GetImageFromArray(mask.astype(np.uint8)), sitk.GetImageFromArray(_array(truth).astype(np.uint8))) > 0.95


def test_smaller_separate_focus_is_dropped_and_comparable_one_kept():
    ct, truth, _ = make_head_phantom(hematoma_radius_mm=14.0, second_blob_radius_mm=6.0)
    mask = _array(segment_hemorrhage(ct))
    index_truth = _array(make_head_phantom(hematoma_radius_mm=14.0)[1])
    assert mask[index_truth].mean() > 0.9
    assert not (mask & _array(truth) & ~index_truth).any()  # the small focus is not the index hematoma

    ct, truth, _ = make_head_phantom(hematoma_radius_mm=12.0, second_blob_radius_mm=11.0)
    assert dice(segment_hemorrhage(ct), truth) > 0.9  # bilateral, comparable: both kept


def test_keep_index_hematoma_rule_directly():
    candidates = np.zeros((3, 40, 40), dtype=bool)
    candidates[1, 5:15, 5:15] = True  # 100 voxels
    candidates[1, 20:29, 20:29] = True  # 81: comparable, kept
    candidates[1, 32:35, 32:35] = True  # 9: small, dropped
    candidates[0, 0, 39] = True  # speck
    kept = keep_index_hematoma(candidates, spacing_zyx=(5.0, 1.0, 1.0))
    assert kept[1, 5:15, 5:15].all() and kept[1, 20:29, 20:29].all()
    assert not kept[1, 32:35, 32:35].any() and not kept[0].any()


def test_empty_scan_gives_empty_mask_and_a_warning():
    ct, _, _ = make_head_phantom(hematoma_radius_mm=None)
    with pytest.warns(NoHemorrhageWarning, match=r"0 mL"):
        mask = segment_hemorrhage(ct, source="empty.nii.gz")
    assert mask_volume_ml(mask) == 0.0
    assert mask.GetSize() == ct.GetSize()


def test_single_slice():
    ct, truth, _ = make_head_phantom()
    k = int(np.argmax(_array(truth).sum(axis=(1, 2))))
    mask = segment_hemorrhage(ct[:, :, k])
    assert mask.GetDimension() == 2
    assert dice(mask, truth[:, :, k]) > 0.9


def test_offset_image_is_refused():
    ct, _, _ = make_head_phantom()
    with pytest.raises(InputError, match=r"\+1024"):
        segment_hemorrhage(sitk.Cast(ct, sitk.sitkInt32) + 1024, source="offset.nii.gz")


def test_mask_for_case_uses_a_given_mask_and_checks_it(tmp_path):
    ct, truth, _ = make_head_phantom()
    given = sitk.Image(truth)
    given_array = sitk.GetArrayFromImage(given)
    given_array[:] = 0
    given_array[5, 70:80, 40:50] = 1  # brain, away from the clot; not what the segmenter would find: proves it is used as is
    given = sitk.GetImageFromArray(given_array)
    given.CopyInformation(ct)
    path = write_image(given, tmp_path / "mask.nii.gz")
    mask = mask_for_case(ct, tmp_path / "ct.nii.gz", path)
    assert np.array_equal(sitk.GetArrayFromImage(mask), given_array)

    shifted = sitk.Image(given)
    shifted.SetOrigin((5.0, 0.0, 0.0))
    bad = write_image(shifted, tmp_path / "shifted.nii.gz")
    with pytest.raises(InputError, match="origin"):
        mask_for_case(ct, tmp_path / "ct.nii.gz", bad)

    segmented = mask_for_case(ct, tmp_path / "ct.nii.gz", None)
    assert dice(segmented, truth) > 0.95
    assert dice(mask_for_case(ct, tmp_path / "ct.nii.gz", float("nan")), truth) > 0.95
