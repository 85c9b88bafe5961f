"""Whose output folder it is: one manifest and one set of settings per ``extract``/``run`` folder.

``OUT/extract.json`` records the manifest (path and content hash) and the
settings of the extraction that the folder holds; it is written when a run
starts, so a killed first run protects its folder too.  A run with another
manifest or other settings is refused unless the user asks to overwrite, and
then the old cohort's results are moved away before the new owner is written
(:func:`claim_folder`).  Call it with the folder's lock held
(:func:`hematoma.storage.folder_lock`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .errors import InputError
from .storage import empty_trash, move_to_trash, sha1_file, write_json

# What `extract` and the later stages of `run` (pipeline.py) write in OUT.  Replacing a folder's
# results moves these away; ``cases/<id>`` of the new manifest's ids stay (content-fingerprinted:
# reused only when the inputs and settings are the same).  The ownership record goes first, so an
# interrupted replacement leaves a folder that no run resumes without being told to overwrite.
RECORD_FILE = "extract.json"
RESULT_NAMES = (RECORD_FILE, "features.csv", "features.parquet", "failures.csv", "split.csv", "run.json",
                "cnn", "cnn_features.parquet", "cnn_features.json", "cnn_failures.csv", "model", "report")
CASES_FOLDER = "cases"


def owner_record(manifest: Path, patients: int, settings_record: dict, extra_columns, ignore_columns) -> dict:
    """The part of ``extract.json`` that says whose folder it is (written when a run starts)."""
    return {
        "manifest": str(Path(manifest).resolve()),
        "manifest_sha1": sha1_file(manifest),
        "patients": patients,
        "settings": settings_record,
        "extra_columns": list(extra_columns),
        "ignore_columns": list(ignore_columns),
        "status": "running",
    }


def columns_that_count(manifest: Path, extra_columns) -> set[str]:
    """The manifest's own columns that shape the table: ignoring any other column changes nothing."""
    import pandas as pd

    from .cohort import known_columns

    header = pd.read_csv(manifest, nrows=0, skipinitialspace=True).columns
    return {str(c).strip() for c in header} & known_columns(tuple(extra_columns))


def _differences(previous: dict, current: dict, manifest_columns: set[str]) -> list[str]:
    """What this run (``current``) does otherwise than the folder's extraction, as phrases."""
    different = []
    # The same manifest moved elsewhere (same content) is the same cohort: per-case fingerprints
    # hold contents, not paths, so nothing is recomputed.
    moved = previous.get("manifest_sha1") == current["manifest_sha1"]
    if previous.get("manifest") != current["manifest"] and not moved:
        different.append(f"is {current['manifest']}")
    old, new = previous.get("settings") or {}, current["settings"]
    if old.get("definition") != new["definition"]:
        different.append(f"has definition {new['definition']}")
    if old.get("radiomics_params_sha1") != new["radiomics_params_sha1"]:
        params = new["radiomics_params"]
        different.append(f"has other radiomics parameters ({'the shipped ones' if params == 'default' else params})")
    old_method = (old.get("segmentation") or {}).get("resolved_method", "rules")
    new_method = (new.get("segmentation") or {}).get("resolved_method", "rules")
    if _masks_record(old.get("segmentation")) != _masks_record(new.get("segmentation")):
        detail = "" if old_method != new_method else " (other weights, models or blood classes)"
        different.append(f"segments with {new_method}{detail} (that one: {old_method})")
    if old.get("segmentation_model_sha1") != new["segmentation_model_sha1"]:
        different.append(f"has segmentation model {new['segmentation_model'] or 'none (the rule-based segmenter)'}")
    old_extra, new_extra = sorted(set(previous.get("extra_columns") or ())), sorted(set(current["extra_columns"]))
    if old_extra != new_extra:
        different.append(f"declares extra columns {', '.join(new_extra) or 'none'} "
                         f"(that one: {', '.join(old_extra) or 'none'})")
    old_ignored = sorted(set(previous.get("ignore_columns") or ()) & manifest_columns)
    new_ignored = sorted(set(current["ignore_columns"]) & manifest_columns)
    if old_ignored != new_ignored:
        different.append(f"ignores columns {', '.join(new_ignored) or 'none'} "
                         f"(that one: {', '.join(old_ignored) or 'none'})")
    return different


def _masks_record(record: dict | None) -> dict | None:
    """What the masks depend on: a newer feature marker (the deep_ columns' version) recomputes cases, not refuses."""
    return None if record is None else {k: v for k, v in record.items() if k != "ct_network_features"}


def _describe_owner(previous: dict) -> str:
    patients = previous.get("patients")
    if patients is None and isinstance(previous.get("counts"), dict):  # a record written before "patients"
        patients = sum(previous["counts"].values())
    unfinished = "unfinished " if previous.get("status") == "running" else ""
    definition = (previous.get("settings") or {}).get("definition")
    return (f"holds the {unfinished}extraction of {previous.get('manifest')} "
            f"({patients if patients is not None else '?'} patients, definition {definition})")


def _inputs_among_results(out: Path, inputs: Sequence[str]) -> list[str]:
    """This run's input files that lie where the run writes or replaces results (``OUT/cases/...``)."""
    results = [(out / name).resolve() for name in (*RESULT_NAMES, CASES_FOLDER)]
    return [path for path in inputs if any(Path(path).resolve().is_relative_to(r) for r in results)]


def claim_folder(out: Path, owner: dict, ids: Sequence[str], overwrite: bool, manifest_columns: set[str],
                 inputs: Sequence[str] = ()) -> None:
    """Make ``out`` this run's (call with the folder's lock held), or refuse.

    The folder's extraction (``extract.json``) must be of the same manifest
    file (it may have been edited: per-case fingerprints decide what is
    recomputed) with the same settings and table-shaping columns.  A folder
    holding results without that record is refused too.  With ``overwrite``
    the old results are moved into a hidden trash folder, the new ownership
    record is written, and the trash is deleted: a crash at any point leaves
    either the old results, or none and the new owner.
    """
    clashing = _inputs_among_results(out, inputs)
    if clashing:
        raise InputError(out, f"holds this run's input {clashing[0]}"
                              f"{f' (and {len(clashing) - 1} more)' if len(clashing) > 1 else ''} where its results "
                              "go; choose another --out")
    record_path = out / RECORD_FILE
    present = [name for name in (*RESULT_NAMES, CASES_FOLDER) if (out / name).exists()]
    try:
        previous = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else None
        previous = previous if isinstance(previous, dict) else {}
    except (OSError, ValueError):
        previous = {}  # unreadable: whose it is cannot be told
    if overwrite:
        if present:
            stale = [out / name for name in RESULT_NAMES]
            if (out / CASES_FOLDER).is_dir():
                keep = set(ids)
                stale += [case for case in sorted((out / CASES_FOLDER).iterdir()) if case.name not in keep]
            move_to_trash(out, stale)
    elif previous and previous.get("manifest"):
        different = _differences(previous, owner, manifest_columns)
        if different:
            raise InputError(out, f"{_describe_owner(previous)}; this run {', '.join(different)}: "
                                  "pass --overwrite to replace it, or choose another --out")
    elif present:
        raise InputError(out, f"holds results ({', '.join(present)}) but no readable {RECORD_FILE} saying whose: "
                              "pass --overwrite to replace them, or choose another --out")
    write_json(record_path, owner)
    empty_trash(out)
