"""Which model is best (hematoma.evaluation.ranking): every candidate on the same test patients, ranked honestly."""

from __future__ import annotations

import json
import math

import pandas as pd

from hematoma.evaluation.ranking import model_ranking, verdict


def _metrics(auc, lower, upper):
    return {"auc_ci": {"delong": {"auc": auc, "lower": lower, "upper": upper}}}


def _baseline(name, auc, p):
    return {"status": "ok", "name": name, "score_auc": {"auc": auc, "lower": auc - 0.1, "upper": auc + 0.1},
            "metrics": {"auc_ci": {"delong": {"auc": auc, "lower": 0, "upper": 1}}}, "vs_model": {"p_value": p}}


ABLATION = pd.DataFrame([
    {"feature_set": "hybrid", "status": "ok", "auc": 0.70, "auc_lower": 0.58, "auc_upper": 0.82, "p_vs_reference": math.nan},
    {"feature_set": "radiomics+clinical", "status": "ok", "auc": 0.74, "auc_lower": 0.62, "auc_upper": 0.86,
     "p_vs_reference": 0.40},
    {"feature_set": "cnn", "status": "skipped", "auc": math.nan},
])


def test_a_baseline_that_beats_the_model_is_named_and_the_test_said():
    ranking = model_ranking("hybrid", _metrics(0.70, 0.58, 0.82), ABLATION,
                            {"baseline_volume": _baseline("baseline volume", 0.78, 0.03),
                             "brain_score": {"status": "skipped", "notes": []}})
    assert ranking["model"].tolist() == ["baseline volume", "radiomics+clinical", "hybrid"]  # skipped ones left out
    lines = verdict(ranking, 74)
    assert lines[0].startswith("best on these 74 test patients: baseline volume (baseline, AUC 0.780")
    assert "not the model evaluated (hybrid, AUC 0.700)" in lines[0] and "p = 0.03, significant" in lines[0]
    assert lines[1] == "hybrid scores below the baseline(s) baseline volume on these patients"


def test_a_lead_the_patients_cannot_confirm_is_called_so():
    ranking = model_ranking("hybrid", _metrics(0.70, 0.58, 0.82), ABLATION, {})
    (line,) = verdict(ranking, 74)
    assert "radiomics+clinical (feature set" in line and "not significant: these patients cannot tell them apart" in line


def test_the_model_evaluated_best_and_its_runner_up():
    ranking = model_ranking("hybrid", _metrics(0.80, 0.70, 0.90), ABLATION, {"bat": _baseline("BAT score", 0.62, 0.01)})
    lines = verdict(ranking, 74)
    assert lines[0] == "best on these 74 test patients: hybrid, the model evaluated (AUC 0.800 (0.700-0.900))"
    assert "not distinguishable from radiomics+clinical" in lines[1]


def test_the_run_report_names_the_best_model(synthetic_run):
    out, result = synthetic_run
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    names = {row["model"] for row in metrics["ranking"]}
    assert metrics["model_name"] in names and "BAT score" in names and "BRAIN score" in names
    assert metrics["best"][0].startswith(f"best on these {metrics['model']['n']} test patients")
    html = (out / "report" / "report.html").read_text()
    assert "which model is best" in html and "Which model is best on these test patients" in html
