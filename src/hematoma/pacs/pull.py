"""Fetch CT studies from a DICOMweb server into a folder, and write the cohort manifest that points at them.

Layout of the output folder::

    OUT/pull.json                    what was asked (server, studies), so a rerun can resume
    OUT/<StudyUID>/study.json        the study's record: patient, CT series, chosen series, instances
    OUT/<StudyUID>/<SeriesUID>/*.dcm one file per instance, named by its SOPInstanceUID
    OUT/manifest.csv                 patient_id, baseline_ct, followup_ct (+ the list's other columns)

A study is fetched into ``OUT/.partial/<StudyUID>`` and renamed into place only
when every CT instance is on disk, so a folder ``OUT/<StudyUID>`` with its
``study.json`` is complete: an interrupted pull, run again, skips the finished
studies and fetches the rest (a half-fetched study is fetched again).
Only CT series are fetched (not scouts, dose reports or secondary captures).
The manifest's CT of a study is its axial CT series with the most slices
(thin reconstructions before thick ones); ``study.json`` lists the others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..storage import atomic_path, write_json
from .connection import PacsError, PacsServer, pacs_errors

LIST_COLUMNS = ("patient_id", "baseline_study_uid", "followup_study_uid")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # PS3.5 9.1
_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
_ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
PARTIAL = ".partial"
RECORD = "study.json"


@dataclass
class StudyRow:
    """One patient of the list: the study UIDs to fetch and the columns passed through to the manifest."""

    patient_id: str
    baseline: str
    followup: str | None = None
    extra: dict = field(default_factory=dict)


def read_study_list(path: str | Path) -> list[StudyRow]:
    """A CSV of ``patient_id, baseline_study_uid[, followup_study_uid]`` (+ any clinical columns), checked."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(path, f"not a readable CSV study list ({error.__class__.__name__})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in LIST_COLUMNS[:2] if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)} (a study list has "
                               f"{', '.join(LIST_COLUMNS)}, and any clinical columns)")
    problems = []
    rows = []
    for line, record in enumerate(table.to_dict("records"), start=2):
        pid = record["patient_id"].strip()
        uids = [record.get(c, "").strip() for c in LIST_COLUMNS[1:]]
        if not pid:
            problems.append(f"line {line}: empty patient_id")
        for column, uid in zip(LIST_COLUMNS[1:], uids):
            if uid and (len(uid) > 64 or not _UID.fullmatch(uid)):
                problems.append(f"line {line}: {column} {uid!r} is not a DICOM UID")
        if not uids[0]:
            problems.append(f"line {line}: empty baseline_study_uid")
        extra = {k: v for k, v in record.items() if k not in LIST_COLUMNS}
        rows.append(StudyRow(pid, uids[0], uids[1] or None, extra))
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.patient_id] = seen.get(row.patient_id, 0) + 1
    problems += [f"patient_id {pid!r} appears {n} times" for pid, n in seen.items() if n > 1 and pid]
    if not rows:
        problems.append("no patients")
    if problems:
        raise InputError(path, f"{len(problems)} problem{'s' if len(problems) > 1 else ''}: " + "; ".join(problems[:10]))
    return rows


def study_folder(out: Path, study_uid: str) -> Path:
    return out / study_uid


def is_pulled(out: Path, study_uid: str) -> bool:
    return (study_folder(out, study_uid) / RECORD).is_file()


def pull_study(server: PacsServer, client, study_uid: str, out: Path, on_instance=None) -> dict:
    """Fetch the CT series of one study into ``out/<study_uid>`` (whole or not at all); return its record."""
    with pacs_errors(server, f"searching study {study_uid}"):
        series = client.search_for_series(study_instance_uid=study_uid, search_filters={"Modality": "CT"},
                                          fields=["NumberOfSeriesRelatedInstances", "SeriesDescription"])
        if not series:
            found = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    if not series:
        if not found:
            raise PacsError(f"{server.url}: study {study_uid} is not on the server")
        raise PacsError(f"{server.url}: study {study_uid} has no CT series")
    staging = out / PARTIAL / study_uid
    if staging.exists():
        shutil.rmtree(staging)  # what an interrupted run left: fetched again
    staging.mkdir(parents=True)
    listed = []
    patient = None
    for item in series:
        series_uid = item["0020000E"]["Value"][0]
        folder = staging / series_uid
        folder.mkdir()
        count, axial, sop_classes = 0, True, set()
        with pacs_errors(server, f"retrieving series {series_uid} of study {study_uid}"):
            for dataset in client.iter_series(study_uid, series_uid):
                _save(dataset, folder)
                count += 1
                sop_classes.add(str(dataset.get("SOPClassUID", "")))
                axial = axial and _is_axial(dataset)
                patient = patient or str(dataset.get("PatientID", ""))
                if on_instance is not None:
                    on_instance()
        listed.append({"series_uid": series_uid, "instances": count, "axial": axial,
                       "description": str(_value(item, "0008103E") or ""), "sop_classes": sorted(sop_classes)})
    usable = [s for s in listed if s["instances"] and set(s["sop_classes"]) <= {_CT_IMAGE, _ENHANCED_CT}]
    if not usable:
        shutil.rmtree(staging)
        raise PacsError(f"{server.url}: study {study_uid} has no CT image series (only "
                        f"{', '.join(sorted({c for s in listed for c in s['sop_classes']})) or 'empty series'})")
    chosen = max(usable, key=lambda s: (s["axial"], s["instances"]))
    record = {"study_uid": study_uid, "dicom_patient_id": patient, "series": listed,
              "ct_series": chosen["series_uid"], "server": server.url}
    write_json(staging / RECORD, record)
    target = study_folder(out, study_uid)
    if target.exists():  # a folder without study.json: an older partial layout or a user's; not ours to keep
        raise InputError(target, "exists but holds no study.json; move it away and rerun")
    os.replace(staging, target)
    return record


