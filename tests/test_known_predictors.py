"""The known-predictor logistic model (hematoma.known_predictors) and its place among the baselines."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from hematoma.evaluation.baselines import evaluate_baselines
from hematoma.known_predictors import KNOWN_PREDICTORS, LOG_FLOORS, KnownPredictorColumns, known_predictor_model
from hematoma.model import fit_model


def cohort(n=160, seed=0):
    """HE drawn from a logit in log volume and log onset time: the known model's own form, plus noise columns."""
    rng = np.random.default_rng(seed)
    volume = np.exp(rng.normal(np.log(12), 0.8, n))
    onset = np.exp(rng.normal(np.log(3.5), 0.6, n))
    logit = -1.3 + 1.2 * np.log(volume / 12) + 1.0 * np.log(3 / onset)
    he = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    table = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "he": he,
                          "clin_baseline_volume_ml": volume, "clin_onset_to_ct_hours": onset,
                          "clin_sbp": rng.normal(165, 25, n), "clin_gcs": rng.integers(3, 16, n).astype(float),
                          "sign_blend": (rng.random(n) < 0.2).astype(float), "rad_noise": rng.normal(size=n)})
    table.loc[3, "clin_sbp"] = np.nan
    return table


def test_columns_present_in_order_skewed_ones_logged_and_floored():
    table = cohort(10)
    table.loc[0, "clin_baseline_volume_ml"] = 0.0  # no blood found: floored, not -inf
    step = KnownPredictorColumns().fit(table)
    assert step.columns_ == [c for c in KNOWN_PREDICTORS if c in table.columns]
    assert "rad_noise" not in step.columns_ and "he" not in step.columns_  # never the label or a searched column
    values = step.transform(table)
    volume = step.columns_.index("clin_baseline_volume_ml")
    assert values[0, volume] == pytest.approx(np.log(LOG_FLOORS["clin_baseline_volume_ml"]))
    assert values[1:, volume] == pytest.approx(np.log(table["clin_baseline_volume_ml"].iloc[1:]))
    assert np.isnan(values[3, step.columns_.index("clin_sbp")])  # missing stays missing for the imputer
    assert values[:, step.columns_.index("clin_sbp")][~np.isnan(values[:, step.columns_.index("clin_sbp")])] == \
        pytest.approx(table["clin_sbp"].dropna())
    assert list(step.get_feature_names_out())[:2] == ["log(clin_baseline_volume_ml)", "log(clin_onset_to_ct_hours)"]
    with pytest.raises(ValueError, match="lacks the model's column"):
        step.transform(table.drop(columns=["clin_gcs"]))
    with pytest.raises(ValueError, match="none of the known predictors"):
        KnownPredictorColumns().fit(table[["patient_id", "rad_noise"]])


def test_model_learns_the_known_form_and_sees_only_training_patients():
    table = cohort(300)
    train, test = table.iloc[:200], table.iloc[200:]
    model = fit_model(known_predictor_model(seed=0, cv_repeats=2), train, train["he"].to_numpy())
    pipeline = model.best_estimator_
    # imputation and scaling fitted on the training patients only
    train_values = KnownPredictorColumns().fit(train).transform(train)
    assert pipeline.named_steps["scale"].mean_[0] == pytest.approx(np.log(train["clin_baseline_volume_ml"]).mean())
    assert pipeline.named_steps["impute"].statistics_ == pytest.approx(np.nanmedian(train_values, axis=0))
    coef = dict(zip(pipeline.named_steps["known"].columns_, pipeline.named_steps["clf"].coef_[0]))
    assert coef["clin_baseline_volume_ml"] > 0 and coef["clin_onset_to_ct_hours"] < 0  # the signs of the truth
    assert roc_auc_score(test["he"], model.predict_proba(test)[:, 1]) > 0.7


def test_listed_among_the_baselines_with_a_note_for_absent_predictors():
    table = cohort(160)
    train, test = table.iloc[:100], table.iloc[100:]
    result = evaluate_baselines(train, test, model_scores=np.linspace(0, 1, len(test)))
    known = result["known_predictors"]
    assert known["status"] == "ok" and known["metrics"]["n"] == len(test)
    assert "clin_inr" in known["notes"][0] and "vs_model" in known
    bare = evaluate_baselines(train[["patient_id", "he", "rad_noise"]], test[["patient_id", "he", "rad_noise"]])
    assert bare["known_predictors"]["status"] == "skipped"
