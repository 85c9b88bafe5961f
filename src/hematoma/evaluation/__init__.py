"""Evaluation: metrics with CIs, Table 1, baselines, feature importance, validation.

- :mod:`.metrics`: AUC (DeLong / bootstrap CIs), DeLong test, Table 2, calibration,
  decision curves, :func:`evaluate_model`.
- :mod:`.table1`: patient characteristics by HE status with their tests.
- :mod:`.baselines`: baseline volume, clinical logistic regression, BRAIN score.
- :mod:`.importance`: permutation importance and |coef| top features.
- :mod:`.validation`: cross-validated AUC, repeated nested CV, feature-set ablation.
"""

from .baselines import brain_score, evaluate_baselines
from .importance import coefficient_top_features, permutation_top_features, top_features
from .metrics import (
    auc_ci,
    calibration,
    classification_table,
    decision_curve,
    delong_auc_variance,
    delong_test,
    evaluate_model,
    evaluate_predictions,
    net_benefit,
    to_jsonable,
    youden_threshold,
)
from .table1 import table1
from .validation import ablation, cross_validated_auc, nested_cv

__all__ = [
    "ablation",
    "auc_ci",
    "brain_score",
    "calibration",
    "classification_table",
    "coefficient_top_features",
    "cross_validated_auc",
    "decision_curve",
    "delong_auc_variance",
    "delong_test",
    "evaluate_baselines",
    "evaluate_model",
    "evaluate_predictions",
    "nested_cv",
    "net_benefit",
    "permutation_top_features",
    "table1",
    "to_jsonable",
    "top_features",
    "youden_threshold",
]
