"""Write a synthetic cohort to a folder: scans, masks, manifest, truth and the oracle's score.

Layout of ``out_dir``::

    manifest.csv            patient_id, baseline_ct, followup_ct, baseline_mask, followup_mask,
                            then the clinical columns (relative paths; no label, no truth)
    truth.csv               patient_id, true_p, he, baseline_volume_ml, followup_volume_ml,
                            location, irregularity, heterogeneity, then the baseline's NCCT
                            signs, flat: truth_sign_hypodensity ... truth_sign_barras_density
                            and their measurements (SIGN_TRUTH_COLUMNS)
    oracle.json             oracle AUC (true P vs realised HE), HE rate, volume quartiles, n, seed, ...
    synthetic_settings.json seed, size, generator version and the variant, if any (what a rerun must match)
    images/P0001_baseline.nii.gz, images/P0001_followup.nii.gz
    masks/P0001_baseline.nii.gz,  masks/P0001_followup.nii.gz
    records/P0001.json      the patient's clinical values and truth, written last (with ``redraws``,
                            ``redraw_reasons`` and ``placement_notes``: what was changed to make the
                            drawn hematoma fit, and why; summarised in oracle.json ``redrawn``)

Every file is written atomically; a patient counts as done when its record
and its four images exist, so a rerun with the same settings skips finished
patients and a killed run loses nothing finished.  Patients depend only on
``(seed, index)``: a rerun with a larger ``n_patients`` adds patients.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import HematomaError, InputError
from ..storage import atomic_path, write_json, write_text
from .clinical import CLINICAL_COLUMNS
from .patient import GeneratorError, check_size, patient_id, synthesize_patient
from .signs import GRADE_NAMES, SIGN_NAMES
from .variants import Variant, synthesize_variant_patient

GENERATOR_VERSION = "1.1"  # 1.1: NCCT signs rendered with their truth (signs.py, sign_rendering.py)
SETTINGS_FILE = "synthetic_settings.json"
HE_DEFINITION = "6ml-or-33pct"
TRUTH_COLUMNS = ("patient_id", "true_p", "he", "baseline_volume_ml", "followup_volume_ml", "location",
                 "irregularity", "heterogeneity")
# The baseline scan's NCCT signs (hematoma.synthetic.sign_rendering), flat: truth_sign_<name>.
SIGN_TRUTH_KEYS = SIGN_NAMES + GRADE_NAMES + (
    "hypodense_contrast_hu", "hypodense_volume_ml", "blend_contrast_hu", "fluid_level_contrast_hu", "swirl_region_hu",
    "n_islands", "n_satellites", "hypodense_fraction", "main_solidity")
SIGN_TRUTH_COLUMNS = tuple(f"truth_sign_{name}" for name in SIGN_TRUTH_KEYS)
PATH_COLUMNS = ("baseline_ct", "followup_ct", "baseline_mask", "followup_mask")
# What generate_cohort owns in out_dir (and what --overwrite may delete).
_OWNED = ("manifest.csv", "truth.csv", "oracle.json", SETTINGS_FILE, "images", "masks", "records")


def case_paths(index: int) -> dict[str, str]:
    """Relative paths of a patient's four images."""
    pid = patient_id(index)
    return {
        "baseline_ct": f"images/{pid}_baseline.nii.gz",
        "followup_ct": f"images/{pid}_followup.nii.gz",
        "baseline_mask": f"masks/{pid}_baseline.nii.gz",
        "followup_mask": f"masks/{pid}_followup.nii.gz",
    }


def _record_path(out_dir: Path, index: int) -> Path:
    return out_dir / "records" / f"{patient_id(index)}.json"


def _is_done(out_dir: Path, index: int) -> bool:
    return _record_path(out_dir, index).is_file() and all((out_dir / p).is_file() for p in case_paths(index).values())


