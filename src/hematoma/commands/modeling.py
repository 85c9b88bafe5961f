"""`hematoma train`, `evaluate`, `predict` and `run`: the model, its report, one patient, the whole protocol."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from rich.markup import escape

from .pacs import AUTH_FILE, CA_BUNDLE, CLIENT_CERT, INSECURE, SERVER

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

_FEATURES_HELP = ("Feature groups: comma-separated of rad, clin, cnn, sign (the NCCT signs), deep (the BLAST-CT network's "
                  "activations) (default: every group the table has).")
_SCALING_HELP = ("Column scaling: standard (z-scores, the paper's; default) or quantile (to a normal through training "
                 "quantiles; robust to skew and outliers).")
_SCOPE_HELP = ("SelectKBest's k: group (the k best of each feature group; default) or all (one ranking of every column, "
               "the paper's).")
_OPTIONAL_HELP = ("Feature groups the inner CV may leave out of the model altogether when they do not help, "
                  "e.g. cnn; none (default) keeps every group in (the paper's fusion).")
_TABLE_HELP = "features.csv/.parquet, or the OUT folder of `hematoma extract` / `hematoma run`."
_VERSIONS_HELP = ("Load a model saved with other versions of scikit-learn (or of its other dependencies) anyway, "
                  "with a warning: its predictions may differ.")


_METHOD_HELP = ("Segmenter for CTs without a mask: rules; deep (BLAST-CT); auto (deep with a CUDA GPU, else rules); "
                "both (compared, QA flag). predict's default: the method the model's training masks were made with.")

# The literal default, not segmentation.options.DEFAULT_BLOOD: importing hematoma.segmentation here would slow every
# command's start by seconds (tests/test_segmentation_deep.py checks they agree).
BLOOD_HELP = ("Blood classes of the deep hematoma mask: blood (intraparenchymal + extra-axial + intraventricular, "
              "the default: best on measurement); iph (intraparenchymal only, as the HE definitions); iph+ivh.")

def _ci(entry: dict) -> str:
    return f"{entry['auc']:.3f} (95% CI {entry['lower']:.3f}-{entry['upper']:.3f})"


_PRIOR_HELP = ("known: average the model's probability with a logistic regression of the published HE predictors "
               "(log volume, log onset-to-CT time, anticoagulation, INR, SBP, platelets, log D-dimer, GCS, NCCT signs); "
               "none: the feature search alone; auto (default): known where the feature groups hold one of those "
               "predictors, else none.")
# The literal default, not model.DEFAULT_PRIOR_WEIGHT: importing the model here would slow every command's start
# (tests/test_model_blend.py checks they agree).
_PRIOR_WEIGHT_HELP = ("Weight of the known-predictor model in that average, from 0 to 1 (the feature search gets the "
                      "rest). Default: 0.9.")
# The literal defaults again (tests/test_model_anchor.py checks them against protocols' and model's).
_ANCHOR_HELP = ("brain: average that probability with the BRAIN score's published risk (Wang 2015: volume, "
                "anticoagulation, onset-to-CT time, and recurrent ICH and IVH where the table has them), fixed "
                "weights no small cohort has to estimate; none: no score; auto: brain where the feature groups hold "
                "the score's required columns, else none. Default: auto.")
_ANCHOR_WEIGHT_HELP = "Weight of the BRAIN score's risk in that average, from 0 to 1. Default: 0.5."


def train(
    features: Path = typer.Argument(..., help=_TABLE_HELP),
    out: Path = typer.Option(..., "--out", help="Model bundle folder to write."),
    label: str = typer.Option("he", "--label", help="Label column (0/1)."),
    protocol: Optional[str] = typer.Option(
        None, "--protocol",
        help="paper (fit on cohort 2's train part; default), nested-cv (repeated nested CV over every patient, "
             "then fit on all), external (implied by --test)."),
    feature_groups: Optional[str] = typer.Option(None, "--features", help=_FEATURES_HELP),
    split: Optional[Path] = typer.Option(None, "--split", help="Split file (default: split.csv beside the table; made when absent)."),
    test: Optional[Path] = typer.Option(None, "--test", help="External validation: fit on FEATURES, test on this other table."),
    classifier: str = typer.Option("auto", "--classifier", help="auto (best family by inner CV AUC), svm, logistic, elastic_net or gbm."),
    grid: str = typer.Option("default", "--grid", help="Hyper-parameter grid size: small, default or wide."),
    scaling: str = typer.Option("standard", "--scaling", help=_SCALING_HELP),
    selection_scope: str = typer.Option("group", "--select-scope", help=_SCOPE_HELP),
    optional_groups: str = typer.Option("none", "--optional-groups", help=_OPTIONAL_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the split (when made) and of every fit."),
    inner_repeats: Optional[int] = typer.Option(
        None, "--inner-repeats", min=1,
        help="Repetitions of the inner 5-fold CV that chooses the model (default 3; 1: one 5-fold split)."),
    prior: Optional[str] = typer.Option(None, "--prior", help=_PRIOR_HELP),
    prior_weight: Optional[float] = typer.Option(None, "--prior-weight", help=_PRIOR_WEIGHT_HELP),
    anchor: Optional[str] = typer.Option(None, "--anchor", help=_ANCHOR_HELP),
    anchor_weight: Optional[float] = typer.Option(None, "--anchor-weight", help=_ANCHOR_WEIGHT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle at --out."),
) -> None:
    """Fit the model on FEATURES by a protocol and save it as a bundle (no test patient reaches any fit)."""
    from ..model import prior_text
    from ..protocols import TrainSettings
    from ..protocols import train as train_model

    protocol = protocol or ("external" if test is not None else "paper")
    settings = TrainSettings(protocol=protocol, label=label, groups=feature_groups, classifier=classifier, grid=grid,
                             scaling=scaling, selection_scope=selection_scope, optional_groups=optional_groups, seed=seed,
                             inner_repeats=inner_repeats, prior=prior, prior_weight=prior_weight, anchor=anchor,
                             anchor_weight=anchor_weight)
    result = train_model(features, out, settings, split=split, test=test, overwrite=overwrite, progress=True)
    summary = result.summary
    dropped = [g for g in summary["groups_present"] if g not in summary["groups_used"]]
    console.print(f"{protocol} protocol: fitted on {len(result.train_ids)} patients with {', '.join(result.groups)} "
                  f"features; chose {summary['classifier']} with k={summary['k']} "
                  f"(inner CV AUC {summary.get('inner_cv_auc', float('nan')):.3f})"
                  + (f"; left out by the inner CV: {', '.join(dropped)}" if dropped else "")
                  + prior_text(summary), highlight=False)
    evaluation = result.evaluation or {}
    held_out = evaluation.get("test") or {}
    if held_out.get("auc") is not None:
        where = "external test table" if protocol == "external" else "held-out test part"
        console.print(f"{where}: {held_out['n']} patients ({held_out['n_he']} HE), AUC {held_out['auc']:.3f} "
                      f"(95% CI {held_out['auc_lower']:.3f}-{held_out['auc_upper']:.3f}), AP {held_out['average_precision']:.3f}",
                      highlight=False)
    nested = evaluation.get("nested_cv")
    if nested:
        console.print(f"nested CV ({nested['repeats']} x {nested['outer_splits']} folds): AUC {nested['mean']:.3f} "
                      f"± {nested['sd']:.3f}", highlight=False)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if protocol == "paper":
        console.print(f"test ids stored in the bundle; full report: hematoma evaluate {escape(str(out))} "
                      f"{escape(str(features))} --out REPORT_DIR", highlight=False)
    console.print(f"model: {escape(str(Path(out).resolve()))}", highlight=False)


def evaluate(
    model: Path = typer.Argument(..., help="Model bundle folder (from `hematoma train` or `run`)."),
    features: Path = typer.Argument(..., help=_TABLE_HELP),
    out: Path = typer.Option(..., "--out", help="Report folder: metrics.json, PNG figures, report.html."),
    external: bool = typer.Option(False, "--external", help="Evaluate on every labelled row of FEATURES (another table)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a report already in --out."),
    allow_version_mismatch: bool = typer.Option(False, "--allow-version-mismatch", help=_VERSIONS_HELP),
) -> None:
    """Evaluate MODEL on its test patients in FEATURES (or on all of an external table); write the report."""
    from ..assessment import evaluate as evaluate_model

    assessment, folder = evaluate_model(model, features, out, external=external, overwrite=overwrite, progress=True,
                                        allow_version_mismatch=allow_version_mismatch)
    console.print(f"{assessment.model_name} model on {len(assessment.y)} test patients: AUC "
                  f"{_ci(assessment.metrics['auc_ci']['delong'])}, AP {assessment.metrics['average_precision']:.3f}",
                  highlight=False)
    if assessment.oracle:
        console.print(f"oracle AUC (synthetic truth, same patients): {_ci(assessment.oracle['auc'])}", highlight=False)
    for note in assessment.notes:  # e.g. unlabelled rows of an external table left out: said, not only in the report
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"report: {escape(str(folder.html.resolve()))}", highlight=False)


def predict(
    model: Path = typer.Argument(..., help="Model bundle folder."),
    ct: Path = typer.Option(..., "--ct", help="Admission CT (NIfTI, NRRD, MHA, DICOM folder or file)."),
    series: Optional[str] = typer.Option(None, "--series", metavar="UID",
                                         help="SeriesInstanceUID to read when --ct is a DICOM folder with several series."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Hematoma mask (default: segmented from the CT)."),
    clinical: Optional[Path] = typer.Option(None, "--clinical", help="Clinical CSV (patient_id + variables)."),
    patient_id: Optional[str] = typer.Option(None, "--patient-id", help="Row of --clinical to use, and the name in outputs."),
    set_values: List[str] = typer.Option([], "--set", help="A clinical value, name=value (repeatable), e.g. --set age=70."),
    extra_columns: List[str] = typer.Option([], "--extra-column", metavar="NAME",
                                            help="Declare a numeric clinical column (or --set name) that is not in the schema (repeatable)."),
    ignore_columns: List[str] = typer.Option([], "--ignore-column", metavar="NAME",
                                             help="A column of --clinical (or --set name) to leave out (repeatable)."),
    overlay: Optional[Path] = typer.Option(None, "--overlay", help="Overlay PNG to write (default: <CT name>_overlay.png here)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a one-patient HTML report here."),
    segmentation_model: Optional[Path] = typer.Option(None, "--segmentation-model", help="Trained segmenter folder."),
    method: Optional[str] = typer.Option(None, "--method", help=_METHOD_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help="BLAST-CT weights folder (default: the blast-ct package's)."),
    models: int = typer.Option(1, "--models", min=1, help="BLAST-CT models averaged."),
    blood: str = typer.Option("blood", "--blood", help=BLOOD_HELP),
    cnn_model: Optional[Path] = typer.Option(None, "--cnn-model", help="The CNN the model was trained with (default: recorded in the bundle)."),
    device: str = typer.Option("cpu", "--device", help="Device for the CNN: cpu, cuda or auto."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --overlay / --report files."),
    allow_version_mismatch: bool = typer.Option(False, "--allow-version-mismatch", help=_VERSIONS_HELP),
    seg: Optional[Path] = typer.Option(None, "--seg", help="Also write the segmented hematoma as a DICOM SEG (.dcm) of a DICOM CT's slices."),
    sr: Optional[Path] = typer.Option(None, "--sr", help="Also write a DICOM SR (.dcm, TID 1500): volume, HE probability and class, referencing --seg."),
    push: bool = typer.Option(False, "--push", help="Also store the SEG and SR on the DICOMweb server of --server."),
    server: Optional[str] = SERVER,
    auth_file: Optional[Path] = AUTH_FILE,
    ca_bundle: Optional[Path] = CA_BUNDLE,
    insecure: bool = INSECURE,
    client_cert: Optional[Path] = CLIENT_CERT,
) -> None:
    """Predict hematoma expansion for one patient: probability, class, overlay figure (and a report)."""
    from ..errors import InputError
    from ..prediction import Predictor, _stem, clinical_from_file, clinical_from_pairs, write_overlay, write_patient_report
    from ..storage import refuse_overwrite
    from .output_paths import refuse_clashes, refuse_suffix

    if clinical is not None and set_values:
        raise InputError(None, "give the clinical values either as --clinical FILE or as --set name=value, not both")
    overlay = overlay or Path(f"{_stem(ct)}_overlay.png")
    refuse_clashes({"--overlay": overlay, "--report": report, "--seg": seg, "--sr": sr},
                   {"CT": ct, "--mask": mask, "--clinical": clinical, "model": model})
    refuse_suffix("--overlay", overlay, (".png",))
    refuse_suffix("--report", report, (".html", ".htm"))
    connection = _check_dicom_outputs(ct, mask, seg, sr, push, (server, auth_file, ca_bundle, insecure, client_cert))
    for path in (overlay, report, seg, sr):
        if path is not None:
            refuse_overwrite(path, overwrite)
    if report is not None:  # the report's sign figures lie next to it: refused before any work, like the rest
        from ..features.signs import SIGNS
        from ..report.sign_figures import sign_figure_path

        for sign in SIGNS:
            refuse_overwrite(sign_figure_path(report, sign), overwrite)
    from ..segmentation.methods import SegmenterSettings, which_ran

    segmenter = None if method is None else SegmenterSettings(method, None if weights is None else str(weights), models, blood).check()
    predictor = Predictor.load(model, cnn_model=cnn_model, segmentation_model=segmentation_model, device=device,
                               allow_version_mismatch=allow_version_mismatch, segmenter=segmenter)
    if mask is None and predictor.segmenter is not None and predictor.segmenter.method != "rules":
        err_console.print(which_ran(predictor.segmenter), highlight=False, soft_wrap=True)
    columns = predictor.bundle.feature_columns
    table = None
    rules = {"model_columns": columns, "extra_columns": extra_columns, "ignore_columns": ignore_columns}
    if clinical is not None:
        table = clinical_from_file(clinical, patient_id, ct=ct, **rules)
    elif set_values:
        table = clinical_from_pairs(set_values, patient_id or _stem(ct), **rules)
    prediction = predictor.predict(ct, mask=mask, clinical=table, patient_id=patient_id, series_uid=series)
    console.print(f"{escape(prediction.patient_id)}: probability of HE {prediction.probability:.3f} -> "
                  f"{prediction.label} (threshold {prediction.threshold:.2f}); hematoma {prediction.volume_ml:.1f} mL "
                  f"({'given mask' if mask is not None else 'segmented'})", highlight=False)
    console.print(_signs_line(prediction), highlight=False)
    anchor_line = _anchor_line(prediction, predictor.bundle.estimator)
    if anchor_line:
        console.print(anchor_line, highlight=False)
    if prediction.missing_clinical:
        err_console.print(f"[yellow]note:[/] not given, imputed by the model: {', '.join(prediction.missing_clinical)}",
                          highlight=False, soft_wrap=True)
    write_overlay(prediction, overlay, overwrite=overwrite)
    console.print(f"overlay: {escape(str(overlay.resolve()))}", highlight=False)
    if report is not None:
        write_patient_report(prediction, report, overlay, predictor, overwrite=overwrite)
        console.print(f"report: {escape(str(report.resolve()))}", highlight=False)
    if seg is not None:
        _write_dicom_outputs(prediction, predictor, ct, series, seg, sr, connection, overwrite)


def _signs_line(prediction) -> str:
    """The NCCT signs found, each with the slice (1-based, as viewers number them) that shows it, and the BAT score."""
    found = ", ".join(f"{f.sign.replace('_', ' ')} (slice {f.slice_index + 1})" for f in prediction.sign_findings)
    signs = prediction.signs
    bat = _bat(prediction)
    shape, density = signs.get("sign_barras_shape"), signs.get("sign_barras_density")
    barras = f"; Barras shape {shape:.0f}, density {density:.0f}" if shape == shape and density == density else ""
    bat_text = f"; BAT score {bat:.0f}/5" if bat == bat else "; BAT score: needs the onset-to-CT time"
    return f"NCCT signs: {found or 'none found'}{barras}{bat_text}"


def _anchor_line(prediction, estimator) -> str | None:
    """What the BRAIN anchor added to this patient's probability (None for a model without one)."""
    from ..brain_score import BRAIN_REQUIRED
    from ..model import anchor_of, model_inputs

    anchor = anchor_of(estimator)
    if anchor is None:
        return None
    X, _ = model_inputs(prediction.features, label=None)
    part = anchor.parts(X).iloc[0]
    if part["points"] != part["points"]:
        row = X.iloc[0]
        blank = [c[len("clin_"):] for c in BRAIN_REQUIRED if not _is_number(row.get(c))]
        return f"BRAIN score: needs {', '.join(blank)}; the probability is the model's alone"
    return (f"BRAIN score {part['points']:.0f}/24 (published risk {part['risk']:.3f}); the model alone "
            f"{part['model']:.3f}; averaged with weight {float(anchor.weight):g} on the score, then shifted by "
            f"{float(getattr(anchor, 'offset_', 0.0)):+.4f} on the logit scale to the training HE rate")


