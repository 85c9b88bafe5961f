"""Test-set metrics: AUC with 95% CIs (DeLong, bootstrap), DeLong comparison,
the paper's Table 2, confusion matrix, Brier score, calibration, decision curves.

Labels are 0 (no HE) / 1 (HE); scores are predicted probabilities of HE (or any
score where larger means more likely HE, for the rank-based metrics).

Class threshold: a patient is predicted HE when its probability is >= the
threshold, 0.5 by default.  A tuned threshold must come from training data only:
``build_model(threshold="youden")`` tunes it by internal cross-validation on the
training patients, and :func:`evaluate_model` uses the model's own threshold.
:func:`youden_threshold` is for scores of *training* patients, never test ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from ..errors import InputError
from ..model import decision_threshold, model_inputs, model_summary

CLASS_NAMES = ("no HE", "HE")
REPORT_ROWS = ("no HE", "HE", "macro avg", "weighted avg")
REPORT_COLUMNS = ("precision", "recall", "f1-score", "support")


def float_or_nan(value) -> float:
    """``value`` as a float; NaN for None, text or anything else that is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def to_jsonable(value):
    """Plain JSON values: numpy scalars/arrays to Python, NaN/inf to None, frames to records."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        return to_jsonable(value.to_dict(orient="records"))
    if isinstance(value, (pd.Series, np.ndarray)):
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _binary(y_true, scores):
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; drop those patients first (and say so)")
    if y.min() == y.max():
        raise ValueError("AUC needs patients of both classes")
    return y.astype(int), s


# --------------------------------------------------------------------------- DeLong
# Hand-written: neither scikit-learn nor scipy has DeLong's AUC variance.  This is
# the fast algorithm of Sun & Xu, "Fast implementation of DeLong's algorithm for
# comparing the areas under correlated receiver operating characteristic curves",
# IEEE Signal Processing Letters 21(11), 2014: O(n log n) through mid-ranks.


def _delong(y_true, score_matrix):
    """AUCs (k,) and their DeLong covariance (k, k) for k score rows on the same patients."""
    y = np.asarray(y_true, dtype=int)
    scores = np.atleast_2d(np.asarray(score_matrix, dtype=float))
    positives, negatives = scores[:, y == 1], scores[:, y == 0]
    m, n = positives.shape[1], negatives.shape[1]
    # Mid-ranks (ties averaged) within positives, within negatives, and over all.
    rank_pos = stats.rankdata(positives, axis=1)
    rank_neg = stats.rankdata(negatives, axis=1)
    rank_all = stats.rankdata(np.hstack([positives, negatives]), axis=1)
    aucs = rank_all[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (rank_all[:, :m] - rank_pos) / n  # structural components of the positives
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m  # ... and of the negatives
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_auc_variance(y_true, scores) -> tuple[float, float]:
    """``(auc, variance)`` of one score by DeLong's method."""
    y, s = _binary(y_true, scores)
    aucs, cov = _delong(y, s)
    return float(aucs[0]), float(cov[0, 0])


def auc_ci(y_true, scores, method: str = "delong", alpha: float = 0.05, n_bootstraps: int = 2000, seed: int = 0) -> dict:
    """ROC AUC with a (1 - alpha) confidence interval.

    ``method="delong"``: AUC +- z * DeLong SE, clipped to [0, 1].
    ``method="bootstrap"``: percentile interval over stratified bootstrap
    resamples of the patients (each resample keeps the class counts, as pROC does).
    """
    y, s = _binary(y_true, scores)
    if method == "delong":
        auc, variance = delong_auc_variance(y, s)
        half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(max(variance, 0.0))
        lower, upper = max(0.0, auc - half), min(1.0, auc + half)
    elif method == "bootstrap":
        auc = float(roc_auc_score(y, s))
        aucs = bootstrap_aucs(y, s, n_bootstraps=n_bootstraps, seed=seed)
        lower, upper = (float(q) for q in np.quantile(aucs, [alpha / 2, 1 - alpha / 2]))
    else:
        raise ValueError(f"unknown CI method {method!r}; use 'delong' or 'bootstrap'")
    return {"auc": float(auc), "lower": float(lower), "upper": float(upper), "method": method, "level": 1 - alpha}


