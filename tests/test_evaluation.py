"""Metrics, statistics, baselines, importance and leakage-safe validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from hematoma.evaluation import (
    ablation,
    auc_ci,
    brain_score,
    calibration,
    classification_table,
    coefficient_top_features,
    cross_validated_auc,
    decision_curve,
    delong_auc_variance,
    delong_test,
    evaluate_baselines,
    evaluate_model,
    nested_cv,
    net_benefit,
    permutation_top_features,
    table1,
    youden_threshold,
)
from hematoma.evaluation import validation
from hematoma.model import DEFAULT_CV_REPEATS, build_model, fit_model, model_inputs

from test_model import synthetic_table

SMALL = dict(k_grid=(3,), cv=3, grid="small")


@pytest.fixture(autouse=True)
def single_threaded():
    with threadpool_limits(limits=1):
        yield


def scores_with_signal(n=200, seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, rng.normal(size=n) + shift * y


# --------------------------------------------------------------------------- AUC and DeLong


def brute_force_delong(y, s):
    """DeLong (1988) straight from its definition, O(m n): the reference for the fast version."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


def test_delong_matches_its_definition_and_sklearn_auc():
    y, s = scores_with_signal()
    s = np.round(s, 1)  # ties, which mid-ranks must handle
    auc, variance = delong_auc_variance(y, s)
    expected_auc, expected_variance = brute_force_delong(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc == pytest.approx(expected_auc, abs=1e-12)
    assert variance == pytest.approx(expected_variance, rel=1e-10)


def test_hand_computed_delong_example():
    # 2 positives (0.8, 0.4), 2 negatives (0.6, 0.2): psi = [[1, 1], [0, 1]]
    # AUC = 3/4; V10 = (1, 0.5) var 0.125; V01 = (0.5, 1) var 0.125; var = 0.125/2 + 0.125/2
    auc, variance = delong_auc_variance([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2])
    assert auc == pytest.approx(0.75) and variance == pytest.approx(0.125)


def test_delong_ci_agrees_with_bootstrap():
    y, s = scores_with_signal(n=300, seed=1)
    delong = auc_ci(y, s, method="delong")
    bootstrap = auc_ci(y, s, method="bootstrap", n_bootstraps=2000, seed=0)
    assert delong["auc"] == pytest.approx(roc_auc_score(y, s)) == pytest.approx(bootstrap["auc"])
    assert delong["lower"] < delong["auc"] < delong["upper"]
    assert delong["lower"] == pytest.approx(bootstrap["lower"], abs=0.02)
    assert delong["upper"] == pytest.approx(bootstrap["upper"], abs=0.02)


def test_delong_comparison():
    y, s = scores_with_signal(n=300, seed=2, shift=1.5)
    same = delong_test(y, s, s.copy())
    assert same["p_value"] == 1.0 and same["difference"] == 0.0
    noise = np.random.default_rng(3).normal(size=len(y))
    different = delong_test(y, s, noise)
    assert different["auc_a"] > different["auc_b"] and different["p_value"] < 0.001
    # symmetric
    assert delong_test(y, noise, s)["p_value"] == pytest.approx(different["p_value"])


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        auc_ci([1, 1, 1], [0.2, 0.3, 0.4])


# --------------------------------------------------------------------------- thresholds


def test_classification_table_has_the_papers_layout():
    table = classification_table([0, 0, 0, 1, 1], [0, 0, 1, 1, 0])
    assert list(table.index) == ["no HE", "HE", "macro avg", "weighted avg"]
    assert list(table.columns) == ["precision", "recall", "f1-score", "support"]
    assert table.loc["no HE", "precision"] == pytest.approx(2 / 3)
    assert table.loc["HE", "recall"] == pytest.approx(1 / 2)
    assert table["support"].tolist() == [3, 2, 5, 5]


def test_decision_curve_treat_all_and_model_net_benefit():
    y = np.array([1] * 30 + [0] * 70)
    curve = decision_curve(y, np.full(100, 0.5), thresholds=[0.2])
    # treat all at pt = 0.2: prevalence - (1 - prevalence) * pt / (1 - pt) = 0.3 - 0.7 * 0.25
    assert curve["treat_all"].iloc[0] == pytest.approx(0.125)
    assert curve["treat_none"].iloc[0] == 0
    assert curve["model"].iloc[0] == pytest.approx(0.125)  # everyone above the threshold: treat all
    # a perfect model's net benefit is the prevalence, at any threshold
    assert net_benefit(y, y.astype(float), 0.3) == pytest.approx(0.3)
    # 20 true and 10 false positives at pt = 0.25: 0.20 - 0.10 * (1/3)
    p = np.r_[np.full(20, 0.9), np.full(10, 0.1), np.full(10, 0.9), np.full(60, 0.1)]
    assert net_benefit(y, p, 0.25) == pytest.approx(0.2 - 0.1 / 3)


def test_youden_threshold_and_calibration():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert youden_threshold(y, s) == pytest.approx(0.7)
    y, s = scores_with_signal(n=400, seed=4, shift=2.0)
    probability = 1 / (1 + np.exp(-(2 * s - 2)))
    result = calibration(y, probability)
    assert len(result["observed"]) == len(result["predicted"]) == 5
    assert 0 <= result["brier"] <= 1 and np.isfinite(result["slope"])


# --------------------------------------------------------------------------- Table 1


def test_table1_picks_tests_by_data():
    rng = np.random.default_rng(0)
    n = 80
    he = np.r_[np.zeros(60, int), np.ones(20, int)]
    table = pd.DataFrame(
        {
            "he": he,
            "clin_age": rng.normal(65, 10, n) + 5 * he,  # normal: mean ± SD, t-test
            "clin_d_dimer": rng.lognormal(0, 1.2, n) * (1 + he),  # skewed: median [IQR], Mann-Whitney
            "clin_rare": np.r_[np.zeros(58), np.ones(2), np.zeros(18), np.ones(2)],  # expected < 5: Fisher
            "clin_sex": rng.integers(0, 2, n),  # common: chi-square
            "rad_volume": rng.normal(size=n),  # not clinical: not in Table 1 by default
        }
    )
    table.loc[3, "clin_age"] = np.nan
    result = table1(table).set_index("variable")
    assert list(result.index) == ["clin_age", "clin_d_dimer", "clin_rare", "clin_sex"]
    assert result.loc["clin_age", "test"] == "Welch t-test" and result.loc["clin_age", "summary"] == "mean ± SD"
    assert result.loc["clin_age", "missing"] == 1
    assert result.loc["clin_d_dimer", "test"] == "Mann-Whitney U"
    assert result.loc["clin_d_dimer", "summary"] == "median [IQR]"
    assert result.loc["clin_rare", "test"] == "Fisher exact"
    assert result.loc["clin_rare", "no HE"] == "2 (3.3%)" and result.loc["clin_rare", "HE"] == "2 (10.0%)"
    assert result.loc["clin_sex", "test"] == "chi-square"
    assert result["p_value"].between(0, 1).all()
    assert result.attrs["n"] == {"no HE": 60, "HE": 20}


# --------------------------------------------------------------------------- baselines


def brain_table():
    return pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "e", "f"],
            "he": [1, 0, 1, 0, 1, 0],
            "clin_baseline_volume_ml": [15.0, 10.0, 20.1, 20.0, 30.0, np.nan],
            "clin_anticoagulation": [1, 0, 0, 0, 1, 0],
            "clin_onset_to_ct_hours": [1.5, 1.0, 5.0, 5.01, 0.5, 2.0],
            "clin_ivh": [1, 0, 0, 1, np.nan, 0],
        }
    )