def _is_number(value) -> bool:
    try:
        return float(value) == float(value)
    except (TypeError, ValueError):
        return False


def _bat(prediction) -> float:
    """The patient's BAT score (NaN without the onset-to-CT time)."""
    from ..features.signs import bat_score

    onset = prediction.features.iloc[0].get("clin_onset_to_ct_hours", float("nan"))
    signs = prediction.signs
    return bat_score(signs.get("sign_blend", float("nan")), signs.get("sign_hypodensity", float("nan")), float(onset))


def _check_dicom_outputs(ct: Path, mask, seg, sr, push: bool, server_options):
    """Refuse DICOM SEG / SR / --push settings that cannot work, before any work; the server to push to, or None."""
    from ..errors import InputError
    from ..io.paths import DICOM_SUFFIXES, _is_dicom_file

    if sr is not None and seg is None:
        raise InputError(sr, "the DICOM SR references the DICOM SEG it measures: give --seg too")
    if push and seg is None:
        raise InputError(None, "--push stores the DICOM SEG (and SR): give --seg (and --sr)")
    if seg is None:
        return None
    if mask is not None:
        raise InputError(seg, "--seg writes the mask this tool segmented; with --mask the mask is yours already")
    for name, path in (("--seg", seg), ("--sr", sr)):
        if path is not None and not path.name.lower().endswith(DICOM_SUFFIXES):
            raise InputError(path, f"{name} writes a DICOM file: name it .dcm")
    if not (ct.is_dir() or _is_dicom_file(ct)):
        raise InputError(seg, f"a DICOM SEG refers to the slices of a DICOM CT, and {ct} is not DICOM")
    if not push:
        return None
    from .pacs import server_from

    return server_from(*server_options)


