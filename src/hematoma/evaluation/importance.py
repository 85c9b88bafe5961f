"""Top features: permutation importance on the test set, and |coef| of linear models.

Permutation importance (scikit-learn's ``permutation_importance``, scoring ROC
AUC, seeded) is measured on the input columns, with the whole Pipeline
(imputation included) inside.  Only columns that reach the classifier (selected
themselves or through their missing-value indicator) can change a prediction;
the others have importance exactly 0 and are not permuted, which keeps a
6000-column CNN table affordable.  When more than ``max_columns`` columns reach
the classifier (k = "all"), the ``max_columns`` with the best univariate
selection score are permuted and the rest are reported as not measured.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.inspection import permutation_importance
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from ..model import (INDICATOR_PREFIX, anchor_of, blend_of, fitted_pipeline, model_inputs, model_summary,
                     selected_features)


class _ColumnSubsetModel(ClassifierMixin, BaseEstimator):
    """Predicts from a subset of columns by writing them into a fixed full frame.

    ``permutation_importance`` permutes every column it is given; this lets it
    permute only the columns that matter while the model still sees all of them.
    """

    def __init__(self, estimator=None, full_frame=None):
        self.estimator = estimator
        self.full_frame = full_frame

    def fit(self, X, y=None):  # already fitted: nothing to learn
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        frame = self.full_frame.copy()
        frame[list(X.columns)] = X.to_numpy()
        return self.estimator.predict_proba(frame)

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def input_columns_used(estimator) -> list[str]:
    """Input columns that reach the classifier, in order of their best selection score."""
    pipeline = fitted_pipeline(estimator)
    select = pipeline.named_steps["select"]
    start = list(pipeline.named_steps).index("groups")
    names = np.asarray(pipeline[start:-2].get_feature_names_out(), dtype=object)  # before selection
    support = select.get_support()
    order = np.argsort(-select.scores_[support], kind="mergesort")
    columns = []
    for name in names[support][order]:
        column = name[len(INDICATOR_PREFIX) :] if name.startswith(INDICATOR_PREFIX) else name
        if column not in columns:
            columns.append(column)
    blend = blend_of(estimator)
    if blend is not None:  # the known-predictor model's columns count too (they reach its classifier)
        columns += [c for c in blend.prior_.best_estimator_.named_steps["known"].columns_ if c not in columns]
    anchor = anchor_of(estimator)
    if anchor is not None:  # and those of the published score
        columns += [c for c in model_summary(estimator)["anchor_model"]["columns"] if c not in columns]
    return columns


def permutation_top_features(
    estimator,
    test_table: pd.DataFrame,
    label: str = "he",
    n: int = 15,
    n_repeats: int = 10,
    seed: int = 0,
    max_columns: int = 300,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """The ``n`` input columns whose permutation lowers the test AUC most.

    Columns: ``feature``, ``importance_mean``, ``importance_std`` (AUC drop over
    ``n_repeats`` seeded permutations), sorted by mean importance.
    """
    X, y = model_inputs(test_table, label=label)
    columns = input_columns_used(estimator)[:max_columns]
    wrapper = _ColumnSubsetModel(estimator, X).fit(None)
    with threadpool_limits(limits=1):  # many predictions on ~100 rows: threads only add overhead
        result = permutation_importance(
            wrapper, X[columns], y.to_numpy(), scoring="roc_auc", n_repeats=n_repeats, random_state=seed, n_jobs=n_jobs
        )
    table = pd.DataFrame(
        {"feature": columns, "importance_mean": result.importances_mean, "importance_std": result.importances_std}
    )
    return table.sort_values("importance_mean", ascending=False, kind="mergesort").head(n).reset_index(drop=True)


def coefficient_top_features(estimator, n: int = 15) -> pd.DataFrame | None:
    """|coef| of a linear classifier (linear-kernel SVM, logistic regression) on the
    standardised selected features, largest first; ``None`` for other classifiers."""
    pipeline = fitted_pipeline(estimator)
    clf = pipeline.named_steps["clf"]
    if isinstance(clf, CalibratedClassifierCV):  # the SVM: ensemble=False keeps one fitted SVC
        clf = clf.calibrated_classifiers_[0].estimator
    if isinstance(clf, SVC) and clf.kernel != "linear":
        return None
    coef = getattr(clf, "coef_", None)
    if coef is None:
        return None
    coef = np.asarray(coef, dtype=float).ravel()
    table = pd.DataFrame({"feature": selected_features(estimator), "coef": coef, "abs_coef": np.abs(coef)})
    return table.sort_values("abs_coef", ascending=False, kind="mergesort").head(n).reset_index(drop=True)


def top_features(estimator, test_table: pd.DataFrame, label: str = "he", n: int = 15, seed: int = 0, **kwargs) -> dict:
    """Both rankings: ``{"permutation": DataFrame, "coefficients": DataFrame | None}``."""
    return {
        "permutation": permutation_top_features(estimator, test_table, label=label, n=n, seed=seed, **kwargs),
        "coefficients": coefficient_top_features(estimator, n=n),
    }