def test_brain_score_hand_computed():
    score, notes = brain_score(brain_table())
    # a: 15 mL -> 5, warfarin 6, 1.5 h -> 4, IVH 2 = 17
    # b: 10 mL -> 0, 1.0 h -> 5 = 5;  c: 20.1 mL -> 7, 5.0 h -> 1 = 8
    # d: 20 mL -> 5, 5.01 h -> 0, IVH 2 = 7;  e: 30 mL -> 7, 6, 0.5 h -> 5, IVH unknown -> 0 = 18
    # f: volume unknown -> NaN
    assert score.iloc[:5].tolist() == [17, 5, 8, 7, 18] and np.isnan(score.iloc[5])
    assert any("clin_recurrent_ich" in note for note in notes)
    assert any("clin_ivh missing for 1" in note for note in notes)
    with pytest.raises(KeyError, match="clin_onset_to_ct_hours"):
        brain_score(brain_table().drop(columns=["clin_onset_to_ct_hours"]))


def clinical_table(n=120, seed=0):
    rng = np.random.default_rng(seed)
    he = rng.integers(0, 2, n)
    table = synthetic_table(n=n, n_rad=6, n_clin=3, seed=seed)
    table["he"] = he
    table["clin_baseline_volume_ml"] = rng.gamma(2.0, 8.0, n) + 12 * he
    table["clin_anticoagulation"] = (rng.random(n) < 0.1 + 0.2 * he).astype(int)
    table["clin_onset_to_ct_hours"] = rng.uniform(0.5, 8, n) - 1.5 * he
    table.loc[5, "clin_baseline_volume_ml"] = np.nan
    return table


