"""One HE label parser for every command (issue 15, group 5): invalid labels are refused with their rows, never dropped."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.cohort import load_manifest
from hematoma.errors import InputError, ManifestError
from hematoma.labels import INVALID, parse_label, parse_labels

from strategies import assert_names_file, attempt, fuzz
from test_model import synthetic_table

runner = CliRunner()
FAST = ["--classifier", "logistic", "--grid", "small"]


# --------------------------------------------------------------------------- the parser


@pytest.mark.parametrize("cell, expected", [
    ("1", 1), ("0", 0), ("yes", 1), ("No", 0), (" TRUE ", 1), ("false", 0), ("y", 1), ("N", 0), ("1.0", 1), ("0.0", 0),
    (1, 1), (0, 0), (1.0, 1), (0.0, 0), (np.int64(1), 1), (np.float32(0.0), 0), (True, 1), (False, 0),
    ("", None), ("NA", None), ("nan", None), (None, None), (float("nan"), None), (pd.NA, None),
])
def test_labels_accepted(cell, expected):
    assert parse_label(cell) == expected


@pytest.mark.parametrize("cell", ["2", "-1", "0.5", "maybe", 2, -1, 0.5, float("inf"), "1 0", "yes!"])
def test_everything_else_is_invalid(cell):
    assert parse_label(cell) is INVALID


def test_parse_labels_names_file_column_rows_ids_and_values():
    values = pd.Series(["1", "2", "", "maybe", "no"])
    with pytest.raises(InputError) as error:
        parse_labels(values, "t.csv", "he", ids=["a", "b", "c", "d", "e"])
    message = str(error.value)
    assert message.startswith("t.csv: label column 'he' has 2 value(s)")
    assert "row 3 (patient_id 'b') '2'" in message and "row 5 (patient_id 'd') 'maybe'" in message
    assert "'c'" not in message  # a blank is unlabelled, not invalid
    parsed = parse_labels(pd.Series(["yes", "", 0]), "t.csv")
    assert parsed.iloc[0] == 1.0 and np.isnan(parsed.iloc[1]) and parsed.iloc[2] == 0.0
    with pytest.raises(InputError, match=r"1 blank or invalid value.*no blanks.*'c'\) blank"):
        parse_labels(pd.Series(["1", ""]), "t.csv", ids=["b", "c"], allow_missing=False)


def test_the_manifest_uses_the_same_parser(tmp_path):
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    rows = "patient_id,baseline_ct,he\nP1,ct.nii.gz,Yes\nP2,ct.nii.gz,no\nP3,ct.nii.gz,\nP4,ct.nii.gz,2\n"
    (tmp_path / "m.csv").write_text(rows)
    with pytest.raises(ManifestError, match=r"row 5: he '2' is not 0/1") as error:
        load_manifest(tmp_path / "m.csv")
    assert len(error.value.problems) == 1
    (tmp_path / "m.csv").write_text(rows.replace(",2\n", ",TRUE\n"))
    assert load_manifest(tmp_path / "m.csv").table["he"].tolist()[:2] == [1.0, 0.0]


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 40-patient feature table with its split, and a small model trained on it: (folder, bundle, split)."""
    root = tmp_path_factory.mktemp("labels")
    folder = root / "good"
    folder.mkdir()
    synthetic_table(n=40, n_rad=4, n_clin=2, missing=0.0).to_csv(folder / "features.csv", index=False)
    result = runner.invoke(app, ["train", str(folder), "--out", str(root / "model"), *FAST])
    assert result.exit_code == 0, result.output
    split = pd.read_csv(folder / "split.csv", dtype={"patient_id": str})
    return folder, root / "model", split


def _variant(trained, tmp_path, name, edit):
    """A copy of the good table (with its split) whose ``he`` column ``edit`` changed."""
    folder, _, split = trained
    table = pd.read_csv(folder / "features.csv", dtype={"patient_id": str, "he": str})
    edit(table, split)
    out = tmp_path / name
    out.mkdir()
    table.to_csv(out / "features.csv", index=False)
    shutil.copyfile(folder / "split.csv", out / "split.csv")
    return out


