"""Feature tables a user is handed (issue 15, group 7): one line naming the file and the rows, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hypothesis import given
from hypothesis import strategies as st

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.protocols import read_features

from strategies import assert_names_file, attempt, fuzz, scratch
from test_model import synthetic_table

runner = CliRunner()
FAST = ["--classifier", "logistic", "--grid", "small"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 40-patient table with its split and a small model trained on it: (folder, bundle, split)."""
    root = tmp_path_factory.mktemp("tables")
    folder = root / "good"
    folder.mkdir()
    synthetic_table(n=40, n_rad=4, n_clin=2, missing=0.0).to_csv(folder / "features.csv", index=False)
    result = runner.invoke(app, ["train", str(folder), "--out", str(root / "model"), *FAST])
    assert result.exit_code == 0, result.output
    return folder, root / "model", pd.read_csv(folder / "split.csv", dtype={"patient_id": str})


def _variant(trained, tmp_path, edit, name="t", suffix=".csv") -> Path:
    folder, _, split = trained
    table = pd.read_csv(folder / "features.csv", dtype={"patient_id": str})
    table = edit(table, split) if edit else table
    out = tmp_path / name
    out.mkdir()
    if suffix == ".csv":
        table.to_csv(out / "features.csv", index=False)
    else:
        table.to_parquet(out / "features.parquet", index=False)
    shutil.copyfile(folder / "split.csv", out / "split.csv")
    return out / f"features{suffix}"


def _commands(trained, table, tmp_path):
    _, model, _ = trained
    return {"train": ["train", str(table), "--out", str(tmp_path / "m"), *FAST],
            "evaluate": ["evaluate", str(model), str(table), "--out", str(tmp_path / "r")]}


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _test_ids(split, n):
    return split.loc[split["part"] == "test", "patient_id"].tolist()[:n]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_infinite_feature_values_are_one_line_naming_file_columns_and_rows(trained, tmp_path, command):
    def edit(table, split):
        first, second = _test_ids(split, 2)
        table.loc[table["patient_id"] == first, "rad_f1"] = np.inf
        table.loc[table["patient_id"] == second, "clin_v0"] = -np.inf
        return table

    path = _variant(trained, tmp_path, edit)
    line = _one_line(runner.invoke(app, _commands(trained, path, tmp_path)[command]))
    first, second = _test_ids(trained[2], 2)
    assert str(path) in line and "infinite values" in line and "rad_f1" in line and "clin_v0" in line
    assert f"patient_id {first!r}" in line and f"patient_id {second!r}" in line
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_text_in_a_feature_column_names_the_file_column_and_cell(trained, tmp_path, command):
    def edit(table, split):
        table["rad_f2"] = table["rad_f2"].astype(object)
        table.loc[table["patient_id"] == _test_ids(split, 1)[0], "rad_f2"] = "n/a (failed)"
        return table

    path = _variant(trained, tmp_path, edit)
    line = _one_line(runner.invoke(app, _commands(trained, path, tmp_path)[command]))
    pid = _test_ids(trained[2], 1)[0]
    assert str(path) in line and "hold text" in line and "rad_f2" in line
    assert f"(patient_id {pid!r}) 'n/a (failed)'" in line


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("case, expected", [
    ("no label column", "has no label column 'he'"),
    ("duplicate ids", "duplicate patient_id 'P001' (rows 3, 4)"),
    ("blank id", "empty patient_id in row 3"),
    ("empty table", "has no patients (no rows)"),
    ("every feature blank", "every feature cell is blank"),
])
def test_broken_tables_are_one_line_naming_the_file(trained, tmp_path, command, case, expected):
    def edit(table, _):
        if case == "no label column":
            return table.drop(columns=["he"])
        if case == "duplicate ids":
            table.loc[2, "patient_id"] = "P001"
        if case == "blank id":
            table.loc[1, "patient_id"] = ""
        if case == "empty table":
            return table.iloc[:0]
        if case == "every feature blank":
            table.loc[:, [c for c in table.columns if c.startswith(("rad_", "clin_"))]] = np.nan
        return table

    path = _variant(trained, tmp_path, edit)
    line = _one_line(runner.invoke(app, _commands(trained, path, tmp_path)[command]))
    assert str(path) in line and expected in line, line


