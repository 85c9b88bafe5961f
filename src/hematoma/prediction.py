"""Predict hematoma expansion for one patient with a trained model bundle.

The case goes through the same steps as at training time, with the settings
recorded in the bundle: the hematoma mask (given, or segmented by
:func:`hematoma.segmentation.mask_for_case` with the segmenter the features were
extracted with), the radiomics features (the same parameters file, checked by
content), the clinical variables (:func:`hematoma.features.clinical.encode_clinical`
on a one-row table; the baseline volume computed from the mask) and, when the
model uses ``cnn_`` columns, the CNN features of the CNN the model was trained
with.  :class:`Predictor` loads everything once, so that a batch of patients
(or a benchmark) pays the loading once.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import InputError, ManifestError
from .storage import same_file, sha1_file

ID = "patient_id"
BASELINE_VOLUME_FEATURE = "clin_baseline_volume_ml"


# --------------------------------------------------------------------------- clinical input


def _clinical_names(model_columns=()) -> tuple[set[str], set[str]]:
    """(schema variables a user may give, extra variables the model uses)."""
    from .features.clinical import CLINICAL_SCHEMA, USER_VARIABLES

    extras = {c[len("clin_"):] for c in model_columns if c.startswith("clin_")} - set(CLINICAL_SCHEMA)
    return set(USER_VARIABLES), extras


def _one_line_problems(error: ManifestError, where: str) -> InputError:
    # Rows of a one-row table mean nothing to the user: drop "row 2 (patient_id ...): ".
    problems = [re.sub(r"^row \d+( \(patient_id [^)]*\))?: ", "", p) for p in error.problems]
    return InputError(None, f"{where}: " + "; ".join(problems))


def clinical_from_pairs(pairs, patient_id: str = "patient", model_columns=(), extra_columns=(),
                        ignore_columns=()) -> pd.DataFrame:
    """``["age=70", "sex=M"]`` -> the encoded one-row clinical table (``patient_id``, ``clin_*``).

    Names follow the manifest's column rules: an unknown name is refused with the
    likely meant one (``sbp_mmhg`` -> ``sbp``) unless declared (``extra_columns``)
    or ignored (``ignore_columns``).
    """
    from .cohort import suggest_column
    from .features.clinical import CLINICAL_SCHEMA, BASELINE_VOLUME, encode_clinical, encode_value

    schema, extras = _clinical_names(model_columns)
    extras |= set(extra_columns)
    values = {}
    for pair in pairs:
        name, sep, value = str(pair).partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise InputError(None, f"--set {pair!r}: expected name=value (e.g. --set age=70)")
        if name in ignore_columns:
            continue
        if name == BASELINE_VOLUME:
            raise InputError(None, f"--set {name}: the baseline volume is computed from the hematoma mask, not typed in")
        if name not in schema and name not in extras:
            close = suggest_column(name, schema | extras)
            hint = (f"did you mean {close!r}?" if close else f"known: {', '.join(sorted(schema | extras))}")
            raise InputError(None, f"--set {name}={value}: unknown clinical variable {name!r} ({hint}; "
                                   "declare it with --extra-column or drop it with --ignore-column)")
        if name in values:
            raise InputError(None, f"--set {name}: given twice")
        if name in CLINICAL_SCHEMA:
            encoded = encode_value(CLINICAL_SCHEMA[name], value)
            if not isinstance(encoded, float):
                raise InputError(None, f"--set {name}={value}: {value!r} {encoded.why}")
        values[name] = value
    table = pd.DataFrame([{ID: patient_id, **values}], dtype=object)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # absent variables are reported against the model instead
            return encode_clinical(table, source="--set", extra_columns=sorted(extras & set(values)))
    except ManifestError as error:
        raise _one_line_problems(error, "--set") from None


def clinical_from_file(path: str | Path, patient_id: str | None = None, model_columns=(), extra_columns=(),
                       ignore_columns=(), ct: str | Path | None = None) -> pd.DataFrame:
    """The encoded clinical row of ``patient_id`` (or the only row) of a clinical CSV.

    Read by :func:`hematoma.features.clinical.load_clinical`: the manifest's column
    rules apply (a misspelt ``sbp_mmhg`` is refused with ``sbp`` suggested, not
    silently left out and imputed), with ``extra_columns`` declared and
    ``ignore_columns`` dropped; the model's own extra variables are known.
    With ``ct``: a row that names its own ``baseline_ct`` (a manifest used as
    the clinical file) must name that CT, so that one patient's values are
    never paired with another patient's scan.
    """
    from .features.clinical import load_clinical

    path = Path(path)
    _, extras = _clinical_names(model_columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # absent variables are reported against the model instead
        table = load_clinical(path, extra_columns=extra_columns, ignore_columns=ignore_columns,
                              known_extras=sorted(extras - set(extra_columns)))
    if patient_id is not None:
        table = table[table[ID] == str(patient_id)]
        if table.empty:
            raise InputError(path, f"has no row for patient_id {patient_id!r}")
        if len(table) > 1:
            raise InputError(path, f"has {len(table)} rows for patient_id {patient_id!r}")
    elif len(table) != 1:
        raise InputError(path, f"has {len(table)} rows; choose one with --patient-id")
    if ct is not None:
        _check_row_names_ct(path, str(table[ID].iloc[0]), Path(ct))
    return table.reset_index(drop=True)


def _check_row_names_ct(path: Path, patient_id: str, ct: Path) -> None:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    if "baseline_ct" not in raw.columns or ID not in raw.columns:
        return
    named = raw.loc[raw[ID].str.strip() == patient_id, "baseline_ct"].str.strip()
    if named.empty or not named.iloc[0]:
        return
    listed = Path(named.iloc[0]) if Path(named.iloc[0]).is_absolute() else path.parent / named.iloc[0]
    if not same_file(listed, ct):
        raise InputError(path, f"the row of {patient_id!r} is for baseline_ct {named.iloc[0]}, not the --ct given "
                               f"({ct}): another patient's row? (check --patient-id)")


# --------------------------------------------------------------------------- the predictor


@dataclass
class PatientPrediction:
    patient_id: str
    probability: float
    predicted: int
    threshold: float
    volume_ml: float
    features: pd.DataFrame  # the one feature row the model saw (missing clinical values as NaN)
    clinical_given: dict
    missing_clinical: list[str]
    mask_source: str
    model_name: str
    ct: object = field(repr=False, default=None)
    mask: object = field(repr=False, default=None)
    seconds: dict = field(default_factory=dict)
    signs: dict = field(default_factory=dict)  # the sign_ columns (hematoma.features.signs)
    sign_findings: list = field(repr=False, default_factory=list)  # SignFinding: slice and region of each sign

    @property
    def label(self) -> str:
        return "HE" if self.predicted else "no HE"


class Predictor:
    """A loaded model bundle with what its features need (CNN, segmenter, radiomics parameters)."""

    def __init__(self, bundle, cnn=None, segmentation_model=None, radiomics_params=None, segmenter=None, signs=None):
        self.bundle = bundle
        self.signs = signs  # features.signs.SignSettings the model's sign_ features were computed with
        self.cnn = cnn
        self.segmentation_model = segmentation_model
        self.radiomics_params = radiomics_params
        self.segmenter = segmenter  # segmentation.methods.SegmenterSettings; None: the rules

    @property
    def uses_cnn(self) -> bool:
        return any(c.startswith("cnn_") for c in self.bundle.feature_columns)

    @classmethod
    def load(cls, model: str | Path, cnn_model: str | Path | None = None, segmentation_model: str | Path | None = None,
             device: str = "cpu", allow_version_mismatch: bool = False, segmenter=None) -> "Predictor":
        """``segmenter``: how to segment a CT without a mask (SegmenterSettings); None: as the training cohort's
        masks were made (its extraction's ``--method``), the rules where it recorded none."""
        from .model_bundle import load_model

        bundle = load_model(model, allow_version_mismatch=allow_version_mismatch)
        extract = bundle.settings.get("extract") or {}
        if segmenter is None and extract.get("segmentation"):
            from .segmentation.methods import SegmenterSettings

            segmenter = SegmenterSettings.from_record(extract["segmentation"])
        from .features.signs import SignSettings

        signs = SignSettings.from_record(extract["signs"]) if extract.get("signs") else SignSettings()
        predictor = cls(bundle, radiomics_params=_radiomics_params(extract, bundle.path), segmenter=segmenter,
                        signs=signs)
        if predictor.uses_cnn:
            predictor.cnn = _load_cnn(bundle, cnn_model, device)
        segmenter = segmentation_model or extract.get("segmentation_model")
        if segmenter:
            if not Path(segmenter).exists():
                raise InputError(segmenter, "segmentation model not found (give it with --segmentation-model, or a --mask)")
            from .segmentation import HemorrhageSegmentationModel

            predictor.segmentation_model = HemorrhageSegmentationModel.load(segmenter)
        return predictor

    def predict(self, ct: str | Path, mask: str | Path | None = None, clinical: pd.DataFrame | None = None,
                patient_id: str | None = None, series_uid: str | None = None) -> PatientPrediction:
        """Probability of HE for the patient of ``ct`` (+ ``mask``, + encoded ``clinical`` row).

        ``series_uid``: the series to read when ``ct`` is a DICOM folder holding several.
        """
        from .features.radiomics import extract_radiomics
        from .io import read_image, read_mask
        from .volume import mask_volume_ml

        uses_ct_network = any(c.startswith("deep_") for c in self.bundle.feature_columns)
        if uses_ct_network and (mask is not None or self.segmenter is None or not self.segmenter.uses_deep):
            raise InputError(self.bundle.path, "the model uses the CT network's deep_ features, computed in BLAST-CT's "
                                               "segmentation run: predict with --method deep (or both) and no --mask")
        seconds, start = {}, time.perf_counter()
        patient_id = patient_id or (str(clinical[ID].iloc[0]) if clinical is not None and len(clinical) else _stem(ct))
        image = read_image(ct, series_uid=series_uid)
        seconds["read"] = time.perf_counter() - start
        if mask is not None:
            from .mask_checks import check_hematoma_mask

            hematoma = read_mask(mask, reference=image, reference_path=ct)
            check_hematoma_mask(hematoma, mask, ct=image)  # an inverted or filled mask is no hematoma: refuse it
        else:
            from .segmentation.methods import SegmenterSettings, segment_with

            segmented = segment_with(image, self.segmenter or SegmenterSettings(), model=self.segmentation_model, source=ct)
            hematoma = segmented.mask
        seconds["mask"] = time.perf_counter() - start - sum(seconds.values())
        volume = mask_volume_ml(hematoma)
        row = {ID: patient_id, **extract_radiomics(image, hematoma, self.radiomics_params, source=mask or ct)}
        row[BASELINE_VOLUME_FEATURE] = volume
        seconds["radiomics"] = time.perf_counter() - start - sum(seconds.values())
        from .features.signs import SignSettings, analyse_signs

        sign_values, findings = analyse_signs(image, hematoma, self.signs or SignSettings())
        row.update(sign_values)  # shown to the user whether or not the model uses them
        if uses_ct_network:  # the network's deep_ columns, from the segmentation run above (features.ct_network)
            row.update(segmented.features)
        seconds["signs"] = time.perf_counter() - start - sum(seconds.values())
        given = {}
        if clinical is not None:
            given = {k: v for k, v in clinical.iloc[0].items() if k.startswith("clin_") and pd.notna(v)}
            row.update(given)
        if self.uses_cnn:
            from .features.deep import FEATURE_NAMES, embed_patient

            row.update(zip(FEATURE_NAMES, embed_patient(image, hematoma, self.cnn)))
            seconds["cnn"] = time.perf_counter() - start - sum(seconds.values())
        table, missing = self._complete(row)
        result = self.bundle.predict_table(table).iloc[0]
        seconds["model"] = time.perf_counter() - start - sum(seconds.values())
        seconds["total"] = time.perf_counter() - start
        from .assessment import feature_set_name

        return PatientPrediction(
            patient_id=patient_id, probability=float(result["probability"]), predicted=int(result["predicted"]),
            threshold=float(self.bundle.threshold), volume_ml=volume, features=table, clinical_given=given,
            missing_clinical=missing, mask_source=str(mask) if mask is not None else "segmented",
            model_name=feature_set_name(self.bundle.settings.get("groups") or ()), ct=image, mask=hematoma,
            seconds=seconds, signs=sign_values, sign_findings=findings)

    def _complete(self, row: dict) -> tuple[pd.DataFrame, list[str]]:
        """The feature row with the model's columns; absent clinical values are NaN (the model imputes them)."""
        needed = self.bundle.feature_columns
        missing_clinical = [c for c in needed if c.startswith("clin_") and c not in row]
        missing_other = [c for c in needed if not c.startswith("clin_") and c not in row]
        if missing_other:
            raise InputError(self.bundle.path, f"the model needs {len(missing_other)} feature column(s) this case did not "
                                               f"give: {', '.join(missing_other[:10])}")
        row = {**row, **{c: float("nan") for c in missing_clinical}}
        return pd.DataFrame([row]), [c[len("clin_"):] for c in missing_clinical]


def _stem(path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _radiomics_params(extract: dict, bundle_path) -> str | None:
    """The radiomics parameters file the model's features came from (None: the shipped one)."""
    from .features.radiomics import default_params_path

    recorded = extract.get("radiomics_params")
    expected = extract.get("radiomics_params_sha1")
    if recorded in (None, "default"):
        if expected and sha1_file(default_params_path()) != expected:
            warnings.warn(f"{bundle_path}: the model's radiomics came from another version of the shipped parameters file",
                          stacklevel=3)
        return None
    path = Path(recorded)
    if not path.is_file():
        raise InputError(path, "radiomics parameters file the model was trained with not found")
    if expected and sha1_file(path) != expected:
        raise InputError(path, "differs from the radiomics parameters file the model was trained with")
    return str(path)


def _load_cnn(bundle, cnn_model, device):
    recorded = bundle.settings.get("cnn_model")
    cnn_dir = Path(cnn_model) if cnn_model else (Path(recorded) if recorded else None)
    if cnn_dir is None:
        raise InputError(bundle.path, "the model uses CNN features: give the CNN it was trained with (--cnn-model DIR)")
    if not cnn_dir.is_dir():
        raise InputError(cnn_dir, "CNN folder not found: give the CNN the model was trained with (--cnn-model DIR)")
    from .features.deep import load_cnn

    cnn = load_cnn(cnn_dir, device=device)
    expected = (bundle.settings.get("cnn") or {}).get("model_sha1")
    if expected and cnn.settings.get("model_sha1") != expected:
        raise InputError(cnn_dir, "is not the CNN the model was trained with (its weights differ)")
    return cnn


# --------------------------------------------------------------------------- outputs


def write_overlay(prediction: PatientPrediction, path: str | Path, overwrite: bool = False) -> Path:
    from .segmentation.overlay import save_overlay

    title = f"{prediction.patient_id}: P(HE) = {prediction.probability:.2f} ({prediction.label})"
    return save_overlay(prediction.ct, prediction.mask, path, overwrite=overwrite, title=title)


def write_patient_report(prediction: PatientPrediction, path: str | Path, overlay: str | Path,
                         predictor: Predictor | None = None, overwrite: bool = False) -> Path:
    """A one-patient HTML report: the prediction, the overlay, the clinical values used, the NCCT signs.

    Each sign found gets its figure next to the report (``<report name>_sign_<sign>.png``,
    :func:`hematoma.report.sign_figures.sign_figure_path`); like the report, none replaces
    an existing file unless ``overwrite``, and none is written before all were checked.
    """
    from .report.html import ReportContent, write_report
    from .report.sign_figures import check_figure_paths, draw_sign_figure, sign_figure_path
    from .report.signs_section import onset_hours, signs_report
    from .storage import refuse_overwrite

    drawable = prediction.sign_findings if prediction.ct is not None and prediction.mask is not None else []
    figure_paths = {f.sign: sign_figure_path(path, f.sign) for f in drawable}
    check_figure_paths(figure_paths.values(), {"report": path, "overlay": overlay})
    for destination in (path, *figure_paths.values()):
        refuse_overwrite(destination, overwrite)
    clinical = pd.DataFrame(
        [{"variable": k[len("clin_"):], "value": v} for k, v in prediction.features.iloc[0].items()
         if k.startswith("clin_")])
    notes = [f"hematoma mask: {prediction.mask_source}"]
    if prediction.missing_clinical:
        notes.append("not given, imputed by the model (training median): " + ", ".join(prediction.missing_clinical))
    if prediction.sign_findings and not drawable:
        notes.append("NCCT signs: no CT in this prediction, so no figure of the signs found")
    bundle = predictor.bundle if predictor is not None else None
    settings = {"model bundle": str(Path(bundle.path).resolve())} if bundle is not None else {}
    if bundle is not None:
        evaluation = (bundle.evaluation or {}).get("test") or {}
        if evaluation.get("auc") is not None:
            settings["model test AUC"] = (f"{evaluation['auc']:.3f} ({evaluation['auc_lower']:.3f}-"
                                          f"{evaluation['auc_upper']:.3f}), n={evaluation['n']}")
        settings.update({"protocol": bundle.settings.get("protocol"), "trained": bundle.created})
    drawn = {f.sign: draw_sign_figure(prediction.ct, prediction.mask, f, figure_paths[f.sign], overwrite=overwrite).path
             for f in drawable}
    if overwrite:  # a figure an earlier report drew for a sign not found now would sit beside this report as if current
        from .features.signs import SIGNS

        for sign in set(SIGNS) - set(drawn):
            sign_figure_path(path, sign).unlink(missing_ok=True)
    signs = signs_report(prediction.signs, prediction.sign_findings, drawn, onset_hours(prediction))
    content = ReportContent(
        title=f"Hematoma expansion prediction: {prediction.patient_id}",
        summary={"probability of HE": f"{prediction.probability:.3f}",
                 "predicted class": f"{prediction.label} (threshold {prediction.threshold:.2f})",
                 "baseline hematoma volume": f"{prediction.volume_ml:.1f} mL", "model": prediction.model_name},
        tables={"Clinical values used": clinical},
        figures={"Hematoma at its largest axial slice": Path(overlay)},
        sections=[signs],
        notes=notes + ["a research tool: not for clinical decisions"],
        settings=settings,
        versions=dict(bundle.versions) if bundle is not None else {},
    )
    return write_report(content, path)
