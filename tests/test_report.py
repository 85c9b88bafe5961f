import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from hematoma.report import ReportContent, write_report
from hematoma.report import figures


def _scores(seed=0, n=80):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    model = np.clip(0.3 + 0.35 * y + rng.normal(0, 0.2, n), 0, 1)
    baseline = np.clip(0.3 + 0.1 * y + rng.normal(0, 0.25, n), 0, 1)
    return y, {"hybrid": model, "volume only": baseline}


def test_net_benefit_matches_formula():
    y = np.array([1, 1, 0, 0, 0])
    score = np.array([0.9, 0.2, 0.8, 0.1, 0.1])
    # at t = 0.5: treated = {0, 2}: TP = 1, FP = 1 -> 1/5 - 1/5 * 0.5/0.5 = 0
    assert figures.net_benefit(y, score, [0.5])[0] == pytest.approx(0.0)
    # at t = 0.15: treated = {0, 1, 2}: TP = 2, FP = 1 -> 2/5 - 1/5 * 0.15/0.85
    assert figures.net_benefit(y, score, [0.15])[0] == pytest.approx(0.4 - 0.2 * 0.15 / 0.85)


def _make_report(tmp_path):
    y, scores = _scores()
    pngs = {
        "ROC": figures.save_png(figures.roc_figure(y, scores, n_boot=50), tmp_path / "roc.png"),
        "PR": figures.save_png(figures.pr_figure(y, scores, n_boot=50), tmp_path / "pr.png"),
        "Calibration": figures.save_png(figures.calibration_figure(y, scores), tmp_path / "cal.png"),
        "Decision": figures.save_png(figures.decision_curve_figure(y, scores), tmp_path / "dca.png"),
        "Confusion": figures.save_png(figures.confusion_figure([[40, 8], [6, 26]]), tmp_path / "cm.png"),
        "Top": figures.save_png(
            figures.top_features_figure(pd.DataFrame({"feature": [f"rad_{i}" for i in range(20)], "importance": np.arange(20.0)})),
            tmp_path / "top.png",
        ),
    }
    content = ReportContent(
        title="test report <&>",
        summary={"AUC": "0.80 (0.70-0.90)"},
        tables={"Table 2": pd.DataFrame({"class": ["no HE", "HE"], "precision": [0.8, 0.6]})},
        figures=pngs,
        settings={"seed": 0},
        versions={"hematoma": "0"},
    )
    return write_report(content, tmp_path / "report.html"), pngs


def test_report_is_self_contained(tmp_path):
    path, pngs = _make_report(tmp_path)
    html = path.read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "test report &lt;&amp;&gt;" in html  # escaped
    assert "Table 2" in html and "0.8" in html
    assert not re.search(r'src="(?!data:)', html)  # no external resource


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    path, pngs = _make_report(tmp_path)
    result = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", path.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )
    dom = result.stdout
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images="(\d+)"', dom)
    assert loaded and total, result.stderr[-2000:]
    assert int(total.group(1)) == len(pngs)
    assert int(loaded.group(1)) == len(pngs)
