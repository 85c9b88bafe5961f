"""`hematoma run` / `train` / `evaluate`: the protocols end to end on a tiny synthetic cohort.

One cohort of 30 small patients is generated once per session (`synthetic_cohort`,
in conftest.py); the run without CNN features is shared by every test here and in
test_predict.py.  The run with the CNN (1 epoch, random weights) starts from a
copy of that run's output folder, so its extraction is skipped.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.model import unblended
from hematoma.model_bundle import load_model
from hematoma.pipeline import RunSettings, run_protocol
from hematoma.report.build import FIGURES, SECTIONS

from conftest import PIPELINE_PATIENTS as N_PATIENTS, PIPELINE_QUICK as QUICK, PIPELINE_SEED as SEED

runner = CliRunner()


def _stamps(folder: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.glob(pattern)}


def _bundle(model_dir: Path) -> dict:
    return json.loads((model_dir / "bundle.json").read_text())


def _one_line_error(result) -> str:
    assert result.exit_code != 0
    text = result.output.strip()
    assert len(text.splitlines()) == 1, text
    return text


# --------------------------------------------------------------------------- the run


def test_report_has_every_section_figure_and_png(synthetic_run):
    out, result = synthetic_run
    report = out / "report"
    html = (report / "report.html").read_text()
    for key, caption in SECTIONS.items():
        if key != "coefficients":  # only for linear classifiers
            assert caption in html, caption
    for name in ("roc.png", "pr.png", "calibration.png", "decision_curve.png", "confusion_matrix.png", "top_features.png"):
        assert (report / name).stat().st_size > 1000, name
        assert FIGURES[name].replace("'", "&#39;") in html
    assert html.count("data:image/png;base64,") >= 6
    assert not re.search(r'src="(?!data:)', html)  # self-contained
    # The summary says what the model's probability is made of: the run's default averages and anchors it.
    from hematoma.model import DEFAULT_ANCHOR_WEIGHT, DEFAULT_PRIOR_WEIGHT

    assert f"the known-predictor logistic regression, weight {DEFAULT_PRIOR_WEIGHT:g}" in html
    assert re.search(rf"model anchored to</\w+>\s*<\w+>the BRAIN score.{{1,6}}s published risk, weight "
                     rf"{DEFAULT_ANCHOR_WEIGHT:g} .*then shifted by [-+][0-9.]+ on the logit scale to the training HE rate", html), \
        "the anchor is not in the summary"
    metrics = json.loads((report / "metrics.json").read_text())
    assert 0 <= metrics["model"]["auc"] <= 1 and metrics["model"]["auc_ci"]["delong"]["lower"] <= metrics["model"]["auc"]
    assert metrics["oracle"]["auc"]["auc"] == pytest.approx(result.oracle_auc["auc"])


def test_ablation_and_baselines_are_on_the_same_test_patients(synthetic_run):
    out, result = synthetic_run
    metrics = result.metrics
    n_test = metrics["model"]["n"]
    ablation = {row["feature_set"]: row for row in metrics["ablation"]}
    assert set(ablation) == {"radiomics", "clinical", "cnn", "signs", "radiomics+clinical", "signs+clinical",
                             "radiomics+clinical+signs", "hybrid", "ct-network", "radiomics+clinical+ct-network"}
    assert ablation["ct-network"]["status"] == "skipped"  # no deep_ columns without --method deep
    assert ablation["signs"]["status"] == ablation["signs+clinical"]["status"] == "ok"  # every case has its signs
    assert ablation["radiomics+clinical"]["auc"] == pytest.approx(metrics["model"]["auc"])  # the model itself
    assert ablation["radiomics"]["status"] == ablation["clinical"]["status"] == "ok"
    assert ablation["cnn"]["status"] == "skipped"  # no CNN in this run
    baselines = metrics["baselines"]
    assert set(baselines) == {"baseline_volume", "clinical_logistic", "known_predictors", "brain_score", "bat_score"}
    for entry in baselines.values():
        assert entry["status"] == "ok"
        assert entry["metrics"]["n"] == n_test
        assert {p["patient_id"] for p in entry["metrics"]["predictions"]} == {p["patient_id"] for p in metrics["model"]["predictions"]}


def test_no_test_patient_reaches_any_fit(synthetic_run):
    out, _ = synthetic_run
    split = pd.read_csv(out / "split.csv", dtype={"patient_id": str})
    parts = split.groupby("part")["patient_id"].apply(set).to_dict()
    settings = _bundle(out / "model")["settings"]
    train_ids, test_ids = set(settings["train_ids"]), set(settings["test_ids"])
    assert train_ids and test_ids
    assert not train_ids & parts["test"]
    assert train_ids <= parts["train"] and test_ids <= parts["test"]
    assert not train_ids & parts["cnn"]  # the paper: cohort 1 trains the CNN only
    features = pd.read_csv(out / "features.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert set(features.loc[sorted(train_ids), "he"]) == {0, 1}
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {p["patient_id"] for p in metrics["model"]["predictions"]} == test_ids


def test_rerun_skips_finished_stages_and_cases(synthetic_run, synthetic_cohort):
    out, _ = synthetic_run
    before = {**_stamps(out, "cases/*/case.json"), **_stamps(out, "model/*"), **_stamps(out, "report/*")}
    result = runner.invoke(app, ["run", str(synthetic_cohort), "--out", str(out), "--workers", "1", "--features",
                                 "rad,clin", "--seed", str(SEED), "--classifier", "logistic", "--grid", "small",
                                 "--inner-repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "test AUC" in result.output and "oracle AUC" in result.output
    after = {**_stamps(out, "cases/*/case.json"), **_stamps(out, "model/*"), **_stamps(out, "report/*")}
    assert after == before
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages["extract"]["counts"]["skipped"] == N_PATIENTS
    assert stages["train"]["status"].startswith("skipped") and stages["evaluate"]["status"].startswith("skipped")


# --------------------------------------------------------------------------- with the CNN


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a shared 2-core machine two spinning threads per process are several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_run_with_cnn_trains_on_cohort1_only_and_reruns_without_retraining(synthetic_run, synthetic_cohort, tmp_path,
                                                                          one_torch_thread):
    source, _ = synthetic_run
    out = tmp_path / "out"
    shutil.copytree(source, out)  # the extraction is reused (its cases are content-addressed)
    # 1 epoch from random weights: the protocol's bookkeeping is tested, not the CNN's skill.
    settings = RunSettings(workers=1, seed=SEED, cnn_preset="fast", cnn_weights="none", cnn_epochs=1, **QUICK)
    result = run_protocol(synthetic_cohort, out, settings, progress=False)
    split = pd.read_csv(out / "split.csv", dtype={"patient_id": str})
    cohort1 = set(split.loc[split["part"] == "cnn", "patient_id"])
    cnn_ids = set(pd.read_csv(out / "cnn" / "ids.csv", dtype={"patient_id": str})["patient_id"])
    assert cnn_ids and cnn_ids <= cohort1
    settings_json = _bundle(out / "model")["settings"]
    assert settings_json["groups"] == ["rad", "clin", "cnn"] and settings_json["cnn_model"] == str(out / "cnn")
    assert not set(settings_json["train_ids"]) & cnn_ids and not set(settings_json["test_ids"]) & cnn_ids
    assert sum(c.startswith("cnn_") for c in _bundle(out / "model")["feature_columns"]) == 6144
    ablation = {row["feature_set"]: row for row in result.metrics["ablation"]}
    assert ablation["hybrid"]["note"] == "the model evaluated"
    assert all(ablation[name]["status"] == "ok" for name in ("radiomics", "clinical", "cnn", "radiomics+clinical"))
    assert (out / "report" / "cnn_curves.png").is_file()
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages["extract"]["counts"]["skipped"] == N_PATIENTS

    cnn_files = _stamps(out, "cnn/*")
    run_protocol(synthetic_cohort, out, settings, progress=False)
    stages = json.loads((out / "run.json").read_text())["stages"]
    for stage in ("cnn", "embed", "train", "evaluate"):
        assert stages[stage]["status"].startswith("skipped"), stage
    assert _stamps(out, "cnn/*") == cnn_files
    table = pd.read_parquet(out / "features.parquet")
    assert sum(c.startswith("cnn_") for c in table.columns) == 6144  # cached features merged back


# --------------------------------------------------------------------------- train / evaluate CLI


@pytest.fixture
def table_with_fake_cnn(synthetic_run, tmp_path) -> Path:
    """The run's feature table with two made-up cnn_ columns, in a folder of its own."""
    out, _ = synthetic_run
    table = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    table = table.copy().assign(cnn_0000=range(len(table)), cnn_0001=1.0)
    (tmp_path / "t").mkdir()
    table.to_csv(tmp_path / "t" / "features.csv", index=False)
    shutil.copyfile(out / "split.csv", tmp_path / "t" / "split.csv")
    return tmp_path / "t" / "features.csv"


