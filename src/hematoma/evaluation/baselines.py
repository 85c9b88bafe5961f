"""Baselines evaluated on the same test patients as the model.

- ``baseline_volume``: the baseline hematoma volume (``clin_baseline_volume_ml``)
  alone; its AUC is that of the raw volume (no fitting), its probabilities come
  from a univariate logistic regression fitted on the training patients.
- ``clinical_logistic``: logistic regression on the clinical (``clin_``)
  variables: median imputation with missing indicators, scaling, L2-penalised
  logistic regression, fitted on the training patients only.
- ``known_predictors``: L2 logistic regression on the published HE predictors
  only, each on its known scale (:mod:`hematoma.known_predictors`: log volume,
  log onset-to-CT time, anticoagulation, INR, SBP, platelets, log D-dimer, GCS,
  the NCCT sign flags), C by repeated inner CV on the training patients.
- ``brain_score``: the BRAIN score (below), no fitting; probabilities from its
  published score-to-risk table.

BRAIN score: :mod:`hematoma.brain_score` (Wang 2015), with its published risk table.

- ``bat_score``: the BAT score (Morotti A, Dowlatshahi D, Boulouis G, et al.
  "Predicting intracerebral hemorrhage expansion with noncontrast computed
  tomography: the BAT score." Stroke 2018;49(5):1163-1169): Blend sign 1
  point, Any intrahematoma hypodensity 2, Time from onset to NCCT < 2.5 h 2
  (0-5), from ``sign_blend``, ``sign_hypodensity`` (hematoma.features.signs)
  and ``clin_onset_to_ct_hours``.  Its AUC is the raw score's; its
  probabilities come from a univariate logistic regression of the score fitted
  on the training patients (the paper gives a cut-off, >= 3, not a risk table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ..brain_score import VOLUME, brain_risk, brain_score
from ..known_predictors import KNOWN_PREDICTORS, known_predictor_model
from ..model import FeatureGroupSelector, feature_columns, fit_model, model_inputs
from .metrics import auc_ci, delong_test, evaluate_predictions, to_jsonable

BAT_REQUIRED = ("sign_blend", "sign_hypodensity", "clin_onset_to_ct_hours")


def bat_scores(table: pd.DataFrame) -> pd.Series:
    """The BAT score of every row (NaN where a sign or the onset time is missing); ``KeyError`` if a column is absent."""
    from ..features.signs import bat_score

    absent = [c for c in BAT_REQUIRED if c not in table.columns]
    if absent:
        raise KeyError(f"BAT score needs columns {absent}")
    values = table[list(BAT_REQUIRED)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return pd.Series([bat_score(*row) for row in values], index=table.index, dtype=float)


def clinical_logistic_model(seed: int = 0) -> Pipeline:
    return Pipeline(
        [
            ("groups", FeatureGroupSelector(groups=("clin",))),
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=1.0, max_iter=5000, random_state=seed)),
        ]
    )


def _labels(table: pd.DataFrame, label: str) -> pd.Series:
    return pd.to_numeric(table[label], errors="coerce").astype(int).set_axis(_ids(table))


def _ids(table: pd.DataFrame) -> pd.Index:
    return pd.Index(table["patient_id"].astype(str) if "patient_id" in table.columns else table.index.astype(str))


def _scored(name, y: pd.Series, probability: pd.Series, raw_score: pd.Series | None, notes, model_scores, ci, seed):
    """One baseline's entry: metrics on its patients, and DeLong vs the model on the same ones."""
    keep = probability.notna() & (raw_score.notna() if raw_score is not None else True)
    dropped = int((~keep).sum())
    if dropped:
        notes = [*notes, f"{dropped} test patient(s) without the needed values left out"]
    y, probability = y[keep], probability[keep]
    if y.nunique() < 2:
        return {"status": "skipped", "notes": [*notes, "the patients left have one class only"]}
    entry = {"status": "ok", "notes": notes, "metrics": evaluate_predictions(y, probability, 0.5, y.index, ci=ci, seed=seed)}
    if raw_score is not None:
        entry["score_auc"] = auc_ci(y, raw_score[keep], method="delong")
    if model_scores is not None:
        model = model_scores.reindex(y.index)
        if model.notna().all():
            entry["vs_model"] = delong_test(y, model, raw_score[keep] if raw_score is not None else probability)
    return {"name": name, **entry}


