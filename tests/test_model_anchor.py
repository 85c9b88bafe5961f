"""The model averaged with the BRAIN score's published risk (hematoma.model_anchor, build_model(anchor="brain"))."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from hematoma.brain_score import brain_risk, brain_score
from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.evaluation.importance import input_columns_used
from hematoma.model import (DEFAULT_ANCHOR_WEIGHT, anchor_of, blend_of, build_model, fit_model, fitted_pipeline,
                            model_inputs, model_summary)
from hematoma.model_anchor import ScoreAnchor, rate_offset
from hematoma.model_bundle import load_model, save_model

from test_known_predictors import cohort as known_cohort

runner = CliRunner()
SMALL = {"classifier": "logistic", "grid": "small", "cv_repeats": 1}
GROUPS = ("rad", "clin", "sign")


def cohort(n=160, seed=0):
    """The known-predictor test cohort plus the BRAIN score's anticoagulation column (one onset time blank)."""
    table = known_cohort(n, seed)
    rng = np.random.default_rng(seed + 1)
    table["clin_anticoagulation"] = (rng.random(n) < 0.1).astype(float)
    table.loc[5, "clin_onset_to_ct_hours"] = np.nan
    return table


def fitted(table, **kwargs):
    X, y = model_inputs(table, groups=GROUPS)
    return fit_model(build_model(groups=GROUPS, prior="known", anchor="brain", **{**SMALL, **kwargs}), X, y)


def test_probability_is_the_weighted_mean_of_the_model_and_the_published_risk_shifted_to_the_training_rate():
    table = cohort()
    train, test = table.iloc[:100], table.iloc[100:]
    model = fitted(train, anchor_weight=0.3)
    assert isinstance(model, ScoreAnchor) and anchor_of(model) is model and blend_of(model) is model.model_
    X_test, _ = model_inputs(test, groups=GROUPS)
    score, _ = brain_score(test)
    mean = 0.7 * model.model_.predict_proba(X_test)[:, 1] + 0.3 * brain_risk(score)
    assert model.offset_ != 0.0
    assert model.predict_proba(X_test)[:, 1] == pytest.approx(expit(logit(mean) + model.offset_))
    # the shift: the mean probability over the training patients equals their HE rate
    X_train, y_train = model_inputs(train, groups=GROUPS)
    assert model.predict_proba(X_train)[:, 1].mean() == pytest.approx(y_train.mean(), abs=1e-6)
    # monotone: the ranking, and so the AUC, is that of the plain average
    unshifted = ScoreAnchor(model.model, "brain", 0.3, recalibrate=False).fit(X_train, y_train)
    assert unshifted.offset_ == 0.0
    assert unshifted.predict_proba(X_test)[:, 1] == pytest.approx(mean, rel=1e-6)
    assert roc_auc_score(test["he"], unshifted.predict_proba(X_test)[:, 1]) == \
        pytest.approx(roc_auc_score(test["he"], model.predict_proba(X_test)[:, 1]))
    assert model.predict_proba(X_test).sum(axis=1) == pytest.approx(1.0)
    summary = model_summary(model)
    assert summary["anchor"] == "brain" and summary["anchor_model"]["weight"] == 0.3
    assert summary["anchor_model"]["logit_offset"] == pytest.approx(model.offset_)
    assert summary["prior"] == "known"  # the blend inside is still found
    assert summary["anchor_model"]["columns"] == ["clin_baseline_volume_ml", "clin_anticoagulation",
                                                  "clin_onset_to_ct_hours"]
    assert fitted_pipeline(model).named_steps["groups"].columns_  # the search's Pipeline, for importances
    assert "clin_anticoagulation" in input_columns_used(model)  # the score's columns are scored too


def test_a_patient_without_a_score_gets_the_model_alone():
    table = cohort()
    X_train, y_train = model_inputs(table.iloc[20:], groups=GROUPS)
    model = ScoreAnchor(build_model(groups=GROUPS, prior="known", **SMALL), recalibrate=False).fit(X_train, y_train)
    X, _ = model_inputs(table.iloc[:20], groups=GROUPS)
    assert np.isnan(X["clin_onset_to_ct_hours"].iloc[5])
    assert model.predict_proba(X)[5, 1] == pytest.approx(model.model_.predict_proba(X)[5, 1])
    assert np.isnan(model.score_risk(X)[5]) and np.isfinite(np.delete(model.score_risk(X), 5)).all()


def test_a_new_patient_is_scored_on_the_training_tables_items_and_alone():
    table = cohort()
    model = fitted(table.iloc[:100])
    X, _ = model_inputs(table.iloc[100:], groups=GROUPS)
    with_ivh = X.assign(clin_ivh=1.0)  # a column the training table lacked: its 2 points must not appear
    assert model.predict_proba(with_ivh) == pytest.approx(model.predict_proba(X))
    one_by_one = np.concatenate([model.predict_proba(X.iloc[[i]]) for i in range(len(X))])
    assert one_by_one == pytest.approx(model.predict_proba(X))  # nothing is learned from the other test patients


