"""Tables and masks that read fine but say the wrong thing (issue 15, hostile-tester follow-up).

A manifest ``he`` the follow-up contradicts, a follow-up that is the baseline's
file, a mask whose spacing no scanner gives, a spreadsheet export that is not
comma-separated CSV, and a split file of another cohort: each is either refused
in one line naming the file or made visible as a warning, never silently used.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.cohort import load_manifest
from hematoma.errors import ManifestError

from test_model import synthetic_table

runner = CliRunner()
FAST = ["--classifier", "logistic", "--grid", "small"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A 4-patient synthetic cohort (NIfTI CTs and masks, clinical columns); its manifest."""
    from hematoma.synthetic import generate_cohort

    folder = tmp_path_factory.mktemp("cohort")
    generate_cohort(folder, 4, seed=3, size="small", progress=False)
    return folder / "manifest.csv"


def _rows(manifest: Path) -> pd.DataFrame:
    return pd.read_csv(manifest, dtype=str, keep_default_na=False)


def _write(table: pd.DataFrame, manifest: Path, name: str) -> Path:
    """``table`` as a manifest beside ``manifest`` (its relative paths stay valid)."""
    path = manifest.parent / name
    table.to_csv(path, index=False)
    return path


def _extract(manifest: Path, out: Path):
    return runner.invoke(app, ["extract", str(manifest), "--out", str(out), "--workers", "1"])


def _one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# --------------------------------------------------------------------------- 1. a manifest he the follow-up contradicts


def test_a_manifest_he_the_follow_up_contradicts_is_a_counted_warning(cohort, tmp_path):
    from hematoma.io import read_mask
    from hematoma.volume import label_expansion, mask_volume_ml

    table = _rows(cohort)
    volume = {column: [mask_volume_ml(read_mask(cohort.parent / p)) for p in table[column]]
              for column in ("baseline_mask", "followup_mask")}
    computed = [int(label_expansion(b, f)) for b, f in zip(volume["baseline_mask"], volume["followup_mask"])]
    # The first patient's he agrees with its masks; every other one's says the opposite.
    table["he"] = [str(label if i == 0 else 1 - label) for i, label in enumerate(computed)]
    out = tmp_path / "out"
    result = _extract(_write(table, cohort, "contradicting.csv"), out)

    assert result.exit_code == 0, result.output
    contradicted = table["patient_id"].tolist()[1:]
    assert f"manifest he overruled by the follow-up: {len(contradicted)} cases" in result.output
    summary = json.loads((out / "extract.json").read_text())["warnings"]
    assert sorted(summary) == sorted(contradicted)
    for i, pid in enumerate(table["patient_id"]):
        case = json.loads((out / "cases" / pid / "case.json").read_text())
        assert case["he"] == computed[i]  # the follow-up's label is the one used
        if i == 0:
            assert not any("disagrees" in w for w in case["warnings"])
            continue
        growth = volume["followup_mask"][i] - volume["baseline_mask"][i]
        assert (f"manifest he={1 - computed[i]} disagrees with the follow-up (growth {growth:+.2f} mL, "
                f"{100 * growth / volume['baseline_mask'][i]:+.1f} %, definition 6ml-or-33pct): "
                f"the follow-up's label {computed[i]} is used") in case["warnings"]
        assert case["warnings"] == summary[pid]


# --------------------------------------------------------------------------- 2. a follow-up that is the baseline


def test_a_manifest_whose_follow_up_is_the_baseline_file_lists_the_rows(cohort):
    table = _rows(cohort)
    table.loc[0, "followup_ct"] = table.loc[0, "baseline_ct"]
    # The same file spelt another way: through '..' (resolved paths are compared).
    table.loc[2, "followup_mask"] = "../" + cohort.parent.name + "/" + table.loc[2, "baseline_mask"]
    with pytest.raises(ManifestError) as error:
        load_manifest(_write(table, cohort, "same_file.csv"))
    assert "row 2: followup_ct is the same file as baseline_ct" in str(error.value)
    assert "row 4: followup_mask is the same file as baseline_mask" in str(error.value)
    assert "row 3" not in str(error.value)


def test_extract_refuses_a_manifest_whose_follow_up_is_the_baseline_file(cohort, tmp_path):
    table = _rows(cohort)
    table.loc[0, ["followup_ct", "followup_mask"]] = table.loc[0, ["baseline_ct", "baseline_mask"]].tolist()
    line = _one_line(_extract(_write(table, cohort, "same_bl_fu.csv"), tmp_path / "out"))
    assert "row 2: followup_ct is the same file as baseline_ct" in line
    assert "row 2: followup_mask is the same file as baseline_mask" in line