def evaluate_baselines(
    train_table: pd.DataFrame,
    test_table: pd.DataFrame,
    label: str = "he",
    model_scores=None,
    ci: str = "delong",
    seed: int = 0,
) -> dict:
    """Fit (on train only) and evaluate the baselines on the test patients.

    ``model_scores``: the model's test probabilities (aligned with
    ``test_table``'s rows, or a Series indexed by patient_id); when given, each
    baseline gets a DeLong comparison with the model (``vs_model``; ``auc_a`` is
    the model's).  Baselines whose variables are absent are ``"skipped"`` with a note.
    """
    y_test = _labels(test_table, label)
    if model_scores is not None and not isinstance(model_scores, pd.Series):
        model_scores = pd.Series(np.asarray(model_scores, dtype=float), index=y_test.index)
    elif model_scores is not None:
        model_scores = model_scores.set_axis(model_scores.index.astype(str))
    results = {}

    if VOLUME in test_table.columns and VOLUME in train_table.columns:
        train_volume = pd.to_numeric(train_table[VOLUME], errors="coerce").set_axis(_ids(train_table))
        y_train = _labels(train_table, label)
        fit_rows = train_volume.notna()
        univariate = LogisticRegression().fit(train_volume[fit_rows].to_frame(), y_train[fit_rows])
        test_volume = pd.to_numeric(test_table[VOLUME], errors="coerce").set_axis(y_test.index)
        probability = pd.Series(np.nan, index=y_test.index)
        present = test_volume.notna()
        probability[present] = univariate.predict_proba(test_volume[present].to_frame())[:, 1]
        results["baseline_volume"] = _scored(
            "baseline volume", y_test, probability, test_volume, [], model_scores, ci, seed
        )
    else:
        results["baseline_volume"] = {"status": "skipped", "notes": [f"no {VOLUME} column"]}

    if feature_columns(train_table, ("clin",)):
        X_train, y_train = model_inputs(train_table, label, groups=("clin",))
        X_test, _ = model_inputs(test_table, label, groups=("clin",))
        model = fit_model(clinical_logistic_model(seed), X_train, y_train)
        probability = pd.Series(model.predict_proba(X_test)[:, 1], index=y_test.index)
        results["clinical_logistic"] = _scored(
            "clinical logistic regression", y_test, probability, None, [], model_scores, ci, seed
        )
    else:
        results["clinical_logistic"] = {"status": "skipped", "notes": ["no clin_ columns"]}

    known = [c for c in KNOWN_PREDICTORS if c in train_table.columns and c in test_table.columns]
    y_train = _labels(train_table, label)
    folds = min(5, int(y_train.value_counts().min())) if y_train.nunique() == 2 else 0
    if known and folds < 2:
        results["known_predictors"] = {"status": "skipped", "notes": ["too few training patients of a class for its inner CV"]}
    elif known:
        model = fit_model(known_predictor_model(seed, cv=folds), train_table[known], y_train.to_numpy())
        probability = pd.Series(model.predict_proba(test_table[known])[:, 1], index=y_test.index)
        absent = [c for c in KNOWN_PREDICTORS if c not in known]
        notes = [f"{len(absent)} of its {len(KNOWN_PREDICTORS)} predictors not in the table: {', '.join(absent)}"] if absent else []
        results["known_predictors"] = _scored(
            "known-predictor logistic regression", y_test, probability, None, notes, model_scores, ci, seed
        )
    else:
        results["known_predictors"] = {"status": "skipped", "notes": ["none of the known predictors in the table"]}

    try:
        score, notes = brain_score(test_table)
    except KeyError as missing:
        results["brain_score"] = {"status": "skipped", "notes": [str(missing.args[0])]}
    else:
        score = score.set_axis(y_test.index)
        probability = pd.Series(np.where(score.notna(), brain_risk(score.fillna(0)), np.nan), index=y_test.index)
        results["brain_score"] = _scored("BRAIN score", y_test, probability, score, notes, model_scores, ci, seed)

    try:
        train_score, test_score = bat_scores(train_table).set_axis(_ids(train_table)), bat_scores(test_table)
    except KeyError as missing:
        results["bat_score"] = {"status": "skipped", "notes": [str(missing.args[0])]}
    else:
        test_score = test_score.set_axis(y_test.index)
        y_train = _labels(train_table, label)
        fit_rows = train_score.notna()
        probability = pd.Series(np.nan, index=y_test.index)
        if y_train[fit_rows].nunique() == 2:
            univariate = LogisticRegression().fit(train_score[fit_rows].to_frame(), y_train[fit_rows])
            present = test_score.notna()
            probability[present] = univariate.predict_proba(test_score[present].to_frame())[:, 1]
        results["bat_score"] = _scored("BAT score", y_test, probability, test_score, [], model_scores, ci, seed)
    return to_jsonable(results)