def _write_dicom_outputs(prediction, predictor, ct: Path, series, seg: Path, sr, connection, overwrite: bool) -> None:
    from ..io.dicom_seg import seg_source, write_dicom_seg

    method = predictor.segmenter.method if predictor.segmenter is not None else "rules"
    slices = seg_source(prediction.ct, ct, series)
    write_dicom_seg(prediction.mask, slices, seg, algorithm=method, overwrite=overwrite)
    console.print(f"DICOM SEG: {escape(str(seg.resolve()))}", highlight=False)
    if sr is not None:
        from ..io.dicom_sr import write_volume_report

        features = prediction.features.iloc[0] if len(prediction.features) else {}
        volumes = {"hematoma": prediction.volume_ml, "ivh": float(features.get("ivh_volume_ml", float("nan"))),
                   "oedema": float(features.get("phe_volume_ml", float("nan")))}
        write_volume_report(seg, slices, sr, volumes, {"probability": prediction.probability,
                                                       "class": prediction.predicted}, overwrite=overwrite,
                            signs={**prediction.signs, "bat_score": _bat(prediction)})
        console.print(f"DICOM SR: {escape(str(sr.resolve()))}", highlight=False)
    if connection is not None:
        from ..pacs import push_files

        stored = push_files(connection, [seg] + ([sr] if sr is not None else []))
        console.print(f"stored {len(stored)} object{'s' if len(stored) != 1 else ''} on {connection.url}",
                      highlight=False)