def bootstrap_aucs(y_true, scores, n_bootstraps: int = 2000, seed: int = 0) -> np.ndarray:
    """AUCs of stratified bootstrap resamples (vectorised Mann-Whitney through ranks)."""
    y, s = _binary(y_true, scores)
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    resampled = np.hstack([rng.choice(pos, size=(n_bootstraps, m)), rng.choice(neg, size=(n_bootstraps, n))])
    ranks = stats.rankdata(resampled, axis=1)
    return ranks[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)


def delong_test(y_true, scores_a, scores_b) -> dict:
    """DeLong's test of two correlated AUCs (two models on the same patients); two-sided p."""
    y, a = _binary(y_true, scores_a)
    _, b = _binary(y, scores_b)
    aucs, cov = _delong(y, np.vstack([a, b]))
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    difference = float(aucs[0] - aucs[1])
    if variance <= 1e-15:
        # Identical rankings (or perfect separation by both): no evidence of a difference.
        z, p = 0.0, 1.0
    else:
        z = difference / np.sqrt(variance)
        p = float(2 * stats.norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": difference, "z": float(z), "p_value": p}


# --------------------------------------------------------------------------- thresholds


def classification_table(y_true, y_pred) -> pd.DataFrame:
    """The paper's Table 2: rows no HE / HE / macro avg / weighted avg; precision, recall, f1-score, support."""
    report = classification_report(
        np.asarray(y_true, dtype=int),
        np.asarray(y_pred, dtype=int),
        labels=[0, 1],
        target_names=list(CLASS_NAMES),
        output_dict=True,
        zero_division=0,
    )
    table = pd.DataFrame([report[row] for row in REPORT_ROWS], index=list(REPORT_ROWS))[list(REPORT_COLUMNS)]
    table["support"] = table["support"].astype(int)
    return table


def youden_threshold(y_true, scores) -> float:
    """Threshold maximising sensitivity + specificity - 1 (use training scores only)."""
    y, s = _binary(y_true, scores)
    fpr, tpr, thresholds = roc_curve(y, s)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def net_benefit(y_true, probabilities, threshold: float) -> float:
    """Net benefit of treating patients with probability >= threshold (Vickers & Elkin 2006)."""
    y = np.asarray(y_true, dtype=int)
    treated = np.asarray(probabilities, dtype=float) >= threshold
    n = len(y)
    true_pos = np.sum(treated & (y == 1)) / n
    false_pos = np.sum(treated & (y == 0)) / n
    return float(true_pos - false_pos * threshold / (1 - threshold))


def decision_curve(y_true, probabilities, thresholds=None) -> pd.DataFrame:
    """Net benefit of the model, of treating all, and of treating none, per threshold probability."""
    y = np.asarray(y_true, dtype=int)
    thresholds = np.round(np.arange(0.01, 1.0, 0.01), 2) if thresholds is None else np.asarray(thresholds, dtype=float)
    prevalence = y.mean()
    odds = thresholds / (1 - thresholds)
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "model": [net_benefit(y, probabilities, t) for t in thresholds],
            "treat_all": prevalence - (1 - prevalence) * odds,
            "treat_none": np.zeros_like(thresholds),
        }
    )