def _ids(split, part, n):
    return split.loc[split["part"] == part, "patient_id"].tolist()[:n]


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("bad", ["2", "-1", "0.5", "maybe"])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_invalid_labels_are_refused_with_their_rows(trained, tmp_path, bad, command):
    """The issue: evaluate scored 9 or 7 of 10 test patients (exit 0); train called them 'without an HE label'."""
    _, model, split = trained
    part = "train" if command == "train" else "test"
    chosen = _ids(split, part, 3)

    def edit(table, _):
        table.loc[table["patient_id"].isin(chosen), "he"] = bad

    folder = _variant(trained, tmp_path, "bad", edit)
    args = (["train", str(folder), "--out", str(tmp_path / "m"), *FAST] if command == "train"
            else ["evaluate", str(model), str(folder), "--out", str(tmp_path / "r")])
    line = _one_line(runner.invoke(app, args))
    assert str(folder / "features.csv") in line and "label column 'he' has 3 value(s)" in line
    for pid in chosen:
        assert re.search(rf"\(patient_id '{pid}'\) '?{re.escape(bad)}'?(,|$)", line), line  # as written: 2 or '2'
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_yes_no_labels_work_and_equal_1_0(trained, tmp_path):
    """The issue: yes/no (which the manifest accepts) gave a traceback in evaluate and a wrong class-count error in train."""
    folder, model, _ = trained
    words = _variant(trained, tmp_path, "words", lambda t, _: t.__setitem__("he", t["he"].map({"1": "yes", "0": "No"})))
    result = runner.invoke(app, ["train", str(words), "--out", str(tmp_path / "m_words"), *FAST])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "m_numbers"), *FAST])
    assert result.exit_code == 0, result.output
    bundles = [json.loads((tmp_path / m / "bundle.json").read_text()) for m in ("m_words", "m_numbers")]
    assert bundles[0]["evaluation"] == bundles[1]["evaluation"]
    assert bundles[0]["settings"]["train_ids"] == bundles[1]["settings"]["train_ids"]

    reports = []
    for table, out in ((words, "r_words"), (folder, "r_numbers")):
        result = runner.invoke(app, ["evaluate", str(model), str(table), "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        assert "on 10 test patients" in result.output
        reports.append(json.loads((tmp_path / out / "metrics.json").read_text())["model"])
    assert reports[0]["auc"] == reports[1]["auc"] and reports[0]["predictions"] == reports[1]["predictions"]


def test_an_unlabelled_test_patient_is_not_silently_left_out(trained, tmp_path):
    _, model, split = trained
    chosen = _ids(split, "test", 1)
    folder = _variant(trained, tmp_path, "blank", lambda t, _: t.__setitem__("he", t["he"].mask(t["patient_id"].isin(chosen))))
    line = _one_line(runner.invoke(app, ["evaluate", str(model), str(folder), "--out", str(tmp_path / "r")]))
    assert "1 of the model's 10 test patients have no 'he' label" in line and repr(chosen[0]) in line


def test_external_test_table_labels_are_parsed_too(trained, tmp_path):
    folder, _, _ = trained
    other = synthetic_table(n=20, n_rad=4, n_clin=2, missing=0.0, seed=1)
    other["patient_id"] = [f"X{i}" for i in range(len(other))]
    other["he"] = other["he"].astype(object)
    other.loc[3, "he"] = "0.5"
    other.to_csv(tmp_path / "other.csv", index=False)
    line = _one_line(runner.invoke(app, ["train", str(folder), "--test", str(tmp_path / "other.csv"),
                                         "--out", str(tmp_path / "m"), *FAST]))
    assert str(tmp_path / "other.csv") in line and line.endswith("row 5 (patient_id 'X3') 0.5")


@fuzz(200)
@given(st.lists(st.one_of(st.text(max_size=6), st.sampled_from(["1", "0", "yes", "no", "", "TRUE", " n "]),
                          st.floats(), st.integers(-3, 3), st.booleans(), st.none()), min_size=1, max_size=8))
def test_any_cells_are_labels_or_refused_with_every_bad_row(cells):
    values = pd.Series(cells, dtype=object)
    verdicts = [parse_label(cell) for cell in cells]
    assert all(v in (0, 1, None) or v is INVALID for v in verdicts)
    parsed, error = attempt(parse_labels, values, "t.csv", ids=[f"p{i}" for i in range(len(cells))])
    bad = [i for i, v in enumerate(verdicts) if v is INVALID]
    if error is not None:
        assert_names_file(error, "t.csv")
        assert bad and all(f"patient_id 'p{i}'" in str(error) for i in bad)
        return
    assert not bad
    assert parsed.tolist() == pytest.approx([np.nan if v is None else float(v) for v in verdicts], nan_ok=True)
