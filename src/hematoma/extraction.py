"""Feature extraction for a cohort: the per-case function and the cohort loop.

Per case (:func:`extract_case`, run on a worker by :mod:`hematoma.parallel`):
read the baseline CT (and the follow-up CT where there is one), take the
given masks or segment them (:func:`hematoma.segmentation.mask_for_case`),
compute the volumes and the HE label (from the follow-up; a manifest ``he``
value is used only when there is no follow-up; one the follow-up contradicts
is a warning in ``case.json``), the radiomics features of the baseline hematoma, and write ``OUT/cases/<patient_id>/``: the masks actually
used (``baseline_mask.nii.gz``, ``followup_mask.nii.gz``) and, last and
atomically, ``case.json`` with volumes, label, features and provenance
(versions, settings, SHA-1 of every input and output file).

A rerun skips a case whose ``case.json`` carries the same fingerprint: the
SHA-1 of each input file's content plus the settings (HE definition,
radiomics parameters file content, segmentation model content, hematoma
version, the manifest's ``he`` for the case, the DICOM series chosen by the
manifest's ``baseline_series`` / ``followup_series``).  See :mod:`hematoma.parallel`.

Per cohort (:func:`extract_cohort`): validate the manifest and settings
before any case runs, encode the clinical table once
(:func:`hematoma.features.clinical.encode_clinical`; it is cheap and reads the
manifest of *this* run, so clinical values are not stored per case and an
edited clinical cell never forces images to be reprocessed), run the cases,
then write ``features.csv`` / ``features.parquet`` (``patient_id``, meta
columns, ``rad_*``, ``clin_*``), ``failures.csv`` and ``extract.json``.

An output folder belongs to one manifest and one set of settings: the run
holds the folder's lock (:func:`hematoma.storage.folder_lock`) throughout,
and before any case runs it writes ``extract.json``'s ownership part
(manifest path, settings, table-shaping columns); a run with another manifest
or other settings is refused unless it is told to overwrite, which first
moves the old cohort's results out of the way (:func:`claim_folder`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import importlib.metadata
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import __version__
from .errors import HematomaError, InputError, ManifestError
from .parallel import (
    DONE,
    FAILED,
    SKIPPED,
    CaseOutcome,
    CaseStore,
    background_client,
    check_case_id,
    default_workers,
    file_hashes,
    fingerprint,
    one_line,
    run_cases,
)
from .output_folder import claim_folder, columns_that_count, owner_record
from .storage import atomic_path, empty_trash, folder_lock, sha1_file, write_json
from .volume import DEFAULT_DEFINITION, check_scanner_spacing, get_definition, label_expansion, mask_volume_ml

if TYPE_CHECKING:  # pandas is imported where tables are built: workers never need it
    import pandas as pd

# The manifest's column names (as in hematoma.cohort, which is imported only by
# the driver: it pulls in scikit-learn, seconds of start-up per worker process).
ID_COLUMN, LABEL_COLUMN = "patient_id", "he"
# Bump when what a case computes or how case.json is laid out changes: every
# stored case is then recomputed on the next run.
CASE_FORMAT = 1
META_COLUMNS = (LABEL_COLUMN, "baseline_volume_ml", "followup_volume_ml", "growth_ml")
FEATURE_PREFIXES = ("rad_", "clin_", "cnn_", "sign_", "deep_")
BASELINE_VOLUME_FEATURE = "clin_baseline_volume_ml"
MASK_NAMES = {"baseline": "baseline_mask.nii.gz", "followup": "followup_mask.nii.gz"}
SEG_NAME = "baseline_mask_seg.dcm"  # with --seg, for a DICOM baseline CT
FAILURE_COLUMNS = [ID_COLUMN, "stage", "reason"]
# Manifest columns naming the DICOM series to read (SeriesInstanceUID) in a folder holding several.
SERIES_COLUMNS = {"baseline_ct": "baseline_series", "followup_ct": "followup_series"}
_VERSIONED = ("hematoma", "numpy", "scipy", "pandas", "SimpleITK", "pydicom", "pyradiomics-bhklab", "dask", "distributed")


# --------------------------------------------------------------------------- settings and jobs


@dataclass(frozen=True)
class ExtractSettings:
    """What a case's result depends on besides its files (all part of its fingerprint)."""

    definition: str = DEFAULT_DEFINITION
    radiomics_params: str | None = None  # a pyradiomics YAML; None: the shipped one
    segmentation_model: str | None = None  # a trained segmenter's folder; None: the default segmenter
    segmenter: Any = None  # segmentation.methods.SegmenterSettings; None: the rules
    signs: Any = None  # features.signs.SignSettings; None: the published defaults
    dicom_seg: bool = False  # also write each DICOM CT's baseline mask as a DICOM SEG (baseline_mask_seg.dcm)

    def sign_settings(self):
        from .features.signs import SignSettings

        return self.signs if self.signs is not None else SignSettings()

    def record(self) -> dict[str, Any]:
        """The settings with the content hashes of the files they name (computed once per run)."""
        from .features.radiomics import default_params_path

        params = Path(self.radiomics_params) if self.radiomics_params else default_params_path()
        model = Path(self.segmentation_model) if self.segmentation_model else None
        record = {
            "definition": self.definition,
            "radiomics_params": str(params) if self.radiomics_params else "default",
            "radiomics_params_sha1": sha1_file(params),
            "segmentation_model": None if model is None else str(model),
            "segmentation_model_sha1": None if model is None else sha1_file(model),
            "hematoma_version": __version__,
            "case_format": CASE_FORMAT,
            "signs": self.sign_settings().as_record(),
        }
        # Only where it is not the rules: the cohorts extracted before --method keep their fingerprints.
        if self.segmenter is not None and self.segmenter.resolved_method() != "rules":
            record["segmentation"] = self.segmenter.record()
        if self.dicom_seg:  # only when asked: the cases of a run without it keep their fingerprints
            record["dicom_seg"] = True
        return record


