import csv
import io

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.cohort import load_manifest, load_or_make_split, split_cohort
from hematoma.errors import InputError, ManifestError
from hematoma.features.clinical import encode_clinical, load_clinical


def _write_manifest(tmp_path, rows, columns=None):
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    frame = pd.DataFrame(rows, columns=columns)
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    return path


def test_valid_manifest_resolves_paths(tmp_path):
    path = _write_manifest(
        tmp_path,
        [["P1", "a.nii.gz", "b.nii.gz", "yes", "M", "64", "170"], ["P2", "c.nii.gz", "", "0", "F", "", "150"]],
        ["patient_id", "baseline_ct", "followup_ct", "he", "sex", "age", "sbp"],
    )
    manifest = load_manifest(path)
    table = manifest.table
    assert manifest.ids == ["P1", "P2"]
    assert table.loc[0, "baseline_ct"] == str(tmp_path / "a.nii.gz")
    assert pd.isna(table.loc[1, "followup_ct"])
    assert table["he"].tolist() == [1.0, 0.0]
    assert pd.isna(table.loc[1, "age"])  # a blank stays missing for the imputer


def test_every_problem_listed_at_once(tmp_path):
    path = _write_manifest(
        tmp_path,
        [
            ["P1", "a.nii.gz", "missing.nii.gz", "70", "abc"],
            ["P1", "b.nii.gz", "", "2000", "60"],
            ["", "nowhere.nii.gz", "", "120", "61"],
        ],
        ["patient_id", "baseline_ct", "followup_ct", "sbp", "agee"],
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    problems = info.value.problems
    assert "'missing.nii.gz' not found" in message
    assert "'nowhere.nii.gz' not found" in message
    assert "duplicate patient_id 'P1' in rows 2, 3" in message
    assert "empty patient_id" in message
    assert "unknown column 'agee' (did you mean 'age'?)" in message
    assert any("sbp" in p and "2000" in p for p in problems)
    assert str(path) in message
    assert len(problems) >= 6


def test_extra_and_ignored_columns(tmp_path):
    path = _write_manifest(tmp_path, [["P1", "a.nii.gz", "x", "1.5"]], ["patient_id", "baseline_ct", "site", "lactate"])
    with pytest.raises(ManifestError):
        load_manifest(path)
    manifest = load_manifest(path, extra_columns=["lactate"], ignore_columns=["site"])
    assert "site" not in manifest.table.columns


def test_missing_manifest_and_bad_label(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_manifest(tmp_path / "nope.csv")
    path = _write_manifest(tmp_path, [["P1", "a.nii.gz", "maybe"]], ["patient_id", "baseline_ct", "he"])
    with pytest.raises(ManifestError, match="he 'maybe' is not 0/1"):
        load_manifest(path)


def _table(n, rate=0.25, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=int)
    labels[: int(round(n * rate))] = 1
    rng.shuffle(labels)
    return pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "he": labels})


def test_paper_split_sizes_and_stratification():
    table = _table(408, rate=98 / 408)
    split = split_cohort(table, seed=3)
    counts = split["part"].value_counts()
    assert counts["cnn"] == 204 and counts["test"] == 100 and counts["train"] == 104
    merged = split.merge(table, on="patient_id")
    rates = merged.groupby("part")["he"].mean()
    assert rates.max() - rates.min() < 0.03  # stratified
    assert split_cohort(table, seed=3).equals(split)  # seeded
    assert not split_cohort(table, seed=4).equals(split)


def test_small_cohort_split_uses_paper_fraction():
    split = split_cohort(_table(60), seed=0)
    counts = split["part"].value_counts()
    assert counts["cnn"] == 30
    assert counts["test"] == round(30 * 100 / 204)
    assert set(split["cohort"][split["part"] == "cnn"]) == {1}


def test_split_is_written_and_reused(tmp_path):
    table = _table(40)
    first = load_or_make_split(tmp_path / "split.csv", table, seed=1)
    again = load_or_make_split(tmp_path / "split.csv", table, seed=99)  # seed ignored: file wins
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(InputError, match="other patients"):
        load_or_make_split(tmp_path / "split.csv", _table(41), seed=1)


# Issue 15: headers equal once stripped, and cells that would break a message over two lines.