def _save(dataset, folder: Path) -> None:
    """Write one retrieved instance as a DICOM file (atomic: a killed run leaves no half file)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop = str(dataset.SOPInstanceUID)
    if not _UID.fullmatch(sop):
        raise PacsError(f"an instance has an invalid SOPInstanceUID {sop[:70]!r}")
    meta = getattr(dataset, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = meta
    with atomic_path(folder / f"{sop}.dcm") as tmp:
        dataset.save_as(tmp, enforce_file_format=True)


def _is_axial(dataset) -> bool:
    orientation = dataset.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return True  # enhanced CT keeps it per frame: do not rank it down for that
    row, column = [float(v) for v in orientation[:3]], [float(v) for v in orientation[3:]]
    normal_z = abs(row[0] * column[1] - row[1] * column[0])
    return normal_z > 0.9


def _value(item: dict, tag: str):
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def read_record(out: Path, study_uid: str) -> dict:
    return json.loads((study_folder(out, study_uid) / RECORD).read_text(encoding="utf-8"))


def manifest_table(out: Path, rows: list[StudyRow]) -> pd.DataFrame:
    """The cohort manifest of pulled ``rows``: CT paths relative to ``out`` (where the manifest lies)."""
    records = []
    for row in rows:
        baseline = read_record(out, row.baseline)
        record = {"patient_id": row.patient_id, "baseline_ct": f"{row.baseline}/{baseline['ct_series']}"}
        if row.followup:
            followup = read_record(out, row.followup)
            record["followup_ct"] = f"{row.followup}/{followup['ct_series']}"
            ids = {baseline.get("dicom_patient_id"), followup.get("dicom_patient_id")}
            if len(ids) > 1:
                warnings.warn(f"{row.patient_id}: the baseline and follow-up studies have different DICOM patient "
                              f"IDs ({' and '.join(sorted(map(str, ids)))}); check the study list", stacklevel=2)
        records.append({**record, **row.extra})
    return pd.DataFrame(records)


def pull(server: PacsServer, rows: list[StudyRow], out: str | Path, progress: bool = True) -> dict:
    """Fetch every study of ``rows`` not already in ``out``, then write ``out/manifest.csv``.

    Studies that fail are reported together after the others are fetched; the manifest is written only when
    every study is there (a rerun fetches what is missing). Returns counts and the manifest's path.
    """
    out = Path(out)
    _prepare(out, server)
    studies = list(dict.fromkeys(uid for row in rows for uid in (row.baseline, row.followup) if uid))
    todo = [uid for uid in studies if not is_pulled(out, uid)]
    client = server.client() if todo else None
    failures = []
    with _progress_bar(progress) as bar:
        task = bar.add_task("pulling studies", total=len(studies), completed=len(studies) - len(todo))
        for uid in todo:
            bar.update(task, description=f"study {uid[-24:]}")
            try:
                pull_study(server, client, uid, out)
            except PacsError as error:
                failures.append(str(error))
            bar.advance(task)
    shutil.rmtree(out / PARTIAL, ignore_errors=True)
    if failures:
        raise PacsError(f"{len(failures)} of {len(studies)} studies could not be fetched (the other "
                        f"{len(studies) - len(failures)} are kept; rerun to fetch the rest); first: {failures[0]}")
    manifest = out / "manifest.csv"
    table = manifest_table(out, rows)
    with atomic_path(manifest) as tmp:
        table.to_csv(tmp, index=False)
    return {"studies": len(studies), "fetched": len(todo), "skipped": len(studies) - len(todo),
            "manifest": str(manifest)}


def rows_for_studies(server: PacsServer, study_uids: list[str]) -> list[StudyRow]:
    """One manifest row per study (a baseline each), the patient ID read from the server."""
    for uid in study_uids:
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise InputError(None, f"--study {uid!r} is not a DICOM UID")
    client = server.client()
    rows = []
    for uid in study_uids:
        with pacs_errors(server, f"searching study {uid}"):
            found = client.search_for_studies(search_filters={"StudyInstanceUID": uid}, fields=["PatientID"])
        if not found:
            raise PacsError(f"{server.url}: study {uid} is not on the server")
        pid = _value(found[0], "00100020") or uid
        rows.append(StudyRow(str(pid), uid))
    seen = [r.patient_id for r in rows]
    for row in rows:  # two studies of one patient: keep both rows apart
        if seen.count(row.patient_id) > 1:
            row.patient_id = f"{row.patient_id}_{row.baseline[-8:]}"
    return rows


def _prepare(out: Path, server: PacsServer) -> None:
    """Use ``out`` only if it is new, empty or an earlier pull's folder (never a user's other files)."""
    marker = out / "pull.json"
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise InputError(out, "is not empty and is not a `hematoma pacs pull` folder; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        write_json(marker, {"server": server.url})


def _progress_bar(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled)
