"""Masks that cannot be a hematoma are refused; every mask a real hematoma can be passes (issue 15, group 6)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.io import write_image
from hematoma.mask_checks import AIR_HU_BELOW, MAX_HEMATOMA_ML, check_hematoma_mask
from hematoma.segmentation import mask_for_case

runner = CliRunner()
SHAPE = (90, 120, 120)  # z, y, x at 1 mm


def image(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    result = sitk.GetImageFromArray(array)
    result.SetSpacing(spacing)
    return result


def grid():
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return z - SHAPE[0] / 2, y - SHAPE[1] / 2, x - SHAPE[2] / 2


def head_ct() -> sitk.Image:
    """Brain (30 HU) in an ellipsoid, air (-1000 HU) around it; not a generator's constants, just HU."""
    z, y, x = grid()
    inside = (z / 44) ** 2 + (y / 58) ** 2 + (x / 50) ** 2 <= 1
    return image(np.where(inside, 30, -1000).astype(np.int16))


def sphere(radius_mm: float, centre=(0, 0, 0)) -> np.ndarray:
    z, y, x = grid()
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius_mm**2).astype(np.uint8)


# ------------------------------------------------------------------------- masks a hematoma can be


def test_real_hematoma_masks_pass():
    ct = head_ct()
    large = sphere(33.0)  # 4/3 pi 33^3 ~ 150 mL, a very large clot
    assert 140 < large.sum() / 1000 < 160
    check_hematoma_mask(image(large), "large.nii.gz", ct)
    check_hematoma_mask(image(sphere(1.0)), "small.nii.gz", ct)  # a few voxels
    check_hematoma_mask(image(np.zeros(SHAPE, np.uint8)), "empty.nii.gz", ct)  # 0 mL is valid
    touching = sphere(10.0, centre=(0, 0, -55))
    touching[45, 55:60, 0] = 1  # a clot cut by a tight field of view: a few border voxels
    check_hematoma_mask(image(touching), "touching.nii.gz")


def test_a_mask_partly_in_air_passes():
    ct = head_ct()
    mask = sphere(8.0, centre=(0, 0, 46))  # straddles the brain's edge at x = +50
    in_air = (sitk.GetArrayViewFromImage(ct)[mask == 1] < AIR_HU_BELOW).mean()
    assert 0.05 < in_air < 0.5
    check_hematoma_mask(image(mask), "edge.nii.gz", ct)


# --------------------------------------------------------------------- masks a hematoma cannot be


def test_a_mask_larger_than_the_skull_is_refused_with_the_volume_and_bound():
    mask = image(np.ones((30, 256, 256), np.uint8), spacing=(0.9, 0.9, 5.0))  # 7.96 L
    with pytest.raises(InputError) as error:
        check_hematoma_mask(mask, "all_ones.nii.gz")
    message = str(error.value)
    assert message.startswith("all_ones.nii.gz: mask of 7962.6 mL cannot be a hematoma")
    assert f"{MAX_HEMATOMA_ML:.0f} mL" in message and "intracranial volume" in message


def test_a_mask_covering_a_whole_slice_border_is_refused_naming_the_slice():
    mask = sphere(10.0)
    mask[7] = 1  # slice 7 filled: every edge voxel of it is set
    with pytest.raises(InputError, match=r"mask of \d+\.\d mL cannot be a hematoma: it covers the whole "
                                         r"border of slice 7,") as error:
        check_hematoma_mask(image(mask), "filled.nii.gz")
    assert error.value.path.name == "filled.nii.gz"
    inverted = 1 - sphere(10.0)  # an inverted mask of a small image stays under the volume bound
    assert inverted.sum() / 1000 < MAX_HEMATOMA_ML
    with pytest.raises(InputError, match=r"border of slice 0 \(and 89 other slices\)"):
        check_hematoma_mask(image(inverted), "inverted.nii.gz")


def test_a_2d_mask_is_checked_as_one_slice():
    with pytest.raises(InputError, match="border of slice 0"):
        check_hematoma_mask(image(np.ones((128, 128), np.uint8), spacing=(1.0, 1.0)), "slice.nii.gz")
    check_hematoma_mask(image(sphere(5.0)[45], spacing=(1.0, 1.0)), "slice.nii.gz")


def test_a_small_crop_inside_a_clot_may_be_all_mask():
    # 40 x 40 voxels at 0.5 mm: a 20 mm crop, narrower than a clot can be; its edge may be all blood.
    check_hematoma_mask(image(np.ones((8, 40, 40), np.uint8), spacing=(0.5, 0.5, 5.0)), "crop.nii.gz")
    with pytest.raises(InputError, match="border of slice 0"):  # the same on a head-sized field of view
        check_hematoma_mask(image(np.ones((8, 200, 200), np.uint8), spacing=(0.5, 0.5, 5.0)), "wide.nii.gz")


def test_a_mask_mostly_in_air_is_refused_with_the_ct():
    mask = sphere(6.0, centre=(0, 50, 50))  # outside the head's ellipsoid, inside the image
    with pytest.raises(InputError, match=r"outside.nii.gz: mask cannot be a hematoma: 100% of its \d+ voxels are "
                                         r"air in the CT \(below -200 HU; at most 50% allowed\)"):
        check_hematoma_mask(image(mask), "outside.nii.gz", head_ct())
    check_hematoma_mask(image(mask), "outside.nii.gz")  # without the CT there is nothing to tell


def test_mask_for_case_refuses_a_given_impossible_mask(tmp_path):
    ct = head_ct()
    ct_path = write_image(ct, tmp_path / "ct.nii.gz")
    good = write_image(image(sphere(10.0)), tmp_path / "good.nii.gz")
    assert sitk.GetArrayViewFromImage(mask_for_case(ct, ct_path, good)).sum() == sphere(10.0).sum()
    outside = write_image(image(sphere(6.0, centre=(0, 50, 50))), tmp_path / "outside.nii.gz")
    with pytest.raises(InputError, match="outside.nii.gz: mask cannot be a hematoma: 100%"):
        mask_for_case(ct, ct_path, outside)


# ------------------------------------------------------------------------- the CLI cases


@pytest.fixture
def all_ones(tmp_path):
    # An all-ones mask on a head CT's grid (512 x 512 x 30 at 0.45 x 0.45 x 5 mm): 7.96 litres.
    return write_image(image(np.ones((30, 512, 512), np.uint8), spacing=(0.45, 0.45, 5.0)),
                       tmp_path / "all_ones.nii.gz")


def test_volume_refuses_an_all_ones_mask(all_ones):
    result = runner.invoke(app, ["volume", str(all_ones)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "all_ones.nii.gz: mask of 7962.6 mL cannot be a hematoma" in lines[0] and "2000 mL" in lines[0]


def test_label_refuses_an_all_ones_mask(all_ones, tmp_path):
    baseline = write_image(image(sphere(10.0), spacing=(0.45, 0.45, 5.0)), tmp_path / "baseline.nii.gz")
    result = runner.invoke(app, ["label", "--baseline", str(baseline), "--followup", str(all_ones)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "mask of 7962.6 mL" in lines[0] and "2000 mL" in lines[0]
    assert "HE=" not in result.output


def test_volume_refuses_a_small_all_ones_mask_by_its_border(tmp_path):
    # 128 mm across at 1 mm: a head's field of view; 164 mL stays under the volume bound.
    path = write_image(image(np.ones((10, 128, 128), np.uint8)), tmp_path / "small_ones.nii.gz")
    result = runner.invoke(app, ["volume", str(path)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "whole border of slice 0" in result.output
