"""Honest performance estimates: cross-validated AUC, repeated nested CV, the
feature-set ablation.

Every estimate refits the *whole* model (imputation, scaling, selection and the
inner grid search included) on the training part of each outer fold, so no
outer-test patient reaches any fit.  Selecting features on all patients before
cross-validating (what the authors' code did with scaling) gives noise an AUC
far above 0.5; ``tests/test_evaluation.py`` shows both.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

from ..errors import InputError
from ..model import FEATURE_SETS, build_model, feature_columns, fit_model, model_inputs, model_summary
from .metrics import auc_ci, delong_test, to_jsonable

CNN_NOTE = (
    "CNN features are excluded from nested cross-validation: the CNN was trained on "
    "cohort 1 once, and an honest estimate would need it retrained inside every outer fold"
)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not enabled
    )


def _outer_auc(kwargs, X, y, train, test) -> tuple[float, object]:
    model = fit_model(build_model(**kwargs), X.iloc[train], y.iloc[train])
    return float(roc_auc_score(y.iloc[test], model.predict_proba(X.iloc[test])[:, 1])), model


def cross_validated_auc(
    table: pd.DataFrame, build_model_kwargs=None, cv: int = 5, seed: int = 0, label: str = "he", progress: bool = False
) -> dict:
    """AUC of each outer fold with the full model (and its inner search) fitted inside the fold."""
    kwargs = dict(build_model_kwargs or {})
    X, y = model_inputs(table, label=label)
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    aucs = []
    with _progress(progress) as bar:
        task = bar.add_task("cross-validation", total=cv)
        for train, test in folds.split(X, y):
            aucs.append(_outer_auc(kwargs, X, y, train, test)[0])
            bar.advance(task)
    return {"fold_aucs": aucs, "mean": float(np.mean(aucs)), "sd": float(np.std(aucs, ddof=1)), "cv": cv, "seed": seed}


def nested_cv(
    table: pd.DataFrame,
    build_model_kwargs=None,
    outer_splits: int = 5,
    repeats: int = 3,
    seed: int = 0,
    label: str = "he",
    progress: bool = True,
) -> dict:
    """Repeated stratified nested CV over all labelled patients: per-fold AUCs, mean ± SD.

    The inner loop is ``build_model``'s own grid search.  CNN features are left
    out (see :data:`CNN_NOTE`), with the reason in ``notes``.
    """
    kwargs = dict(build_model_kwargs or {})
    groups = tuple(kwargs.get("groups", ("rad", "clin", "cnn")))
    notes = []
    if feature_columns(table, ("cnn",)) or "cnn" in tuple(kwargs.get("groups", ())):
        notes.append(CNN_NOTE)
        warnings.warn(CNN_NOTE, stacklevel=2)
    groups = tuple(g for g in groups if g != "cnn")
    if not groups or not feature_columns(table, groups):
        raise InputError(None, "nested cross-validation needs radiomics or clinical feature columns (CNN ones are excluded)")
    kwargs["groups"] = groups
    # Only the groups' columns: the known-predictor model and the BRAIN anchor read their columns by name.
    X, y = model_inputs(table.drop(columns=feature_columns(table, ("cnn",))), label=label, groups=groups)
    folds = RepeatedStratifiedKFold(n_splits=outer_splits, n_repeats=repeats, random_state=seed)
    records = []
    with _progress(progress) as bar:
        task = bar.add_task("nested CV", total=outer_splits * repeats)
        for index, (train, test) in enumerate(folds.split(X, y)):
            auc, model = _outer_auc(kwargs, X, y, train, test)
            summary = model_summary(model)
            records.append(
                {
                    "repeat": index // outer_splits,
                    "fold": index % outer_splits,
                    "auc": auc,
                    "n_test": len(test),
                    "classifier": summary["classifier"],
                    "k": summary["k"],
                    "inner_cv_auc": summary.get("inner_cv_auc"),
                    "prior": summary.get("prior"),
                    "anchor": summary.get("anchor"),
                }
            )
            bar.advance(task)
    aucs = [r["auc"] for r in records]
    return to_jsonable(
        {
            "fold_aucs": aucs,
            "mean": float(np.mean(aucs)),
            "sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
            "outer_splits": outer_splits,
            "repeats": repeats,
            "seed": seed,
            "groups": list(groups),
            "folds": records,
            "notes": notes,
        }
    )


def ablation(
    train_table: pd.DataFrame,
    test_table: pd.DataFrame,
    build_model_kwargs=None,
    feature_sets=None,
    label: str = "he",
    reference: str = "hybrid",
    return_models: bool = False,
    progress: bool = False,
):
    """Fit and evaluate each feature set on the same train/test patients.

    A set is skipped (with a note) unless every one of its groups has columns
    in both tables.  ``p_vs_reference``: DeLong p-value against the
    ``reference`` set (or the last set fitted, if the reference was skipped).
    Returns a DataFrame (one row per set); with ``return_models`` also a dict of
    fitted models by set name.
    """
    kwargs = {k: v for k, v in (build_model_kwargs or {}).items() if k != "groups"}
    feature_sets = FEATURE_SETS if feature_sets is None else feature_sets
    X_test, y_test = model_inputs(test_table, label=label)
    rows, models, scores = [], {}, {}
    with _progress(progress) as bar:
        task = bar.add_task("feature sets", total=len(feature_sets))
        for name, groups in feature_sets.items():
            absent = [g for g in groups if not feature_columns(train_table, (g,)) or not feature_columns(test_table, (g,))]
            row = {"feature_set": name, "groups": "+".join(groups)}
            if absent:
                rows.append({**row, "status": "skipped", "note": f"no {', '.join(g + '_' for g in absent)} columns"})
                bar.advance(task)
                continue
            X_train, y_train = model_inputs(train_table, label=label, groups=groups)
            model = fit_model(build_model(groups=groups, **kwargs), X_train, y_train)
            probability = model.predict_proba(X_test)[:, 1]
            interval = auc_ci(y_test, probability)
            summary = model_summary(model)
            rows.append(
                {
                    **row,
                    "status": "ok",
                    "note": "",
                    "n_columns": len(feature_columns(train_table, groups)),
                    "classifier": summary["classifier"],
                    "k": summary["k"],
                    "groups_used": "+".join(summary["groups_used"]),
                    "inner_cv_auc": summary.get("inner_cv_auc"),
                    "auc": interval["auc"],
                    "auc_lower": interval["lower"],
                    "auc_upper": interval["upper"],
                    "average_precision": float(average_precision_score(y_test, probability)),
                    "brier": float(brier_score_loss(y_test, probability)),
                }
            )
            models[name], scores[name] = model, probability
            bar.advance(task)
    if scores:
        reference = reference if reference in scores else list(scores)[-1]
        for row in rows:
            if row["feature_set"] in scores:
                row["reference"] = reference
                row["p_vs_reference"] = delong_test(y_test, scores[row["feature_set"]], scores[reference])["p_value"]
    table = pd.DataFrame(rows)
    return (table, models) if return_models else table
