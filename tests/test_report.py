import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from hematoma.report import ReportContent, Section, figures, write_report
from hematoma.report.build import qa_section
from hematoma.report.segmentation_qa import TITLE as QA_TITLE
from hematoma.report.segmentation_qa import segmentation_qa


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


# --------------------------------------------------------------------------- segmentation QA (--method both)

WEIGHTS = [{"file": "/w/blast_ct_1.pt", "sha256": "ab" * 32}, {"file": "/w/blast_ct_2.pt", "sha256": "cd" * 32}]
BOTH = {"method": "auto", "resolved_method": "both", "blood_classes": "iph", "n_models": 2,
        "weights_source": "--weights", "weights": WEIGHTS}


def _qa_columns(table: pd.DataFrame, flagged: dict) -> pd.DataFrame:
    """``table`` with the BLAST-CT columns: every case agrees except ``flagged`` (id -> (Dice, difference))."""
    table = table.copy()
    table["ivh_volume_ml"], table["phe_volume_ml"] = 0.5, 7.3
    table["seg_dice_rules_deep"], table["seg_volume_difference_ml"], table["seg_qa_flag"] = 0.95, 0.2, 0.0
    for pid, (dice, difference) in flagged.items():
        row = table["patient_id"] == pid
        table.loc[row, ["seg_dice_rules_deep", "seg_volume_difference_ml", "seg_qa_flag"]] = [dice, difference, 1.0]
    return table


def _qa_folder(folder, table: pd.DataFrame, segmentation: dict | None, listed=None):
    """A feature table and the extract.json beside it, as `extract --method ...` leaves them."""
    import json

    from hematoma.protocols import read_features

    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "features.csv", index=False)
    record = {"status": "finished", "settings": {"definition": "6ml_or_33pct"}}
    if segmentation is not None:
        record["settings"]["segmentation"] = segmentation
        record["segmentation_qa_flagged"] = sorted(listed if listed is not None else
                                                   table.loc[table["seg_qa_flag"] == 1, "patient_id"].astype(str))
    (folder / "extract.json").write_text(json.dumps(record))
    return read_features(folder)


