"""The searched model averaged with the known-predictor model: what is known, then what the data add.

:class:`PriorBlend` fits two classifiers on the same training patients, the
feature search of :func:`hematoma.model.build_model` (``model``) and the
known-predictor logistic regression of :mod:`hematoma.known_predictors`
(``prior``), and predicts the weighted mean of their probabilities.  On ~75
training patients the search's choice of columns is noisy and the small model
of published predictors is steady; the mean keeps the signal of both without
a third choice to make on the same few patients (the weight is fixed, not
tuned).  Measured by ``benchmarks/bench_prior.py``:
see the README's results table.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted


class PriorBlend(ClassifierMixin, BaseEstimator):
    """``(1 - prior_weight) * model + prior_weight * prior`` probabilities; both fitted on the same data."""

    def __init__(self, model=None, prior=None, prior_weight: float = 0.5):
        self.model = model
        self.prior = prior
        self.prior_weight = prior_weight

    def fit(self, X, y):
        if not 0.0 <= float(self.prior_weight) <= 1.0:
            raise ValueError(f"prior_weight must be within [0, 1]; got {self.prior_weight!r}")
        self.model_ = clone(self.model).fit(X, y)
        self.prior_ = clone(self.prior).fit(X, y)
        self.classes_ = self.model_.classes_
        if not np.array_equal(self.classes_, self.prior_.classes_):
            raise ValueError(f"the two models saw different classes: {self.classes_} and {self.prior_.classes_}")
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        weight = float(self.prior_weight)
        return (1.0 - weight) * self.model_.predict_proba(X) + weight * self.prior_.predict_proba(X)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