def test_the_anchor_fits_only_its_model():
    table = cohort()
    train, test = table.iloc[:100], table.iloc[100:]
    model = fitted(train)
    X_test, _ = model_inputs(test, groups=GROUPS)
    twin = fitted(train)
    changed = test.assign(he=1 - test["he"])  # other labels on the test patients change nothing
    assert twin.predict_proba(model_inputs(changed, groups=GROUPS)[0]) == pytest.approx(model.predict_proba(X_test))
    known = model.model_.prior_.best_estimator_
    assert known.named_steps["scale"].mean_[0] == pytest.approx(np.log(train["clin_baseline_volume_ml"]).mean())


def test_bundle_round_trip_with_a_tuned_threshold_keeps_predictions(tmp_path):
    table = cohort(120)
    model = fitted(table, threshold="youden", threshold_cv=2)
    assert model_summary(model)["anchor"] == "brain" and 0 < model_summary(model)["threshold"] < 1
    save_model(model, tmp_path / "bundle")  # refuses a type outside TRUSTED_TYPES
    X, _ = model_inputs(table, groups=GROUPS)
    assert load_model(tmp_path / "bundle").estimator.predict_proba(X) == pytest.approx(model.predict_proba(X))


def test_bad_settings_are_one_line():
    with pytest.raises(InputError, match="unknown anchor 'spot'"):
        build_model(anchor="spot")
    with pytest.raises(InputError, match="anchor_weight must be a number from 0 to 1"):
        build_model(anchor="brain", anchor_weight=float("nan"))
    X, y = model_inputs(cohort().drop(columns=["clin_anticoagulation"]), groups=GROUPS)
    with pytest.raises(ValueError, match="clin_anticoagulation"):
        build_model(groups=GROUPS, anchor="brain", **SMALL).fit(X, y)
    with pytest.raises(TypeError, match="DataFrame"):
        ScoreAnchor(build_model(groups=GROUPS, **SMALL)).fit(X.to_numpy(), y)
    from hematoma.pipeline import RunSettings

    with pytest.raises(InputError, match="--anchor-weight must be a number from 0 to 1"):  # before any extraction
        RunSettings(groups="rad,clin", anchor_weight=-0.5)
    with pytest.raises(InputError, match="unknown anchor 'spot'"):
        RunSettings(groups="rad,clin", anchor="spot")


def _table(tmp_path, table, name="features"):
    folder = tmp_path / name
    folder.mkdir()
    table.to_csv(folder / "features.csv", index=False)
    return folder


FAST = ["--classifier", "logistic", "--grid", "small", "--inner-repeats", "1"]


def test_train_anchors_on_request_and_auto_only_where_the_table_allows(tmp_path):
    folder = _table(tmp_path, cohort(80))
    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "brain"), "--anchor", "brain",
                                 "--anchor-weight", "0.4", *FAST])
    assert result.exit_code == 0, result.output
    assert "anchored to the BRAIN score (weight 0.4)" in " ".join(result.output.split())
    bundle = json.loads((tmp_path / "brain" / "bundle.json").read_text())
    assert bundle["summary"]["anchor_model"]["weight"] == pytest.approx(0.4)
    assert bundle["settings"]["anchor"] == "brain" and bundle["settings"]["anchor_weight"] == pytest.approx(0.4)

    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "auto"), "--anchor", "auto", *FAST])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "auto" / "bundle.json").read_text())["summary"]["anchor"] == "brain"
    lacking = _table(tmp_path, cohort(80).drop(columns=["clin_anticoagulation"]), "lacking")
    result = runner.invoke(app, ["train", str(lacking), "--out", str(tmp_path / "auto2"), "--anchor", "auto", *FAST])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "auto2" / "bundle.json").read_text())["summary"]["anchor"] == "none"

    # asked for, but the chosen groups lack its columns: one line, exit 2, nothing written
    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "rad"), "--anchor", "brain",
                                 "--features", "rad,sign", *FAST])
    assert result.exit_code == 2 and "--anchor brain needs the column(s) clin_baseline_volume_ml" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "rad").exists()
    for bad, message in (("1.5", "--anchor-weight must be a number from 0 to 1"),):
        result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "bad"), "--anchor-weight", bad,
                                     *FAST])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "bad").exists()


def test_the_cli_help_states_the_defaults():
    from hematoma.commands.modeling import _ANCHOR_HELP, _ANCHOR_WEIGHT_HELP
    from hematoma.protocols import DEFAULT_TRAINING_ANCHOR

    assert f"Default: {DEFAULT_TRAINING_ANCHOR}." in _ANCHOR_HELP
    assert f"Default: {DEFAULT_ANCHOR_WEIGHT:g}." in _ANCHOR_WEIGHT_HELP


