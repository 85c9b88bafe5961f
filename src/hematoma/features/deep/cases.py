"""Reading a pipeline output folder (OUT) for the CNN: labels, image paths, data hash.

Contract (``hematoma extract``): ``OUT/features.parquet`` (or ``.csv``) with
``patient_id`` and ``he``; ``OUT/cases/<patient_id>/case.json`` with the
absolute ``baseline_ct`` and ``baseline_mask`` paths.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from ...errors import InputError
from ...storage import sha1_file

ID = "patient_id"
LABEL = "he"
FEATURE_FILES = ("features.parquet", "features.csv")


def feature_table_path(out: str | Path) -> Path:
    out = Path(out)
    if not out.is_dir():
        raise InputError(out, "no such output folder (run `hematoma extract` first)")
    for name in FEATURE_FILES:
        if (out / name).exists():
            return out / name
    raise InputError(out, "has no features.parquet or features.csv (run `hematoma extract` first)")


def read_feature_table(out: str | Path) -> pd.DataFrame:
    """The feature table of OUT (Parquet preferred), ``patient_id`` as text."""
    path = feature_table_path(out)
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={ID: str})
    except Exception as error:  # noqa: BLE001 - any reader failure means an unreadable table
        raise InputError(path, f"cannot be read ({str(error).splitlines()[0]})") from None
    if ID not in table.columns:
        raise InputError(path, f"has no {ID!r} column")
    table[ID] = table[ID].astype(str)
    if table[ID].duplicated().any():
        raise InputError(path, f"duplicate patient_id {table[ID][table[ID].duplicated()].iloc[0]!r}")
    return table


def case_inputs(out: str | Path, patient_ids) -> pd.DataFrame:
    """``patient_id``, ``baseline_ct``, ``baseline_mask``, ``baseline_series`` from each case's case.json."""
    rows = []
    for pid in patient_ids:
        path = Path(out) / "cases" / str(pid) / "case.json"
        if not path.exists():
            raise InputError(path, "no such file (the case was not extracted)")
        try:
            case = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(path, f"is not valid JSON ({error})") from None
        row = {ID: str(pid)}
        for key in ("baseline_ct", "baseline_mask"):
            value = case.get(key)
            if not isinstance(value, str) or not value:
                raise InputError(path, f"has no {key!r} path")
            file = Path(value) if Path(value).is_absolute() else path.parent / value
            row[key] = str(file)
        # The series extract read from a DICOM folder with several (None: the folder's only or largest).
        row["baseline_series"] = case.get("baseline_series") or None
        rows.append(row)
    return pd.DataFrame(rows, columns=[ID, "baseline_ct", "baseline_mask", "baseline_series"])


def series_of(row) -> str | None:
    """A case row's chosen DICOM series, or None (pandas may hold a missing one as NaN)."""
    value = getattr(row, "baseline_series", None)
    return value if isinstance(value, str) and value else None


def read_case_images(ct_path: str | Path, mask_path: str | Path, series_uid: str | None = None):
    """The baseline CT (HU) and its hematoma mask, geometry-checked."""
    from ...io import read_image, read_mask

    ct = read_image(ct_path, series_uid=series_uid)
    return ct, read_mask(mask_path, reference=ct, reference_path=ct_path)


def data_sha1(cases: pd.DataFrame) -> str:
    """SHA-1 of the training data: sorted ids, their labels and their input files' hashes."""
    digest = hashlib.sha1()
    for row in cases.sort_values(ID).itertuples(index=False):
        label = getattr(row, LABEL, None)
        parts = [row.patient_id, "nan" if label is None or label != label else str(int(label)),
                 sha1_file(row.baseline_ct), sha1_file(row.baseline_mask)]
        digest.update(("\t".join(parts) + "\n").encode())
    return digest.hexdigest()
