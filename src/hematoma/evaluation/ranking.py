"""Which model is best on the test patients: the model evaluated, every feature set of the ablation and every
baseline, ranked by test AUC with its 95 % CI and the DeLong test against the model evaluated.

All of them are scored on the same test patients (the ablation refits each feature set on the same training
patients; the baselines are fitted on them or need no fitting), so the ranking compares like with like. It says
what these patients can and cannot tell apart: with ~75 test patients a CI is about +-0.12 wide, and a model
"ahead" by 0.03 is usually not distinguishable (the verdict says so when the DeLong p >= 0.05).
"""

from __future__ import annotations

import math

import pandas as pd

from .metrics import float_or_nan as _number

SIGNIFICANCE = 0.05


def model_ranking(model_name: str, metrics: dict, ablation: pd.DataFrame | None, baselines: dict) -> pd.DataFrame:
    """One row per candidate scored on the test patients, best AUC first.

    Columns: ``model``, ``kind`` (model evaluated / feature set / baseline), ``auc``, ``auc_lower``,
    ``auc_upper``, ``p_vs_evaluated`` (DeLong, two-sided; empty for the model itself).
    """
    delong = metrics["auc_ci"]["delong"]
    rows = [{"model": model_name, "kind": "model evaluated", "auc": delong["auc"], "auc_lower": delong["lower"],
             "auc_upper": delong["upper"], "p_vs_evaluated": math.nan}]
    if ablation is not None and len(ablation):
        for row in ablation.to_dict("records"):
            if row.get("status") != "ok" or row.get("feature_set") == model_name:
                continue
            rows.append({"model": row["feature_set"], "kind": "feature set", "auc": _number(row.get("auc")),
                         "auc_lower": _number(row.get("auc_lower")), "auc_upper": _number(row.get("auc_upper")),
                         "p_vs_evaluated": _number(row.get("p_vs_reference"))})
    for entry in baselines.values():
        if entry.get("status") != "ok":
            continue
        interval = entry.get("score_auc") or entry["metrics"]["auc_ci"]["delong"]
        rows.append({"model": entry["name"], "kind": "baseline", "auc": _number(interval["auc"]),
                     "auc_lower": _number(interval["lower"]), "auc_upper": _number(interval["upper"]),
                     "p_vs_evaluated": _number((entry.get("vs_model") or {}).get("p_value"))})
    table = pd.DataFrame(rows)
    return table.sort_values("auc", ascending=False, kind="stable").reset_index(drop=True)


def verdict(ranking: pd.DataFrame, n_test: int) -> list[str]:
    """The lines a reader needs: which is best, whether the model evaluated is, and whether the data can tell."""
    evaluated = ranking[ranking["kind"] == "model evaluated"].iloc[0]
    best = ranking.iloc[0]
    lines = []
    ci = f"{best['auc']:.3f} ({best['auc_lower']:.3f}-{best['auc_upper']:.3f})"
    if best["model"] == evaluated["model"]:
        lines.append(f"best on these {n_test} test patients: {best['model']}, the model evaluated (AUC {ci})")
        runner_up = ranking.iloc[1] if len(ranking) > 1 else None
        if runner_up is not None and runner_up["p_vs_evaluated"] >= SIGNIFICANCE:
            lines.append(f"not distinguishable from {runner_up['model']} (AUC {runner_up['auc']:.3f}, DeLong "
                         f"p = {runner_up['p_vs_evaluated']:.2f}) on these patients")
        return lines
    p = best["p_vs_evaluated"]
    if math.isnan(p):
        told = "no DeLong test against it"
    else:
        told = f"DeLong p = {p:.2f}, " + ("significant" if p < SIGNIFICANCE
                                          else "not significant: these patients cannot tell them apart")
    lines.append(f"best on these {n_test} test patients: {best['model']} ({best['kind']}, AUC {ci}), not the model "
                 f"evaluated ({evaluated['model']}, AUC {evaluated['auc']:.3f}); {told}")
    beaten_by = ranking[(ranking["kind"] == "baseline") & (ranking["auc"] > evaluated["auc"])]["model"].tolist()
    if beaten_by:
        lines.append(f"{evaluated['model']} scores below the baseline(s) {', '.join(beaten_by)} on these patients")
    return lines
