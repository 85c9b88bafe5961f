"""Property-based tests of the feature tables read by `hematoma train` and `evaluate`.

Generated tables (CSV or Parquet) are valid except for the problems planted in
them: text or infinite values in feature columns, labels that are not labels
(2, -1, 0.5, "maybe"), no label column, blank or repeated patient ids, a
feature column the model needs left out.  Properties: a table with nothing
planted is read with exactly its content (ids, numbers, labels parsed as the
manifest parses them); a planted problem gives an InputError naming the table;
training and evaluation use every labelled patient (none dropped silently) or
refuse with one line naming the file.  Fits are tiny (logistic, small grid,
at most ~24 patients) and few.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.protocols import TrainSettings, read_features, train
from strategies import assert_names_file, attempt, fuzz, scratch

FEATURES = ("rad_a", "rad_b", "clin_age", "cnn_0001")
BLANKS = ("", "NaN", "NA")
TEXT = ("abc", "1,5", "yes", "12 mm", "--")
INFINITE = ("inf", "-inf", "1e400")
LABELS = {"0": 0.0, "1": 1.0, "yes": 1.0, "no": 0.0, "1.0": 1.0, "0.0": 0.0, "": np.nan}
BAD_LABELS = ("2", "-1", "0.5", "maybe", "inf")
TINY = TrainSettings(protocol="external", classifier="logistic", grid="small")


@dataclass
class Table:
    ids: list[str]
    cells: dict[str, list[str]]  # column -> text of each row, as in a CSV
    planted: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[float]:
        return [LABELS[c.strip()] if c.strip() in LABELS else np.nan for c in self.cells.get("he", [])]

    def numbers(self, column: str) -> np.ndarray:
        return np.array([np.nan if c in BLANKS else float(c) for c in self.cells[column]])


@st.composite
def tables(draw, min_rows: int = 6, max_rows: int = 16, plant: float = 0.5, id_prefix: str = "P") -> Table:
    """A feature table; with probability ``plant`` one or more problems are planted."""
    n = draw(st.integers(min_rows, max_rows), label="rows")
    planting = draw(st.integers(0, 99), label="planting") >= round(100 * (1 - plant))  # 0, the simplest: none
    planted: list[str] = []
    labels = [draw(st.sampled_from(("0", "1")), label="class") for _ in range(n)]
    # Two of each class at least: what the smallest fit needs (one class only is a case of its own).
    labels[:4] = ["0", "1", "0", "1"]
    ids = [f"{id_prefix}{i:03d}" for i in range(n)]
    cells: dict[str, list[str]] = {"patient_id": [draw(st.sampled_from(("", " "))) + i for i in ids]}
    columns = draw(st.lists(st.sampled_from(FEATURES), min_size=1, max_size=4, unique=True), label="features")
    for column in columns:
        values = []
        for label in labels:
            value = round(float(label) * 2 + draw(st.floats(-1, 1), label="noise"), 6)
            values.append(draw(st.sampled_from((repr(value),) * 9 + ("",)), label="blank?"))
        cells[column] = values
    cells["he"] = [draw(st.sampled_from((label, {"0": "no", "1": "yes"}[label], label + ".0", label)), label="spelling")
                   for label in labels]
    if n > 4 and draw(st.booleans(), label="some unlabelled"):
        cells["he"][draw(st.integers(4, n - 1))] = ""
    if planting:
        kinds = draw(st.lists(st.sampled_from(("text", "inf", "label", "no_label", "duplicate", "empty_id")),
                              min_size=1, max_size=3, unique=True), label="planted kinds")
        for kind in sorted(kinds, key=lambda k: k == "no_label"):  # the label column goes last
            row = draw(st.integers(0, n - 1), label=f"{kind} row")
            if kind in ("text", "inf"):
                column = draw(st.sampled_from(columns))
                cells[column][row] = draw(st.sampled_from(TEXT if kind == "text" else INFINITE))
            elif kind == "label":
                cells["he"][row] = draw(st.sampled_from(BAD_LABELS))
            elif kind == "no_label":
                del cells["he"]
            elif kind == "duplicate":
                other = (row + 1) % n
                cells["patient_id"][other] = ids[row]
                ids[other] = ids[row]
            else:
                cells["patient_id"][row] = draw(st.sampled_from(("", " ")))
            planted.append(kind)
    if all(c in BLANKS for column in columns for c in cells[column]):
        planted.append("no feature values")
    order = draw(st.permutations(list(cells)), label="column order")
    return Table(ids=ids, cells={c: cells[c] for c in order}, planted=planted)


def write_table(table: Table, path: Path) -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(table.cells))
            writer.writerows(zip(*table.cells.values()))
        return path
    frame = {}
    for column, cells in table.cells.items():
        try:  # a column of numbers (and blanks) is stored as numbers, anything else as text
            frame[column] = [np.nan if c in BLANKS else float(c) for c in cells]
            if column == "patient_id":
                raise ValueError
        except ValueError:
            frame[column] = [None if c == "" else c for c in cells]
    pd.DataFrame(frame).to_parquet(path, index=False)
    return path


def _labelled_ids(table: Table) -> list[str]:
    return [i.strip() for i, label in zip(table.ids, table.labels) if label == label]


# --------------------------------------------------------------------------- reading


@fuzz(100)
@given(table=tables(), suffix=st.sampled_from((".csv", ".parquet")))
def test_a_feature_table_is_read_exactly_or_refused_naming_it(table, suffix):
    with scratch() as folder:
        path = write_table(table, folder / f"features{suffix}")
        source, error = attempt(read_features, path, label="he")
        event("refused" if error is not None else "read")
        if table.planted:
            assert error is not None, f"planted {table.planted} but read without complaint"
            assert_names_file(error, path)
            return
        assert error is None, f"a valid table was refused: {error}"
        read = source.table
        assert read["patient_id"].tolist() == [i.strip() for i in table.ids]
        for column in (c for c in table.cells if c.startswith(("rad_", "clin_", "cnn_"))):
            np.testing.assert_array_equal(read[column].to_numpy(dtype=float), table.numbers(column))
        np.testing.assert_array_equal(read["he"].to_numpy(dtype=float), table.labels)


# --------------------------------------------------------------------------- training


@fuzz(10)
@given(first=tables(min_rows=8, max_rows=20, plant=0.35), second=tables(min_rows=6, max_rows=10, plant=0.15, id_prefix="Q"),
       one_class=st.integers(0, 4).map(lambda k: k == 4))
def test_training_uses_every_labelled_patient_or_refuses_naming_the_table(first, second, one_class):
    if one_class:  # every labelled patient of the training table in one class
        first.cells.get("he", [])[:] = ["1" if c.strip() else c for c in first.cells.get("he", [])]
    for column in FEATURES:  # the test table has the training table's feature columns
        if column in first.cells and column not in second.cells:
            second.cells[column] = [f"{k % 3 - 1}.5" for k in range(len(second.ids))]
        elif column in second.cells and column not in first.cells:
            del second.cells[column]
    with scratch() as folder:
        a, b = write_table(first, folder / "train.csv"), write_table(second, folder / "test.csv")
        result, error = attempt(train, a, folder / "model", TINY, test=b, progress=False)
        event("refused" if error is not None else "trained")
        if first.planted or second.planted or one_class:
            assert error is not None, f"planted {first.planted} / {second.planted} (one class: {one_class}), trained"
        if error is not None:
            assert_names_file(error, a, b)
            return
        assert result.train_ids == _labelled_ids(first), "training patients dropped or added"
        assert result.test_ids == _labelled_ids(second), "test patients dropped or added"


@fuzz(4)
@given(first=tables(min_rows=8, max_rows=16, plant=0.75), second=tables(min_rows=6, max_rows=8, plant=0.0, id_prefix="Q"))
def test_the_train_command_answers_a_bad_table_in_one_line(first, second):
    with scratch() as folder:
        a, b = write_table(first, folder / "train.csv"), write_table(second, folder / "test.csv")
        result = CliRunner().invoke(app, ["train", str(a), "--out", str(folder / "model"), "--protocol", "external",
                                          "--test", str(b), "--classifier", "logistic", "--grid", "small"])
        assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
        event(f"exit {result.exit_code}")
        assert "Traceback" not in result.output
        if first.planted:
            assert result.exit_code == 2 and "train.csv" in result.output, result.output
            assert not (folder / "model").exists(), "a model was written from a refused table"


# --------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny external-protocol model; its training table then changes, so evaluation skips the refits."""
    folder = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    y = np.arange(20) % 2
    frame = pd.DataFrame({"patient_id": [f"T{i}" for i in range(20)], "he": y,
                          **{c: y * 2 + rng.uniform(-1, 1, 20) for c in FEATURES}})
    frame.to_csv(folder / "train.csv", index=False)
    frame.iloc[:8].assign(patient_id=[f"V{i}" for i in range(8)]).to_csv(folder / "test.csv", index=False)
    train(folder / "train.csv", folder / "model", TINY, test=folder / "test.csv", progress=False)
    with open(folder / "train.csv", "a") as handle:
        handle.write("\n")
    return folder / "model"


@fuzz(8)
@given(table=tables(min_rows=6, max_rows=12, plant=0.4, id_prefix="Q"), drop=st.sampled_from((None,) * 4 + FEATURES))
def test_evaluation_scores_every_labelled_patient_or_refuses_naming_the_table(model, table, drop):
    from hematoma.assessment import assess

    for column in FEATURES:  # the model needs all four; drop one, maybe
        if column not in table.cells and column != drop:
            table.cells[column] = ["0.5"] * len(table.ids)
    if drop in table.cells:
        del table.cells[drop]
    with scratch() as folder:
        path = write_table(table, folder / "external.csv")
        assessment, error = attempt(assess, model, path, external=True)
        event("refused" if error is not None else "evaluated")
        if table.planted or drop is not None:
            assert error is not None, f"planted {table.planted} (dropped {drop}), evaluated"
        if error is not None:
            assert_names_file(error, path)
            return
        assert list(assessment.y.index) == _labelled_ids(table), "test patients dropped or added"
        expected = [label for label in table.labels if label == label]
        assert assessment.y.tolist() == expected