def test_baselines_on_the_same_test_patients():
    table = clinical_table()
    train, test = table.iloc[:70], table.iloc[70:]
    model_scores = np.linspace(0, 1, len(test))
    result = evaluate_baselines(train, test, model_scores=model_scores)
    json.dumps(result, allow_nan=False)
    assert [result[k]["status"] for k in ("baseline_volume", "clinical_logistic", "brain_score")] == ["ok"] * 3
    volume = result["baseline_volume"]
    assert volume["metrics"]["n"] == len(test)
    raw_auc = roc_auc_score(test["he"], test["clin_baseline_volume_ml"])
    assert volume["score_auc"]["auc"] == pytest.approx(raw_auc)
    assert volume["vs_model"]["auc_a"] == pytest.approx(roc_auc_score(test["he"], model_scores))
    assert result["brain_score"]["score_auc"]["auc"] > 0.6  # BRAIN's variables carry the signal here
    # absent variables: skipped with a note, the rest still evaluated
    reduced = evaluate_baselines(train.drop(columns=["clin_anticoagulation"]), test.drop(columns=["clin_anticoagulation"]))
    assert reduced["brain_score"]["status"] == "skipped" and "clin_anticoagulation" in reduced["brain_score"]["notes"][0]
    assert reduced["clinical_logistic"]["status"] == "ok"


# --------------------------------------------------------------------------- evaluate_model, importance


@pytest.fixture(scope="module")
def fitted_and_test():
    table = synthetic_table(n=100, n_rad=10, n_clin=4, informative=3, seed=5)
    train, test = table.iloc[:60], table.iloc[60:]
    with threadpool_limits(limits=1):
        model = fit_model(build_model("logistic", groups=("rad", "clin"), **SMALL), *model_inputs(train))
    return model, test


def test_evaluate_model_gathers_everything_as_json(fitted_and_test):
    model, test = fitted_and_test
    result = evaluate_model(model, test, ci="both", n_bootstraps=200)
    json.dumps(result, allow_nan=False)
    assert result["n"] == 40 and result["threshold"] == 0.5
    assert set(result["auc_ci"]) == {"delong", "bootstrap"}
    assert result["auc"] == pytest.approx(roc_auc_score(test["he"], model.predict_proba(model_inputs(test)[0])[:, 1]))
    assert list(result["classification_report"]) == ["no HE", "HE", "macro avg", "weighted avg"]
    (tn, fp), (fn, tp) = result["confusion_matrix"]["rows_true_columns_predicted"]
    assert tn + fp + fn + tp == 40 and result["accuracy"] == pytest.approx((tn + tp) / 40)
    for key in ("average_precision", "brier", "calibration", "decision_curve", "roc_curve", "predictions", "model"):
        assert key in result
    assert result["predictions"][0]["patient_id"] == "P060"


def test_top_features_find_the_informative_columns(fitted_and_test):
    model, test = fitted_and_test
    top = permutation_top_features(model, test, n=15, n_repeats=5, seed=0)
    assert list(top.columns) == ["feature", "importance_mean", "importance_std"]
    assert len(top) <= 15 and top["importance_mean"].is_monotonic_decreasing
    assert top["feature"].iloc[0] in {"rad_f0", "rad_f1", "rad_f2"}  # make_classification puts signal first
    coefficients = coefficient_top_features(model)
    assert coefficients["abs_coef"].is_monotonic_decreasing and len(coefficients) == 2 * 3  # k=3 of rad, of clin


# --------------------------------------------------------------------------- leakage


def noise_table(seed, n=100, p=2000):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"rad_{i}" for i in range(p)])
    table.insert(0, "patient_id", [f"N{i:03d}" for i in range(n)])
    table.insert(1, "he", rng.permutation(np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]))
    return table


