"""The cohort manifest: one row per patient, validated all at once; cohort splits.

Manifest (CSV): ``patient_id``, ``baseline_ct``, ``followup_ct`` (optional at
prediction time), optional ``baseline_mask``, ``followup_mask``, ``he`` (a
known 0/1 label, parsed by :mod:`hematoma.labels`), optional ``baseline_series``
and ``followup_series`` (the DICOM SeriesInstanceUID to read from a folder that
holds several series), then clinical columns by their schema names
(:mod:`hematoma.features.clinical`).  Paths are relative to the manifest's
folder.  Validation lists every problem (missing files, duplicate ids,
unknown or misspelled columns, unparseable or out-of-range values) in one
error so a user fixes the table in one pass.

Split (the paper's protocol): stratified 50/50 into cohort 1 (trains the CNN)
and cohort 2; cohort 2 into train and test (100 test patients of 204 in the
paper, the same fraction for smaller cohorts).  Seeded, and written to the
output folder so every later step reuses exactly the same split.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, ManifestError
from .labels import INVALID, parse_label
from .storage import atomic_path, same_file

ID_COLUMN = "patient_id"
PATH_COLUMNS = ("baseline_ct", "followup_ct", "baseline_mask", "followup_mask")
REQUIRED_COLUMNS = (ID_COLUMN, "baseline_ct")
LABEL_COLUMN = "he"
# Which series of a DICOM folder to read (text: a SeriesInstanceUID), for the CT of the same name.
SERIES_COLUMNS = ("baseline_series", "followup_series")
# A DICOM UID (PS3.5 9.1): numeric components separated by dots, at most 64 characters.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
# The paper: 408 patients, cohort 2 of 204 split 104 train / 100 test.
PAPER_TEST_SIZE = 100
PAPER_COHORT2_SIZE = 204


@dataclass
class Manifest:
    """A validated manifest: ``table`` has absolute paths (str) and NaN for blanks."""

    path: Path
    table: pd.DataFrame
    extra_columns: tuple[str, ...] = field(default_factory=tuple)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def ids(self) -> list[str]:
        return self.table[ID_COLUMN].tolist()


def known_columns(extra_columns=()) -> set[str]:
    from .features.clinical import CLINICAL_SCHEMA

    return {ID_COLUMN, *PATH_COLUMNS, LABEL_COLUMN, *SERIES_COLUMNS, *CLINICAL_SCHEMA, *extra_columns}


def suggest_column(column: str, known) -> str | None:
    """The known column a misspelt or unit-suffixed ``column`` most likely means, or None.

    difflib catches typos (``agee``); a case difference (``SBP``) or a unit appended
    to the name (``sbp_mmhg``, ``age (years)``) is too far for its ratio, so those
    are matched first: the longest known name the column starts with, followed by a
    separator.
    """
    lowered = column.strip().lower()
    by_lower = {name.lower(): name for name in known}
    if lowered in by_lower:
        return by_lower[lowered]
    prefixes = [name for low, name in by_lower.items() if re.match(re.escape(low) + r"[\s_(\[/-]", lowered)]
    if prefixes:
        return max(prefixes, key=len)
    close = difflib.get_close_matches(column, sorted(known), n=1, cutoff=0.75)
    return close[0] if close else None


def column_problems(columns, known) -> list[str]:
    """One problem per column that is not ``known``, with the likely meant name or the way out."""
    problems = []
    for column in columns:
        if column not in known:
            close = suggest_column(column, known)
            hint = f" (did you mean {close!r}?)" if close else " (declare it with --extra-column or drop it with --ignore-column)"
            problems.append(f"unknown column {column!r}{hint}")
    return problems


# What a file handed over as CSV turns out to be, by its first bytes (magic numbers and BOMs).
_NOT_CSV_MAGIC = (
    (b"PK\x03\x04", "is an Excel workbook or another zip file, not CSV: export it as CSV"),
    (b"\xd0\xcf\x11\xe0", "is an old Excel (.xls) or another OLE2 file, not CSV: export it as CSV"),
    (b"\xff\xfe", "is UTF-16 text: save it as UTF-8 CSV"),
    (b"\xfe\xff", "is UTF-16 text: save it as UTF-8 CSV"),
)
_OTHER_SEPARATORS = {";": ";-separated", "\t": "tab-separated"}


def csv_format_problem(path: Path) -> str | None:
    """Why ``path`` is not a comma-separated text file, from its first bytes; ``None`` when it may be.

    Spreadsheet exports are the usual culprits: a workbook renamed .csv, UTF-16
    text ("Unicode text" in Excel), or a ;- or tab-separated export (Excel in
    locales with a decimal comma).  Read by hand: pandas would report these as a
    decode error or as one column named after the whole header line.  The header
    is the first line; it holds a separator only if it has several cells.
    """
    with open(path, "rb") as file:
        head = file.read(65536)
    for magic, problem in _NOT_CSV_MAGIC:
        if head.startswith(magic):
            return problem
    header = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if "," not in header:
        for separator, name in _OTHER_SEPARATORS.items():
            if separator in header:
                return f"looks {name} (a spreadsheet export with another separator?): save it as comma-separated CSV"
    return None


def read_text_table_and_duplicates(path: Path) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """A CSV as stripped text (blanks as ""), and its duplicated column names.

    Column names are stripped before duplicates are looked for, so ``he`` and
    ``"he "`` are the same column.  The table keeps the first of each duplicated
    column; the second value maps each duplicated name to its 1-based column
    numbers, for the caller to list among its problems.
    """
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a CSV file")
    problem = csv_format_problem(path)
    if problem:
        raise InputError(path, problem)
    try:
        # Everything as text first: parsing numbers is validation's job, so a
        # bad cell is reported with its row instead of failing the whole read.
        # The header is read as a row (header=None): pandas would rename a
        # duplicate to 'x.1' before names are stripped, hiding it, and would
        # silently take the first column as an index when rows have one field
        # more than the header (with header=None that is a parse error).
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot be read as CSV ({str(error).splitlines()[0]})") from None
    # A blank header cell is named as pandas names it, so --ignore-column can drop it.
    names = [str(cell).strip() or f"Unnamed: {i}" for i, cell in enumerate(raw.iloc[0])]
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        positions.setdefault(name, []).append(i)
    table = raw.iloc[1:, [where[0] for where in positions.values()]].reset_index(drop=True)
    table.columns = list(positions)
    duplicates = {name: [i + 1 for i in where] for name, where in positions.items() if len(where) > 1}
    return table.apply(lambda column: column.str.strip()), duplicates


def duplicate_column_problems(duplicates: dict[str, list[int]], ignore_columns=()) -> list[str]:
    """One problem per duplicated column name (ignored columns are dropped whole, so they are no problem)."""
    return [
        f"duplicate column {name!r} (columns {', '.join(map(str, where))})"
        for name, where in duplicates.items()
        if name not in set(ignore_columns)
    ]


def read_text_table(path: Path) -> pd.DataFrame:
    """A CSV as stripped text (blanks as ""); a duplicated column name is a :class:`ManifestError`."""
    table, duplicates = read_text_table_and_duplicates(path)
    if duplicates:
        raise ManifestError(path, duplicate_column_problems(duplicates))
    return table


def load_manifest(
    path: str | Path,
    extra_columns=(),
    ignore_columns=(),
    require_followup: bool = False,
    check_files: bool = True,
) -> Manifest:
    """Read and validate a manifest; raise :class:`ManifestError` listing every problem."""
    from .features.clinical import clinical_problems

    path = Path(path)
    table, duplicates = read_text_table_and_duplicates(path)
    table = table.drop(columns=[c for c in ignore_columns if c in table.columns])
    problems: list[str] = duplicate_column_problems(duplicates, ignore_columns)
    known = known_columns(extra_columns)

    for column in REQUIRED_COLUMNS + (("followup_ct",) if require_followup else ()):
        if column not in table.columns:
            problems.append(f"missing required column {column!r}")
    problems.extend(column_problems(table.columns, known))
    if len(table) == 0:
        problems.append("no patients (the table has no rows)")

    row_of = {i: i + 2 for i in range(len(table))}  # 1-based, after the header line
    if ID_COLUMN in table.columns:
        ids = table[ID_COLUMN]
        for i in np.flatnonzero(ids.eq("").to_numpy()):
            problems.append(f"row {row_of[i]}: empty patient_id")
        duplicated = ids[ids.ne("") & ids.duplicated(keep=False)]
        for value, rows in duplicated.groupby(duplicated).groups.items():
            problems.append(f"duplicate patient_id {value!r} in rows {', '.join(str(row_of[r]) for r in rows)}")
        # Ids are folder names (OUT/cases/<id>): on macOS and Windows, P0001 and p0001 are one folder.
        distinct = ids[ids.ne("") & ~ids.duplicated()]
        folded = distinct.str.casefold()
        for _, same in distinct[folded.duplicated(keep=False)].groupby(folded).groups.items():
            shown = ", ".join(f"{distinct[r]!r} (row {row_of[r]})" for r in same)
            problems.append(f"patient_ids {shown} differ only by case: their case folders would be one on macOS "
                            "and Windows")

    resolved = table.copy()
    for column in PATH_COLUMNS:
        if column not in table.columns:
            continue
        values = []
        for i, cell in enumerate(table[column]):
            if cell == "":
                if column in REQUIRED_COLUMNS or (column == "followup_ct" and require_followup):
                    problems.append(f"row {row_of[i]}: empty {column}")
                values.append(None)
                continue
            file = Path(cell)
            file = file if file.is_absolute() else path.parent.absolute() / file  # later stages run elsewhere
            if check_files and not file.exists():
                problems.append(f"row {row_of[i]}: {column} {cell!r} not found")  # repr: one line whatever the cell holds
            values.append(str(file))
        resolved[column] = values

    # A follow-up that is the baseline's file (a copy-paste slip) gives growth 0 and a silent HE "no".
    # Paths only: hashing every file of a cohort here is too slow (extract_case compares contents).
    # One DICOM folder may hold both scans as two series: then the series columns tell them apart.
    def series(column: str) -> list[str]:
        return [str(v).strip() for v in table[column]] if column in table.columns else [""] * len(table)

    other_series = [a != b for a, b in zip(series("baseline_series"), series("followup_series"))]
    for baseline, followup in (("baseline_ct", "followup_ct"), ("baseline_mask", "followup_mask")):
        if baseline in resolved.columns and followup in resolved.columns:
            for i, (first, second) in enumerate(zip(resolved[baseline], resolved[followup])):
                if baseline == "baseline_ct" and other_series[i]:
                    continue
                if isinstance(first, str) and isinstance(second, str) and same_file(first, second):
                    problems.append(f"row {row_of[i]}: {followup} is the same file as {baseline}")

    if LABEL_COLUMN in table.columns:
        labels = []
        for i, cell in enumerate(table[LABEL_COLUMN]):
            value = parse_label(cell)
            if value is INVALID:
                problems.append(f"row {row_of[i]}: he {cell!r} is not 0/1 (yes/no)")
                value = None
            labels.append(np.nan if value is None else float(value))
        resolved[LABEL_COLUMN] = labels

    for column in SERIES_COLUMNS:
        if column in table.columns:
            for i, cell in enumerate(table[column]):
                if cell != "" and (len(cell) > 64 or not _UID.fullmatch(cell)):
                    problems.append(f"row {row_of[i]}: {column} {cell!r} is not a DICOM SeriesInstanceUID "
                                    "(digits and dots, at most 64 characters)")

    problems.extend(clinical_problems(table, extra_columns=extra_columns))
    if problems:
        raise ManifestError(path, problems)
    for column in table.columns:
        if column not in PATH_COLUMNS and column not in (ID_COLUMN, LABEL_COLUMN):
            resolved[column] = resolved[column].replace("", np.nan)
    return Manifest(path=path, table=resolved.reset_index(drop=True), extra_columns=tuple(extra_columns))


def _stratify_or_none(labels: pd.Series, n_splits_min: int = 2):
    # Stratify only when every patient has a label and each class can be split.
    if labels is None or labels.isna().any():
        return None
    counts = labels.value_counts()
    if len(counts) < 2 or counts.min() < n_splits_min:
        return None
    return labels.to_numpy()


def split_cohort(
    table: pd.DataFrame,
    seed: int = 0,
    label: str | pd.Series | None = LABEL_COLUMN,
    cohort1_fraction: float = 0.5,
    test_size: int | None = None,
) -> pd.DataFrame:
    """The paper's split: ``patient_id``, ``cohort`` (1 or 2) and ``part``.

    ``part`` is ``cnn`` for cohort 1 and ``train``/``test`` for cohort 2.  The
    test part has ``test_size`` patients (default: 100, or 100/204 of cohort 2
    when it has fewer than 204 patients, as in the paper).
    """
    ids = table[ID_COLUMN].astype(str).reset_index(drop=True)
    if isinstance(label, str):
        labels = table[label].reset_index(drop=True) if label in table.columns else None
    else:
        labels = None if label is None else pd.Series(np.asarray(label, dtype=float))
    if len(ids) < 4:
        raise InputError(None, f"a split needs at least 4 patients, got {len(ids)}")
    index = np.arange(len(ids))
    stratify = _stratify_or_none(labels) if labels is not None else None
    # Imported here: `hematoma extract` reads manifests and pays ~2 s for scikit-learn otherwise.
    from sklearn.model_selection import train_test_split

    cohort1, cohort2 = train_test_split(index, train_size=cohort1_fraction, random_state=seed, stratify=stratify)
    n2 = len(cohort2)
    if test_size is None:
        test_size = PAPER_TEST_SIZE if n2 >= PAPER_COHORT2_SIZE else max(1, round(n2 * PAPER_TEST_SIZE / PAPER_COHORT2_SIZE))
    if not 0 < test_size < n2:
        raise InputError(None, f"test size {test_size} does not fit a cohort 2 of {n2} patients")
    stratify2 = _stratify_or_none(labels.iloc[cohort2]) if labels is not None else None
    train, test = train_test_split(cohort2, test_size=test_size, random_state=seed + 1, stratify=stratify2)
    part = np.empty(len(ids), dtype=object)
    part[cohort1], part[train], part[test] = "cnn", "train", "test"
    cohort = np.where(part == "cnn", 1, 2)
    return pd.DataFrame({ID_COLUMN: ids, "cohort": cohort, "part": part})


def write_split(split: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        split.to_csv(tmp, index=False)
    return Path(path)


def read_split(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        split = pd.read_csv(path, dtype={ID_COLUMN: str})
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    missing = {ID_COLUMN, "cohort", "part"} - set(split.columns)
    if missing:
        raise InputError(path, f"not a split file: missing columns {sorted(missing)}")
    return split


SPLIT_REMEDY = "choose another --split path (or delete it if it is this table's old split)"


def load_or_make_split(path: str | Path, table: pd.DataFrame, seed: int = 0, label=LABEL_COLUMN,
                       remedy: str = SPLIT_REMEDY, **kwargs) -> pd.DataFrame:
    """Reuse the split written at ``path`` (checking it covers the same patients), else make and write it.

    ``remedy``: what the caller's user can do about a split of other patients (advice naming an option the
    command has).
    """
    path = Path(path)
    if path.exists():
        split = read_split(path)
        if set(split[ID_COLUMN]) != set(table[ID_COLUMN].astype(str)):
            raise InputError(path, f"split was made for other patients than this table; {remedy}")
        return split
    split = split_cohort(table, seed=seed, label=label, **kwargs)
    write_split(split, path)
    return split
