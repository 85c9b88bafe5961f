"""Assemble the evaluation report from an :class:`~hematoma.assessment.Assessment`.

Writes into one folder: every figure as a PNG, ``metrics.json`` (all numbers,
curves and per-patient predictions) and ``report.html`` (self-contained: the
same figures embedded).  Section captions are in :data:`SECTIONS`; a table
segmented with BLAST-CT (``--method deep/both/auto``) adds the "Segmentation QA"
section (:mod:`.segmentation_qa`), read from the feature table evaluated and
the ``extract.json`` beside it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..evaluation.metrics import to_jsonable
from ..protocols import FeatureSource, read_features
from ..storage import write_json
from . import figures
from .html import ReportContent, Section, write_report
from .segmentation_qa import RULE, TITLE, SegmentationQA, segmentation_qa

SECTIONS = {
    "performance": "Model performance on the test patients",
    "table1": "Table 1. Patient characteristics by HE status",
    "signs": "NCCT signs by HE group",
    "table2": "Table 2. Precision, recall and F1 by class (test patients)",
    "best": "Which model is best on these test patients (AUC, DeLong 95% CI; p against the model evaluated)",
    "ablation": "Ablation: feature sets on the same test patients",
    "baselines": "Baselines on the same test patients",
    "oracle": "Oracle (synthetic cohort; a reference only, never a feature)",
    "top": "Top 15 features (permutation importance on the test patients)",
    "coefficients": "Top 15 coefficients (standardised, linear classifier)",
    "split": "Split sizes",
}
FIGURES = {
    "roc.png": "ROC curves (test patients; band: 95% bootstrap CI of the model)",
    "pr.png": "Precision-recall curves (band: 95% bootstrap CI of the model)",
    "calibration.png": "Calibration (quantile bins)",
    "decision_curve.png": "Decision curve (net benefit)",
    "confusion_matrix.png": "Confusion matrix at the model's threshold",
    "top_features.png": "Top 15 features (AUC drop when permuted)",
    "cnn_curves.png": "CNN warm-up training on cohort 1 (loss and accuracy per epoch)",
}


@dataclass
class ReportFolder:
    folder: Path
    html: Path
    metrics: Path
    figures: dict[str, Path]


def _ci(auc, lower, upper) -> str:
    if auc is None or pd.isna(auc):
        return ""
    return f"{auc:.3f} ({lower:.3f}-{upper:.3f})"


def performance_table(metrics: dict) -> pd.DataFrame:
    delong, boot = metrics["auc_ci"].get("delong", {}), metrics["auc_ci"].get("bootstrap", {})
    calibration = metrics.get("calibration", {})
    rows = [
        ("test patients (HE)", f"{metrics['n']} ({metrics['n_he']})"),
        ("ROC AUC (95% CI, DeLong)", _ci(delong.get("auc"), delong.get("lower"), delong.get("upper"))),
        ("ROC AUC (95% CI, bootstrap)", _ci(boot.get("auc"), boot.get("lower"), boot.get("upper"))),
        ("average precision", f"{metrics['average_precision']:.3f}"),
        ("threshold", f"{metrics['threshold']:.3f}"),
        ("accuracy", f"{metrics['accuracy']:.3f}"),
        ("sensitivity", f"{metrics['sensitivity']:.3f}"),
        ("specificity", f"{metrics['specificity']:.3f}"),
        ("Brier score", f"{metrics['brier']:.3f}"),
        ("calibration slope", "" if calibration.get("slope") is None else f"{calibration['slope']:.2f}"),
        ("calibration in the large", "" if calibration.get("calibration_in_the_large") is None
         else f"{calibration['calibration_in_the_large']:+.3f}"),
    ]
    return pd.DataFrame(rows, columns=["measure", "value"])


def table2(metrics: dict) -> pd.DataFrame:
    report = metrics["classification_report"]
    rows = [{"class": name, **{k: report[name][k] for k in ("precision", "recall", "f1-score")},
             "support": int(report[name]["support"])} for name in report]
    return pd.DataFrame(rows)


def ablation_table(ablation: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for row in ablation.to_dict("records"):
        ok = row.get("status") == "ok"
        rows.append({
            "feature set": row["feature_set"], "groups": row.get("groups", ""),
            "AUC (95% CI, DeLong)": _ci(row.get("auc"), row.get("auc_lower"), row.get("auc_upper")) if ok else "",
            "AP": row.get("average_precision") if ok else None,
            "p vs model (DeLong)": row.get("p_vs_reference") if ok else None,
            "classifier": row.get("classifier") if ok else "", "k": row.get("k") if ok else None,
            # A group the inner CV left out (the CNN's, when it did not help) is absent here.
            "groups used": row.get("groups_used", "") if ok else "",
            "note": row.get("note") or ("" if ok else row.get("status", "")),
        })
    return pd.DataFrame(rows)


def baselines_table(baselines: dict) -> pd.DataFrame:
    rows = []
    for key, entry in baselines.items():
        if entry.get("status") != "ok":
            rows.append({"baseline": entry.get("name", key), "patients": None, "AUC (95% CI, DeLong)": "", "AP": None,
                         "p vs model (DeLong)": None, "note": "skipped: " + "; ".join(entry.get("notes", []))})
            continue
        metrics = entry["metrics"]
        ci = metrics["auc_ci"]["delong"]
        rows.append({"baseline": entry["name"], "patients": metrics["n"],
                     "AUC (95% CI, DeLong)": _ci(ci["auc"], ci["lower"], ci["upper"]),
                     "AP": metrics["average_precision"], "p vs model (DeLong)": (entry.get("vs_model") or {}).get("p_value"),
                     "note": "; ".join(entry.get("notes", []))})
    return pd.DataFrame(rows, columns=["baseline", "patients", "AUC (95% CI, DeLong)", "AP", "p vs model (DeLong)", "note"])


def oracle_table(oracle: dict, model_name: str, metrics: dict) -> pd.DataFrame:
    delong = metrics["auc_ci"]["delong"]
    rows = [{"score": f"{model_name} model", "AUC (95% CI, DeLong)": _ci(delong["auc"], delong["lower"], delong["upper"])},
            {"score": "oracle: generator's true P", "AUC (95% CI, DeLong)":
                _ci(oracle["auc"]["auc"], oracle["auc"]["lower"], oracle["auc"]["upper"])}]
    if oracle.get("observable_auc"):
        o = oracle["observable_auc"]
        rows.append({"score": "generator's P without its hidden term (best from observed variables)",
                     "AUC (95% CI, DeLong)": _ci(o["auc"], o["lower"], o["upper"])})
    return pd.DataFrame(rows)


def _figures(assessment, out: Path) -> dict[str, Path]:
    y = assessment.y.to_numpy()
    scores = {name: s.reindex(assessment.y.index).to_numpy() for name, s in assessment.scores.items()}
    labels = {name: (f"{name} model" if i == 0 else name) for i, name in enumerate(scores)}
    named = {labels[n]: s for n, s in scores.items()}
    model_only = dict(list(named.items())[:1])
    paths = {
        "roc.png": figures.save_png(figures.roc_figure(y, named), out / "roc.png"),
        "pr.png": figures.save_png(figures.pr_figure(y, named), out / "pr.png"),
        "calibration.png": figures.save_png(figures.calibration_figure(y, model_only), out / "calibration.png"),
        "decision_curve.png": figures.save_png(figures.decision_curve_figure(y, named), out / "decision_curve.png"),
        "confusion_matrix.png": figures.save_png(
            figures.confusion_figure(assessment.metrics["confusion_matrix"]["rows_true_columns_predicted"]),
            out / "confusion_matrix.png"),
    }
    top = assessment.top_features
    if top is not None and len(top):
        paths["top_features.png"] = figures.save_png(figures.top_features_figure(top, value="importance"),
                                                     out / "top_features.png")
    if assessment.cnn_curves is not None:
        shutil.copyfile(assessment.cnn_curves, out / "cnn_curves.png")
        paths["cnn_curves.png"] = out / "cnn_curves.png"
    return paths


def summary_lines(assessment) -> dict[str, str]:
    metrics = assessment.metrics
    delong = metrics["auc_ci"]["delong"]
    summary = {
        f"{assessment.model_name} model, test AUC": _ci(delong["auc"], delong["lower"], delong["upper"]) + " (DeLong 95% CI)",
        "average precision": f"{metrics['average_precision']:.3f} (HE prevalence {metrics['prevalence']:.2f})",
        "test patients": f"{metrics['n']} ({metrics['n_he']} with HE)",
        "training patients": str(assessment.settings.get("training patients", "")),
        "chosen model": f"{assessment.settings.get('classifier chosen')}, k={assessment.settings.get('selected features (k)')}",
    }
    for part in ("averaged with", "anchored to"):  # the model is more than the search: say so where its AUC is read
        if assessment.settings.get(part):
            summary[f"model {part}"] = str(assessment.settings[part])
    if assessment.oracle:
        o = assessment.oracle["auc"]
        summary["oracle AUC (reference only)"] = _ci(o["auc"], o["lower"], o["upper"])
    return summary


def qa_section(qa: SegmentationQA) -> Section:
    """The "Segmentation QA" section: which segmenter, how many cases flagged, the flagged ones worst first."""
    if not qa.compared:
        paragraphs = [("Only one segmenter ran, so no case could be flagged; segment with --method both to compare "
                       "the rule-based masks with BLAST-CT's.")]
    elif len(qa.flagged):
        paragraphs = [("The rule-based and BLAST-CT masks of these cases disagree: a person should look at their "
                       "segmentation (OUT/cases/<patient>/baseline_mask.nii.gz over the CT) before trusting their features.")]
    else:
        paragraphs = ["The rule-based and BLAST-CT masks agree on every case."]
    shown = qa.compared and len(qa.flagged) > 0
    return Section(title=TITLE, paragraphs=paragraphs + qa.notes, facts=qa.facts(),
                   table=qa.table() if shown else None, caption=RULE if qa.compared else "")


def _segmentation_qa(assessment, features) -> SegmentationQA | None:
    """The QA of the table evaluated (``features``, else the one the assessment names); None for a rules-only one."""
    if features is None:
        features = assessment.settings.get("features evaluated")
        if features is None:
            return None
    source = features if isinstance(features, FeatureSource) else read_features(features)
    return segmentation_qa(source, test_ids=list(assessment.y.index))


def write_report_folder(assessment, out: str | Path, extra: dict | None = None,
                        features: FeatureSource | str | Path | None = None) -> ReportFolder:
    """Write the PNGs, ``metrics.json`` and ``report.html`` of ``assessment`` into ``out``.

    ``features``: the table evaluated, for the segmentation QA; None: the one the
    assessment's settings name ("features evaluated").
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = _figures(assessment, out)
    qa = _segmentation_qa(assessment, features)
    qa_record = {} if qa is None else {"segmentation_qa": to_jsonable(qa.json())}
    from ..evaluation.ranking import model_ranking, verdict

    ranking = model_ranking(assessment.model_name, assessment.metrics, assessment.ablation, assessment.baselines)
    best = verdict(ranking, int(assessment.metrics["n"]))
    ranking_record = {"ranking": to_jsonable(ranking), "best": best}
    metrics_path = write_json(out / "metrics.json", {**assessment.json(), **ranking_record, **qa_record, **(extra or {})})
    tables = {SECTIONS["performance"]: performance_table(assessment.metrics), SECTIONS["best"]: ranking}
    if assessment.table1 is not None:
        n = assessment.table1.attrs.get("n", {})
        caption = SECTIONS["table1"] + (f" (no HE n={n.get('no HE')}, HE n={n.get('HE')})" if n else "")
        tables[caption] = assessment.table1
    signs = getattr(assessment, "signs_table", None)
    if signs is not None:
        n = signs.attrs.get("n", {})
        caption = SECTIONS["signs"] + (f" (no HE n={n.get('no HE')}, HE n={n.get('HE')})" if n else "")
        tables[caption] = signs
    tables[SECTIONS["table2"]] = table2(assessment.metrics)
    tables[SECTIONS["ablation"]] = ablation_table(assessment.ablation)
    tables[SECTIONS["baselines"]] = baselines_table(assessment.baselines)
    if assessment.oracle:
        tables[SECTIONS["oracle"]] = oracle_table(assessment.oracle, assessment.model_name, assessment.metrics)
    if assessment.top_features is not None:
        tables[SECTIONS["top"]] = assessment.top_features
    if assessment.coefficients is not None and len(assessment.coefficients):
        tables[SECTIONS["coefficients"]] = assessment.coefficients
    tables[SECTIONS["split"]] = assessment.split_sizes
    notes = list(assessment.notes)
    if signs is not None:
        notes.append("NCCT signs by HE group: signs detected by hematoma.features.signs as defined by Morotti et al., "
                     "Ann Neurol 2019 (standards) and the originals cited there, on the Table 1's patients; flags n (%) "
                     "with the Table 1's test of a binary variable, Barras grades and the BAT score median [IQR] with "
                     "the Mann-Whitney U test; BAT >= 3 is the high-risk cut-off of Morotti et al., Stroke 2018")
    for entry in assessment.baselines.values():
        if entry.get("name") == "BRAIN score" and entry.get("status") == "ok":
            notes.append("BRAIN score: Wang et al., Stroke 2015; its published risks are for growth >= 6 mL at 24 h")
        if entry.get("name") == "BAT score" and entry.get("status") == "ok":
            notes.append("BAT score: Morotti et al., Stroke 2018 (blend 1, any hypodensity 2, onset-to-CT < 2.5 h 2), "
                         "the signs detected by hematoma.features.signs; probabilities from a logistic fit on the "
                         "training patients")
    summary = {"which model is best": "; ".join(best), **summary_lines(assessment)}
    if qa is not None:
        summary["segmentation QA"] = qa.summary()
    content = ReportContent(
        title=f"Hematoma expansion: {assessment.model_name} model",
        summary=summary,
        tables=tables,
        figures={FIGURES[name]: path for name, path in pngs.items()},
        sections=[] if qa is None else [qa_section(qa)],
        notes=notes,
        settings={k: v for k, v in assessment.settings.items()},
        versions=assessment.versions,
    )
    html = write_report(content, out / "report.html")
    return ReportFolder(folder=out, html=html, metrics=metrics_path, figures=pngs)