def test_train_paper_then_evaluate_cli(synthetic_run, tmp_path):
    out, _ = synthetic_run
    model, report = tmp_path / "model", tmp_path / "report"
    result = runner.invoke(app, ["train", str(out), "--out", str(model), "--features", "rad,clin",
                                 "--classifier", "logistic", "--grid", "small", "--seed", str(SEED)])
    assert result.exit_code == 0, result.output
    assert "held-out test part" in result.output
    assert _bundle(model)["settings"]["test_ids"] == _bundle(out / "model")["settings"]["test_ids"]
    result = runner.invoke(app, ["train", str(out), "--out", str(model)])
    assert "already exists" in _one_line_error(result)
    result = runner.invoke(app, ["evaluate", str(model), str(out), "--out", str(report)])
    assert result.exit_code == 0, result.output
    assert (report / "report.html").is_file() and (report / "roc.png").is_file()
    assert "oracle AUC" in result.output


def test_optional_groups_reach_the_search_and_the_summary_names_the_groups_used(table_with_fake_cnn, tmp_path):
    model = tmp_path / "optional"
    result = runner.invoke(app, ["train", str(table_with_fake_cnn), "--out", str(model), "--classifier", "logistic",
                                 "--grid", "small", "--optional-groups", "cnn"])
    assert result.exit_code == 0, result.output
    bundle = _bundle(model)
    assert bundle["settings"]["optional_groups"] == ["cnn"]
    used = bundle["summary"]["groups_used"]
    assert [g for g in used if g != "sign"] in (["rad", "clin"], ["rad", "clin", "cnn"])  # every group the table has
    assert ("left out by the inner CV: cnn" in " ".join(result.output.split())) == ("cnn" not in used)
    search = unblended(load_model(model).estimator)  # the feature search (the known-predictor prior beside it)
    assert {str(p.get("select__group_k")) for p in search.cv_results_["params"]} == {"None", "{'cnn': 0}"}
    result = runner.invoke(app, ["train", str(table_with_fake_cnn), "--out", str(tmp_path / "m2"), "--optional-groups", "bogus"])
    assert "unknown feature group" in _one_line_error(result)