@dataclass(frozen=True)
class CaseJob:
    """Everything one case needs, small enough to ship to a worker."""

    case_id: str
    cases_root: str
    baseline_ct: str
    followup_ct: str | None
    baseline_mask: str | None
    followup_mask: str | None
    he_manifest: float | None  # 0/1 from the manifest, None when blank or absent
    settings: ExtractSettings
    settings_record: dict = field(hash=False)
    baseline_series: str | None = None  # a SeriesInstanceUID; None: io.read_image's choice
    followup_series: str | None = None

    def input_files(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in ("baseline_ct", "followup_ct", "baseline_mask", "followup_mask")}


# --------------------------------------------------------------------------- one case


@functools.lru_cache(maxsize=4)
def _segmentation_model(path: str | None):
    # Loaded once per worker process, not once per case.
    if path is None:
        return None
    from .segmentation.classifier import HemorrhageSegmentationModel

    return HemorrhageSegmentationModel.load(path)


def _mask_for_case(ct, ct_path: str, mask_path: str | None, model_path: str | None, segmenter=None):
    """(mask, segmentation result or None): the given mask, or one segmented by ``segmenter`` (None: the rules).

    The segmenter is imported only when a mask is missing.

    A given mask is read and geometry-checked exactly as ``mask_for_case``
    does; importing ``hematoma.segmentation`` also imports its model stack
    (skops, which imports torch), seconds per worker process that a cohort
    with all masks given does not need to pay.  A given mask that cannot be a
    hematoma (an inverted or filled one) fails the case
    (:func:`hematoma.mask_checks.check_hematoma_mask`).

    With a given mask nothing is segmented: the network does not run and the
    case has no ``deep_`` columns (those come from the segmentation's run,
    ``SegmentationResult.features``, with ``--method deep`` or ``both``).
    """
    if mask_path:
        from .io import read_mask
        from .mask_checks import check_hematoma_mask

        mask = read_mask(mask_path, reference=ct, reference_path=ct_path)
        check_hematoma_mask(mask, mask_path, ct=ct)
        return mask, None
    from .segmentation.methods import SegmenterSettings, segment_with

    result = segment_with(ct, segmenter or SegmenterSettings(), model=_segmentation_model(model_path), source=ct_path)
    return result.mask, result