def test_a_follow_up_copied_from_the_baseline_fails_its_case_at_stage_followup(cohort, tmp_path):
    table = _rows(cohort)
    copy = cohort.parent / "P_copy_followup.nii.gz"
    shutil.copyfile(cohort.parent / table.loc[1, "baseline_ct"], copy)
    table.loc[1, "followup_ct"] = copy.name
    table.loc[1, "followup_mask"] = ""  # the content check comes first, whatever the masks
    out = tmp_path / "out"
    result = _extract(_write(table, cohort, "copied.csv"), out)

    assert result.exit_code == 3, result.output  # the other cases are computed
    failures = pd.read_csv(out / "failures.csv", dtype=str).set_index("patient_id")
    pid = table.loc[1, "patient_id"]
    assert list(failures.index) == [pid]
    assert failures.loc[pid, "stage"] == "followup"
    reason = failures.loc[pid, "reason"]
    assert reason.startswith(str(copy)) and "has the same content as baseline_ct" in reason
    assert "\n" not in reason


def test_a_follow_up_mask_copied_from_the_baseline_is_a_counted_warning(cohort, tmp_path):
    # Masks, unlike CTs, can be byte-identical for real (one grid, the same voxels): a warning, not a failure.
    table = _rows(cohort)
    copy = cohort.parent / "P_copy_followup_mask.nii.gz"
    shutil.copyfile(cohort.parent / table.loc[2, "baseline_mask"], copy)
    table.loc[2, ["followup_ct", "followup_mask"]] = ["", copy.name]
    out = tmp_path / "out"
    result = _extract(_write(table, cohort, "copied_mask.csv"), out)

    assert result.exit_code == 0, result.output
    pid = table.loc[2, "patient_id"]
    assert f"follow-up mask identical to the baseline's: 1 case ({pid})" in result.output
    case = json.loads((out / "cases" / pid / "case.json").read_text())
    assert case["growth_ml"] == 0 and case["he"] == 0
    assert any(w.startswith(f"followup_mask {copy} has the same content as baseline_mask") for w in case["warnings"])
    assert json.loads((out / "extract.json").read_text())["warnings"][pid] == case["warnings"]


def _mask(voxels: int, spacing=(0.5, 0.5, 5.0), shape=(20, 40, 40)) -> sitk.Image:
    array = np.zeros(shape, dtype=np.uint8)
    array[8:12, 15:25, 15:25].reshape(-1)[:voxels] = 1
    array_image = sitk.GetImageFromArray(array)
    array_image.SetSpacing(spacing)
    return array_image


def test_label_refuses_the_same_mask_file_and_warns_of_a_copy(tmp_path):
    base = tmp_path / "b.nii.gz"
    sitk.WriteImage(_mask(300), str(base))
    line = _one_line(runner.invoke(app, ["label", "--baseline", str(base), "--followup", str(base)]))
    assert line.endswith("--followup is the same file as --baseline")

    copy = tmp_path / "copy.nii.gz"
    shutil.copyfile(base, copy)
    result = runner.invoke(app, ["label", "--baseline", str(base), "--followup", str(copy)])
    assert result.exit_code == 0 and "HE=no" in result.output
    assert f"{copy}: has the same content as --baseline" in result.output  # said, not refused (as in extract)


# --------------------------------------------------------------------------- 3. a spacing no CT scanner gives


def test_volume_and_label_refuse_a_spacing_no_ct_scanner_gives(tmp_path):
    tiny, follow = tmp_path / "tiny.nii.gz", tmp_path / "f.nii.gz"
    sitk.WriteImage(_mask(300, spacing=(0.001, 0.001, 0.001)), str(tiny))
    sitk.WriteImage(_mask(400), str(follow))
    line = _one_line(runner.invoke(app, ["volume", str(tiny)]))
    assert str(tiny) in line and "voxel spacing 0.001 x 0.001 x 0.001 mm" in line and "0.05 to 30 mm" in line
    line = _one_line(runner.invoke(app, ["label", "--baseline", str(tiny), "--followup", str(follow)]))
    assert str(tiny) in line and "outside the range of CT scanners" in line and "%" not in line

    metres = tmp_path / "metres.nii.gz"  # a 50 mm slice thickness: no CT's
    sitk.WriteImage(_mask(300, spacing=(0.5, 0.5, 50.0)), str(metres))
    assert "voxel spacing 0.5 x 0.5 x 50 mm" in _one_line(runner.invoke(app, ["volume", str(metres)]))
    assert "mL" in runner.invoke(app, ["volume", str(follow)]).output  # a CT's spacing still works