def test_nested_cv_leaves_cnn_features_out_with_a_message(table_with_fake_cnn, tmp_path):
    model = tmp_path / "nested"
    result = runner.invoke(app, ["train", str(table_with_fake_cnn), "--out", str(model), "--protocol", "nested-cv",
                                 "--classifier", "logistic", "--grid", "small", "--inner-repeats", "1"])  # bookkeeping
    assert result.exit_code == 0, result.output
    assert "CNN features are excluded" in " ".join(result.output.split())
    bundle = _bundle(model)
    assert not any(c.startswith("cnn_") for c in bundle["feature_columns"])
    assert bundle["evaluation"]["nested_cv"]["groups"] == ["rad", "clin", "sign"]
    assert bundle["settings"]["test_ids"] == []
    result = runner.invoke(app, ["evaluate", str(model), str(table_with_fake_cnn), "--out", str(tmp_path / "r")])
    assert "--external" in _one_line_error(result)


def test_external_validation_trains_on_one_table_and_tests_on_another(synthetic_run, tmp_path):
    out, _ = synthetic_run
    table = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    half = len(table) // 2
    for name, rows in (("site_a", table.iloc[:half]), ("site_b", table.iloc[half:])):
        (tmp_path / name).mkdir()
        rows.to_csv(tmp_path / name / "features.csv", index=False)
    model = tmp_path / "model"
    result = runner.invoke(app, ["train", str(tmp_path / "site_a"), "--out", str(model), "--test", str(tmp_path / "site_b"),
                                 "--features", "rad,clin", "--classifier", "logistic", "--grid", "small",
                                 "--inner-repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "external test table" in result.output
    settings = _bundle(model)["settings"]
    assert settings["protocol"] == "external" and len(settings["train_ids"]) == half
    result = runner.invoke(app, ["evaluate", str(model), str(tmp_path / "site_b"), "--external", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["model"]["n"] == len(table) - half
    # The training table itself is no external test.
    result = runner.invoke(app, ["evaluate", str(model), str(tmp_path / "site_a"), "--external", "--out", str(tmp_path / "r2")])
    assert "not an external test" in _one_line_error(result)


def test_evaluate_refuses_a_table_without_the_models_columns(synthetic_run, tmp_path):
    out, _ = synthetic_run
    table = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    dropped = next(c for c in table.columns if c.startswith("rad_"))
    table.drop(columns=[dropped]).to_csv(tmp_path / "features.csv", index=False)
    result = runner.invoke(app, ["evaluate", str(out / "model"), str(tmp_path / "features.csv"), "--out", str(tmp_path / "r")])
    line = _one_line_error(result)
    assert "lacks 1 feature column" in line and dropped in line
    assert not (tmp_path / "r").exists()


def test_bad_choices_are_one_line_errors(synthetic_run, synthetic_cohort, tmp_path):
    out, _ = synthetic_run
    result = runner.invoke(app, ["train", str(out), "--out", str(tmp_path / "m"), "--features", "rad,radiomics"])
    assert "unknown feature group" in _one_line_error(result)
    result = runner.invoke(app, ["train", str(out), "--out", str(tmp_path / "m"), "--features", "cnn"])
    assert "no cnn_ feature columns" in _one_line_error(result)
    result = runner.invoke(app, ["train", str(tmp_path / "nothing.csv"), "--out", str(tmp_path / "m")])
    assert "no such file" in _one_line_error(result)
    result = runner.invoke(app, ["run", str(synthetic_cohort), "--out", str(tmp_path / "o"), "--classifier", "forest"])
    assert "unknown classifier" in _one_line_error(result)
