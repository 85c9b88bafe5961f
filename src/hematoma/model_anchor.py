"""The fitted model averaged with a published score's risk: weights no small cohort has to estimate.

On ~75 training patients (~17 expansions) every fitted weight is noisy, the
known-predictor model's included (:mod:`hematoma.known_predictors`): its
coefficients move from one half of a cohort to the other.  A published score
was weighed once, on thousands of patients, and is not refitted: the BRAIN
score (:mod:`hematoma.brain_score`, INTERACT1/2) gives each patient a growth
risk from the volume, anticoagulation, onset-to-CT time and, where the table
has them, recurrent ICH and intraventricular extension.  :class:`ScoreAnchor`
predicts ``(1 - weight) * model + weight * BRAIN risk``; for a patient whose
score cannot be computed (a required value blank) the model's probability
alone.  The weight is fixed, not tuned on the training patients.  Measured by
``benchmarks/bench_anchor.py`` (README, "The model").

The published risks belong to the INTERACT population and its growth
definition (>= 6 mL at 24 h): on the synthetic cohorts they average 0.10 below
the HE rate, and the plain average 0.05 below, so that at the threshold 0.5 the
model called no patient positive (the 600-patient run, the demo).  So the
average is then *recalibrated in the large* (``recalibrate=True``; Steyerberg,
Clinical Prediction Models, the first step of updating a published model for a
new setting): one shift on the logit scale of the patients with a score, chosen so
that the mean probability over the training patients equals their HE rate.
The shift is monotone, so it changes no ranking among them (and no AUC where
every patient has a score); it is one number fitted on the training patients
only.  A patient without a score keeps the model's probability as it is.  The report's calibration figure shows what is left.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from .brain_score import BRAIN_OPTIONAL, BRAIN_REQUIRED, brain_risk, brain_score

ANCHOR_SCORES = ("brain",)


def anchored(probability, risk, weight: float) -> np.ndarray:
    """``(1 - weight) * probability + weight * risk``; the probability alone where the risk is NaN."""
    probability, risk = np.asarray(probability, dtype=float), np.asarray(risk, dtype=float)
    return np.where(np.isnan(risk), probability, (1.0 - weight) * probability + weight * np.nan_to_num(risk))


def recalibrated(probability, risk, weight: float, offset: float) -> np.ndarray:
    """:func:`anchored`, then shifted by ``offset`` on the logit scale where the risk took part (not where it is NaN)."""
    average = anchored(probability, risk, weight)
    if not offset:
        return average
    shifted = expit(logit(np.clip(average, 1e-12, 1 - 1e-12)) + offset)
    return np.where(np.isnan(np.asarray(risk, dtype=float)), average, shifted)


def rate_offset(probability, rate: float, shifted=None) -> float:
    """The shift on the logit scale that makes the mean of ``probability`` equal ``rate`` (recalibration in the large).

    ``shifted``: which entries the shift applies to (default all); the others count in the mean as they are.
    """
    probability = np.asarray(probability, dtype=float)
    shifted = np.ones(len(probability), dtype=bool) if shifted is None else np.asarray(shifted, dtype=bool)
    z = logit(np.clip(probability[shifted], 1e-6, 1 - 1e-6))
    fixed = probability[~shifted].sum()
    rate = min(max(float(rate), 1e-6), 1 - 1e-6)
    if not shifted.any():
        return 0.0

    def gap(shift: float) -> float:
        return (expit(z + shift).sum() + fixed) / len(probability) - rate

    if gap(-30.0) > 0 or gap(30.0) < 0:  # the unshifted entries alone are beyond the rate: as near as can be
        return -30.0 if gap(-30.0) > 0 else 30.0
    return float(brentq(gap, -30.0, 30.0))


class ScoreAnchor(ClassifierMixin, BaseEstimator):
    """``(1 - weight) * model + weight * published risk``, shifted to the training HE rate; ``model`` and the shift fitted."""

    def __init__(self, model=None, score: str = "brain", weight: float = 0.5, recalibrate: bool = True):
        self.model = model
        self.score = score
        self.weight = weight
        self.recalibrate = recalibrate

    def fit(self, X, y):
        if self.score not in ANCHOR_SCORES:
            raise ValueError(f"unknown anchor score {self.score!r}; choose from {', '.join(ANCHOR_SCORES)}")
        if not 0.0 <= float(self.weight) <= 1.0:
            raise ValueError(f"the anchor's weight must be within [0, 1]; got {self.weight!r}")
        if not isinstance(X, pd.DataFrame):
            raise TypeError("ScoreAnchor needs a DataFrame (the score reads columns by name)")
        absent = [c for c in BRAIN_REQUIRED if c not in X.columns]
        if absent:
            raise ValueError(f"the BRAIN score needs the column(s) {', '.join(absent)}")
        # The items a new patient's score adds up: those of the training table, whatever the new table has.
        self.optional_columns_ = [c for c in BRAIN_OPTIONAL if c in X.columns]
        self.notes_ = brain_score(X, optional=self.optional_columns_)[1]  # e.g. an item counted 0 for everyone
        self.model_ = clone(self.model).fit(X, y)
        self.classes_ = self.model_.classes_
        if len(self.classes_) != 2:
            raise ValueError(f"the anchor needs two classes; got {self.classes_}")
        self.offset_ = 0.0
        if self.recalibrate:  # one number, from the training patients only (module docstring)
            rate = float(np.mean(np.asarray(y) == self.classes_[1]))
            risk = self.score_risk(X)
            average = anchored(self.model_.predict_proba(X)[:, 1], risk, float(self.weight))
            self.offset_ = rate_offset(average, rate, shifted=~np.isnan(risk))
        return self

    def _points(self, X: pd.DataFrame) -> pd.Series:
        check_is_fitted(self, "model_")
        return brain_score(X, optional=self.optional_columns_)[0]

    def score_risk(self, X: pd.DataFrame) -> np.ndarray:
        """The published risk of each row (NaN where its score cannot be computed)."""
        points = self._points(X)
        return np.where(points.notna(), brain_risk(points.fillna(0)), np.nan)

    def parts(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per row, what the average is made of: ``model`` (its probability), ``points`` and ``risk`` (the score's)."""
        points = self._points(X)
        risk = np.where(points.notna(), brain_risk(points.fillna(0)), np.nan)
        return pd.DataFrame({"model": self.model_.predict_proba(X)[:, 1], "points": points.to_numpy(dtype=float),
                             "risk": risk}, index=X.index)

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        # The shift only where the score took part: it is the score's population the shift corrects.
        positive = recalibrated(self.model_.predict_proba(X)[:, 1], self.score_risk(X), float(self.weight),
                                float(getattr(self, "offset_", 0.0)))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
