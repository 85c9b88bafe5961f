"""`hematoma predict`: one patient through the bundle's own feature steps; bad inputs as one line."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.prediction import Predictor, clinical_from_pairs

runner = CliRunner()


@pytest.fixture(scope="module")
def case(synthetic_run, synthetic_cohort):
    """A test-part patient of the run: (model bundle, CT, mask, manifest row)."""
    out, _ = synthetic_run
    test_id = json.loads((out / "model" / "bundle.json").read_text())["settings"]["test_ids"][0]
    manifest = pd.read_csv(synthetic_cohort, dtype=str, keep_default_na=False).set_index("patient_id")
    row = manifest.loc[test_id]
    folder = synthetic_cohort.parent
    return out / "model", folder / row["baseline_ct"], folder / row["baseline_mask"], test_id, row


def _probability(output: str) -> float:
    match = re.search(r"probability of HE ([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


def test_predict_prints_a_probability_and_writes_the_overlay_and_report(case, tmp_path):
    model, ct, mask, pid, row = case
    overlay, report = tmp_path / "overlay.png", tmp_path / "patient.html"
    clinical = ["--set", f"age={row['age']}", "--set", f"sex={row['sex']}", "--set", f"sbp={row['sbp']}"]
    result = runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--mask", str(mask), *clinical,
                                 "--overlay", str(overlay), "--report", str(report), "--patient-id", pid])
    assert result.exit_code == 0, result.output
    probability = _probability(result.output)
    assert 0.0 <= probability <= 1.0
    assert overlay.stat().st_size > 5000 and overlay.read_bytes()[:4] == b"\x89PNG"
    # The run's model is anchored to the BRAIN score (its default); without the onset time and anticoagulation the
    # score cannot be had, and the line says the probability is the model's alone.
    assert "BRAIN score: needs anticoagulation, onset_to_ct_hours; the probability is the model's alone" in \
        " ".join(result.output.split())
    html = report.read_text()
    assert pid in html and "data:image/png;base64," in html
    # A rerun does not overwrite unless asked.
    result = runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--mask", str(mask), "--overlay", str(overlay)])
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_prediction_matches_the_bundle_on_the_extracted_features(case, synthetic_run, synthetic_cohort):
    """Same steps as extraction: with the full clinical row, predict gives the probability the report holds."""
    model, ct, mask, pid, row = case
    out, result = synthetic_run
    from hematoma.features.clinical import USER_VARIABLES

    pairs = [f"{name}={row[name]}" for name in USER_VARIABLES if name in row and row[name] != ""]
    predictor = Predictor.load(model)
    prediction = predictor.predict(ct, mask=mask, clinical=clinical_from_pairs(pairs, pid, predictor.bundle.feature_columns))
    assert prediction.missing_clinical == []
    expected = {p["patient_id"]: p["probability"] for p in result.metrics["model"]["predictions"]}[pid]
    assert prediction.probability == pytest.approx(expected, abs=1e-6)
    features = pd.read_csv(out / "features.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert prediction.volume_ml == pytest.approx(features.loc[pid, "clin_baseline_volume_ml"])


def test_predict_shows_what_the_brain_anchor_added(case, tmp_path):
    """With the whole clinical row the line gives the score, its published risk and the model alone; they add up."""
    model, ct, mask, pid, row = case
    from hematoma.brain_score import brain_risk
    from hematoma.features.clinical import USER_VARIABLES

    pairs = [item for name in USER_VARIABLES if name in row and row[name] != "" for item in ("--set", f"{name}={row[name]}")]
    result = runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--mask", str(mask), *pairs,
                                 "--overlay", str(tmp_path / "o.png"), "--patient-id", pid])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    match = re.search(r"BRAIN score (\d+)/24 \(published risk ([0-9.]+)\); the model alone ([0-9.]+); "
                      r"averaged with weight ([0-9.]+) on the score, then shifted by ([-+][0-9.]+) on the logit scale "
                      r"to the training HE rate", text)
    assert match, text
    points, risk, alone, weight, shift = int(match[1]), float(match[2]), float(match[3]), float(match[4]), float(match[5])
    assert risk == pytest.approx(float(brain_risk(points)), abs=5e-4)
    volume = float(re.search(r"hematoma ([0-9.]+) mL", text)[1])
    hours = float(row["onset_to_ct_hours"])
    expected_points = (0 if volume <= 10 else 5 if volume <= 20 else 7) + 6 * (float(row["anticoagulation"]) > 0) \
        + max(0, min(5, 5 - (int(-(-hours // 1)) - 1)))  # onset <= 1 h: 5 points, ... > 5 h: 0 (Wang 2015)
    assert points == expected_points
    from scipy.special import expit, logit

    assert _probability(result.output) == pytest.approx(expit(logit((1 - weight) * alone + weight * risk) + shift),
                                                        abs=2e-3)


def test_predict_segments_when_no_mask_is_given(case, tmp_path):
    model, ct, _, _, _ = case
    result = runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--overlay", str(tmp_path / "o.png")])
    assert result.exit_code == 0, result.output
    assert "segmented" in result.output and 0.0 <= _probability(result.output) <= 1.0
    assert "imputed by the model" in result.output  # no clinical values given


@pytest.mark.parametrize(
    "pair, message",
    [
        ("unknown=1", "unknown clinical variable 'unknown'"),
        ("age=abc", "'abc' is not a number"),
        ("age=300", "outside the plausible range"),
        ("baseline_volume_ml=20", "computed from the hematoma mask"),
        ("age", "expected name=value"),
    ],
)
def test_bad_set_values_are_one_line_errors(case, tmp_path, pair, message):
    model, ct, mask, _, _ = case
    result = runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--mask", str(mask), "--set", pair,
                                 "--overlay", str(tmp_path / "o.png")])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "o.png").exists()


def test_a_bundle_needing_features_predict_cannot_make_is_refused(synthetic_run, tmp_path, case):
    """A model trained with cnn_ columns but no CNN on record: one line naming what is missing."""
    out, _ = synthetic_run
    _, ct, mask, _, _ = case
    table = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    table = table.copy().assign(cnn_0000=range(len(table)))
    (tmp_path / "t").mkdir()
    table.to_csv(tmp_path / "t" / "features.csv", index=False)
    shutil.copyfile(out / "split.csv", tmp_path / "t" / "split.csv")
    result = runner.invoke(app, ["train", str(tmp_path / "t"), "--out", str(tmp_path / "m"), "--classifier", "logistic",
                                 "--grid", "small"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "m"), "--ct", str(ct), "--mask", str(mask),
                                 "--overlay", str(tmp_path / "o.png")])
    assert result.exit_code == 2 and "--cnn-model" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "nothing"), "--ct", str(ct), "--overlay", str(tmp_path / "o.png")])
    assert result.exit_code == 2 and "no such model bundle" in result.output


def test_clinical_pairs_are_encoded_like_the_manifest():
    table = clinical_from_pairs(["sex=F", "age=70", "hypertension=yes"], "p1")
    assert table.loc[0, "patient_id"] == "p1"
    assert table.loc[0, "clin_sex"] == 0.0 and table.loc[0, "clin_age"] == 70.0 and table.loc[0, "clin_hypertension"] == 1.0
    with pytest.raises(InputError, match="dbp 95 is not below sbp 90"):
        clinical_from_pairs(["sbp=90", "dbp=95"])
    with pytest.raises(InputError, match="given twice"):
        clinical_from_pairs(["age=70", "age=71"])
