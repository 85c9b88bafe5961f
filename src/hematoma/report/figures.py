"""Report figures: ROC and PR curves with confidence bands, calibration,
decision curve, confusion matrix and top features.  Each returns a matplotlib
Figure; :func:`save_png` writes it atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: reports are made on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ..storage import atomic_path

GRID = np.linspace(0, 1, 101)


def save_png(figure: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def _bootstrap_indices(y: np.ndarray, n: int, seed: int):
    # Stratified resampling keeps both classes in every replicate.
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for _ in range(n):
        yield np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])


def roc_figure(y_true, scores: Mapping[str, np.ndarray], n_boot: int = 200, seed: int = 0) -> plt.Figure:
    """ROC curves of several models on the same patients; a 95 % bootstrap band for the first."""
    y = np.asarray(y_true).astype(int)
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for i, (name, score) in enumerate(scores.items()):
        score = np.asarray(score, dtype=float)
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, lw=2 if i == 0 else 1.2, label=f"{name} (AUC {roc_auc_score(y, score):.3f})")
        if i == 0 and n_boot:
            curves = []
            for idx in _bootstrap_indices(y, n_boot, seed):
                f, t, _ = roc_curve(y[idx], score[idx])
                curves.append(np.interp(GRID, f, t))
            low, high = np.percentile(curves, [2.5, 97.5], axis=0)
            ax.fill_between(GRID, low, high, alpha=0.2, label=f"{name} 95% CI")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test patients)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def pr_figure(y_true, scores: Mapping[str, np.ndarray], n_boot: int = 200, seed: int = 0) -> plt.Figure:
    y = np.asarray(y_true).astype(int)
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for i, (name, score) in enumerate(scores.items()):
        score = np.asarray(score, dtype=float)
        precision, recall, _ = precision_recall_curve(y, score)
        ax.step(recall, precision, where="post", lw=2 if i == 0 else 1.2,
                label=f"{name} (AP {average_precision_score(y, score):.3f})")
        if i == 0 and n_boot:
            curves = []
            for idx in _bootstrap_indices(y, n_boot, seed):
                p, r, _ = precision_recall_curve(y[idx], score[idx])
                curves.append(np.interp(GRID, r[::-1], p[::-1]))
            low, high = np.percentile(curves, [2.5, 97.5], axis=0)
            ax.fill_between(GRID, low, high, alpha=0.2, step="post", label=f"{name} 95% CI")
    ax.axhline(y.mean(), color="k", ls="--", lw=0.8, label=f"prevalence {y.mean():.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test patients)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right", fontsize=8)
    return fig


def calibration_figure(y_true, scores: Mapping[str, np.ndarray], n_bins: int = 5) -> plt.Figure:
    y = np.asarray(y_true).astype(int)
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, score in scores.items():
        observed, predicted = calibration_curve(y, np.asarray(score, dtype=float), n_bins=n_bins, strategy="quantile")
        ax.plot(predicted, observed, "o-", label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    ax.set(xlabel="predicted probability", ylabel="observed HE rate", title="Calibration", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return fig


def net_benefit(y_true, score, thresholds) -> np.ndarray:
    """Net benefit of treating patients with score >= t (Vickers & Elkin 2006)."""
    y = np.asarray(y_true).astype(int)
    score = np.asarray(score, dtype=float)
    n = y.size
    out = []
    for t in thresholds:
        treated = score >= t
        tp = np.sum(treated & (y == 1))
        fp = np.sum(treated & (y == 0))
        out.append(tp / n - fp / n * t / (1 - t))
    return np.asarray(out)


def decision_curve_figure(y_true, scores: Mapping[str, np.ndarray], thresholds=None) -> plt.Figure:
    y = np.asarray(y_true).astype(int)
    thresholds = np.linspace(0.01, 0.8, 80) if thresholds is None else np.asarray(thresholds)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    for name, score in scores.items():
        ax.plot(thresholds, net_benefit(y, score, thresholds), label=name)
    prevalence = y.mean()
    ax.plot(thresholds, prevalence - (1 - prevalence) * thresholds / (1 - thresholds), "k:", label="treat all")
    ax.axhline(0, color="k", lw=0.8, label="treat none")
    ax.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve",
           ylim=(min(-0.05, -0.1 * prevalence), max(0.05, prevalence * 1.1)))
    ax.legend(fontsize=8)
    return fig


def confusion_figure(matrix, labels=("no HE", "HE")) -> plt.Figure:
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black", fontsize=13)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title="Confusion matrix")
    return fig


def top_features_figure(importance: pd.DataFrame, value: str = "importance", n: int = 15) -> plt.Figure:
    """Horizontal bars of the ``n`` most important features (``feature`` and ``value`` columns)."""
    top = importance.nlargest(n, value).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * max(len(top), 3) + 1))
    ax.barh(top["feature"], top[value], xerr=top.get(f"{value}_sd"), color="tab:red", alpha=0.8)
    ax.set(xlabel=value.replace("_", " "), title=f"Top {len(top)} features")
    ax.tick_params(axis="y", labelsize=7)
    return fig
