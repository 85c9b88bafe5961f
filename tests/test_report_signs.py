"""NCCT signs seen, not only counted: the sign figures, the patient report's section, the cohort table."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from matplotlib.image import imread
from scipy import stats
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.features.signs import SIGNS, analyse_signs, bat_score
from hematoma.prediction import PatientPrediction, write_patient_report
from hematoma.report.sign_figures import (
    SIGN_COLOUR,
    draw_sign_figure,
    measurement_text,
    sign_figure_path,
)
from hematoma.report.signs_section import TITLE
from hematoma.synthetic import make_head_ct

runner = CliRunner()


@pytest.fixture(scope="module")
def black_hole_case():
    """A small synthetic head whose clot has a black hole (the generator's truth says so); its signs analysed."""
    truth: dict = {}
    ct, mask = make_head_ct(size="small", seed=0, hematoma_ml=20.0, signs=("black_hole",), sign_truth=truth)
    values, findings = analyse_signs(ct, mask)
    assert truth.get("black_hole") == 1, truth
    assert "black_hole" in {f.sign for f in findings}, values
    return ct, mask, values, findings


def _finding(findings, sign):
    return next(f for f in findings if f.sign == sign)


def _rgb(path):
    return (imread(str(path))[..., :3] * 255).round().astype(int)


def _colour_mask(rgb, colour, tolerance=10):
    return (np.abs(rgb - np.asarray(colour)) <= tolerance).all(axis=-1)


# --------------------------------------------------------------------------- the figure of one sign


def test_the_figure_outlines_the_signs_region_where_it_is(black_hole_case, tmp_path):
    ct, mask, _, findings = black_hole_case
    finding = _finding(findings, "black_hole")
    figure = draw_sign_figure(ct, mask, finding, tmp_path / "black_hole.png")
    rgb = _rgb(figure.path)
    x0, y0, x1, y1 = figure.region_box
    cyan = _colour_mask(rgb, SIGN_COLOUR)
    inside = cyan[y0:y1 + 1, x0:x1 + 1]
    # The outline runs around the region: cyan on every side of its box.
    assert inside.sum() >= 2 * ((x1 - x0) + (y1 - y0)) // 2
    assert inside[:, : max((x1 - x0) // 4, 1)].any() and inside[:, -max((x1 - x0) // 4, 1):].any()
    assert inside[: max((y1 - y0) // 4, 1)].any() and inside[-max((y1 - y0) // 4, 1):].any()
    # In the zoom panel (the figure's right part) no cyan lies outside the region's box.
    right = rgb.shape[1] // 2
    ys, xs = np.nonzero(cyan[:, right:])
    assert xs.min() + right >= x0 and xs.max() + right <= x1 and ys.min() >= y0 and ys.max() <= y1
    # What is outlined is the black hole: grey inside the outline, the clot around it white (W80/L40 clips
    # acute blood, >= 80 HU, to white).
    interior = rgb[y0 + 3:y1 - 2, x0 + 3:x1 - 2]
    assert interior[~_colour_mask(interior, SIGN_COLOUR)].mean() < 200
    assert _colour_mask(rgb, (255, 64, 64))[:, right:].sum() > 50  # the hematoma's red outline is drawn too
    assert measurement_text(finding).startswith("black hole: ") and "HU below the clot" in measurement_text(finding)


def test_a_figure_is_not_overwritten_without_asking(black_hole_case, tmp_path):
    ct, mask, _, findings = black_hole_case
    path = tmp_path / "mine.png"
    path.write_bytes(b"a user's file")
    with pytest.raises(InputError, match="--overwrite"):
        draw_sign_figure(ct, mask, _finding(findings, "black_hole"), path)
    assert path.read_bytes() == b"a user's file"
    assert draw_sign_figure(ct, mask, _finding(findings, "black_hole"), path, overwrite=True).path.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- the patient report


def _prediction(case, onset=None) -> PatientPrediction:
    ct, mask, values, findings = case
    given = {} if onset is None else {"clin_onset_to_ct_hours": onset}
    features = pd.DataFrame([{"patient_id": "p1", "clin_age": 70.0, "clin_onset_to_ct_hours": np.nan, **values, **given}])
    return PatientPrediction(
        patient_id="p1", probability=0.7, predicted=1, threshold=0.5, volume_ml=20.0, features=features,
        clinical_given=given, missing_clinical=[] if onset is not None else ["onset_to_ct_hours"],
        mask_source="given", model_name="rad+clin", ct=ct, mask=mask, signs=values, sign_findings=findings)


def _section(html: str) -> str:
    start = html.index(f"<h2>{TITLE}</h2>")
    return html[start:html.index("</section>", start)]


def _overlay(tmp_path):
    from matplotlib.figure import Figure

    path = tmp_path / "overlay.png"

    figure = Figure(figsize=(1, 1))
    figure.savefig(path, format="png")
    return path


def test_the_patient_report_shows_every_sign_one_picture_per_sign_found_and_the_bat_score(black_hole_case, tmp_path):
    prediction = _prediction(black_hole_case, onset=1.5)
    report = write_patient_report(prediction, tmp_path / "patient.html", _overlay(tmp_path))
    html = report.read_text()
    section = _section(html)
    found = {f.sign for f in prediction.sign_findings}
    assert section.count("<img") == len(found)
    assert html.count("<img") == len(found) + 1  # and the overlay, outside the section
    for sign in found:
        png = sign_figure_path(report, sign)
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert "black hole: " in section and "HU below the clot" in section
    for name in ("hypodensity", "black hole", "blend sign", "swirl sign", "fluid level", "island sign", "satellite sign"):
        assert f"<td>{name}</td>" in section, name
    assert section.count("<td>not found</td>") == len(SIGNS) - len(found)
    values = prediction.signs
    expected = bat_score(values["sign_blend"], values["sign_hypodensity"], 1.5)
    assert f"{expected:.0f} of 5" in section
    assert "any hypodensity: yes (2 of 2 points)" in section and "1.5 h (2 of 2 points)" in section
    assert "Barras shape" in section and "Barras density" in section
    assert "Ann Neurol 2019" in section and "Stroke 2018" in section


def test_without_the_onset_time_the_bat_score_says_what_it_needs(black_hole_case, tmp_path):
    report = write_patient_report(_prediction(black_hole_case), tmp_path / "patient.html", _overlay(tmp_path))
    section = _section(report.read_text())
    assert "BAT score</dt><dd>needs the onset time" in section


def test_the_report_refuses_to_replace_a_sign_figure_before_writing_anything(black_hole_case, tmp_path):
    prediction = _prediction(black_hole_case, onset=1.5)
    taken = sign_figure_path(tmp_path / "patient.html", "black_hole")
    taken.write_bytes(b"a user's file")
    with pytest.raises(InputError, match="--overwrite"):
        write_patient_report(prediction, tmp_path / "patient.html", _overlay(tmp_path))
    assert taken.read_bytes() == b"a user's file"
    assert not (tmp_path / "patient.html").exists()
    assert not sign_figure_path(tmp_path / "patient.html", "hypodensity").exists()
    write_patient_report(prediction, tmp_path / "patient.html", _overlay(tmp_path), overwrite=True)
    assert taken.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- predict --report, in a browser


@pytest.fixture(scope="module")
def predicted_report(black_hole_case, synthetic_run, tmp_path_factory):
    """`hematoma predict --report` with the run's model on the black-hole head: (report, CLI output)."""
    ct, mask, _, findings = black_hole_case
    folder = tmp_path_factory.mktemp("predicted")
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"))
    sitk.WriteImage(mask, str(folder / "mask.nii.gz"))
    out, _ = synthetic_run
    report = folder / "patient.html"
    result = runner.invoke(app, ["predict", str(out / "model"), "--ct", str(folder / "ct.nii.gz"),
                                 "--mask", str(folder / "mask.nii.gz"), "--set", "onset_to_ct_hours=2",
                                 "--overlay", str(folder / "overlay.png"), "--report", str(report)])
    assert result.exit_code == 0, result.output
    return report, findings


def test_predict_report_has_the_signs_section(predicted_report):
    report, findings = predicted_report
    section = _section(report.read_text())
    assert section.count("<img") == len(findings) >= 1
    assert "2 h (2 of 2 points)" in section


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_patient_report_renders_with_the_sign_images_in_headless_chromium(predicted_report, tmp_path):
    report, findings = predicted_report
    result = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", report.as_uri(),
        ],
        check=False, capture_output=True, text=True, timeout=120,
    )
    dom = result.stdout
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images="(\d+)"', dom)
    assert loaded and total, result.stderr[-2000:]
    assert int(total.group(1)) == len(findings) + 1  # the overlay and one per sign
    assert int(loaded.group(1)) == int(total.group(1))  # every image decoded (naturalWidth > 0)


# --------------------------------------------------------------------------- the cohort table


def _cohort() -> pd.DataFrame:
    he = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    return pd.DataFrame({
        "patient_id": [f"p{i}" for i in range(10)], "he": he,
        "sign_black_hole": [0, 0, 0, 0, 0, 1, 1, 1, 1, 0],
        "sign_hypodensity": [0, 0, 0, 1, 1, 1, 1, 1, 1, np.nan],
        "sign_blend": [0, 0, 0, 0, 0, 0, 1, 0, 1, 0],
        "sign_island": [0] * 10,
        "sign_barras_shape": [1, 1, 2, 2, 3, 1, 4, 5, 3, 4],
        "sign_barras_density": [1, 1, 1, 2, 2, 3, 3, 4, 3, 4],
        "clin_onset_to_ct_hours": [3, 3, 1, 4, 5, 6, 1, 2, np.nan, 1],
        "clin_age": [60, 70, 80, 65, 75, 85, 55, 66, 77, 88],
    })


def test_the_cohort_table_counts_each_sign_by_he_group():
    from hematoma.evaluation.table1 import signs_by_group

    table = signs_by_group(_cohort()).set_index("variable")
    assert table.attrs["n"] == {"no HE": 6, "HE": 4}
    row = table.loc["black hole"]
    assert (row["no HE"], row["HE"]) == ("1 (16.7%)", "3 (75.0%)")
    # Table 1's test of a binary variable: Fisher's exact test here (expected counts < 5).
    assert row["test"] == "Fisher exact"
    assert row["p_value"] == pytest.approx(stats.fisher_exact([[5, 1], [1, 3]]).pvalue)
    hypodensity = table.loc["hypodensity"]
    assert (hypodensity["no HE"], hypodensity["HE"], hypodensity["missing"]) == ("3 (50.0%)", "3 (100.0%)", 1)
    island = table.loc["island sign"]  # nobody has it: 0 in each group, nothing to test
    assert (island["no HE"], island["HE"], island["test"]) == ("0 (0.0%)", "0 (0.0%)", "none")
    assert "swirl sign" not in table.index  # a column the table lacks is no row
    shape = table.loc["Barras shape (1-5)"]
    assert shape["summary"] == "median [IQR]" and shape["no HE"] == "1.5 [1.0, 2.0]" and shape["HE"] == "4.0 [3.8, 4.2]"
    assert shape["p_value"] == pytest.approx(
        stats.mannwhitneyu([1, 1, 2, 2, 3, 1], [4, 5, 3, 4], alternative="two-sided").pvalue)
    # BAT: blend 1 + hypodensity 2 + onset < 2.5 h 2; p8 has no onset time, p9 no hypodensity flag.
    bat = table.loc["BAT score (0-5)"]
    assert bat["missing"] == 2
    assert (bat["no HE"], bat["HE"]) == ("2.0 [0.5, 2.0]", "4.5 [4.2, 4.8]")  # 0 0 2 2 2 2 | 5 4
    high = table.loc["BAT score >= 3"]
    assert (high["no HE"], high["HE"]) == ("0 (0.0%)", "2 (100.0%)")


def test_a_table_extracted_before_the_signs_has_no_signs_table():
    from hematoma.evaluation.table1 import signs_by_group

    assert signs_by_group(_cohort().drop(columns=[c for c in _cohort() if c.startswith("sign_")])) is None


def test_the_cohort_report_has_the_signs_table(synthetic_run):
    out, _ = synthetic_run
    html = (out / "report" / "report.html").read_text()
    assert "NCCT signs by HE group" in html
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    variables = [row["variable"] for row in metrics["signs_table"]]
    assert "black hole" in variables and "Barras shape (1-5)" in variables and "BAT score (0-5)" in variables


def test_a_rewritten_report_leaves_no_figure_of_a_sign_not_found_now(black_hole_case, tmp_path):
    prediction = _prediction(black_hole_case, onset=1.5)
    absent = next(sign for sign in SIGNS if sign not in {f.sign for f in prediction.sign_findings})
    stale = sign_figure_path(tmp_path / "patient.html", absent)
    stale.write_bytes(b"\x89PNG from an earlier report")
    write_patient_report(prediction, tmp_path / "patient.html", _overlay(tmp_path), overwrite=True)
    assert not stale.exists()
    assert sign_figure_path(tmp_path / "patient.html", "black_hole").exists()