def test_brain_score_counts_only_the_optional_items_asked_for():
    table = pd.DataFrame({"clin_baseline_volume_ml": [25.0], "clin_anticoagulation": [1], "clin_onset_to_ct_hours": [0.5],
                          "clin_ivh": [1], "clin_recurrent_ich": [1]})
    assert brain_score(table)[0].iloc[0] == 7 + 6 + 5 + 2 + 4  # every item: the full 24 points
    score, notes = brain_score(table, optional=["clin_ivh"])
    assert score.iloc[0] == 7 + 6 + 5 + 2 and any("clin_recurrent_ich" in n for n in notes)


def test_impossible_values_make_an_item_unknown_not_the_most_points():
    table = pd.DataFrame({"clin_baseline_volume_ml": [25.0, -3.0, 25.0, 25.0, 25.0],
                          "clin_anticoagulation": [0, 0, 2, 0.3, 1], "clin_onset_to_ct_hours": [3.5, 3.5, 3.5, 3.5, -1.0],
                          "clin_ivh": [9, 0, 0, 0, 0]})
    score, notes = brain_score(table)
    assert score.iloc[0] == 7 + 2  # IVH coded 9 (unknown): counted 0, and said
    assert np.isnan(score.iloc[1:]).all()  # negative volume, anticoagulation 2 or 0.3, negative onset time
    assert any("clin_ivh missing for 1" in n for n in notes)


def test_the_report_counts_test_patients_the_anchor_could_not_score(tmp_path):
    from hematoma.assessment import _anchor_notes
    from hematoma.model_bundle import load_model

    table = cohort(120)
    save_model(fitted(table.iloc[:80]), tmp_path / "bundle")
    bundle = load_model(tmp_path / "bundle")
    test = table.iloc[80:].copy()
    test.loc[test.index[:3], "clin_anticoagulation"] = np.nan
    notes = _anchor_notes(bundle, test, "he")
    assert any("3 of 40 test patients lack" in n for n in notes), notes
    assert any("no clin_ivh column: its 2 points count as 0 for everyone" in n for n in notes)  # the training table's


def test_nested_cv_estimates_the_anchored_model_it_saves_and_refuses_early(tmp_path):
    from hematoma.protocols import TrainSettings, train

    folder = _table(tmp_path, cohort(80))
    args = ["--protocol", "nested-cv", *FAST]
    settings = TrainSettings(protocol="nested-cv", classifier="logistic", grid="small", inner_repeats=1, repeats=1,
                             outer_splits=3)  # the defaults' anchor and prior; few folds (bookkeeping, not skill)
    train(folder, tmp_path / "nested", settings, progress=False)
    bundle = json.loads((tmp_path / "nested" / "bundle.json").read_text())
    assert bundle["summary"]["anchor"] == "brain"
    folds = bundle["evaluation"]["nested_cv"]["folds"]
    assert len(folds) == 3
    assert folds and {f["anchor"] for f in folds} == {"brain"} and {f["prior"] for f in folds} == {"known"}
    # asked for, and the table cannot give it: one line before any fold is fitted, nothing written
    lacking = _table(tmp_path, cohort(80).drop(columns=["clin_anticoagulation"]), "lacking")
    result = runner.invoke(app, ["train", str(lacking), "--out", str(tmp_path / "bad"), "--anchor", "brain", *args])
    assert result.exit_code == 2 and "--anchor brain needs the column(s) clin_anticoagulation" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "bad").exists()


def test_run_refuses_an_anchor_or_prior_its_feature_groups_cannot_give_before_any_work():
    from hematoma.pipeline import RunSettings

    with pytest.raises(InputError, match="--anchor brain needs the clin feature group"):
        RunSettings(groups="rad,cnn", anchor="brain")
    with pytest.raises(InputError, match="--prior known needs the clin or sign feature group"):
        RunSettings(groups="rad,cnn", prior="known")
    assert RunSettings(groups="rad,cnn").anchor is None  # auto: resolved from the table at training
    with pytest.raises(InputError, match="anchor 'brain' needs the clin feature group"):
        build_model(groups=("rad",), anchor="brain")


def test_rate_offset_reaches_the_rate_from_either_side():
    p = np.array([0.05, 0.1, 0.2, 0.4])
    for rate in (0.05, 0.3, 0.9):
        assert expit(logit(p) + rate_offset(p, rate)).mean() == pytest.approx(rate, abs=1e-9)
    assert rate_offset(p, p.mean()) == pytest.approx(0.0, abs=1e-9)


def test_the_shift_leaves_patients_without_a_score_as_the_model_put_them():
    table = cohort()
    model = fitted(table.iloc[20:])
    X, _ = model_inputs(table.iloc[:20], groups=GROUPS)
    assert model.offset_ != 0.0 and np.isnan(model.score_risk(X)[5])
    assert model.predict_proba(X)[5, 1] == pytest.approx(model.model_.predict_proba(X)[5, 1])
    p = np.array([0.1, 0.2, 0.6, 0.3])
    shifted = np.array([True, True, False, True])
    offset = rate_offset(p, 0.3, shifted)
    assert (expit(logit(p[shifted]) + offset).sum() + 0.6) / 4 == pytest.approx(0.3, abs=1e-9)
    assert rate_offset(p, 0.01, np.zeros(4, dtype=bool)) == 0.0