def test_extract_fails_a_case_whose_mask_has_a_spacing_no_ct_scanner_gives(cohort, tmp_path):
    from hematoma.io import read_image, read_mask

    table = _rows(cohort)
    for column in ("baseline_ct", "baseline_mask"):  # CT and mask alike: the mask matches its CT's grid
        image = (read_image if column == "baseline_ct" else read_mask)(cohort.parent / table.loc[0, column])
        image.SetSpacing([s / 1000 for s in image.GetSpacing()])
        sitk.WriteImage(image, str(tmp_path / f"{column}.nii.gz"))
        table.loc[0, column] = str(tmp_path / f"{column}.nii.gz")
    out = tmp_path / "out"
    result = _extract(_write(table, cohort, "tiny_spacing.csv"), out)
    assert result.exit_code == 3, result.output
    failures = pd.read_csv(out / "failures.csv", dtype=str).set_index("patient_id")
    pid = table.loc[0, "patient_id"]
    assert failures.loc[pid, "stage"] == "mask"
    assert failures.loc[pid, "reason"].startswith(str(tmp_path / "baseline_mask.nii.gz"))
    assert "outside the range of CT scanners" in failures.loc[pid, "reason"]


# --------------------------------------------------------------------------- 4. spreadsheet exports that are not CSV


def _semicolon(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, sep=";")


def _tab(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, sep="\t")


def _workbook(table: pd.DataFrame, path: Path) -> None:
    # An .xlsx is a zip of XML parts; its first bytes are what tell it apart.
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")


def _utf16(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, encoding="utf-16")  # Python writes the BOM, as Excel's "Unicode text" does


EXPORTS = {
    "semicolon": (_semicolon, "looks ;-separated (a spreadsheet export with another separator?): save it as comma-separated CSV"),
    "tab": (_tab, "looks tab-separated (a spreadsheet export with another separator?): save it as comma-separated CSV"),
    "workbook": (_workbook, "is an Excel workbook or another zip file, not CSV: export it as CSV"),
    "utf16": (_utf16, "is UTF-16 text: save it as UTF-8 CSV"),
}


@pytest.mark.parametrize("export", EXPORTS)
def test_extract_names_a_manifest_that_is_not_comma_separated_csv(cohort, tmp_path, export):
    write, problem = EXPORTS[export]
    manifest = cohort.parent / f"{export}.csv"
    write(_rows(cohort), manifest)
    line = _one_line(_extract(manifest, tmp_path / "out"))
    assert line == f"error: {manifest}: {problem}"
    assert not (tmp_path / "out" / "cases").exists()


@pytest.mark.parametrize("export", EXPORTS)
def test_train_names_a_feature_table_that_is_not_comma_separated_csv(tmp_path, export):
    write, problem = EXPORTS[export]
    table = tmp_path / "features.csv"
    write(synthetic_table(n=40, n_rad=4, n_clin=2, missing=0.0), table)
    line = _one_line(runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "m"), *FAST]))
    assert line == f"error: {table}: {problem}"


def test_a_comma_separated_table_with_semicolons_in_cells_is_read(tmp_path):
    from hematoma.cohort import read_text_table

    path = tmp_path / "notes.csv"
    path.write_text("patient_id,note\nP1,a;b\n")
    assert read_text_table(path)["note"].tolist() == ["a;b"]


# --------------------------------------------------------------------------- 5. another cohort's split


def test_a_split_of_another_cohort_is_not_advised_to_be_deleted(tmp_path):
    table = synthetic_table(n=40, n_rad=4, n_clin=2, missing=0.0)
    path = tmp_path / "features.csv"
    table.to_csv(path, index=False)
    other = tmp_path / "other_split.csv"
    pd.DataFrame({"patient_id": [f"X{i}" for i in range(8)], "cohort": [1, 2] * 4,
                  "part": ["cnn", "train", "cnn", "test"] * 2}).to_csv(other, index=False)
    before = other.read_bytes()
    line = _one_line(runner.invoke(app, ["train", str(path), "--split", str(other), "--out", str(tmp_path / "m"), *FAST]))
    assert line.endswith("split was made for other patients than this table; choose another --split path "
                         "(or delete it if it is this table's old split)")
    assert other.read_bytes() == before