def _read_record(out_dir: Path, index: int) -> dict | None:
    """A finished patient's record, or None when it cannot be used (damaged by hand): the patient is made again,
    identically, since it depends only on (seed, index)."""
    try:
        record = json.loads(_record_path(out_dir, index).read_text(encoding="utf-8"))
        usable = record["index"] == index and all(key in record["truth"] for key in TRUTH_COLUMNS)
        return record if usable and isinstance(record["clinical"], dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_patient(out_dir: str | Path, index: int, seed: int, size: str, variant: Variant | None = None) -> dict:
    """Make patient ``index`` (its head altered by ``variant``) and write its images and record; return the record.

    Any failure is a one-line :class:`~hematoma.errors.HematomaError` naming the patient (the CLI
    prints it without a traceback; ``--debug`` shows the cause), also out of a worker process.
    """
    out_dir = Path(out_dir)
    try:
        patient = (synthesize_patient(index, seed=seed, size=size) if variant is None or variant.is_intact
                   else synthesize_variant_patient(index, seed=seed, size=size, variant=variant))
        _check_label(patient.truth)
    except HematomaError:
        raise
    except Exception as error:
        raise GeneratorError(f"{patient_id(index)} of seed {seed} ({size}) could not be generated: "
                             f"{type(error).__name__}: {_one_line(error)}; please report this seed") from error
    paths = case_paths(index)
    images = {
        "baseline_ct": patient.baseline_ct, "followup_ct": patient.followup_ct,
        "baseline_mask": patient.baseline_mask, "followup_mask": patient.followup_mask,
    }
    record = {"index": index, "patient_id": patient.patient_id, "clinical": patient.clinical, "truth": patient.truth}
    writes = [(out_dir / paths[key], lambda d, image=image: write_nifti_gz(image, d)) for key, image in images.items()]
    writes.append((_record_path(out_dir, index), lambda d: write_json(d, record)))  # last: marks the patient as done
    for destination, write in writes:
        try:
            write(destination)
        except (OSError, RuntimeError) as error:  # disk full, permissions (SimpleITK raises RuntimeError)
            reason = error.strerror if isinstance(error, OSError) and error.strerror else _one_line(error)[-200:]
            raise InputError(destination,
                             f"could not be written ({reason}); patients already written are kept") from error
    return record


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or "(no message)"


def write_nifti_gz(image: sitk.Image, destination: Path) -> None:
    """Write ``image`` as .nii.gz atomically, gzip level 1.

    Hand-written because SimpleITK's NIfTI writer ignores the compression
    level and deflates at ~6: CT noise barely compresses, so level 1 writes a
    full-size scan ~2.4x faster for a ~5 % larger file.
    """
    with atomic_path(destination) as tmp:
        raw = tmp.with_name(tmp.name + ".raw.nii")
        try:
            sitk.WriteImage(image, str(raw), False)
            with open(raw, "rb") as source, gzip.open(tmp, "wb", compresslevel=1) as target:
                shutil.copyfileobj(source, target, 1 << 20)
        finally:
            raw.unlink(missing_ok=True)


def _check_label(truth: dict) -> None:
    """The masks must tell the drawn label (by the 6 mL / 33 % rule): a generator bug otherwise."""
    baseline, followup = truth["baseline_volume_ml"], truth["followup_volume_ml"]
    grown = followup - baseline > 6.0 or (baseline > 0 and (followup - baseline) / baseline > 0.33)
    if int(grown) != int(truth["he"]):
        raise GeneratorError(f"{truth['patient_id']}: masks give HE={int(grown)} but HE={truth['he']} was drawn "
                             "(a generator bug; please report the seed)")


def _settings(seed: int, size: str, variant: Variant | None = None) -> dict:
    settings = {"generator": "hematoma.synthetic", "generator_version": GENERATOR_VERSION, "seed": int(seed), "size": size}
    if variant is not None and not variant.is_intact:  # intact cohorts keep the settings they were written with
        settings["variant"] = variant.settings()
    return settings


def _prepare(out_dir: Path, settings: dict, overwrite: bool) -> None:
    """Refuse a non-empty folder made otherwise (unless ``overwrite``); write the settings first."""
    settings_path = out_dir / SETTINGS_FILE
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    existing = out_dir.is_dir() and any(out_dir.iterdir())
    if existing and not overwrite:
        try:
            previous = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(out_dir, "is not empty and holds no synthetic cohort; pass --overwrite to write into it") from None
        if previous != settings:
            changed = ", ".join(f"{k} {previous.get(k)!r} -> {settings.get(k)!r}" for k in {**previous, **settings}
                                if previous.get(k) != settings.get(k))
            raise InputError(out_dir, f"holds a synthetic cohort made with other settings ({changed}); pass --overwrite to replace it")
    elif existing and overwrite:
        for name in _OWNED:  # only what this generator writes; other files are left alone
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(settings_path, settings)
    except OSError as error:
        raise InputError(out_dir, f"cannot be written into ({error.strerror or error})") from error


def generate_cohort(out_dir: str | Path, n_patients: int, seed: int = 0, size: str = "full", workers: int = 1,
                    overwrite: bool = False, progress: bool = True, variant: Variant | None = None) -> dict:
    """Write a synthetic cohort of ``n_patients`` to ``out_dir`` (layout: module docstring).

    ``variant`` alters every head (:mod:`.variants`: skull gap, thin bone, tilt, head holder...).
    Resumable: patients already written with the same ``seed``, ``size`` and ``variant``
    are skipped.  ``workers`` > 1 makes patients in that many processes.
    Returns the summary that is also written to ``oracle.json`` (plus counts
    of generated and skipped patients).
    """
    check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(None, f"the seed must be a non-negative integer, got {seed!r}")
    if n_patients < 1:
        raise InputError(None, f"the number of patients must be at least 1, got {n_patients}")
    if workers < 1:
        raise InputError(None, f"workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    variant = variant or Variant()
    settings = _settings(seed, size, variant)
    _prepare(out_dir, settings, overwrite)

    records: dict[int, dict] = {}
    todo = []
    for index in range(n_patients):
        record = _read_record(out_dir, index) if _is_done(out_dir, index) else None
        if record is not None:
            records[index] = record
        else:
            todo.append(index)
    skipped = n_patients - len(todo)
    with _progress_bar(progress) as bar:
        task = bar.add_task(f"synthetic cohort ({size})", total=n_patients, completed=skipped)
        if workers == 1 or len(todo) <= 1:
            for index in todo:
                records[index] = write_patient(out_dir, index, seed, size, variant)
                bar.advance(task)
        else:
            # "spawn": SimpleITK's threads and fork do not mix safely.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(write_patient, out_dir, index, seed, size, variant) for index in todo]
                try:
                    for future in as_completed(futures):
                        record = future.result()
                        records[record["index"]] = record
                        bar.advance(task)
                except BrokenProcessPool as error:  # a worker killed (out of memory, signal): one line, not a traceback
                    raise GeneratorError(
                        f"a worker process died while writing the cohort in {out_dir} ({error}); "
                        "finished patients are kept: rerun to resume, perhaps with fewer --workers") from error
                finally:
                    for future in futures:
                        future.cancel()

    ordered = [records[i] for i in range(n_patients)]
    summary = summarize([r["truth"] for r in ordered])
    summary.update({"n": n_patients, "seed": int(seed), "size": size, "generator_version": GENERATOR_VERSION,
                    "he_definition": HE_DEFINITION})
    if not variant.is_intact:
        summary["variant"] = variant.settings()
    for name, write in (("manifest.csv", _write_manifest), ("truth.csv", _write_truth),
                        ("oracle.json", lambda path, _: write_json(path, summary))):
        try:
            write(out_dir / name, ordered)
        except OSError as error:  # the patients are written: a rerun only writes these tables again
            raise InputError(out_dir / name, f"could not be written ({error.strerror or error}); "
                             "the patients are kept: rerun to finish") from error
    return {**summary, "out_dir": str(out_dir), "generated": len(todo), "skipped": skipped}


def _progress_bar(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled)


def summarize(truths: list[dict]) -> dict:
    """HE rate, oracle AUCs and baseline-volume quartiles (overall and by HE) of a cohort's truth."""
    from sklearn.metrics import roc_auc_score

    he = np.array([int(t["he"]) for t in truths])
    p = np.array([float(t["true_p"]) for t in truths])
    volume = np.array([float(t["baseline_volume_ml"]) for t in truths])

    def quartiles(values):
        return [round(float(v), 2) for v in np.percentile(values, [25, 50, 75])] if len(values) else None

    both_classes = 0 < he.sum() < len(he)
    observable = np.array([float(t.get("observable_p", np.nan)) for t in truths])
    return {
        "oracle_auc": float(roc_auc_score(he, p)) if both_classes else None,
        # P without the latent term: the best a model of every observed variable could do.
        "observable_auc": float(roc_auc_score(he, observable)) if both_classes and np.isfinite(observable).all() else None,
        "he_rate": float(he.mean()),
        "n_he": int(he.sum()),
        "baseline_volume_quartiles_ml": {
            "all": quartiles(volume), "he": quartiles(volume[he == 1]), "no_he": quartiles(volume[he == 0]),
        },
        "locations": {loc: int(n) for loc, n in zip(*np.unique([t["location"] for t in truths], return_counts=True))},
        # Patients whose hematoma was re-drawn, or placed with less growth or a wider search, to fit the brain
        # (why: their records); records written before these keys existed count as neither.
        "redrawn": {t["patient_id"]: int(t["redraws"]) for t in truths if t.get("redraws")},
        "placement_notes": {t["patient_id"]: list(t["placement_notes"]) for t in truths if t.get("placement_notes")},
    }


def _csv_text(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if value is None else value for value in row] for row in rows])
    return buffer.getvalue()


def _write_manifest(path: Path, records: list[dict]) -> None:
    header = ("patient_id",) + PATH_COLUMNS + CLINICAL_COLUMNS
    rows = []
    for record in records:
        paths = case_paths(record["index"])
        rows.append([record["patient_id"]] + [paths[c] for c in PATH_COLUMNS] + [record["clinical"][c] for c in CLINICAL_COLUMNS])
    write_text(path, _csv_text(header, rows))


def _write_truth(path: Path, records: list[dict]) -> None:
    header = TRUTH_COLUMNS + SIGN_TRUTH_COLUMNS
    rows = [[_round(r["truth"][c]) for c in TRUTH_COLUMNS] + _sign_cells(r["truth"]) for r in records]
    write_text(path, _csv_text(header, rows))


def _sign_cells(truth: dict) -> list:
    """The flat ``truth_sign_<name>`` cells of a record (blank for records written before signs existed)."""
    signs = truth.get("signs") or {}
    return [_round(signs.get(name)) for name in SIGN_TRUTH_KEYS]


def _round(value):
    return round(value, 6) if isinstance(value, float) else value