def test_a_table_without_feature_columns_names_the_file(trained, tmp_path):
    path = _variant(trained, tmp_path, lambda t, _: t[["patient_id", "he", "followup_volume_ml"]])
    commands = _commands(trained, path, tmp_path)
    line = _one_line(runner.invoke(app, commands["train"]))
    assert str(path) in line and "has no rad_, clin_, cnn_, sign_ or deep_ feature columns" in line
    line = _one_line(runner.invoke(app, commands["evaluate"]))
    assert str(path) in line and "rad_f0" in line  # the columns the model needs


def test_a_folder_without_features_is_one_line(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    for command in _commands(trained, tmp_path / "empty", tmp_path).values():
        line = _one_line(runner.invoke(app, command))
        assert str(tmp_path / "empty") in line and "holds no features.parquet or features.csv" in line


def test_too_few_patients_of_a_class_names_the_file(trained, tmp_path):
    def edit(table, split):
        train = split.loc[split["part"] == "train", "patient_id"]
        positives = table["patient_id"].isin(train) & (table["he"] == 1)
        keep = table.index[positives][:1]
        table.loc[positives & ~table.index.isin(keep), "he"] = 0
        return table

    path = _variant(trained, tmp_path, edit)
    line = _one_line(runner.invoke(app, _commands(trained, path, tmp_path)["train"]))
    assert str(path) in line and "too few patients of one class" in line


def test_a_test_part_of_one_class_names_the_file(trained, tmp_path):
    def edit(table, split):
        table.loc[table["patient_id"].isin(split.loc[split["part"] == "test", "patient_id"]), "he"] = 0
        return table

    path = _variant(trained, tmp_path, edit)
    line = _one_line(runner.invoke(app, _commands(trained, path, tmp_path)["evaluate"]))
    assert str(path) in line and "test patients of both classes" in line


def test_an_all_blank_feature_column_is_imputed_not_fatal(trained, tmp_path):
    """A column extraction could not compute for anyone: the imputer keeps it as a constant (Parquet: object dtype)."""
    def edit(table, _):
        table["rad_f3"] = None
        return table

    path = _variant(trained, tmp_path, edit, suffix=".parquet")
    assert pd.read_parquet(path)["rad_f3"].dtype == object
    assert read_features(path).table["rad_f3"].dtype == float
    commands = _commands(trained, path, tmp_path)
    result = runner.invoke(app, commands["train"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, commands["evaluate"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["model"]["n"] == 10


def test_parquet_rows_are_named_by_patient_id(tmp_path):
    table = synthetic_table(n=6, n_rad=4, n_clin=0, informative=2, missing=0.0)
    table.loc[4, "rad_f0"] = np.inf
    table.to_parquet(tmp_path / "features.parquet", index=False)
    with pytest.raises(InputError, match=r"rad_f0, in patient_id 'P004';") as error:
        read_features(tmp_path)
    assert error.value.path == tmp_path / "features.parquet"


def test_evaluate_takes_allow_version_mismatch(trained, tmp_path):
    """The issue: "allow the mismatch explicitly" was advised with no such flag; with it, the bundle loads."""
    _, model, _ = trained
    tampered = tmp_path / "model"
    shutil.copytree(model, tampered)
    meta = json.loads((tampered / "bundle.json").read_text())
    meta["versions"]["scikit-learn"] = "0.24.2"
    (tampered / "bundle.json").write_text(json.dumps(meta))
    path = _variant(trained, tmp_path, lambda t, _: t.assign(rad_f0=np.inf))  # fails fast, after loading
    args = ["evaluate", str(tampered), str(path), "--out", str(tmp_path / "r")]
    assert "--allow-version-mismatch" in _one_line(runner.invoke(app, args))
    result = runner.invoke(app, [*args, "--allow-version-mismatch"])
    assert result.exit_code == 2 and f"{path}: infinite values" in result.output, result.output


def test_a_bundle_listing_training_patients_as_test_patients_is_refused(trained, tmp_path):
    """Seen: test_ids edited to the train_ids gave AUC 1.000, exit 0, no note: a leak the bundle itself shows."""
    folder, model, _ = trained
    tampered = tmp_path / "model"
    shutil.copytree(model, tampered)
    meta = json.loads((tampered / "bundle.json").read_text())
    meta["settings"]["test_ids"] = meta["settings"]["train_ids"]
    (tampered / "bundle.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["evaluate", str(tampered), str(folder), "--out", str(tmp_path / "r")])
    assert "both as training and as test patients" in _one_line(result)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- any table (property-based)

GOOD_NUMBERS, BLANKS, INFINITE, TEXT = ["1.5", "-2", "0", "3e2"], ["", "nan", "NA"], ["inf", "-inf", "1e400"], ["abc", "1;5"]
GOOD_LABELS, BAD_LABELS = ["0", "1", "yes", "No", "TRUE", "false", "", "NA", "1.0"], ["2", "-1", "0.5", "maybe"]


@st.composite
def feature_csvs(draw):
    """A feature table as CSV text with cells drawn from good, blank and bad values; and whether it is valid."""
    n = draw(st.integers(0, 5))
    ids = draw(st.lists(st.sampled_from(["P1", "P2", "P3", "P4", "P5", "P6", ""]), min_size=n, max_size=n))
    cells = {c: draw(st.lists(st.sampled_from(GOOD_NUMBERS + BLANKS + INFINITE + TEXT), min_size=n, max_size=n))
             for c in ("rad_a", "clin_b")}
    labels = draw(st.lists(st.sampled_from(GOOD_LABELS + BAD_LABELS), min_size=n, max_size=n))
    rows = ["patient_id,he,rad_a,clin_b"] + [",".join(r) for r in zip(ids, labels, cells["rad_a"], cells["clin_b"])]
    values = cells["rad_a"] + cells["clin_b"]
    valid = (n > 0 and "" not in ids and len(set(ids)) == n and all(v in GOOD_NUMBERS + BLANKS for v in values)
             and any(v in GOOD_NUMBERS for v in values) and all(label in GOOD_LABELS for label in labels))
    return "\n".join(rows) + "\n", valid


@fuzz(60)
@given(feature_csvs())
def test_any_feature_table_reads_correctly_or_is_refused_naming_the_file(case):
    text, valid = case
    with scratch() as folder:
        path = folder / "features.csv"
        path.write_text(text)
        source, error = attempt(read_features, path, label="he")
        if error is not None:
            assert_names_file(error, path)
            assert not valid, f"a valid table refused: {error}"
            return
    assert valid, f"an invalid table accepted:\n{text}"
    table = source.table
    assert table["patient_id"].is_unique and table["he"].isin([0.0, 1.0]).sum() + table["he"].isna().sum() == len(table)
    for column in ("rad_a", "clin_b"):
        assert table[column].dtype.kind in "iuf" and not np.isinf(table[column]).any()


def test_the_training_hash_ignores_column_and_row_order():
    """Seen: a table with its columns reordered got a false "features differ (re-extracted?)" note in evaluate."""
    from hematoma.protocols import training_hash

    table = synthetic_table(n=20, n_rad=4, n_clin=2, missing=0.0)
    shuffled = table[list(reversed(table.columns))].sample(frac=1.0, random_state=0)
    groups = ("rad", "clin")
    assert training_hash(shuffled, groups) == training_hash(table, groups)
    changed = table.copy()
    changed.loc[changed.index[3], "rad_f0"] += 1.0
    assert training_hash(changed, groups) != training_hash(table, groups)
