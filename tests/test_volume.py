import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.volume import HE_DEFINITIONS, label_expansion, mask_volume_ml, voxel_volume_ml


def _mask(voxels: int, spacing=(0.5, 0.5, 5.0), shape=(20, 40, 40)) -> sitk.Image:
    array = np.zeros(shape, dtype=np.uint8)
    array.reshape(-1)[:voxels] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_volume_uses_spacing():
    # 0.5 x 0.5 x 5 mm = 1.25 mm^3 per voxel; 800 voxels = 1000 mm^3 = 1 mL
    assert mask_volume_ml(_mask(800)) == pytest.approx(1.0)
    assert mask_volume_ml(_mask(800, spacing=(1.0, 1.0, 1.0))) == pytest.approx(0.8)
    assert voxel_volume_ml(_mask(1, spacing=(2.0, 2.0, 2.0))) == pytest.approx(0.008)


def test_empty_mask_is_zero_ml():
    assert mask_volume_ml(_mask(0)) == 0.0


@pytest.mark.parametrize(
    "baseline, followup, expected",
    [
        (20.0, 26.0, False),  # exactly +6 mL (30 %): not expansion
        (20.0, 26.01, True),  # just above 6 mL
        (10.0, 13.3, False),  # exactly +33 %
        (10.0, 13.31, True),  # just above 33 %
        (30.0, 35.0, False),  # +5 mL, +16.7 %
        (0.0, 5.0, False),  # no relative growth from 0 mL
        (0.0, 6.5, True),
        (40.0, 30.0, False),  # shrinkage
    ],
)
def test_default_definition_boundaries(baseline, followup, expected):
    assert label_expansion(baseline, followup) is expected


def test_other_definitions():
    assert label_expansion(50.0, 62.0, "12.5ml-or-33pct") is False  # +12 mL, +24 %
    assert label_expansion(50.0, 62.51, "12.5ml-or-33pct") is True
    assert label_expansion(50.0, 57.0, "6ml") is True
    assert label_expansion(50.0, 57.0, "33pct") is False
    assert label_expansion(3.0, 4.0, "6ml") is False
    assert label_expansion(3.0, 4.0, "33pct") is True
    assert set(HE_DEFINITIONS) == {"6ml-or-33pct", "12.5ml-or-33pct", "33pct", "6ml"}


def test_cli_volume_and_label(tmp_path):
    base, follow = tmp_path / "b.nii.gz", tmp_path / "f.nii.gz"
    sitk.WriteImage(_mask(8000), str(base))  # 10 mL
    sitk.WriteImage(_mask(12000), str(follow))  # 15 mL: +50 %
    runner = CliRunner()
    result = runner.invoke(app, ["volume", str(base)])
    assert result.exit_code == 0, result.output
    assert "10.00 mL" in result.output
    result = runner.invoke(app, ["label", "--baseline", str(base), "--followup", str(follow)])
    assert result.exit_code == 0, result.output
    assert "HE=yes" in result.output
    result = runner.invoke(app, ["label", "--baseline", str(base), "--followup", str(follow), "--definition", "6ml"])
    assert "HE=no" in result.output


def test_cli_empty_followup_is_zero_not_error(tmp_path):
    base, follow = tmp_path / "b.nii.gz", tmp_path / "f.nii.gz"
    sitk.WriteImage(_mask(8000), str(base))
    sitk.WriteImage(_mask(0), str(follow))
    result = CliRunner().invoke(app, ["label", "--baseline", str(base), "--followup", str(follow)])
    assert result.exit_code == 0, result.output
    assert "follow-up 0.00 mL" in result.output and "HE=no" in result.output


def test_cli_unknown_definition_one_line(tmp_path):
    base = tmp_path / "b.nii.gz"
    sitk.WriteImage(_mask(10), str(base))
    result = CliRunner().invoke(app, ["label", "--baseline", str(base), "--followup", str(base), "--definition", "7ml"])
    assert result.exit_code == 2
    assert "unknown HE definition '7ml'" in result.output
