"""`hematoma predict` inputs (issue 15, groups 6, 8, 9): clinical column rules, --series, version flag, impossible masks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.cohort import load_manifest
from hematoma.errors import ManifestError
from hematoma.io import read_image
from hematoma.model import build_model, fit_model, model_inputs
from hematoma.model_bundle import save_model

from test_io import axial_positions, write_ct_series

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small clinical model (sbp, age and the baseline volume): predict needs no CNN nor segmenter for it."""
    rng = np.random.default_rng(0)
    n = 60
    he = rng.integers(0, 2, n)
    table = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "he": he,
                          "clin_sbp": 140 + 20 * he + rng.normal(0, 10, n), "clin_age": rng.normal(65, 10, n),
                          "clin_baseline_volume_ml": 20 + 10 * he + rng.normal(0, 5, n)})
    X, y = model_inputs(table)
    estimator = fit_model(build_model(classifier="logistic", groups=("clin",), k_grid=("all",), cv=3, grid="small"), X, y)
    return save_model(estimator, tmp_path_factory.mktemp("predict") / "model", settings={"groups": ["clin"]})


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A small synthetic head CT and its hematoma mask, as files: (ct, mask)."""
    from hematoma.synthetic import make_head_ct

    folder = tmp_path_factory.mktemp("head")
    ct, mask = make_head_ct(size="small", seed=0, hematoma_ml=20.0)
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"))
    sitk.WriteImage(mask, str(folder / "mask.nii.gz"))
    return folder / "ct.nii.gz", folder / "mask.nii.gz"


def _predict(model, ct, mask, tmp_path, *args):
    return runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--mask", str(mask),
                               "--overlay", str(tmp_path / "o.png"), *args])


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# --------------------------------------------------------------------------- clinical columns (group 8)


def test_a_misspelt_clinical_column_is_refused_with_the_meant_name(model, head, tmp_path):
    """The issue: with sbp_mmhg the given value was ignored and sbp imputed, silently."""
    ct, mask = head
    (tmp_path / "clinical.csv").write_text("patient_id,sbp_mmhg,age\np1,185,70\n")
    line = _one_line(_predict(model, ct, mask, tmp_path, "--clinical", str(tmp_path / "clinical.csv")))
    assert str(tmp_path / "clinical.csv") in line and "unknown column 'sbp_mmhg' (did you mean 'sbp'?)" in line
    assert not (tmp_path / "o.png").exists()

    result = _predict(model, ct, mask, tmp_path, "--clinical", str(tmp_path / "clinical.csv"),
                      "--ignore-column", "sbp_mmhg")
    assert result.exit_code == 0, result.output
    assert "imputed by the model: sbp" in result.output and (tmp_path / "o.png").is_file()


def test_set_names_follow_the_same_rules(model, head, tmp_path):
    ct, mask = head
    line = _one_line(_predict(model, ct, mask, tmp_path, "--set", "sbp_mmhg=185", "--set", "age=70"))
    assert "unknown clinical variable 'sbp_mmhg' (did you mean 'sbp'?" in line
    result = _predict(model, ct, mask, tmp_path, "--set", "sbp_mmhg=185", "--set", "age=70",
                      "--ignore-column", "sbp_mmhg")
    assert result.exit_code == 0 and "imputed by the model: sbp" in result.output, result.output


def test_given_values_are_used(model, head, tmp_path):
    ct, mask = head
    (tmp_path / "clinical.csv").write_text("patient_id,SBP,age\np1,185,70\n")
    line = _one_line(_predict(model, ct, mask, tmp_path, "--clinical", str(tmp_path / "clinical.csv")))
    assert "unknown column 'SBP' (did you mean 'sbp'?)" in line
    (tmp_path / "clinical.csv").write_text("patient_id,sbp,age,lactate\np1,185,70,2.1\n")
    line = _one_line(_predict(model, ct, mask, tmp_path, "--clinical", str(tmp_path / "clinical.csv")))
    assert "unknown column 'lactate' (declare it with --extra-column" in line
    result = _predict(model, ct, mask, tmp_path, "--clinical", str(tmp_path / "clinical.csv"),
                      "--extra-column", "lactate", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "imputed" not in result.output  # sbp and age given, the volume computed


def test_a_manifest_is_a_valid_clinical_file(model, head, tmp_path):
    ct, mask = head
    (tmp_path / "manifest.csv").write_text(
        "patient_id,baseline_ct,baseline_mask,he,baseline_series,sbp,age\n"
        f"p1,{ct},{mask},1,,185,70\np2,{ct},{mask},0,,120,50\n")
    result = _predict(model, ct, mask, tmp_path, "--clinical", str(tmp_path / "manifest.csv"), "--patient-id", "p2")
    assert result.exit_code == 0 and result.output.startswith("p2: probability of HE"), result.output


# --------------------------------------------------------------------------- masks (group 6, in predict)


def test_an_all_ones_mask_is_refused_before_any_prediction(model, head, tmp_path):
    ct, _ = head
    image = sitk.ReadImage(str(ct))
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    sitk.WriteImage(ones, str(tmp_path / "ones.nii.gz"))
    line = _one_line(_predict(model, ct, tmp_path / "ones.nii.gz", tmp_path))
    assert str(tmp_path / "ones.nii.gz") in line and "cannot be a hematoma" in line
    assert "probability" not in line and not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------- series and versions (group 9)


def test_predict_reads_the_series_chosen_with_series(model, tmp_path):
    """The issue: "choose one with --series UID" when no command had --series (two equal-size series)."""
    hu = np.full((6, 24, 24), 30, dtype=np.int16)
    hu[2:4, 8:14, 8:14] = 65  # a small bright blob
    first = write_ct_series(tmp_path / "dicom", hu, axial_positions(6), names=[f"a{k}" for k in range(6)])
    second = write_ct_series(tmp_path / "dicom", hu + 5, axial_positions(6), names=[f"b{k}" for k in range(6)])
    image = read_image(tmp_path / "dicom", series_uid=second)
    mask = sitk.Cast(image > 60, sitk.sitkUInt8)  # the blob of the second series (70 HU; 35 around it)
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))

    line = _one_line(_predict(model, tmp_path / "dicom", tmp_path / "mask.nii.gz", tmp_path))
    assert "--series" in line and first in line and second in line
    result = _predict(model, tmp_path / "dicom", tmp_path / "mask.nii.gz", tmp_path, "--series", second)
    assert result.exit_code == 0, result.output
    expected_ml = 2 * 6 * 6 * 0.5 * 0.5 * 5.0 / 1000
    assert f"hematoma {expected_ml:.1f} mL" in result.output
    line = _one_line(_predict(model, tmp_path / "dicom", tmp_path / "mask.nii.gz", tmp_path, "--series", "1.2.3",
                              "--overwrite"))
    assert "no series 1.2.3" in line


def test_manifest_series_columns_validate(tmp_path):
    (tmp_path / "ct").mkdir()
    uid = "1.2.826.0.1.3680043.8.498.12345"
    (tmp_path / "m.csv").write_text(f"patient_id,baseline_ct,followup_ct,baseline_series,followup_series\n"
                                    f"p1,ct,ct,{uid},\np2,ct,ct,,{uid}.2\n")
    table = load_manifest(tmp_path / "m.csv").table
    assert table.loc[0, "baseline_series"] == uid and table.loc[1, "followup_series"] == uid + ".2"
    assert pd.isna(table.loc[1, "baseline_series"])
    (tmp_path / "m.csv").write_text("patient_id,baseline_ct,baseline_series\np1,ct,series one\n")
    with pytest.raises(ManifestError, match="row 2: baseline_series 'series one' is not a DICOM SeriesInstanceUID"):
        load_manifest(tmp_path / "m.csv")


def test_allow_version_mismatch_is_a_flag_of_predict(model, head, tmp_path):
    """The issue: 'allow the mismatch explicitly' was advised with no such flag."""
    ct, mask = head
    tampered = tmp_path / "model"
    tampered.mkdir()
    for name in ("model.skops", "bundle.json"):
        (tampered / name).write_bytes((model / name).read_bytes())
    meta = json.loads((tampered / "bundle.json").read_text())
    meta["versions"]["scikit-learn"] = "0.24.2"
    (tampered / "bundle.json").write_text(json.dumps(meta))
    line = _one_line(_predict(tampered, ct, mask, tmp_path))
    assert "scikit-learn 0.24.2" in line and "--allow-version-mismatch" in line
    result = _predict(tampered, ct, mask, tmp_path, "--allow-version-mismatch")
    assert result.exit_code == 0 and "probability of HE" in result.output, result.output


# ---------------------------------------------------------------- outputs never land on inputs (hostile sweep, round 2)


@pytest.mark.parametrize("option, target", [("--report", "ct"), ("--overlay", "mask"), ("--report", "clinical")])
def test_predict_never_writes_an_output_over_its_inputs_even_with_overwrite(model, head, tmp_path, option, target):
    # Seen: `predict --report CT --overwrite` replaced the patient's CT by the HTML report, exit 0.
    import shutil

    ct, mask = (shutil.copy(path, tmp_path / path.name) for path in head)
    clinical = tmp_path / "clinical.csv"
    pd.DataFrame({"patient_id": ["x"], "sbp": [150], "age": [70]}).to_csv(clinical, index=False)
    victim = {"ct": ct, "mask": mask, "clinical": clinical}[target]
    before = victim.read_bytes()
    outputs = {"--overlay": tmp_path / "o.png", "--report": tmp_path / "r.html"}
    outputs[option] = victim
    result = runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--mask", str(mask), "--clinical", str(clinical),
                                 "--patient-id", "x", "--overlay", str(outputs["--overlay"]),
                                 "--report", str(outputs["--report"]), "--overwrite"])
    assert "itself; choose another file" in _one_line(result)
    assert victim.read_bytes() == before


def test_predict_refuses_a_figure_under_an_image_name(model, head, tmp_path):
    ct, mask = head
    result = runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--mask", str(mask),
                                 "--overlay", str(tmp_path / "overlay.nii.gz")])
    assert "--overlay must end with .png" in _one_line(result)
    assert not (tmp_path / "overlay.nii.gz").exists()


def test_a_manifest_row_of_another_patient_is_not_paired_with_this_ct(model, head, tmp_path):
    # Seen: `predict --ct P0002's CT --clinical manifest.csv --patient-id P0003` used P0003's values with P0002's scan.
    ct, mask = head
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"patient_id": ["P2", "P3"], "baseline_ct": [str(ct), "elsewhere/P3.nii.gz"],
                  "sbp": [150, 120], "age": [70, 60]}).to_csv(manifest, index=False)
    result = _predict(model, ct, mask, tmp_path, "--clinical", str(manifest), "--patient-id", "P3")
    assert "the row of 'P3' is for baseline_ct elsewhere/P3.nii.gz, not the --ct given" in _one_line(result)
    assert not (tmp_path / "o.png").exists()
    result = _predict(model, ct, mask, tmp_path, "--clinical", str(manifest), "--patient-id", "P2")
    assert result.exit_code == 0, result.output