def calibration(y_true, probabilities, n_bins: int = 5, strategy: str = "quantile") -> dict:
    """Calibration curve (quantile bins: equal patient counts suit ~100 test patients),
    Brier score, calibration-in-the-large (mean observed - mean predicted) and slope
    (logistic regression of the label on the logit of the probability; 1 is ideal)."""
    y = np.asarray(y_true, dtype=int)
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-6, 1 - 1e-6)
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    logit = np.log(p / (1 - p))[:, None]
    slope = float(LogisticRegression(C=np.inf).fit(logit, y).coef_[0, 0]) if y.min() != y.max() else float("nan")
    return {
        "observed": observed,
        "predicted": predicted,
        "n_bins": n_bins,
        "strategy": strategy,
        "brier": float(brier_score_loss(y, p)),
        "calibration_in_the_large": float(y.mean() - p.mean()),
        "slope": slope,
    }


# --------------------------------------------------------------------------- everything


def evaluate_predictions(
    y_true,
    probabilities,
    threshold: float = 0.5,
    patient_ids=None,
    ci: str = "delong",
    n_bootstraps: int = 2000,
    seed: int = 0,
) -> dict:
    """Every test-set metric of one model, as a JSON-ready dict.

    ``ci``: ``"delong"``, ``"bootstrap"`` or ``"both"``.
    """
    y, p = _binary(y_true, probabilities)
    predicted = (p >= threshold).astype(int)
    methods = ("delong", "bootstrap") if ci == "both" else (ci,)
    intervals = {m: auc_ci(y, p, method=m, n_bootstraps=n_bootstraps, seed=seed) for m in methods}
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    fpr, tpr, roc_thresholds = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    table = classification_table(y, predicted)
    result = {
        "n": int(len(y)),
        "n_he": int(y.sum()),
        "prevalence": float(y.mean()),
        "threshold": float(threshold),
        "auc": intervals[methods[0]]["auc"],
        "auc_ci": intervals,
        "average_precision": float(average_precision_score(y, p)),
        "accuracy": float(accuracy_score(y, predicted)),
        "sensitivity": float(tp / (tp + fn)),
        "specificity": float(tn / (tn + fp)),
        "brier": float(brier_score_loss(y, p)),
        "confusion_matrix": {"labels": list(CLASS_NAMES), "rows_true_columns_predicted": [[int(tn), int(fp)], [int(fn), int(tp)]]},
        "classification_report": {row: table.loc[row].to_dict() for row in REPORT_ROWS},
        "roc_curve": {"fpr": fpr, "tpr": tpr, "thresholds": roc_thresholds},
        "pr_curve": {"precision": precision, "recall": recall},
        "calibration": calibration(y, p),
        "decision_curve": decision_curve(y, p).to_dict(orient="list"),
    }
    if patient_ids is not None:
        result["predictions"] = pd.DataFrame(
            {"patient_id": [str(i) for i in patient_ids], "he": y, "probability": p, "predicted": predicted}
        ).to_dict(orient="records")
    return to_jsonable(result)


def evaluate_model(
    estimator,
    test_table: pd.DataFrame,
    label: str = "he",
    threshold: float | None = None,
    ci: str = "delong",
    n_bootstraps: int = 2000,
    seed: int = 0,
) -> dict:
    """Evaluate a fitted model on test patients (a feature table with labels).

    ``threshold=None`` uses the model's own (Youden-tuned on training data, or 0.5).
    """
    if label not in test_table.columns:
        raise InputError(None, f"the test table has no label column {label!r}")
    X, y = model_inputs(test_table, label=label)
    if y.nunique() < 2:  # one line instead of a ValueError from deep inside the metrics
        raise InputError(None, f"an evaluation needs test patients of both classes; the {len(y)} labelled test "
                               f"patient(s) have {int(y.sum())} with HE and {int((y == 0).sum())} without")
    probabilities = estimator.predict_proba(X)[:, 1]
    threshold = decision_threshold(estimator) if threshold is None else float(threshold)
    result = evaluate_predictions(y, probabilities, threshold, X.index, ci=ci, n_bootstraps=n_bootstraps, seed=seed)
    try:
        result["model"] = to_jsonable(model_summary(estimator))
    except TypeError:  # not one of ours (a baseline, a user's estimator)
        pass
    return result
