"""Benchmark the NCCT sign detector (hematoma.features.signs) against the generator's truth (issue 13).

``--patients`` synthetic patients (seed ``--seed``, ``--size`` small: 1.8 mm in-plane, or full: 0.45 mm; 5 mm
slices) are generated with their sign truth (``truth["signs"]``, hematoma.synthetic.signs), and the signs are
detected on the baseline CT twice: inside the truth mask, and inside the mask the rule-based segmenter draws (what
a user without masks gets). For each sign: prevalence, sensitivity and specificity (with Wilson 95 % intervals);
for the Barras shape and density grades: exact agreement, within one grade, and weighted kappa. Also the BAT
score's and each sign's association with HE (odds ratio) in the cohort, and seconds per case of the detector.

    .venv/bin/python benchmarks/bench_signs.py                           # 300 small patients (~10 min, 2 cores)
    .venv/bin/python benchmarks/bench_signs.py --size full --patients 60 # full-size check

Results: ``benchmarks/results/signs_<size>.json``. Targets (issue 13): sensitivity and specificity >= 0.85 for
hypodensity, black hole, blend and island; Barras grades within one grade for >= 90 % of patients.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from hematoma import __version__
from hematoma.storage import write_json

RESULTS = Path(__file__).resolve().parent / "results"
SIGNS = ("hypodensity", "black_hole", "blend", "swirl", "fluid_level", "island", "satellite")
TARGETED = ("hypodensity", "black_hole", "blend", "island")
GRADES = ("barras_shape", "barras_density")


def one_patient(args) -> dict:
    index, seed, size = args
    import warnings

    from hematoma.features.signs import compute_signs
    from hematoma.segmentation import segment_hemorrhage
    from hematoma.synthetic.patient import synthesize_patient

    patient = synthesize_patient(index, seed=seed, size=size)
    row = {"index": index, "he": int(patient.truth["he"]), "truth": patient.truth["signs"],
           "onset": float(patient.clinical["onset_to_ct_hours"])}
    start = time.perf_counter()
    row["on_truth_mask"] = compute_signs(patient.baseline_ct, patient.baseline_mask)
    row["seconds"] = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mask = segment_hemorrhage(patient.baseline_ct)
            row["on_segmented_mask"] = compute_signs(patient.baseline_ct, mask)
        except Exception as error:  # noqa: BLE001 - a refused scan is counted, not fatal
            row["on_segmented_mask"] = None
            row["segmentation_error"] = str(error)[:200]
    return row


def wilson(successes: int, total: int) -> list[float] | None:
    if total == 0:
        return None
    p, z = successes / total, 1.96
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(centre - half, 3), round(centre + half, 3)]


def detection(rows: list[dict], key: str) -> dict:
    out = {}
    usable = [r for r in rows if r.get(key)]
    for sign in SIGNS:
        truth = np.array([int(r["truth"][sign]) for r in usable])
        found = np.array([int(r[key][f"sign_{sign}"] >= 0.5) for r in usable])
        tp, fn = int(((truth == 1) & (found == 1)).sum()), int(((truth == 1) & (found == 0)).sum())
        tn, fp = int(((truth == 0) & (found == 0)).sum()), int(((truth == 0) & (found == 1)).sum())
        out[sign] = {"prevalence": round(float(truth.mean()), 3), "n_true": int(truth.sum()),
                     "sensitivity": round(tp / (tp + fn), 3) if tp + fn else None, "sensitivity_ci": wilson(tp, tp + fn),
                     "specificity": round(tn / (tn + fp), 3) if tn + fp else None, "specificity_ci": wilson(tn, tn + fp),
                     "tp": tp, "fn": fn, "tn": tn, "fp": fp}
    for grade in GRADES:
        truth = np.array([int(r["truth"][grade]) for r in usable])
        found = np.array([int(r[key][f"sign_{grade}"]) for r in usable])
        out[grade] = {"exact": round(float((truth == found).mean()), 3),
                      "within_one": round(float((abs(truth - found) <= 1).mean()), 3),
                      "weighted_kappa": round(float(_kappa(truth, found)), 3),
                      "truth_counts": {str(g): int((truth == g).sum()) for g in range(1, 6)},
                      "found_counts": {str(g): int((found == g).sum()) for g in range(1, 6)}}
    out["cases"] = len(usable)
    out["targets_met"] = {s: bool((out[s]["sensitivity"] or 0) >= 0.85 and (out[s]["specificity"] or 0) >= 0.85)
                          for s in TARGETED} | {g: bool(out[g]["within_one"] >= 0.90) for g in GRADES}
    return out


def _kappa(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    return cohen_kappa_score(a, b, weights="linear", labels=[1, 2, 3, 4, 5])


def association(rows: list[dict]) -> dict:
    from sklearn.metrics import roc_auc_score

    from hematoma.features.signs import bat_score

    he = np.array([r["he"] for r in rows])
    out = {}
    for sign in SIGNS:
        flag = np.array([int(r["on_truth_mask"][f"sign_{sign}"] >= 0.5) for r in rows])
        a, b = ((flag == 1) & (he == 1)).sum() + 0.5, ((flag == 1) & (he == 0)).sum() + 0.5
        c, d = ((flag == 0) & (he == 1)).sum() + 0.5, ((flag == 0) & (he == 0)).sum() + 0.5
        out[f"{sign}_odds_ratio_detected"] = round(float(a * d / (b * c)), 2)
    bat = np.array([bat_score(r["on_truth_mask"]["sign_blend"], r["on_truth_mask"]["sign_hypodensity"], r["onset"])
                    for r in rows])
    keep = ~np.isnan(bat)
    out["bat_auc"] = round(float(roc_auc_score(he[keep], bat[keep])), 3) if len(set(he[keep])) == 2 else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="small", choices=("small", "full"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from rich.progress import track

    jobs = [(i, args.seed, args.size) for i in range(args.patients)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(track(pool.map(one_patient, jobs), total=len(jobs), description="patients"))
    results = {
        "what": f"sign detection on {args.patients} {args.size}-size synthetic patients (seed {args.seed}) against "
                "the generator's truth; on the truth mask and on the rule-based segmenter's mask",
        "on_truth_mask": detection(rows, "on_truth_mask"),
        "on_segmented_mask": detection(rows, "on_segmented_mask"),
        "segmentation_refused": sum(1 for r in rows if r.get("on_segmented_mask") is None),
        "association_with_he": association(rows),
        "he_rate": round(float(np.mean([r["he"] for r in rows])), 3),
        "detector_seconds_per_case": {"median": round(statistics.median(r["seconds"] for r in rows), 3)},
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "workers": args.workers, "load_average": list(os.getloadavg())},
        "hematoma": __version__, "date": time.strftime("%Y-%m-%d"),
    }
    write_json(RESULTS / f"signs_{args.size}.json", results)
    for key in ("on_truth_mask", "on_segmented_mask"):
        print(key, {s: (results[key][s].get("sensitivity"), results[key][s].get("specificity")) for s in SIGNS},
              {g: results[key][g]["within_one"] for g in GRADES})
    print(results["association_with_he"])


if __name__ == "__main__":
    main()