def _small_table(n=8) -> pd.DataFrame:
    ids = [f"p{i}" for i in range(n - 1)] + ['<img src=x onerror="alert(1)">&']
    return pd.DataFrame({"patient_id": ids, "he": [0, 1] * (n // 2), "baseline_volume_ml": np.linspace(5, 40, n),
                         "rad_a": np.arange(n, dtype=float)})


def test_qa_lists_the_flagged_cases_worst_first(tmp_path):
    table = _qa_columns(_small_table(), {"p1": (0.45, -3.0), "p2": (0.0, 12.0), "p3": (0.8, 9.0), "p4": (0.0, np.nan),
                                         "p5": (0.0, -2.0), _small_table()["patient_id"].iloc[-1]: (np.nan, np.nan)})
    qa = segmentation_qa(_qa_folder(tmp_path, table, BOTH), test_ids=["p2", "p5"])
    assert qa.compared and qa.n_cases == 8
    # no comparison (rules refused the scan) first, then the lowest Dice, then the largest volume difference
    assert list(qa.flagged["patient_id"]) == [table["patient_id"].iloc[-1], "p2", "p5", "p4", "p1", "p3"]
    assert list(qa.flagged["test patient"]) == [False, True, True, False, False, False]
    shown = qa.table()
    assert list(shown.columns) == ["patient", "test patient", "Dice rules vs BLAST-CT",
                                   "volume difference, BLAST-CT - rules (mL)", "baseline volume (mL)",
                                   "IVH volume (mL)", "oedema volume (mL)"]
    assert shown.iloc[1].tolist() == ["p2", "yes", "0.000", "+12.0", "15.0", "0.5", "7.3"]
    assert shown.iloc[0, 2] == "" and shown.iloc[0, 3] == ""  # not measured: blank, not "nan"
    assert qa.summary() == "6 of 8 cases flagged for review"
    facts = qa.facts()
    assert facts["method"].startswith("both") and facts["method"].endswith("(asked: auto)")
    assert facts["BLAST-CT models"] == "2" and facts["hematoma classes"] == "iph"
    assert facts["weights (sha256)"] == [f"/w/blast_ct_1.pt ({'ab' * 32})", f"/w/blast_ct_2.pt ({'cd' * 32})"]


def test_qa_adds_the_ids_extract_json_lists_and_says_which_are_missing(tmp_path):
    table = _qa_columns(_small_table(), {"p1": (0.3, 1.0)})
    qa = segmentation_qa(_qa_folder(tmp_path, table, BOTH, listed=["p1", "p4", "gone"]))
    assert set(qa.flagged["patient_id"]) == {"p1", "p4"}
    assert "test patient" not in qa.flagged.columns
    assert any("'gone'" in note for note in qa.notes)


def test_no_qa_for_a_rules_only_table(tmp_path):
    assert segmentation_qa(_qa_folder(tmp_path, _small_table(), None)) is None


def test_deep_alone_flags_nothing_and_says_why(tmp_path):
    table = _qa_columns(_small_table(), {})
    table[["seg_dice_rules_deep", "seg_volume_difference_ml", "seg_qa_flag"]] = np.nan  # --method deep: not compared
    qa = segmentation_qa(_qa_folder(tmp_path, table, {"method": "deep", "resolved_method": "deep", "n_models": 1,
                                                      "blood_classes": "iph", "weights": WEIGHTS[:1]}))
    assert not qa.compared and len(qa.flagged) == 0
    section = qa_section(qa)
    assert section.table is None and not section.caption
    assert "--method both" in section.paragraphs[0]
    assert qa.summary().startswith("rules and BLAST-CT not compared (BLAST-CT network alone)")


def test_qa_without_extract_json_still_lists_the_flags(tmp_path):
    from hematoma.protocols import read_features

    table = _qa_columns(_small_table(), {"p3": (0.2, 4.0)})
    table.to_csv(tmp_path / "features.csv", index=False)
    qa = segmentation_qa(read_features(tmp_path / "features.csv"))
    assert list(qa.flagged["patient_id"]) == ["p3"] and qa.compared
    assert qa.facts()["method"].startswith("not recorded")


def test_qa_section_renders_escaped_and_in_order(tmp_path):
    table = _qa_columns(_small_table(), {"p1": (0.45, -3.0), "p2": (0.0, 12.0),
                                         _small_table()["patient_id"].iloc[-1]: (np.nan, np.nan)})
    qa = segmentation_qa(_qa_folder(tmp_path / "run", table, BOTH), test_ids=["p1"])
    section = qa_section(qa)
    assert isinstance(section, Section) and section.title == QA_TITLE
    content = ReportContent(title="qa", summary={"segmentation QA": qa.summary()}, sections=[section])
    html = write_report(content, tmp_path / "report.html").read_text()
    assert html.count(f"<h2>{QA_TITLE}</h2>") == 1
    assert "3 of 8 cases flagged for review" in html
    assert "ab" * 32 in html and "cd" * 32 in html
    assert "&lt;img src=x onerror=" in html and "<img src=x" not in html  # ids are escaped
    assert not re.search(r'src="(?!data:)', html)
    body = html[html.index(f"<h2>{QA_TITLE}</h2>"):]
    assert body.index("&lt;img") < body.index(">p2<") < body.index(">p1<")  # worst first
    assert "p0" not in body.split("</table>")[0]  # agreeing cases are not listed


def test_report_without_sections_has_no_qa(tmp_path):
    path, _ = _make_report(tmp_path)
    assert QA_TITLE not in path.read_text()


def test_evaluate_report_of_a_both_run_has_the_qa_and_a_rules_run_has_none(synthetic_run, tmp_path):
    """The run's own (rules) report is unchanged; its table with the BLAST-CT columns added gets the section."""
    import json

    from hematoma.assessment import evaluate

    out, _ = synthetic_run
    rules_html = (out / "report" / "report.html").read_text()
    assert QA_TITLE not in rules_html and "segmentation QA" not in rules_html
    assert "segmentation_qa" not in json.loads((out / "report" / "metrics.json").read_text())

    test_ids = json.loads((out / "model" / "bundle.json").read_text())["settings"]["test_ids"]
    table = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    other = min(set(table["patient_id"]) - set(test_ids))
    table = _qa_columns(table, {test_ids[0]: (0.1, 8.0), other: (0.4, -2.0)})
    copy = tmp_path / "both"
    copy.mkdir()
    table.to_csv(copy / "features.csv", index=False)
    shutil.copyfile(out / "split.csv", copy / "split.csv")
    record = json.loads((out / "extract.json").read_text())
    record["settings"]["segmentation"] = BOTH
    record["segmentation_qa_flagged"] = sorted([test_ids[0], other])
    (copy / "extract.json").write_text(json.dumps(record))

    _, folder = evaluate(out / "model", copy / "features.csv", tmp_path / "report")
    html = folder.html.read_text()
    assert html.count(f"<h2>{QA_TITLE}</h2>") == 1
    assert f"2 of {len(table)} cases flagged for review" in html
    body = html[html.index(f"<h2>{QA_TITLE}</h2>"):]
    assert body.index(f">{test_ids[0]}<") < body.index(f">{other}<")  # Dice 0.1 before 0.4
    metrics = json.loads(folder.metrics.read_text())
    qa = metrics["segmentation_qa"]
    assert qa["n_flagged"] == 2 and qa["method"]["resolved_method"] == "both"
    assert [(row["patient_id"], row["test patient"]) for row in qa["flagged"]] == [(test_ids[0], True), (other, False)]
