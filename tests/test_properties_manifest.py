"""Property-based tests of the manifest (hematoma.cohort.load_manifest) over generated CSVs.

Each generated manifest is valid except for the problems planted in it (missing
or unknown columns, duplicate or empty ids, missing files, bad labels, bad or
impossible clinical values...), written in a random but legitimate CSV dialect
(BOM, CRLF, quoting, padded cells).  Properties: with nothing planted it loads
with the right content; with problems planted it raises one ManifestError
naming the file that lists *every* planted problem; arbitrary text or bytes
give a manifest or an InputError naming the file, never another exception.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.cohort import load_manifest
from hematoma.errors import InputError, ManifestError
from hematoma.features.clinical import CLINICAL_SCHEMA, USER_VARIABLES
from strategies import assert_names_file, attempt, fuzz, scratch

MANIFEST = "manifest.csv"
ID_ALPHABET = "ABCPXZabcxyz0123456789_-éßЖ中"
MISSING_WORDS = ("", "NA", "n/a", "NaN", "nan", "null", "None")
VALID_LABELS = ("0", "1", "yes", "no", "Y", "n", "TRUE", "false", "1.0", "0.0", " 1 ")
INVALID_LABELS = ("2", "-1", "0.5", "maybe", "yes!", "inf", "ja", "1 0")
# Files a manifest may point at (created for each example); a folder stands for a DICOM series.
EXISTING = ("ct_a.nii.gz", "ct b.nii.gz", "é/ct.nrrd", "sub/dir/mask.mha", "dicom_folder")
ABSENT = ("missing.nii.gz", "nowhere/ct.nii.gz", "ct_a.nii", "missing é.nrrd", "new\nline.nii.gz")
UNKNOWN_COLUMNS = ("agee", "site", "Notes", "sbp_mmhg", "he_label", "Patient_ID", "ﬁbrinogen")


@dataclass
class Planted:
    """What a manifest must be refused for: every pattern must match one and the same problem."""

    patterns: tuple[str, ...]

    def found_in(self, problems: list[str]) -> bool:
        return any(all(re.search(p, message) for p in self.patterns) for message in problems)


def _row(r: int, column: str) -> Planted:
    return Planted((rf"\brow {r}\b", rf"(?<![\w.]){re.escape(column)}(?![\w])"))


@dataclass
class Spec:
    columns: list[str]
    rows: list[list[str]]
    planted: list[Planted] = field(default_factory=list)
    expected_ids: list[str] = field(default_factory=list)
    expected_labels: list[float] = field(default_factory=list)
    require_followup: bool = False
    extra_columns: tuple[str, ...] = ()
    bom: bool = False
    newline: str = "\n"
    quote_all: bool = False


def _pad(draw, text: str) -> str:
    """Surrounding spaces and tabs, which every reader of the manifest ignores."""
    return draw(st.sampled_from(("", " ", "  ", "\t"))) + text + draw(st.sampled_from(("", " ", "\t ")))


def _number_text(draw, value: float) -> str:
    return draw(st.sampled_from((f"{value:g}", f"{value:.4f}", f"{value:e}", f"{value:.1E}")))


def _clinical_cell(draw, name: str, r: int, planted: list[Planted], sbp_dbp: dict) -> str:
    variable = CLINICAL_SCHEMA[name]
    choice = draw(st.sampled_from(("valid", "valid", "valid", "missing", "invalid")), label=f"{name} kind")
    if choice == "missing":
        return draw(st.sampled_from(MISSING_WORDS))
    if variable.levels is not None:
        if choice == "valid":
            return _pad(draw, draw(st.sampled_from(sorted(variable.levels) + [w.upper() for w in variable.levels])))
        planted.append(_row(r, name))
        return draw(st.sampled_from(("maybe", "2", "x", "-1", "0.5", "yes please")))
    low, high = variable.plausible
    if name == "sbp":
        low = 120.0  # valid sbp/dbp pairs are always sbp > dbp (dbp >= sbp is a planted problem of its own)
    if name == "dbp":
        high = 110.0
    if choice == "valid":
        if variable.integer:
            value = float(draw(st.integers(int(low), int(high))))
            text = f"{value:g}"
        else:
            value = low + (high - low) * draw(st.integers(0, 1000)) / 1000
            text = _number_text(draw, value)
            value = float(text)
        if name in ("sbp", "dbp"):
            sbp_dbp[name] = value
        return _pad(draw, text)
    planted.append(_row(r, name))
    below = variable.plausible[0] - 1 - draw(st.integers(0, 1000))
    above = variable.plausible[1] * 10 + 1 + draw(st.integers(0, 10**6))
    bad = [f"{below:g}", f"{above:g}", "inf", "-inf", "1e400", "9" * 400, "abc", "1,5", "12 mmHg", "--", "6\n4"]
    if variable.integer:
        bad.append(f"{low + 0.5:g}")
    return draw(st.sampled_from(bad))


@st.composite
def manifests(draw) -> Spec:
    planted: list[Planted] = []
    require_followup = draw(st.booleans(), label="require_followup")
    columns = []
    for column in ("patient_id", "baseline_ct"):
        if draw(st.integers(0, 9), label=f"drop {column}") == 0:
            planted.append(Planted((r"missing|required", re.escape(column))))
        else:
            columns.append(column)
    optional = ["followup_ct", "baseline_mask", "followup_mask", "he", "baseline_series"]
    columns += [c for c in optional if draw(st.booleans(), label=f"has {c}")]
    if require_followup and "followup_ct" not in columns:
        planted.append(Planted((r"missing|required", "followup_ct")))
    clinical = draw(st.lists(st.sampled_from(USER_VARIABLES), unique=True, max_size=5), label="clinical")
    columns += clinical
    extra_columns = ("lactate",) if draw(st.booleans(), label="declared extra") else ()
    columns += list(extra_columns)
    if draw(st.integers(0, 5), label="unknown column") == 0:
        unknown = draw(st.sampled_from(UNKNOWN_COLUMNS))
        if unknown not in columns:
            columns.append(unknown)
            planted.append(Planted((re.escape(unknown),)))
    if draw(st.integers(0, 9), label="typed-in volume") == 0:
        columns.append("baseline_volume_ml")
        planted.append(Planted(("baseline_volume_ml",)))
    duplicate = None
    if columns and draw(st.integers(0, 7), label="duplicated column") == 0:
        duplicate = draw(st.sampled_from(columns))
        planted.append(Planted((re.escape(duplicate),)))
    columns = draw(st.permutations(columns), label="column order")

    n_rows = draw(st.integers(0, 6), label="rows")
    if n_rows == 0:
        planted.append(Planted((r"no patients|no rows|empty",)))
    ids = draw(st.lists(
        st.text(ID_ALPHABET, min_size=1, max_size=6).filter(lambda s: s.lower() not in {"na", "nan", "null", "none"}),
        min_size=n_rows, max_size=n_rows, unique=True), label="ids")
    rows, expected_labels = [], []
    for i in range(n_rows):
        r = i + 2  # as in the file: the header is row 1
        sbp_dbp: dict = {}
        cells = {}
        for column in columns:
            if column == "patient_id":
                kind = draw(st.sampled_from(("ok",) * 8 + ("empty", "duplicate")), label="id kind")
                earlier = [j for j in range(i) if ids[j]]
                if kind == "empty":
                    planted.append(_row(r, "patient_id"))
                    cells[column] = draw(st.sampled_from(("", " ", "\t")))
                    ids[i] = ""
                elif kind == "duplicate" and earlier:
                    ids[i] = ids[draw(st.sampled_from(earlier))]
                    planted.append(Planted(("duplicate", re.escape(ids[i]))))
                    cells[column] = _pad(draw, ids[i])
                else:
                    cells[column] = _pad(draw, ids[i])
            elif column in ("baseline_ct", "followup_ct", "baseline_mask", "followup_mask"):
                required = column == "baseline_ct" or (column == "followup_ct" and require_followup)
                kind = draw(st.sampled_from(("exists",) * 6 + ("absolute", "empty", "absent")), label=f"{column} kind")
                if kind == "empty":
                    if required:
                        planted.append(_row(r, column))
                    cells[column] = ""
                elif kind == "absent":
                    planted.append(_row(r, column))
                    cells[column] = draw(st.sampled_from(ABSENT))
                else:
                    name = draw(st.sampled_from(EXISTING))
                    cells[column] = ("{ROOT}/" + name) if kind == "absolute" else name
            elif column == "he":
                if draw(st.integers(0, 5), label="bad label") == 0:
                    planted.append(_row(r, "he"))
                    cells[column] = draw(st.sampled_from(INVALID_LABELS))
                    expected_labels.append(np.nan)
                else:
                    cell = draw(st.sampled_from(VALID_LABELS + MISSING_WORDS))
                    word = cell.strip().lower()
                    expected_labels.append(np.nan if word in {w.lower() for w in MISSING_WORDS}
                                           else float(word in ("1", "yes", "y", "true", "1.0")))
                    cells[column] = cell
            elif column == "baseline_series":
                if draw(st.integers(0, 5), label="bad series") == 0:
                    planted.append(_row(r, column))
                    cells[column] = draw(st.sampled_from(("abc", "1..2", "1.2.x", "9" * 65)))
                else:
                    cells[column] = draw(st.sampled_from(("", "1.2.840.10008.5.1.4.1.1.2", "1.3.6.1.4.1.9590")))
            elif column == "lactate":
                if draw(st.integers(0, 5), label="bad extra") == 0:
                    planted.append(_row(r, column))
                    cells[column] = draw(st.sampled_from(("abc", "inf", "1,5")))
                else:
                    cells[column] = _pad(draw, _number_text(draw, draw(st.integers(0, 200)) / 10))
            elif column in CLINICAL_SCHEMA and column != "baseline_volume_ml":
                cells[column] = _clinical_cell(draw, column, r, planted, sbp_dbp)
            else:  # unknown or typed-in volume: their content does not matter
                cells[column] = draw(st.sampled_from(("", "1", "x", "12.5")))
        if "sbp" in sbp_dbp and "dbp" in sbp_dbp and draw(st.integers(0, 4), label="swap sbp/dbp") == 0:
            cells["sbp"], cells["dbp"] = "80", "100"
            planted.append(_row(r, "dbp"))
        rows.append([cells[c] for c in columns])

    header = list(columns)
    if duplicate is not None:
        header.append(duplicate)
        for row in rows:
            row.append(row[columns.index(duplicate)])
    header = [_pad(draw, c) if draw(st.booleans(), label="pad header") else c for c in header]
    return Spec(
        columns=header, rows=rows, planted=planted, expected_ids=list(ids),
        expected_labels=expected_labels, require_followup=require_followup, extra_columns=extra_columns,
        bom=draw(st.booleans(), label="BOM"), newline=draw(st.sampled_from(("\n", "\r\n")), label="newline"),
        quote_all=draw(st.booleans(), label="quote all"),
    )


def _materialise(spec: Spec, folder: Path) -> Path:
    for name in EXISTING:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "dicom_folder":
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(b"not read by load_manifest")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=spec.newline, quoting=csv.QUOTE_ALL if spec.quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(spec.columns)
    for row in spec.rows:
        writer.writerow([cell.replace("{ROOT}", str(folder)) for cell in row])
    path = folder / MANIFEST
    path.write_text(buffer.getvalue(), encoding="utf-8-sig" if spec.bom else "utf-8", newline="")
    return path


def _problems(error: InputError) -> list[str]:
    return error.problems if isinstance(error, ManifestError) else [str(error)]


@fuzz(80)
@given(spec=manifests())
def test_a_manifest_loads_correctly_or_every_planted_problem_is_reported(spec):
    with scratch() as folder:
        path = _materialise(spec, folder)
        manifest, error = attempt(load_manifest, path, extra_columns=spec.extra_columns,
                                  require_followup=spec.require_followup)
        if not spec.planted:
            assert error is None, f"a valid manifest was refused: {error}"
            table = manifest.table
            assert manifest.ids == spec.expected_ids
            for column in ("baseline_ct", "followup_ct", "baseline_mask", "followup_mask"):
                if column in table.columns:
                    for cell, resolved in zip([row[[c.strip() for c in spec.columns].index(column)]
                                               for row in spec.rows], table[column]):
                        if cell == "":
                            assert resolved is None or resolved != resolved  # blank stays blank
                        else:
                            expected = Path(cell.replace("{ROOT}", str(folder)))
                            assert Path(resolved) == (expected if expected.is_absolute() else folder / expected)
                            assert Path(resolved).exists()
            if "he" in table.columns:
                np.testing.assert_array_equal(table["he"].to_numpy(dtype=float), spec.expected_labels)
            return
        assert error is not None, f"{len(spec.planted)} planted problem(s) not reported: {spec.planted}"
        assert_names_file(error, path)
        if not spec.columns:
            return  # an empty file: refused as a whole, there is nothing else to list
        problems = _problems(error)
        missed = [p.patterns for p in spec.planted if not p.found_in(problems)]
        assert not missed, f"planted problems not reported: {missed}; reported: {problems}"


@fuzz(80)
@given(content=st.one_of(
    st.lists(st.sampled_from(list(',;"\n\r\t x01.é\x00\ufeff') + ["patient_id", "baseline_ct", "he", "age",
                                                                   "ct_a.nii.gz", "NaN", "inf", "-1"]),
             max_size=60).map("".join),
    st.binary(max_size=200),
    st.builds(lambda body: "patient_id,baseline_ct,he\n" + body,
              st.lists(st.sampled_from(list(',;"\n x1é') + ["P1", "ct_a.nii.gz", "."]), max_size=40).map("".join)),
))
def test_any_text_or_bytes_give_a_manifest_or_an_error_naming_the_file(content):
    with scratch() as folder:
        (folder / "ct_a.nii.gz").write_bytes(b"x")
        path = folder / MANIFEST
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8", newline="")
        else:
            path.write_bytes(content)
        manifest, error = attempt(load_manifest, path)
        if error is not None:
            assert_names_file(error, path)
        else:
            assert len(manifest.ids) > 0 and all(isinstance(i, str) and i.strip() == i and i for i in manifest.ids)
            assert len(set(manifest.ids)) == len(manifest.ids)
            assert all(Path(p).exists() for p in manifest.table["baseline_ct"])


@fuzz(5)
@given(spec=manifests().filter(lambda spec: bool(spec.planted) and not spec.require_followup))
def test_the_cli_reports_a_bad_manifest_in_one_line_and_writes_nothing(spec):
    with scratch() as folder:
        path = _materialise(spec, folder)
        out = folder / "out"
        args = ["extract", str(path), "--out", str(out)]
        for column in spec.extra_columns:
            args += ["--extra-column", column]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("warning:")]
        assert any(MANIFEST in line for line in lines), result.output
        assert not out.exists() or not any(out.iterdir()), "an output was written for a manifest that was refused"
