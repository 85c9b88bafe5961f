"""The searched model averaged with the known-predictor model (hematoma.model_blend, build_model(prior="known"))."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.evaluation.importance import input_columns_used
from hematoma.model import DEFAULT_PRIOR_WEIGHT, build_model, fit_model, fitted_pipeline, model_inputs, model_summary
from hematoma.model_blend import PriorBlend
from hematoma.model_bundle import load_model, save_model

from test_known_predictors import cohort

runner = CliRunner()
SMALL = {"classifier": "logistic", "grid": "small", "cv_repeats": 1}
GROUPS = ("rad", "clin", "sign")


def fitted(table, **kwargs):
    X, y = model_inputs(table, groups=GROUPS)
    return fit_model(build_model(groups=GROUPS, prior="known", **{**SMALL, **kwargs}), X, y)


def test_probability_is_the_weighted_mean_of_the_two_fitted_models():
    table = cohort(160)
    train, test = table.iloc[:100], table.iloc[100:]
    model = fitted(train, prior_weight=0.3)
    assert isinstance(model, PriorBlend)
    X_test, _ = model_inputs(test, groups=GROUPS)
    expected = 0.7 * model.model_.predict_proba(X_test) + 0.3 * model.prior_.predict_proba(X_test)
    assert model.predict_proba(X_test) == pytest.approx(expected)
    assert model.predict(X_test).tolist() == (expected[:, 1] >= 0.5).astype(int).tolist()
    summary = model_summary(model)
    assert summary["prior"] == "known" and summary["prior_model"]["weight"] == 0.3
    assert summary["prior_model"]["columns"][:2] == ["clin_baseline_volume_ml", "clin_onset_to_ct_hours"]
    assert fitted_pipeline(model).named_steps["groups"].columns_  # the search's Pipeline, for importances
    assert "clin_gcs" in input_columns_used(model)  # the known model's columns are scored too


def test_both_parts_see_only_the_training_patients():
    table = cohort(160)
    train = table.iloc[:100]
    model = fitted(train)
    known = model.prior_.best_estimator_
    train_volume = np.log(train["clin_baseline_volume_ml"])
    assert known.named_steps["scale"].mean_[0] == pytest.approx(train_volume.mean())
    search_scale = fitted_pipeline(model).named_steps["scale"]
    X_train, _ = model_inputs(train, groups=GROUPS)
    column = list(fitted_pipeline(model).named_steps["groups"].columns_).index("rad_noise")
    assert search_scale.mean_[column] == pytest.approx(X_train["rad_noise"].mean())


def test_bundle_round_trip_keeps_predictions(tmp_path):
    table = cohort(120)
    model = fitted(table.iloc[:80])
    X_test, _ = model_inputs(table.iloc[80:], groups=GROUPS)
    save_model(model, tmp_path / "bundle")
    loaded = load_model(tmp_path / "bundle")
    assert loaded.estimator.predict_proba(X_test) == pytest.approx(model.predict_proba(X_test))


def test_bad_settings_are_one_line():
    with pytest.raises(InputError, match="unknown prior"):
        build_model(prior="bayes")
    with pytest.raises(InputError, match="prior_weight"):
        build_model(prior="known", prior_weight=1.5)
    from hematoma.pipeline import RunSettings

    with pytest.raises(InputError, match="--prior-weight must be a number from 0 to 1"):  # before any extraction
        RunSettings(groups="rad,clin", prior_weight=2.0)
    assert RunSettings(groups="rad,clin").prior_weight is None  # resolved, and recorded, by TrainSettings


def _table(tmp_path, n=80):
    folder = tmp_path / "features"
    folder.mkdir()
    cohort(n).to_csv(folder / "features.csv", index=False)
    return folder


def test_train_uses_the_prior_by_default_and_on_request(tmp_path):
    folder = _table(tmp_path)
    fast = ["--classifier", "logistic", "--grid", "small", "--inner-repeats", "1"]
    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "auto"), *fast])
    assert result.exit_code == 0, result.output
    assert f"averaged with the known-predictor model (weight {DEFAULT_PRIOR_WEIGHT:g})" in " ".join(result.output.split())
    bundle = json.loads((tmp_path / "auto" / "bundle.json").read_text())
    assert bundle["summary"]["prior"] == "known"
    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "none"), "--prior", "none", *fast])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "none" / "bundle.json").read_text())["summary"]["prior"] == "none"
    # asked for, but the chosen groups hold none of its variables: one line, exit 2
    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "rad"), "--prior", "known",
                                 "--features", "rad", *fast])
    assert result.exit_code == 2 and "--prior known needs at least one known predictor" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "rad").exists()
    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "bad"), "--prior", "bayes", *fast])
    assert result.exit_code == 2 and "unknown prior 'bayes'" in result.output


def test_train_takes_the_prior_weight_and_refuses_a_bad_one(tmp_path):
    folder = _table(tmp_path)
    fast = ["--classifier", "logistic", "--grid", "small", "--inner-repeats", "1"]
    result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "w"), "--prior-weight", "0.4", *fast])
    assert result.exit_code == 0, result.output
    assert "averaged with the known-predictor model (weight 0.4)" in " ".join(result.output.split())
    bundle = json.loads((tmp_path / "w" / "bundle.json").read_text())
    assert bundle["summary"]["prior_model"]["weight"] == pytest.approx(0.4)
    assert bundle["settings"]["prior_weight"] == pytest.approx(0.4)
    for bad in ("1.5", "-0.1", "nan"):
        result = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / f"bad{bad}"), "--prior-weight", bad,
                                     *fast])
        assert result.exit_code == 2 and "--prior-weight must be a number from 0 to 1" in result.output, result.output
        assert "Traceback" not in result.output and not (tmp_path / f"bad{bad}").exists()


def test_the_cli_help_states_the_default_prior_weight():
    from hematoma.commands.modeling import _PRIOR_WEIGHT_HELP

    assert f"Default: {DEFAULT_PRIOR_WEIGHT:g}." in _PRIOR_WEIGHT_HELP


def test_a_tuned_threshold_blend_saves_with_trusted_types_only(tmp_path):
    table = cohort(120)
    model = fitted(table, threshold="youden", threshold_cv=2)
    assert model_summary(model)["prior"] == "known" and 0 < model_summary(model)["threshold"] < 1
    save_model(model, tmp_path / "bundle")  # refuses a type outside TRUSTED_TYPES
    X, _ = model_inputs(table, groups=GROUPS)
    assert load_model(tmp_path / "bundle").estimator.predict_proba(X) == pytest.approx(model.predict_proba(X))