def test_noise_scores_chance_honestly_but_high_when_leaky():
    honest_cv, honest_split, leaky = [], [], []
    kwargs = dict(classifier="logistic", k_grid=(20,), cv=3, grid="small")
    for seed in range(3):
        table = noise_table(seed)
        honest_cv.append(cross_validated_auc(table, kwargs, cv=5, seed=seed)["mean"])
        train, test = table.iloc[:70], table.iloc[70:]
        model = fit_model(build_model(**kwargs), *model_inputs(train))
        honest_split.append(roc_auc_score(test["he"], model.predict_proba(model_inputs(test)[0])[:, 1]))
        # The leak: features selected on all patients, then cross-validated.
        X, y = model_inputs(table)
        X_leaky = SelectKBest(f_classif, k=20).fit_transform(X, y)
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        leaky.append(cross_val_score(LogisticRegression(), X_leaky, y, cv=folds, scoring="roc_auc").mean())
    assert abs(np.mean(honest_cv) - 0.5) < 0.15
    assert abs(np.mean(honest_split) - 0.5) < 0.15
    assert np.mean(leaky) > 0.7


class RecordFitIds(TransformerMixin, BaseEstimator):
    """Passes data through; records the patient ids of every fit (class-level, survives clone)."""

    seen: list[set] = []

    def fit(self, X, y=None):
        RecordFitIds.seen.append(set(X.index))
        return self

    def transform(self, X):
        return X


def recording_model(**kwargs):
    search = build_model(**kwargs)
    search.estimator.steps.insert(0, ("record", RecordFitIds()))
    return search


def test_no_test_patient_reaches_any_fit(monkeypatch):
    table = synthetic_table(n=60, n_rad=6, n_clin=2, seed=6)
    train, test = table.iloc[:40], table.iloc[40:]
    RecordFitIds.seen = []
    model = fit_model(recording_model(classifier="svm", **SMALL), *model_inputs(train))
    evaluate_model(model, test)
    permutation_top_features(model, test, n_repeats=2)
    # fit_model's cache fits each fold's steps once for all candidates: 3 inner folds x the repeats + the refit
    assert len(RecordFitIds.seen) == 3 * DEFAULT_CV_REPEATS + 1
    test_ids = set(test["patient_id"])
    assert all(ids and not ids & test_ids for ids in RecordFitIds.seen)

    # cross-validation: every fit of outer fold i sees only fold i's training patients
    built = []

    def build_and_count(**kwargs):
        built.append(len(RecordFitIds.seen))
        return recording_model(**kwargs)

    monkeypatch.setattr(validation, "build_model", build_and_count)
    RecordFitIds.seen = []
    cross_validated_auc(table, dict(classifier="logistic", **SMALL), cv=4, seed=1)
    X, y = model_inputs(table)
    outer = list(StratifiedKFold(4, shuffle=True, random_state=1).split(X, y))
    starts = [*built, len(RecordFitIds.seen)]
    for fold, (train_index, test_index) in enumerate(outer):
        fits = RecordFitIds.seen[starts[fold] : starts[fold + 1]]
        assert fits and all(ids <= set(X.index[train_index]) for ids in fits)


# --------------------------------------------------------------------------- nested CV, ablation


def test_nested_cv_excludes_cnn_and_reports_each_fold():
    table = synthetic_table(n=60, n_rad=5, n_clin=2, n_cnn=4, seed=7)
    with pytest.warns(UserWarning, match="CNN features are excluded"):
        result = nested_cv(table, dict(classifier="logistic", **SMALL), outer_splits=3, repeats=2, seed=0, progress=False)
    assert len(result["fold_aucs"]) == 6 and result["groups"] == ["rad", "clin"]
    assert "CNN features are excluded" in result["notes"][0]
    assert result["mean"] == pytest.approx(np.mean(result["fold_aucs"]))
    assert result["mean"] > 0.6
    json.dumps(result, allow_nan=False)


def test_ablation_fits_available_sets_on_the_same_patients():
    table = synthetic_table(n=80, n_rad=5, n_clin=3, seed=8)
    train, test = table.iloc[:50], table.iloc[50:]
    result = ablation(train, test, dict(classifier="logistic", **SMALL)).set_index("feature_set")
    assert result.loc["cnn", "status"] == "skipped" and "cnn_" in result.loc["cnn", "note"]
    assert result.loc["hybrid", "status"] == "skipped"
    fitted = result[result["status"] == "ok"]
    assert list(fitted.index) == ["radiomics", "clinical", "radiomics+clinical"]
    assert (fitted["reference"] == "radiomics+clinical").all()
    assert fitted.loc["radiomics+clinical", "p_vs_reference"] == 1.0
    assert fitted["auc"].between(0, 1).all()