def run(
    manifest: Path = typer.Argument(..., help="Manifest CSV (one row per patient; paths relative to it)."),
    out: Path = typer.Option(..., "--out", help="Output folder; a rerun resumes, skipping finished stages and cases."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Local worker processes for extraction (default: the cores)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address or scheduler file for extraction."),
    cnn_preset: str = typer.Option("paper", "--cnn-preset", help="CNN training: paper (the paper's settings) or fast (CPU)."),
    cnn_weights: str = typer.Option("auto", "--cnn-weights", help="auto, imagenet, none, or a state-dict file."),
    cnn_epochs: Optional[int] = typer.Option(None, "--cnn-epochs", min=1, help="Override the preset's epochs."),
    device: str = typer.Option("auto", "--device", help="Device for the CNN: auto, cpu, cuda, cuda:N."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the CNN and every fit."),
    feature_groups: str = typer.Option("rad,clin,cnn", "--features", help="Feature groups of the model: rad, clin, cnn, sign."),
    classifier: str = typer.Option("auto", "--classifier", help="auto, svm, logistic or gbm."),
    grid: str = typer.Option("default", "--grid", help="Hyper-parameter grid size: small, default or wide."),
    scaling: str = typer.Option("standard", "--scaling", help=_SCALING_HELP),
    selection_scope: str = typer.Option("group", "--select-scope", help=_SCOPE_HELP),
    optional_groups: str = typer.Option("none", "--optional-groups", help=_OPTIONAL_HELP),
    inner_repeats: Optional[int] = typer.Option(
        None, "--inner-repeats", min=1,
        help="Repetitions of the inner 5-fold CV that chooses the model (default 3; 1: one 5-fold split)."),
    prior: Optional[str] = typer.Option(None, "--prior", help=_PRIOR_HELP),
    prior_weight: Optional[float] = typer.Option(None, "--prior-weight", help=_PRIOR_WEIGHT_HELP),
    anchor: Optional[str] = typer.Option(None, "--anchor", help=_ANCHOR_HELP),
    anchor_weight: Optional[float] = typer.Option(None, "--anchor-weight", help=_ANCHOR_WEIGHT_HELP),
    method: str = typer.Option("rules", "--method", help=_METHOD_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help="BLAST-CT weights folder (default: the blast-ct package's)."),
    models: int = typer.Option(1, "--models", min=1, help="BLAST-CT models averaged."),
    blood: str = typer.Option("blood", "--blood", help=BLOOD_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT's results when they are another manifest's "
                                   "or other extraction settings' (cases whose inputs and settings are unchanged are reused)."),
) -> None:
    """The paper's protocol end to end: extract, CNN on cohort 1, embed, train, evaluate, report."""
    from ..pipeline import RunSettings, run_protocol
    from ..segmentation.methods import segmenter_from_options, which_ran

    segmenter = segmenter_from_options(method, weights, models, blood)
    if segmenter is not None:
        err_console.print(which_ran(segmenter), highlight=False, soft_wrap=True)
    settings = RunSettings(workers=workers, scheduler=scheduler, groups=feature_groups, classifier=classifier, grid=grid,
                           scaling=scaling, selection_scope=selection_scope, optional_groups=optional_groups, seed=seed,
                           cnn_preset=cnn_preset, cnn_weights=cnn_weights, cnn_epochs=cnn_epochs, device=device,
                           segmenter=segmenter, inner_repeats=inner_repeats, prior=prior, prior_weight=prior_weight,
                           anchor=anchor, anchor_weight=anchor_weight)
    result = run_protocol(manifest, out, settings, console=err_console, overwrite=overwrite)
    print_result(result)


def print_result(result) -> None:
    name = result.metrics.get("model_name", "model")
    console.print(f"{name} model, test AUC {_ci(result.test_auc)} on {result.metrics['model']['n']} patients",
                  highlight=False)
    if result.oracle_auc:
        console.print(f"oracle AUC (synthetic truth, same patients, reference only): {_ci(result.oracle_auc)}",
                      highlight=False)
    console.print(f"report: {escape(str(result.report))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(evaluate)
    app.command()(predict)
    app.command()(run)