def _write_csv(tmp_path, header, rows=()):
    # Written by hand: pandas cannot write a header with repeated names the way a user's editor does.
    for name in ("ct_a.nii.gz", "b.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp_path / "manifest.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "header, rows, extra, duplicate",
    [
        (["patient_id", "baseline_ct", "followup_mask", "he", "patient_id "], [], (), "patient_id"),
        (["patient_id", "baseline_ct", "followup_mask", "he", "patient_id "],
         [["0", "ct_a.nii.gz", "ct_a.nii.gz", "2", "0"]], (), "patient_id"),
        (["patient_id", "baseline_ct", "followup_mask", "he", "baseline_ct "], [], (), "baseline_ct"),
        (["patient_id", "baseline_ct", "followup_mask", "he", "he "], [], (), "he"),
        (["patient_id", "baseline_ct", "he", "lactate", "agee", "lactate "], [], ("lactate",), "lactate"),
        (["patient_id", "baseline_ct", "he", "he"], [["P1", "ct_a.nii.gz", "1", "1"]], (), "he"),  # exact: not 'he.1'
    ],
)
def test_a_column_repeated_once_stripped_is_one_listed_problem(tmp_path, header, rows, extra, duplicate):
    path = _write_csv(tmp_path, header, rows)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, extra_columns=extra)
    problems = info.value.problems
    assert sum(p.startswith(f"duplicate column {duplicate!r}") for p in problems) == 1
    assert not any(".1" in p for p in problems)  # pandas' renamed copy is never shown as a column of its own
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    if not rows:
        assert "no patients (the table has no rows)" in problems  # the other problems are still listed
    if "agee" in header:
        assert any("unknown column 'agee'" in p for p in problems)


def test_a_repeated_path_column_is_reported_as_such_not_as_a_missing_file(tmp_path):
    path = _write_csv(tmp_path, ["patient_id", "baseline_ct", "followup_mask", "followup_mask "],
                      [["P1", "ct_a.nii.gz", "b.nii.gz", "b.nii.gz"]])
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.problems == ["duplicate column 'followup_mask' (columns 3, 4)"]


def test_an_ignored_column_may_repeat(tmp_path):
    path = _write_csv(tmp_path, ["patient_id", "baseline_ct", "site", " site"], [["P1", "ct_a.nii.gz", "x", "y"]])
    manifest = load_manifest(path, ignore_columns=["site"])
    assert list(manifest.table.columns) == ["patient_id", "baseline_ct"]


def test_a_row_longer_than_the_header_is_refused_not_shifted(tmp_path):
    # pandas would take the first cell as an index and shift every other cell one column left.
    path = _write_csv(tmp_path, ["patient_id", "baseline_ct", "he"], [["P1", "ct_a.nii.gz", "1", "extra"]])
    with pytest.raises(InputError, match="cannot be read as CSV"):
        load_manifest(path)


def test_a_clinical_table_with_a_repeated_column_is_refused(tmp_path):
    path = _write_csv(tmp_path, ["patient_id", "age", "age "], [["P1", "60", "70"]])
    with pytest.raises(ManifestError, match="duplicate column 'age'"):
        load_clinical(path)
    table = pd.DataFrame([["P1", "60", "70"]], columns=["patient_id", "age", "age"])
    with pytest.raises(ManifestError, match="duplicate column 'age'"):
        encode_clinical(table)


def test_a_path_cell_with_a_newline_gives_a_one_line_error_in_the_cli(tmp_path):
    path = _write_csv(tmp_path, ["patient_id", "baseline_ct"], [["P1", "new\nline.nii.gz"]])
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.problems == ["row 2: baseline_ct 'new\\nline.nii.gz' not found"]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extract", str(path), "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and "manifest.csv" in lines[0] and "not found" in lines[0], result.output
    assert not out.exists() or not any(out.iterdir())


def test_a_split_of_other_patients_names_a_remedy_the_command_has(tmp_path):
    # `run`/`demo` have no --split: their advice must name what they have (--overwrite).
    table = pd.DataFrame({"patient_id": [f"P{i}" for i in range(40)], "he": [i % 2 for i in range(40)]})
    path = tmp_path / "split.csv"
    load_or_make_split(path, table)
    with pytest.raises(InputError, match="other patients than this table; rerun with --overwrite$"):
        load_or_make_split(path, table.iloc[:30], remedy="rerun with --overwrite")
    with pytest.raises(InputError, match="choose another --split path"):
        load_or_make_split(path, table.iloc[:30])


def test_ids_that_differ_only_by_case_are_refused(tmp_path):
    # Case folders OUT/cases/<id> of P0001 and p0001 would be one folder on macOS and Windows.
    (tmp_path / "ct.nii.gz").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("patient_id,baseline_ct\nP0001,ct.nii.gz\np0001,ct.nii.gz\nP0002,ct.nii.gz\n")
    with pytest.raises(ManifestError, match=r"patient_ids 'P0001' \(row 2\), 'p0001' \(row 3\) differ only by case"):
        load_manifest(tmp_path / "m.csv")