def _content_only(settings_record: dict) -> dict:
    # Files count by content (their SHA-1s are in the record), not by where they are.
    return {k: v for k, v in settings_record.items() if k not in ("radiomics_params", "segmentation_model")}


def _refresh_paths(store: CaseStore, job: CaseJob, outputs: dict[str, Path]) -> None:
    """Point an up-to-date record at where its files are now (a moved cohort or OUT folder).

    The fingerprint holds contents, not paths, so moving data costs no
    recomputation; later stages read these paths, so they must be current.
    """
    record = store.read(job.case_id)
    current = {
        "baseline_ct": job.baseline_ct,
        "followup_ct": job.followup_ct,
        "baseline_mask": str(outputs["baseline"].resolve()),
        "followup_mask": str(outputs["followup"].resolve()) if "followup" in outputs else None,
        "baseline_mask_source": job.baseline_mask or "segmented",
        "followup_mask_source": (job.followup_mask or "segmented") if "followup" in outputs else None,
    }
    if any(record.get(key) != value for key, value in current.items()):
        store.write(job.case_id, {**record, **current})


def _check_followup_distinct(job: CaseJob, inputs_sha1: dict[str, str | None]) -> list[str]:
    """Refuse a follow-up CT whose content is its baseline's (a copy-paste slip: growth 0, a silent HE "no").

    Two acquisitions never give the same bytes, so that is an error.  Two masks
    can (the same voxels on one grid: registered scans, synthetic data), though a
    copied mask is the likelier cause: that is a warning, returned.
    """
    def same(name: str) -> bool:
        followup = inputs_sha1[f"followup_{name}"]
        return followup is not None and followup == inputs_sha1[f"baseline_{name}"]

    if same("ct") and job.baseline_series == job.followup_series:  # else: two series of one DICOM folder
        raise InputError(job.followup_ct, f"followup_ct has the same content as baseline_ct {job.baseline_ct}: "
                                          "a follow-up is a later scan")
    if same("mask"):
        return [(f"followup_mask {job.followup_mask} has the same content as baseline_mask {job.baseline_mask}: "
                 "growth 0 mL (a copied mask?)")]
    return []


def _disagreement(job: CaseJob, baseline_ml: float, followup_ml: float, he: int) -> str:
    """The warning for a manifest ``he`` that the follow-up's volumes contradict (the follow-up's label is used)."""
    growth_ml = followup_ml - baseline_ml
    relative = f"{100 * growth_ml / baseline_ml:+.1f} %" if baseline_ml > 0 else "relative n/a"
    return (f"manifest he={int(job.he_manifest)} disagrees with the follow-up (growth {growth_ml:+.2f} mL, {relative}, "
            f"definition {job.settings.definition}): the follow-up's label {he} is used")


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# What every case imports (segmentation only some): local workers are forked
# with these already imported (hematoma.parallel.start_fork_server).
CASE_MODULES = ("hematoma.extraction", "hematoma.io", "hematoma.features.radiomics", "hematoma.features.signs",
                "scipy.spatial")


