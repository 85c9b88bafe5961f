"""Benchmark the CT-pretrained deep branch (``deep_`` columns, hematoma.features.ct_network; issue 16 part 1).

1. ``hematoma synth --size small`` (``--patients``, seed ``--seed``, ``--workers``);
2. ``hematoma extract --method deep --weights W`` on the first ``--extract-patients`` of them (the network's
   penultimate maps pooled in the segmentation run); seconds per case from each case.json;
3. the hook's cost: BLAST-CT on ``--timing-cases`` baseline CTs with and without the pooling, alternately, in
   this process;
4. 10 stratified halves (2-fold x 5 seeds): ``build_model(classifier="logistic", grid="small", groups=...)``
   fitted with ``fit_model`` on one half, test AUC on the other, for radiomics+clinical, ct-network and
   radiomics+clinical+ct-network, next to the AUC of the generator's ``observable_p`` on the same test half
   (records/<id>.json ``truth``: a reference only, never a feature).

    .venv/bin/python benchmarks/bench_ct_network.py --patients 120 --extract-patients 120 --workers 2

Results: ``benchmarks/results/ct_network.json`` (with the machine and its load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / "shared" / "models" / "blast-ct-v1"
FEATURE_SETS = ("radiomics+clinical", "ct-network", "radiomics+clinical+ct-network")
HEMATOMA = [sys.executable, "-m", "hematoma"]


def run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(HEMATOMA + args, check=True, cwd=ROOT)
    return time.perf_counter() - start


def machine() -> dict:
    import torch

    return {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu",
            "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}


def hook_timing(manifest, n_cases: int, weights: Path) -> dict:
    """Seconds of BLAST-CT (one model) per baseline CT without and with the pooling (alternating runs)."""
    import SimpleITK as sitk

    from hematoma.segmentation.deep import DeepSegmenter

    segmenter = DeepSegmenter(weights, 1)
    rows = []
    for _, row in manifest.head(n_cases).iterrows():
        image = sitk.ReadImage(str(row["baseline_ct"]))
        start = time.perf_counter()
        segmenter.segment(image)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        segmenter.segment(image, blood="blood")
        pooled = time.perf_counter() - start
        rows.append({"patient_id": row["patient_id"], "without_hook_s": round(plain, 2), "with_hook_s": round(pooled, 2),
                     "load_average_1": round(os.getloadavg()[0], 2)})
    return {"cases": rows, "median_without_s": statistics.median(r["without_hook_s"] for r in rows),
            "median_with_s": statistics.median(r["with_hook_s"] for r in rows),
            "median_ratio": statistics.median(r["with_hook_s"] / r["without_hook_s"] for r in rows)}


def halves(table, truth) -> dict:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from hematoma.model import FEATURE_SETS as SETS, build_model, fit_model, model_inputs

    y = table["he"].astype(int).to_numpy()
    observable = truth.set_index("patient_id").loc[table["patient_id"], "observable_p"].to_numpy()
    aucs = {name: [] for name in (*FEATURE_SETS, "observable")}
    for seed in range(5):
        for train, test in StratifiedKFold(2, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
            aucs["observable"].append(roc_auc_score(y[test], observable[test]))
            for name in FEATURE_SETS:
                groups = SETS[name]
                X_train, y_train = model_inputs(table.iloc[train], groups=groups)
                X_test, _ = model_inputs(table.iloc[test], groups=groups)
                model = fit_model(build_model(classifier="logistic", groups=groups, grid="small", seed=seed), X_train, y_train)
                aucs[name].append(roc_auc_score(y[test], model.predict_proba(X_test)[:, 1]))
    return {name: {"mean": round(statistics.mean(v), 3), "sd": round(statistics.stdev(v), 3), "per_half": [round(a, 3) for a in v]}
            for name, v in aucs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--extract-patients", type=int, default=None, help="the first N of the cohort (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timing-cases", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_ct_network"))
    parser.add_argument("--skip-extract", action="store_true", help="evaluate the extraction already in --work")
    parser.add_argument("--out", type=Path, default=RESULTS / "ct_network.json")
    args = parser.parse_args()
    import pandas as pd

    cohort, extracted = args.work / "cohort", args.work / "extract"
    result = {"date": time.strftime("%Y-%m-%d"), "machine_at_start": machine(),
              "cohort": {"patients": args.patients, "seed": args.seed, "size": "small"}}
    result["synth_seconds"] = round(run(["synth", "--out", str(cohort), "--patients", str(args.patients), "--seed",
                                         str(args.seed), "--size", "small", "--workers", str(args.workers)]), 1)
    manifest = pd.read_csv(cohort / "manifest.csv")
    truth = pd.read_csv(cohort / "truth.csv")
    truth["observable_p"] = [json.loads((cohort / "records" / f"{pid}.json").read_text())["truth"]["observable_p"]
                             for pid in truth["patient_id"]]  # the generator's risk without its hidden term
    # The baseline CT only (no masks: the network segments it), the label as the generator drew it.
    manifest = manifest.drop(columns=["followup_ct", "baseline_mask", "followup_mask"])
    manifest["baseline_ct"] = [str((cohort / p).resolve()) for p in manifest["baseline_ct"]]
    manifest["he"] = truth.set_index("patient_id").loc[manifest["patient_id"], "he"].to_numpy()
    n = args.extract_patients or len(manifest)
    subset = args.work / f"manifest_{n}.csv"
    manifest.head(n).to_csv(subset, index=False)
    if not args.skip_extract:
        result["extract_seconds"] = round(run(["extract", str(subset), "--out", str(extracted), "--method", "deep",
                                               "--weights", str(args.weights), "--workers", str(args.workers)]), 1)
    seconds = [json.loads((extracted / "cases" / pid / "case.json").read_text())["provenance"]["seconds"]
               for pid in manifest.head(n)["patient_id"] if (extracted / "cases" / pid / "case.json").is_file()]
    result["extract_per_case_s"] = {"median": round(statistics.median(seconds), 1), "n": len(seconds),
                                    "workers": args.workers}
    result["machine_after_extract"] = machine()
    if args.timing_cases:
        result["hook_timing"] = hook_timing(manifest, args.timing_cases, args.weights)
    table = pd.read_csv(extracted / "features.csv")
    table = table[table["he"].notna()]
    result["cohort"]["extracted"] = len(table)
    result["cohort"]["he_positive"] = int(table["he"].sum())
    result["cohort"]["deep_columns"] = sum(c.startswith("deep_") for c in table.columns)
    result["test_auc_10_halves"] = halves(table, truth)
    result["machine_at_end"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["test_auc_10_halves"], indent=1)[:2000])


if __name__ == "__main__":
    main()
