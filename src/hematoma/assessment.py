"""Evaluate a model bundle on held-out patients: everything the report shows, as data.

The test patients are the bundle's own (``paper`` protocol: the test part of the
split, stored in the bundle) or every labelled patient of another table
(``external=True``).  Around the model's metrics come, on the *same* test
patients: the feature-set ablation (each set refitted on the model's training
patients only; the model itself stands for its own set), the baselines (volume,
clinical logistic regression, BRAIN score), Table 1, the NCCT signs by HE group, the top-15 features and,
for a synthetic cohort, the oracle AUC (the generator's true probability vs the
realised label, read from ``truth.csv`` beside the manifest: a reference for the
report only, never a feature).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .protocols import ID, FeatureSource, labelled, naming, read_features, training_hash
from .storage import sha1_file

N_TOP = 15


@dataclass
class Assessment:
    """The evaluation of one model on its test patients (``metrics`` is JSON-ready)."""

    model_name: str
    y: pd.Series  # test labels by patient_id
    scores: dict[str, pd.Series]  # model first, then baselines scored on every test patient
    metrics: dict
    ablation: pd.DataFrame
    baselines: dict
    table1: pd.DataFrame | None
    top_features: pd.DataFrame | None
    coefficients: pd.DataFrame | None
    oracle: dict | None
    split_sizes: pd.DataFrame
    settings: dict
    versions: dict
    notes: list[str] = field(default_factory=list)
    cnn_curves: Path | None = None
    signs_table: pd.DataFrame | None = None  # NCCT signs by HE group (evaluation.table1.signs_by_group), same patients

    def json(self) -> dict:
        from .evaluation.metrics import to_jsonable

        return to_jsonable({
            "model_name": self.model_name, "model": self.metrics, "ablation": self.ablation,
            "baselines": self.baselines, "table1": self.table1, "signs_table": self.signs_table,
            "top_features": self.top_features,
            "coefficients": self.coefficients,
            "oracle": self.oracle, "split_sizes": self.split_sizes, "settings": self.settings,
            "versions": self.versions, "notes": self.notes,
        })


def _anchor_notes(bundle, test: pd.DataFrame, label: str) -> list[str]:
    """How many test patients the BRAIN anchor could not score (their probability is the model's alone)."""
    from .model import anchor_of, model_inputs

    anchor = anchor_of(bundle.estimator)
    if anchor is None:
        return []
    X, _ = model_inputs(test, label=label)
    unscored = int(np.isnan(anchor.score_risk(X)).sum())
    notes = [f"BRAIN anchor: {note}" for note in (bundle.summary.get("anchor_model") or {}).get("notes", [])]
    if unscored:
        notes.append(f"BRAIN anchor: {unscored} of {len(X)} test patients lack the volume, anticoagulation or "
                     f"onset-to-CT time; their probability is the model's alone, not averaged with the score")
    return notes


def feature_set_name(groups) -> str:
    from .model import FEATURE_SETS

    for name, members in FEATURE_SETS.items():
        if set(members) == set(groups):
            return name
    return "+".join(groups)


def assess(model: str | Path, features: str | Path, external: bool = False, seed: int | None = None,
           progress: bool = False, allow_version_mismatch: bool = False) -> Assessment:
    """Evaluate the bundle ``model`` on ``features`` (see the module docstring).

    ``allow_version_mismatch``: load a bundle saved with other scikit-learn (etc.)
    versions, with a warning (:func:`hematoma.model_bundle.load_model`).
    """
    from .model_bundle import load_model

    bundle = load_model(model, allow_version_mismatch=allow_version_mismatch)
    label = bundle.settings.get("label", "he")
    source = read_features(features, label=label)
    with naming(source.path):
        return _assess(bundle, source, label, external, seed, progress)


def _assess(bundle, source: FeatureSource, label: str, external: bool, seed: int | None, progress: bool) -> Assessment:
    from threadpoolctl import threadpool_limits

    from .model_bundle import check_columns

    settings = bundle.settings
    groups = tuple(settings.get("groups") or ())
    seed = int(settings.get("seed", 0)) if seed is None else seed
    check_columns(bundle.feature_columns, source.table.columns, source.path)
    notes = list(settings.get("notes") or [])
    train, test = _patients(bundle, source, label, external, notes)
    name = feature_set_name(groups)
    notes.extend(_anchor_notes(bundle, test, label))

    from .evaluation import evaluate_baselines, evaluate_model, table1, top_features

    with threadpool_limits(limits=1):
        metrics = evaluate_model(bundle.estimator, test, label=label, ci="both", seed=seed)
        probability = pd.Series({p["patient_id"]: p["probability"] for p in metrics["predictions"]})
        y = pd.Series({p["patient_id"]: p["he"] for p in metrics["predictions"]}).astype(int)
        ablation = _ablation(bundle, name, train, test, label, settings, progress, notes)
        if train is not None:
            baselines = evaluate_baselines(train, test, label=label, model_scores=probability, seed=seed)
        else:
            baselines = {}
        importance = top_features(bundle.estimator, test, label=label, n=N_TOP, seed=seed, max_columns=100)
    scores = {name: probability}
    for entry in baselines.values():
        predictions = (entry.get("metrics") or {}).get("predictions") or []
        if entry.get("status") == "ok" and len(predictions) == len(y):
            scores[entry["name"]] = pd.Series({p["patient_id"]: p["probability"] for p in predictions}).reindex(y.index)
    clinical = [c for c in source.table.columns if c.startswith("clin_")]
    described = test if external else labelled(source.table, label)
    characteristics = table1(described, label=label, variables=clinical) if clinical else None
    if characteristics is None:
        notes.append("no clin_ columns: no Table 1")
    from .evaluation.table1 import signs_by_group

    signs = signs_by_group(described, label=label)
    if signs is None:
        notes.append("no sign_ columns (features extracted before the NCCT signs): no table of NCCT signs by HE group")
    else:
        notes.extend(f"NCCT signs by HE group: {note}" for note in signs.attrs.get("notes", []))
    permutation = importance["permutation"].rename(columns={"importance_mean": "importance", "importance_std": "importance_sd"})
    return Assessment(
        model_name=name, y=y, scores=scores, metrics=metrics, ablation=ablation, baselines=baselines,
        table1=characteristics, top_features=permutation, coefficients=importance.get("coefficients"),
        oracle=oracle(source, y),
        split_sizes=_split_sizes(bundle, source, train, test, label, external),
        settings=_settings(bundle, source, external, len(train) if train is not None else None),
        versions=_versions(bundle, settings), notes=notes, cnn_curves=_cnn_curves(settings, groups),
        signs_table=signs,
    )


# --------------------------------------------------------------------------- patients


def _patients(bundle, source: FeatureSource, label: str, external: bool, notes: list[str]):
    """(training table or None, test table), both labelled rows of their tables."""
    settings = bundle.settings
    train_ids = [str(i) for i in settings.get("train_ids") or []]
    table = source.table
    if external:
        test = labelled(table, label)
        if len(test) < len(table):
            notes.append(f"{len(table) - len(test)} patient(s) without an HE label left out of the test")
        shared = set(test[ID]) & set(train_ids)
        if shared:
            raise InputError(source.path, f"{len(shared)} patient(s) (e.g. {sorted(shared)[0]!r}) were used to fit the "
                                          "model: not an external test")
        train = _training_table(bundle, label, notes)
        return train, test
    protocol = settings.get("protocol")
    test_ids = [str(i) for i in settings.get("test_ids") or []]
    if protocol != "paper" or not test_ids:
        raise InputError(bundle.path, f"was fitted with the {protocol} protocol and has no held-out test patients; "
                                      "evaluate it on another table with --external")
    overlap = sorted(set(test_ids) & set(train_ids))
    if overlap:  # a test patient that the model was fitted on: a leak, whatever edited the bundle
        raise InputError(bundle.path / "bundle.json", f"lists {len(overlap)} patient(s) both as training and as test "
                                                      f"patients (e.g. {overlap[0]!r}): an evaluation on them would leak")
    missing = sorted(set(test_ids) - set(table[ID]))
    if missing:
        raise InputError(source.path, f"lacks {len(missing)} of the model's test patients (e.g. {missing[0]!r}); give the "
                                      "table the model was trained from, or use --external for another one")
    test = labelled(table[table[ID].isin(test_ids)], label)
    unlabelled = sorted(set(test_ids) - set(test[ID]))
    if unlabelled:  # scoring the others would report a test the model was not tested on
        raise InputError(source.path, f"{len(unlabelled)} of the model's {len(test_ids)} test patients have no "
                                      f"{label!r} label in this table (e.g. {unlabelled[0]!r}); every test patient needs one")
    train = labelled(table[table[ID].isin(train_ids)], label)
    groups = tuple(settings.get("groups") or ())
    if bundle.train_table_hash and training_hash(train, groups, label) != bundle.train_table_hash:
        notes.append("the training patients' features in this table differ from those the model was fitted on "
                     "(re-extracted?); the ablation and baselines are refitted on this table's values")
    return train, test


def _training_table(bundle, label: str, notes: list[str]) -> pd.DataFrame | None:
    """The model's training rows, from the table recorded in the bundle, if it is still there unchanged."""
    settings = bundle.settings
    path = settings.get("features")
    if not path or not Path(path).is_file() or sha1_file(path) != settings.get("features_sha1"):
        notes.append("the model's training table is not available unchanged: no ablation and no fitted baselines")
        return None
    table = read_features(path, label=label).table
    return labelled(table[table[ID].isin([str(i) for i in settings.get("train_ids") or []])], label)


# --------------------------------------------------------------------------- ablation


def _ablation(bundle, name, train, test, label, settings, progress, notes) -> pd.DataFrame:
    """Each feature set of ``FEATURE_SETS`` refitted on the training patients; the model itself for its own set."""
    from sklearn.metrics import average_precision_score, brier_score_loss

    from .evaluation.metrics import auc_ci, delong_test
    from .evaluation.validation import ablation
    from .model import FEATURE_SETS, feature_columns, model_inputs, model_summary

    X_test, y_test = model_inputs(test, label=label)
    own = bundle.estimator.predict_proba(X_test)[:, 1]
    interval = auc_ci(y_test, own)
    summary = model_summary(bundle.estimator)
    own_row = {"feature_set": name, "groups": "+".join(settings.get("groups") or ()), "status": "ok",
               "note": "the model evaluated", "n_columns": summary.get("n_input_columns"),
               "classifier": summary.get("classifier"), "k": summary.get("k"), "inner_cv_auc": summary.get("inner_cv_auc"),
               "auc": interval["auc"], "auc_lower": interval["lower"], "auc_upper": interval["upper"],
               "average_precision": float(average_precision_score(y_test, own)), "brier": float(brier_score_loss(y_test, own))}
    if train is None:
        return pd.DataFrame([own_row])
    if settings.get("protocol") != "paper":
        # Outside the paper protocol the CNN may have learnt from the training patients.
        train, test = (t.drop(columns=feature_columns(t, ("cnn",))) for t in (train, test))
    others = {n: g for n, g in FEATURE_SETS.items() if n != name}
    kwargs = {"classifier": _classifier(settings), "grid": settings.get("grid", "default"),
              "threshold": settings.get("threshold", "fixed"), "seed": int(settings.get("seed", 0)),
              "cv": int(settings.get("inner_cv") or 5),
              "cv_repeats": int(settings.get("inner_repeats") or 1)}  # a bundle from before repeats: one split
    # The feature sets are refitted without the known-predictor prior (a set such as radiomics may hold none of its
    # variables); the prior alone is the "known-predictor logistic regression" baseline.
    table, models = ablation(train, test, kwargs, feature_sets=others, label=label, return_models=True, progress=progress)
    scores = {set_name: fitted.predict_proba(X_test)[:, 1] for set_name, fitted in models.items()}
    scores[name] = own
    rows = {row["feature_set"]: row for row in table.to_dict("records")}
    rows[name] = own_row
    ordered = [rows[n] for n in list(FEATURE_SETS) + [name] if n in rows]
    ordered = list({row["feature_set"]: row for row in ordered}.values())
    for row in ordered:
        if row["feature_set"] in scores:
            row["reference"] = name
            row["p_vs_reference"] = delong_test(y_test, scores[row["feature_set"]], own)["p_value"]
    return pd.DataFrame(ordered)


def _classifier(settings) -> str:
    from .protocols import CLASSIFIER_NAMES

    return CLASSIFIER_NAMES.get(settings.get("classifier", "auto"), "auto")


# --------------------------------------------------------------------------- references


def oracle(source: FeatureSource, y: pd.Series) -> dict | None:
    """Oracle AUC of a synthetic cohort on these test patients (``truth.csv`` beside the manifest), else None."""
    from sklearn.metrics import average_precision_score

    from .evaluation.metrics import auc_ci

    path = source.truth_path()
    if path is None:
        return None
    truth = pd.read_csv(path, dtype={ID: str}).set_index(ID)
    if not set(y.index) <= set(truth.index) or y.nunique() < 2:
        return None
    true_p = truth.loc[y.index, "true_p"].astype(float)
    result = {"source": str(path), "n": int(len(y)), "auc": auc_ci(y, true_p),
              "average_precision": float(average_precision_score(y, true_p)),
              "labels_agree": float((truth.loc[y.index, "he"].astype(int) == y).mean())}
    observable = _observable(path.parent, y.index)
    if observable is not None:
        # The generator's probability without its hidden term: the best any model of the observed variables can do.
        result["observable_auc"] = auc_ci(y, observable)
    return result


def _observable(folder: Path, ids) -> pd.Series | None:
    values = {}
    for pid in ids:
        try:
            values[pid] = float(json.loads((folder / "records" / f"{pid}.json").read_text(encoding="utf-8"))["truth"]["observable_p"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return pd.Series(values)


def _split_sizes(bundle, source, train, test, label, external) -> pd.DataFrame:
    def row(part, frame, note=""):
        he = pd.to_numeric(frame[label], errors="coerce") if label in frame.columns else pd.Series(dtype=float)
        return {"part": part, "patients": int(len(frame)), "HE": int((he == 1).sum()), "no HE": int((he == 0).sum()),
                "unlabelled": int(he.isna().sum()), "use": note}

    rows = []
    split_path = bundle.settings.get("split")
    if not external and split_path and Path(split_path).is_file():
        split = pd.read_csv(split_path, dtype={ID: str})
        merged = source.table.merge(split[[ID, "part"]], on=ID, how="inner")
        uses = {"cnn": "trains the CNN only (cohort 1)", "train": "fits the model (cohort 2)",
                "test": "evaluation only (cohort 2)"}
        for part in ("cnn", "train", "test"):
            rows.append(row(part, merged[merged["part"] == part], uses[part]))
    else:
        if train is not None:
            rows.append(row("train", train, "fits the model"))
        rows.append(row("test", test, "evaluation only (external)" if external else "evaluation only"))
    return pd.DataFrame(rows)


def _settings(bundle, source, external, n_train) -> dict:
    s = bundle.settings
    summary = bundle.summary or {}
    extract = s.get("extract") or {}
    shown = {
        "protocol": s.get("protocol"), "evaluation": "external table" if external else "the bundle's test patients",
        "model bundle": str(Path(bundle.path).resolve()), "features evaluated": str(source.path),
        "features fitted": s.get("features"), "split": s.get("split"), "label": s.get("label"),
        "HE definition": extract.get("definition"), "feature groups": ", ".join(s.get("groups") or []),
        "classifier asked": s.get("classifier"), "classifier chosen": summary.get("classifier"),
        "classifier parameters": summary.get("params"), "selected features (k)": summary.get("k"),
        "input columns": summary.get("n_input_columns"), "inner CV folds": s.get("inner_cv"),
        "inner CV AUC": summary.get("inner_cv_auc"), "grid": s.get("grid"), "decision threshold": summary.get("threshold"),
        "seed": s.get("seed"), "training patients": n_train if n_train is not None else len(s.get("train_ids") or []),
        "radiomics parameters": extract.get("radiomics_params"), "segmentation model": extract.get("segmentation_model"),
    }
    prior, anchor = summary.get("prior_model"), summary.get("anchor_model")
    if prior:  # what the probability is made of, besides the feature search
        shown["averaged with"] = f"the known-predictor logistic regression, weight {prior['weight']:g}"
    if anchor:
        shown["anchored to"] = (f"the BRAIN score's published risk, weight {anchor['weight']:g} "
                                f"({', '.join(anchor['columns'])}); then shifted by {anchor.get('logit_offset', 0.0):+.2f} "
                                f"on the logit scale to the training HE rate")
    cnn = s.get("cnn")
    if cnn:
        shown.update({"CNN": s.get("cnn_model"), "CNN preset": cnn.get("preset"), "CNN weights": cnn.get("weights_source"),
                      "CNN epochs run": cnn.get("epochs_run"), "CNN best epoch": cnn.get("best_epoch"),
                      "CNN patients (train/validation)": f"{cnn.get('n_train_patients')}/{cnn.get('n_validation_patients')}"})
    return {k: _shown(v) for k, v in shown.items() if v is not None}


def _shown(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_shown(v)}" for k, v in value.items())
    return value


def _versions(bundle, settings) -> dict:
    versions = dict(settings.get("extract_versions") or {})
    versions.update((settings.get("cnn") or {}).get("versions") or {})
    versions.update(bundle.versions or {})
    return versions


def _cnn_curves(settings, groups) -> Path | None:
    if "cnn" not in groups or not settings.get("cnn_model"):
        return None
    path = Path(settings["cnn_model"]) / "curves.png"
    return path if path.is_file() else None


def evaluate(model: str | Path, features: str | Path, out: str | Path, external: bool = False,
             overwrite: bool = False, progress: bool = False, extra: dict | None = None,
             allow_version_mismatch: bool = False):
    """``hematoma evaluate``: assess and write the report folder (metrics.json, PNGs, report.html)."""
    from .report.build import write_report_folder
    from .storage import refuse_overwrite

    out = Path(out)
    refuse_overwrite(out / "report.html", overwrite)
    assessment = assess(model, features, external=external, progress=progress,
                        allow_version_mismatch=allow_version_mismatch)
    return assessment, write_report_folder(assessment, out, extra=extra)