def extract_case(job: CaseJob) -> CaseOutcome:
    """Compute and store one case, or skip it when its stored fingerprint is current.

    Never raises for a problem with the case: the outcome says ``failed``, at
    which ``stage``, and why (an :class:`InputError`'s one line, else the
    exception's type and message).
    """
    start = time.perf_counter()
    stage = "hash"
    try:
        store = CaseStore(job.cases_root)
        case_dir = store.case_dir(job.case_id)
        inputs_sha1 = file_hashes(job.input_files())
        stage = "followup"
        notes = _check_followup_distinct(job, inputs_sha1)  # the case's own warnings, next to the libraries' ones
        stage = "hash"
        series = {"baseline_series": job.baseline_series, "followup_series": job.followup_series}
        # The series only when one is chosen: the cases of a cohort without the columns keep their fingerprints.
        case_fingerprint = fingerprint(inputs_sha1, _content_only(job.settings_record), job.he_manifest,
                                       *([series] if any(series.values()) else []))
        outputs = {"baseline": case_dir / MASK_NAMES["baseline"]}
        if job.followup_ct or job.followup_mask:
            outputs["followup"] = case_dir / MASK_NAMES["followup"]
        if job.settings.dicom_seg and _is_dicom(job.baseline_ct):
            outputs["baseline_seg"] = case_dir / SEG_NAME
        masks = [path for name, path in outputs.items() if name != "baseline_seg"]
        if store.is_current(job.case_id, case_fingerprint, files=masks) and _seg_kept(store.read(job.case_id)):
            _refresh_paths(store, job, outputs)
            return CaseOutcome(job.case_id, SKIPPED, seconds=time.perf_counter() - start)

        # Warnings (a resampled DICOM series...) go into case.json: a worker's
        # stderr is seen by no one.  (catch_warnings is per process: with
        # threaded workers a warning may land in another case's list.)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from .io import read_geometry, read_image, read_mask, write_image

            stage = "read"
            ct = read_image(job.baseline_ct, series_uid=job.baseline_series)
            stage = "mask"
            mask, segmented = _mask_for_case(ct, job.baseline_ct, job.baseline_mask, job.settings.segmentation_model,
                                             job.settings.segmenter)
            check_scanner_spacing(mask, job.baseline_mask or job.baseline_ct)
            baseline_ml = mask_volume_ml(mask)

            followup_mask, followup_segmented = None, None
            if job.followup_ct:
                stage = "followup"
                # A given follow-up mask is only checked against its CT's grid: the header is enough
                # (read_geometry has no series choice: a chosen series is read whole).
                if job.followup_mask and not job.followup_series:
                    followup_ct = read_geometry(job.followup_ct)
                else:
                    followup_ct = read_image(job.followup_ct, series_uid=job.followup_series)
                followup_mask, followup_segmented = _mask_for_case(
                    followup_ct, job.followup_ct, job.followup_mask, job.settings.segmentation_model, job.settings.segmenter)
            elif job.followup_mask:  # a follow-up volume without its CT: no grid to check against
                stage = "followup"
                from .mask_checks import check_hematoma_mask

                followup_mask = read_mask(job.followup_mask)
                check_hematoma_mask(followup_mask, job.followup_mask)
            if followup_mask is not None:
                check_scanner_spacing(followup_mask, job.followup_mask or job.followup_ct)
            followup_ml = None if followup_mask is None else mask_volume_ml(followup_mask)

            if followup_ml is not None:
                he, he_source = int(label_expansion(baseline_ml, followup_ml, job.settings.definition)), "followup"
                if job.he_manifest is not None and int(job.he_manifest) != he:
                    notes.append(_disagreement(job, baseline_ml, followup_ml, he))
            elif job.he_manifest is not None:
                he, he_source = int(job.he_manifest), "manifest"
            else:
                he, he_source = None, None

            stage = "radiomics"
            from .features.radiomics import extract_radiomics, radiomics_provenance

            features = extract_radiomics(ct, mask, job.settings.radiomics_params, source=job.baseline_mask or job.baseline_ct)
            features[BASELINE_VOLUME_FEATURE] = baseline_ml
            stage = "signs"
            from .features.signs import compute_signs

            features.update(compute_signs(ct, mask, job.settings.sign_settings()))
            if segmented is not None and job.settings.segmenter is not None and job.settings.segmenter.uses_deep:
                features.update(segmented.features)  # BLAST-CT ran (--method deep/both): its deep_ columns, same run

            stage = "write"
            write_image(mask, outputs["baseline"])
            if followup_mask is not None:
                write_image(followup_mask, outputs["followup"])
            if "baseline_seg" in outputs:
                stage = "seg"
                if not _write_case_seg(ct, mask, job, segmented, outputs["baseline_seg"], notes):
                    del outputs["baseline_seg"]
        growth_ml = None if followup_ml is None else followup_ml - baseline_ml
        record = {
            ID_COLUMN: job.case_id,
            "fingerprint": case_fingerprint,
            "baseline_ct": job.baseline_ct,
            "baseline_mask": str(outputs["baseline"].resolve()),
            "baseline_mask_source": job.baseline_mask or "segmented",
            "followup_ct": job.followup_ct,
            **series,
            "followup_mask": str(outputs["followup"].resolve()) if followup_mask is not None else None,
            "followup_mask_source": (job.followup_mask or "segmented") if followup_mask is not None else None,
            "baseline_volume_ml": baseline_ml,
            "followup_volume_ml": followup_ml,
            "growth_ml": growth_ml,
            "growth_relative": _finite_or_none(growth_ml / baseline_ml) if growth_ml is not None and baseline_ml > 0 else None,
            LABEL_COLUMN: he,
            "he_source": he_source,
            "he_manifest": job.he_manifest,
            "he_definition": job.settings.definition,
            **_segmentation_fields(segmented, followup_segmented, job.settings.segmenter),
            **({"baseline_seg": str(outputs["baseline_seg"].resolve()) if "baseline_seg" in outputs else None}
               if job.settings.dicom_seg else {}),
            "features": features,
            "warnings": [str(w.message) for w in caught] + notes + _segmentation_notes(segmented, followup_segmented),
            "provenance": {
                "inputs_sha1": inputs_sha1,
                "outputs_sha1": {f"{name}_mask": sha1_file(path) for name, path in outputs.items() if path.exists()},
                "settings": job.settings_record,
                "radiomics": radiomics_provenance(job.settings.radiomics_params),
                "versions": package_versions(),
                "host": platform.node(),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - start, 3),
            },
        }
        store.write(job.case_id, record)  # last: a case.json means the whole case is on disk
        return CaseOutcome(job.case_id, DONE, seconds=time.perf_counter() - start)
    except InputError as error:
        return CaseOutcome(job.case_id, FAILED, stage, str(error), time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - one case's bug or bad file must not stop the cohort
        reason = f"{type(error).__name__}: {one_line(error)}"
        return CaseOutcome(job.case_id, FAILED, stage, reason, time.perf_counter() - start)


def _is_dicom(path: str) -> bool:
    from .io.paths import _is_dicom_file

    return Path(path).is_dir() or _is_dicom_file(Path(path))


def _seg_kept(record: dict | None) -> bool:
    """The DICOM SEG a record names is still there (a record without one needs none)."""
    return record is not None and (not record.get("baseline_seg") or Path(record["baseline_seg"]).is_file())


def _write_case_seg(ct, mask, job: CaseJob, segmented, destination: Path, notes: list[str]) -> bool:
    """The baseline mask as a DICOM SEG of the CT's slices (True), or a note saying why a series cannot have one."""
    from .io.dicom_seg import seg_source, write_dicom_seg

    try:
        slices = seg_source(ct, Path(job.baseline_ct), job.baseline_series)
    except InputError as error:
        notes.append(f"no DICOM SEG: {error.problem}")
        destination.unlink(missing_ok=True)
        return False
    method = "manual" if job.baseline_mask else (segmented.method if segmented is not None else "rules")
    write_dicom_seg(mask, slices, destination, algorithm=method, overwrite=True)
    return True


def _segmentation_fields(baseline, followup, segmenter) -> dict[str, Any]:
    """What made the masks (per scan) and the baseline's BLAST-CT columns; nothing for a rules-only run."""
    if segmenter is None or segmenter.resolved_method() == "rules":
        return {}
    from .segmentation.methods import SEGMENTATION_COLUMNS

    fields: dict[str, Any] = {"segmentation": {name: (None if result is None else result.method)
                                               for name, result in (("baseline", baseline), ("followup", followup))}}
    for column in SEGMENTATION_COLUMNS:
        value = None if baseline is None else baseline.columns.get(column)
        fields[column] = None if value is None or math.isnan(value) else float(value)
    followup_flag = None if followup is None else followup.columns.get("seg_qa_flag")
    if followup_flag is not None and not math.isnan(followup_flag):  # either scan's disagreement asks for a look
        fields["seg_qa_flag"] = float(max(fields["seg_qa_flag"] or 0.0, followup_flag))
    return fields


def _segmentation_notes(baseline, followup) -> list[str]:
    notes = []
    for name, result in (("baseline", baseline), ("followup", followup)):
        notes.extend(f"{name} segmentation: {note}" for note in (result.notes if result is not None else ()))
    return notes


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# --------------------------------------------------------------------------- the cohort


@dataclass
class ExtractResult:
    out: Path
    table: pd.DataFrame
    outcomes: list[CaseOutcome]
    failures: pd.DataFrame
    warnings: dict[str, list[str]] = field(default_factory=dict)  # case -> its warnings (read, resampled...)
    qa_flagged: list[str] = field(default_factory=list)  # cases whose rules and deep masks disagree (--method both)

    @property
    def counts(self) -> dict[str, int]:
        counts = {DONE: 0, SKIPPED: 0, FAILED: 0}
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        return counts


def _resolved_weights(segmenter):
    """The segmenter with its weights folder as an absolute path (workers may run elsewhere)."""
    if segmenter is None:
        return None
    import dataclasses

    segmenter = segmenter.check()
    if segmenter.weights is not None:
        segmenter = dataclasses.replace(segmenter, weights=str(Path(segmenter.weights).resolve()))
    return segmenter


def _check_settings(settings: ExtractSettings) -> None:
    """Fail on a bad setting before any worker starts."""
    get_definition(settings.definition)
    if settings.segmenter is not None and settings.segmenter.uses_deep:
        from .segmentation.methods import deep_segmenter

        deep_segmenter(settings.segmenter.weights, settings.segmenter.n_models)  # weights found and checked here
    from .features.radiomics import load_extractor

    load_extractor(settings.radiomics_params)  # InputError naming the file when it is invalid
    if settings.segmentation_model is not None:
        model = Path(settings.segmentation_model)
        if not model.exists():
            raise InputError(model, "segmentation model not found")
        _segmentation_model(str(model))  # loads (and so validates) it here too


def _jobs(table: pd.DataFrame, cases_root: Path, settings: ExtractSettings, settings_record: dict) -> list[CaseJob]:
    def text(row, column) -> str | None:
        value = row.get(column)
        return value if isinstance(value, str) and value else None

    jobs = []
    for row in table.to_dict("records"):
        he = row.get(LABEL_COLUMN)
        he = None if he is None or (isinstance(he, float) and math.isnan(he)) else float(he)
        jobs.append(
            CaseJob(
                case_id=str(row[ID_COLUMN]),
                cases_root=str(cases_root),
                baseline_ct=row["baseline_ct"],
                followup_ct=text(row, "followup_ct"),
                baseline_mask=text(row, "baseline_mask"),
                followup_mask=text(row, "followup_mask"),
                he_manifest=he,
                settings=settings,
                settings_record=settings_record,
                baseline_series=text(row, SERIES_COLUMNS["baseline_ct"]),
                followup_series=text(row, SERIES_COLUMNS["followup_ct"]),
            )
        )
    return jobs


def case_row(record: dict) -> dict[str, Any]:
    """One feature-table row (meta columns and image features) from a case.json record."""
    row = {ID_COLUMN: record[ID_COLUMN]}
    for column in META_COLUMNS:
        value = record.get(column)
        row[column] = math.nan if value is None else float(value)
    if "segmentation" in record:  # a run with --method deep/both/auto: BLAST-CT's other volumes and the QA flag
        from .segmentation.methods import SEGMENTATION_COLUMNS

        for column in SEGMENTATION_COLUMNS:
            value = record.get(column)
            row[column] = math.nan if value is None else float(value)
    row.update(record["features"])
    return row


def feature_table(records: Sequence[dict], clinical: pd.DataFrame | None) -> pd.DataFrame:
    """``patient_id``, meta columns, ``rad_*``, ``sign_*``, then ``clin_*`` (clinical + baseline volume)."""
    import pandas as pd

    rows = pd.DataFrame([case_row(r) for r in records], columns=None if records else [ID_COLUMN, *META_COLUMNS])
    rows[ID_COLUMN] = rows[ID_COLUMN].astype(str)
    if clinical is not None and len(clinical.columns) > 1:
        clinical = clinical.assign(**{ID_COLUMN: clinical[ID_COLUMN].astype(str)})
        rows = rows.merge(clinical, on=ID_COLUMN, how="left", validate="one_to_one")
    radiomics = [c for c in rows.columns if c.startswith("rad_")]
    clinical_columns = [c for c in rows.columns if c.startswith("clin_") and c != BASELINE_VOLUME_FEATURE]
    if BASELINE_VOLUME_FEATURE in rows.columns:
        clinical_columns.append(BASELINE_VOLUME_FEATURE)
    signs = [c for c in rows.columns if c.startswith("sign_")]
    other = [c for c in rows.columns if c not in (ID_COLUMN, *META_COLUMNS, *radiomics, *signs, *clinical_columns)]
    return rows[[ID_COLUMN, *META_COLUMNS, *other, *radiomics, *signs, *clinical_columns]]


def write_table(table: pd.DataFrame, out: Path) -> None:
    with atomic_path(out / "features.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "features.parquet") as tmp:
        table.to_parquet(tmp, index=False)


def extract_cohort(
    manifest_path: str | Path,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    radiomics_params: str | Path | None = None,
    segmentation_model: str | Path | None = None,
    segmenter: Any = None,
    dicom_seg: bool = False,
    definition: str = DEFAULT_DEFINITION,
    extra_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    show_progress: bool = True,
    console: Any = None,
    overwrite: bool = False,
) -> ExtractResult:
    """Extract every case of the manifest into ``out`` (resuming a previous run there).

    ``workers``: local worker processes (default: the cores available; ``1``
    runs in this process, for debugging); ``scheduler``: a Dask scheduler
    address or scheduler file to use instead; ``client``: a Dask client to use
    as is.  See :mod:`hematoma.parallel`.  ``dicom_seg``: also write each DICOM
    baseline CT's mask as ``cases/<id>/baseline_mask_seg.dcm``.  ``out`` holding another manifest's
    or other settings' extraction is refused (:class:`InputError`) unless
    ``overwrite`` (see :func:`claim_folder`); another run using ``out`` is
    refused too.
    """
    started = time.time()
    out = Path(out)
    settings = ExtractSettings(
        definition=definition,
        radiomics_params=None if radiomics_params is None else str(Path(radiomics_params).resolve()),
        segmentation_model=None if segmentation_model is None else str(Path(segmentation_model).resolve()),
        segmenter=_resolved_weights(segmenter),
        dicom_seg=dicom_seg,
    )
    get_definition(definition)  # the cheap checks before any worker starts
    for path, what in ((manifest_path, "manifest"), (radiomics_params, "pyradiomics parameters file"),
                       (segmentation_model, "segmentation model")):
        if path is not None and not Path(path).exists():
            raise InputError(path, f"{what} not found")
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    workers = default_workers() if workers is None else workers
    with contextlib.ExitStack() as stack:
        if client is None and (scheduler or workers > 1):
            # Workers start while the manifest and settings are read and checked.
            client = stack.enter_context(background_client(workers, scheduler, preload=CASE_MODULES))
        return _extract(manifest_path, out, settings, started, workers, scheduler, client,
                        extra_columns, ignore_columns, show_progress, console, overwrite)


def _extract(manifest_path, out: Path, settings: ExtractSettings, started: float, workers: int, scheduler,
             client, extra_columns, ignore_columns, show_progress: bool, console, overwrite: bool) -> ExtractResult:
    _check_settings(settings)
    from .cohort import load_manifest

    manifest = load_manifest(manifest_path, extra_columns=tuple(extra_columns), ignore_columns=tuple(ignore_columns))
    ids = [str(i) for i in manifest.table[ID_COLUMN]]
    bad_ids = [problem for problem in map(check_case_id, ids) if problem]
    if bad_ids:
        raise ManifestError(manifest.path, bad_ids)

    from .features.clinical import encode_clinical

    clinical = encode_clinical(manifest.table, source=manifest.path, extra_columns=tuple(extra_columns))
    settings_record = settings.record()
    owner = owner_record(manifest.path, len(ids), settings_record, extra_columns, ignore_columns)
    # Inputs are checked above without the lock (they are only read); the folder is held from here on.
    with folder_lock(out):
        inputs = [path for column in ("baseline_ct", "followup_ct", "baseline_mask", "followup_mask")
                  if column in manifest.table.columns for path in manifest.table[column].dropna() if path]
        claim_folder(out, owner, ids, overwrite, manifest_columns=columns_that_count(manifest.path, extra_columns),
                     inputs=inputs)
        return _run_and_write(manifest, out, ids, settings, settings_record, owner, clinical, started, workers,
                              scheduler, client, extra_columns, ignore_columns, show_progress, console)


def _run_and_write(manifest, out: Path, ids, settings, settings_record, owner, clinical, started, workers, scheduler,
                   client, extra_columns, ignore_columns, show_progress, console) -> ExtractResult:
    cases_root = (out / "cases").resolve()
    jobs = _jobs(manifest.table, cases_root, settings, settings_record)
    outcomes = run_cases(
        extract_case, jobs, ids, workers=workers, client=client() if callable(client) else client,
        description="extract", show_progress=show_progress, console=console,
    )

    store = CaseStore(cases_root)
    records, failed = [], []
    for outcome in outcomes:
        record = store.read(outcome.case_id) if outcome.status != FAILED else None
        if record is None and outcome.status != FAILED:  # deleted under our feet
            outcome = CaseOutcome(outcome.case_id, FAILED, "store", "case.json missing after the run")
        if outcome.status == FAILED:
            failed.append({ID_COLUMN: outcome.case_id, "stage": outcome.stage, "reason": outcome.reason})
        else:
            records.append(record)
    table = feature_table(records, clinical)
    import pandas as pd

    failures = pd.DataFrame(failed, columns=FAILURE_COLUMNS)
    write_table(table, out)
    with atomic_path(out / "failures.csv") as tmp:
        failures.to_csv(tmp, index=False)
    # case.json is where a worker's warnings land; the run's summary gathers them.
    case_warnings = {str(r[ID_COLUMN]): list(r["warnings"]) for r in records if r.get("warnings")}
    # Cases whose rules and BLAST-CT masks disagree (--method both): the ones a person should look at.
    qa_flagged = sorted(str(r[ID_COLUMN]) for r in records if r.get("seg_qa_flag"))
    result = ExtractResult(out=out, table=table, outcomes=outcomes, failures=failures, warnings=case_warnings,
                           qa_flagged=qa_flagged)
    write_json(
        out / "extract.json",
        {
            **owner,
            "status": "finished",
            "warnings": case_warnings,
            **({"segmentation_qa_flagged": qa_flagged} if settings.segmenter is not None else {}),
            "workers": workers,
            "scheduler": scheduler,
            "counts": result.counts,
            "versions": package_versions(),
            "python_executable": sys.executable,
            "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 3),
        },
    )
    empty_trash(out)  # what an interrupted --overwrite left
    if ids and not records:
        raise HematomaError(f"all {len(ids)} cases failed; reasons in {out / 'failures.csv'}")
    return result


__all__ = [
    "CASE_FORMAT",
    "CaseJob",
    "ExtractResult",
    "ExtractSettings",
    "extract_case",
    "extract_cohort",
    "feature_table",
    "package_versions",
]
