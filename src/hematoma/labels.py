"""The HE label: one parser for every file that holds one (manifest, feature tables, test tables).

Accepted (case-insensitive, surrounding spaces ignored): 1/0, yes/no, y/n,
true/false, and numbers equal to 1 or 0 (``1.0`` from a float column).  A blank
cell (or NA/NaN/null/none, or a missing value in a Parquet file) means
*unlabelled*, which each protocol allows or not.  Anything else (2, -1, 0.5,
"maybe") is an error: a wrong label must never be read as "no label" and
quietly leave a patient out of a fit or a test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

INVALID = object()  # what parse_label returns for a cell that is no label
_WORDS = {"1": 1, "0": 0, "yes": 1, "no": 0, "y": 1, "n": 0, "true": 1, "false": 0}
_BLANK = {"", "na", "n/a", "nan", "null", "none"}
ACCEPTED = "1/0, yes/no, true/false, or blank for unlabelled"
MAX_LISTED = 10  # rows named in one message; the count says how many more


def parse_label(cell) -> int | None | object:
    """1, 0, None (blank: unlabelled) or :data:`INVALID`."""
    if cell is None or cell is pd.NA or cell is pd.NaT:
        return None
    if isinstance(cell, (bool, np.bool_)):
        return int(cell)
    if isinstance(cell, (int, float, np.integer, np.floating)):
        if isinstance(cell, (float, np.floating)) and math.isnan(cell):
            return None
        return int(cell) if cell in (0, 1) else INVALID
    word = str(cell).strip().lower()
    if word in _BLANK:
        return None
    if word in _WORDS:
        return _WORDS[word]
    try:
        number = float(word)
    except ValueError:
        return INVALID
    return int(number) if number in (0.0, 1.0) else INVALID


def parse_labels(values: pd.Series, where: str | Path | None = None, column: str = "he", ids=None,
                 allow_missing: bool = True, first_row: int | None = 2) -> pd.Series:
    """``values`` as floats 1.0/0.0/NaN (same index); every invalid cell refused in one :class:`InputError`.

    ``ids`` (patient ids, aligned with ``values``) and ``first_row`` (the file row of
    the first value: 2 for a CSV with a header line; None when rows mean nothing, as
    in Parquet) name the bad rows.  ``allow_missing=False`` refuses blanks too.
    """
    parsed = [parse_label(cell) for cell in values.tolist()]
    bad = [i for i, value in enumerate(parsed) if value is INVALID or (value is None and not allow_missing)]
    if bad:
        ids = None if ids is None else [str(i) for i in list(ids)]
        shown = []
        for i in bad[:MAX_LISTED]:
            row = f"row {first_row + i}" if first_row is not None else ""
            patient = f"patient_id {ids[i]!r}" if ids is not None else ""
            name = " ".join(part for part in (row, f"({patient})" if row and patient else patient) if part)
            shown.append(f"{name} {_shown(values.iloc[i])}")
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        expected = ACCEPTED if allow_missing else ACCEPTED.replace(", or blank for unlabelled", "; no blanks")
        what = "value(s) that are not a label" if allow_missing else "blank or invalid value(s)"
        raise InputError(where, f"label column {column!r} has {len(bad)} {what} ({expected}): " + ", ".join(shown) + more)
    return pd.Series([np.nan if v is None else float(v) for v in parsed], index=values.index, dtype=float)


def _shown(cell) -> str:
    if parse_label(cell) is None:
        return "blank"
    return repr(cell.strip() if isinstance(cell, str) else cell.item() if isinstance(cell, np.generic) else cell)
