"""Clinical variables: a typed schema, their encoding, and validation.

The paper (Bo, Xiong et al. 2023, Table 1) uses 15 clinical variables; the
15th, the baseline hematoma volume, is *computed* from the baseline mask
(:mod:`hematoma.volume`) and must not be typed in: a column
``baseline_volume_ml`` in a user's table is an error (a typed-in volume would
silently disagree with the images, and a follow-up volume pasted there would
leak the label).  Optional columns hold other known HE predictors
(onset-to-CT time, anticoagulation, INR, GCS); any other numeric column must
be declared (``extra_columns``) to be used, and is passed through unchecked
except that it must be numeric.

Encoding (case-insensitive): ``sex`` male = 1, female = 0 (M/F/male/female/1/0);
binary variables yes/no, y/n, true/false, 1/0 -> 1/0.  Blank cells and
NA/N/A/NaN/null/none stay missing (NaN): the model's imputer handles them.
Values outside a variable's plausible range (physiologically impossible, or a
unit mix-up such as D-dimer in ug/L or fibrinogen in mg/dL), text in a numeric
column, or an unknown category are errors; every bad cell of the table is
listed at once with its row number in the file (header = row 1) and
patient_id.  Missing *columns* are allowed (they are not features), with a
warning listing the absent core variables.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Literal, Mapping

import numpy as np
import pandas as pd

from ..errors import InputError, ManifestError

ID_COLUMN = "patient_id"
PREFIX = "clin_"
BASELINE_VOLUME = "baseline_volume_ml"

Kind = Literal["binary", "continuous", "categorical"]

_MISSING = {"", "na", "n/a", "nan", "null", "none"}
_YES_NO = MappingProxyType({"1": 1.0, "0": 0.0, "yes": 1.0, "no": 0.0, "y": 1.0, "n": 0.0, "true": 1.0, "false": 0.0})
_SEX = MappingProxyType({"m": 1.0, "male": 1.0, "1": 1.0, "f": 0.0, "female": 0.0, "0": 0.0})


@dataclass(frozen=True)
class Variable:
    """One clinical variable.

    ``plausible`` is the physiological range: a value outside it is impossible
    (or in the wrong unit) and rejected.  ``levels`` maps the accepted words of
    a binary/categorical variable (lower case) to its code.
    """

    name: str
    unit: str
    kind: Kind
    plausible: tuple[float, float] | None
    description: str
    core: bool = True  # one of the paper's 15 variables
    computed: bool = False  # computed by hematoma, never read from the user's table
    integer: bool = False
    levels: Mapping[str, float] | None = None

    @property
    def column(self) -> str:
        return PREFIX + self.name


def _binary(name: str, description: str, core: bool = True) -> Variable:
    return Variable(name, "", "binary", (0, 1), description, core=core, levels=_YES_NO)


_VARIABLES = [
    Variable("sex", "", "categorical", (0, 1), "sex; male = 1, female = 0", levels=_SEX),
    Variable("age", "years", "continuous", (0, 120), "age at admission"),
    Variable("sbp", "mmHg", "continuous", (40, 300), "systolic blood pressure at admission"),
    Variable("dbp", "mmHg", "continuous", (20, 200), "diastolic blood pressure at admission"),
    Variable("adl_index", "points", "continuous", (0, 100), "activities of daily living (Barthel index, 0-100)"),
    _binary("hypertension", "history of hypertension"),
    _binary("heart_disease", "history of heart disease"),
    _binary("diabetes", "history of diabetes mellitus"),
    Variable("platelet_count", "10^9/L", "continuous", (0, 2000), "platelet count"),
    Variable("neutrophil_count", "10^9/L", "continuous", (0, 100), "absolute neutrophil count"),
    Variable("neutrophil_percent", "%", "continuous", (0, 100), "neutrophils, % of white cells"),
    Variable("d_dimer", "mg/L", "continuous", (0, 100), "D-dimer (mg/L FEU; 1 mg/L = 1000 ug/L)"),
    Variable("fibrinogen", "g/L", "continuous", (0, 15), "fibrinogen (1 g/L = 100 mg/dL)"),
    Variable("prothrombin_time", "s", "continuous", (5, 150), "prothrombin time"),
    Variable(
        BASELINE_VOLUME, "mL", "continuous", (0, 500),
        "baseline hematoma volume, computed from the baseline mask (voxel count x voxel volume)", computed=True,
    ),
    # Known HE predictors that the paper does not use; optional.
    Variable("onset_to_ct_hours", "h", "continuous", (0, 720), "time from symptom onset to baseline CT", core=False),
    _binary("anticoagulation", "oral anticoagulant treatment at onset", core=False),
    Variable("inr", "", "continuous", (0.5, 15), "international normalised ratio", core=False),
    Variable("gcs", "points", "continuous", (3, 15), "Glasgow coma scale at admission", core=False, integer=True),
]

CLINICAL_SCHEMA: Mapping[str, Variable] = MappingProxyType({v.name: v for v in _VARIABLES})
CORE_VARIABLES = tuple(v.name for v in _VARIABLES if v.core)  # the paper's 15, baseline volume included
USER_VARIABLES = tuple(v.name for v in _VARIABLES if not v.computed)  # what a user's table may hold


class ClinicalWarning(UserWarning):
    """Something in a clinical table worth knowing that is not an error."""


class _Bad:
    """A cell that could not be encoded, and why."""

    def __init__(self, why: str):
        self.why = why


def _is_missing(cell: object) -> bool:
    if cell is None:
        return True
    if isinstance(cell, float) and math.isnan(cell):
        return True
    return isinstance(cell, str) and cell.strip().lower() in _MISSING


def _number(cell: object) -> float | _Bad:
    if isinstance(cell, (bool, np.bool_)):
        return _Bad("is not a number")
    try:
        value = float(cell.strip() if isinstance(cell, str) else cell)
    except (TypeError, ValueError):
        return _Bad("is not a number")
    return value if math.isfinite(value) else _Bad("is not a finite number")


def encode_value(variable: Variable, cell: object) -> float | _Bad:
    """One cell of ``variable`` as a float (NaN when missing), or a :class:`_Bad` with the reason."""
    if _is_missing(cell):
        return math.nan
    if variable.levels is not None:
        if isinstance(cell, (bool, np.bool_)):
            cell = int(cell)
        if isinstance(cell, (int, float, np.integer, np.floating)) and float(cell) in (0.0, 1.0):
            cell = str(int(cell))
        word = str(cell).strip().lower()
        if word in ("1.0", "0.0"):
            word = word[0]
        if word in variable.levels:
            return variable.levels[word]
        accepted = "M/F (male/female, 1/0)" if variable.name == "sex" else "yes/no (y/n, true/false, 1/0)"
        return _Bad(f"is not one of {accepted}")
    value = _number(cell)
    if isinstance(value, _Bad):
        return value
    if variable.plausible is not None:
        low, high = variable.plausible
        if not low <= value <= high:
            unit = f" {variable.unit}" if variable.unit else ""
            return _Bad(f"is outside the plausible range {low:g}-{high:g}{unit}")
    if variable.integer and value != round(value):
        return _Bad("is not a whole number")
    return value


def _extra_variable(name: str) -> Variable:
    return Variable(name, "", "continuous", None, "user-declared extra column", core=False)


def _variables_in(table: pd.DataFrame, extra_columns: Iterable[str]) -> list[Variable]:
    """The clinical variables present in ``table``: schema order, then declared extras."""
    present = [v for v in _VARIABLES if v.name in table.columns and not v.computed]
    extras = [c for c in dict.fromkeys(extra_columns) if c in table.columns and c not in CLINICAL_SCHEMA]
    present += [_extra_variable(c) for c in extras]
    return present


def _row_label(table: pd.DataFrame, position: int) -> str:
    row = f"row {position + 2}"  # as in the file: the header is row 1
    if ID_COLUMN in table.columns:
        ids = table[ID_COLUMN]
        ids = ids.iloc[:, 0] if isinstance(ids, pd.DataFrame) else ids  # a duplicated column: its first copy
        patient = ids.iloc[position]
        if not _is_missing(patient):
            row += f" (patient_id {str(patient).strip()!r})"
    return row


def _encode(table: pd.DataFrame, extra_columns: Iterable[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    extra_columns = tuple(extra_columns)
    problems: list[str] = []
    # A table handed in directly may repeat a name: which copy holds the variable is unknowable.
    duplicated = set(table.columns[table.columns.duplicated()])
    for name in dict.fromkeys(c for c in table.columns if c in duplicated):
        problems.append(f"duplicate column {name!r}")
    if BASELINE_VOLUME in table.columns:
        problems.append(
            f"column {BASELINE_VOLUME!r} is computed by hematoma from the baseline mask and must not be typed in; "
            "remove it from the table"
        )
    for name in extra_columns:
        if name not in table.columns:
            problems.append(f"declared extra column {name!r} is not in the table")
        elif name == BASELINE_VOLUME:
            problems.append(f"{name!r} cannot be an extra column (it is computed)")

    encoded: dict[str, np.ndarray] = {}
    for variable in _variables_in(table, extra_columns):
        if variable.name in duplicated:
            continue
        values = np.full(len(table), np.nan)
        for position, cell in enumerate(table[variable.name].tolist()):
            value = encode_value(variable, cell)
            if isinstance(value, _Bad):
                problems.append(f"{_row_label(table, position)}: {variable.name} {str(cell).strip()!r} {value.why}")
            else:
                values[position] = value
        encoded[variable.name] = values

    if "sbp" in encoded and "dbp" in encoded:
        sbp, dbp = encoded["sbp"], encoded["dbp"]
        for position in np.flatnonzero(dbp >= sbp):  # NaN compares False: missing values pass
            problems.append(
                f"{_row_label(table, position)}: dbp {dbp[position]:g} is not below sbp {sbp[position]:g} "
                "(columns swapped?)"
            )
    return encoded, problems


def clinical_problems(table: pd.DataFrame, extra_columns: Iterable[str] = ()) -> list[str]:
    """Every problem in the clinical columns of ``table`` (empty when it is valid).

    Rows are numbered as in the file (header = row 1, so the first patient is
    row 2), assuming ``table`` holds the file's rows in order.
    """
    return _encode(table, extra_columns)[1]


def encode_clinical(
    table: pd.DataFrame,
    source: str | Path | None = None,
    extra_columns: Iterable[str] = (),
) -> pd.DataFrame:
    """``patient_id`` and one float column ``clin_<name>`` per clinical variable present.

    Columns that are neither schema variables nor declared ``extra_columns``
    (paths, labels, notes...) are left out.  Raises :class:`ManifestError`
    (naming ``source``) listing every bad cell; warns (:class:`ClinicalWarning`)
    about core variables absent from the table.
    """
    where = source if source is not None else "clinical table"
    if ID_COLUMN not in table.columns:
        raise ManifestError(where, [f"missing required column {ID_COLUMN!r}"])
    encoded, problems = _encode(table, extra_columns)
    if problems:
        raise ManifestError(where, problems)

    absent = [name for name in CORE_VARIABLES if name not in table.columns and not CLINICAL_SCHEMA[name].computed]
    if absent:
        warnings.warn(
            f"{where}: clinical variables of the paper absent from the table (they will not be features): "
            + ", ".join(absent),
            ClinicalWarning,
            stacklevel=2,
        )
    columns = {ID_COLUMN: table[ID_COLUMN].astype(str).str.strip().to_numpy()}
    columns.update({PREFIX + name: values for name, values in encoded.items()})
    return pd.DataFrame(columns)


def load_clinical(path: str | Path, extra_columns: Iterable[str] = (), ignore_columns: Iterable[str] = (),
                  known_extras: Iterable[str] = ()) -> pd.DataFrame:
    """Read a clinical CSV (``patient_id`` + variables) and encode it (see :func:`encode_clinical`).

    The manifest's column rules apply (a manifest is a valid clinical file): a
    column that is neither a manifest column, a clinical variable nor declared
    in ``extra_columns`` is refused with the name it most likely means, so that a
    misspelt ``sbp_mmhg`` is never silently left out; ``ignore_columns`` are
    dropped first.  ``known_extras`` are extra variables used when present (a
    model's own extra columns).
    """
    from ..cohort import column_problems, duplicate_column_problems, known_columns, read_text_table_and_duplicates

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "is not a file")
    extra_columns, ignore_columns, known_extras = tuple(extra_columns), set(ignore_columns), tuple(known_extras)
    # As text: parsing is encode_clinical's job, so a bad cell is reported with its row.
    table, duplicates = read_text_table_and_duplicates(path)
    table = table.drop(columns=[c for c in table.columns if c in ignore_columns])
    problems = duplicate_column_problems(duplicates, ignore_columns)
    problems += column_problems(table.columns, known_columns(extra_columns) | set(known_extras))
    if ID_COLUMN not in table.columns:
        problems.insert(0, f"missing required column {ID_COLUMN!r}")
    if problems:
        raise ManifestError(path, problems)
    declared = list(dict.fromkeys([*extra_columns, *(c for c in known_extras if c in table.columns)]))
    return encode_clinical(table, source=path, extra_columns=declared)
