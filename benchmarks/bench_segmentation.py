"""Benchmark hemorrhage segmentation against the synthetic cohort's ground truth.

Every scan (baseline and follow-up) of a synthetic cohort is segmented with
the rule-based default (`segment_hemorrhage(image)`: brain mask + hemorrhage,
no model) and compared with its true mask: Dice, volume (Pearson r, mean
absolute error) and the hematoma-expansion label that the segmented volumes
give (6 mL or 33 %) against the cohort's true label.  The time of each call
is measured once per scan (reading the file excluded) and the median is
recorded.  Optionally (``--classifier``) a voxel classifier is trained on a
second, independent cohort (another seed) and measured the same way.

    .venv/bin/python benchmarks/bench_segmentation.py                  # 50 full-size patients (100 scans)
    .venv/bin/python benchmarks/bench_segmentation.py --classifier     # + trained voxel classifier

Results: ``benchmarks/results/segmentation.json`` and a markdown table row
(printed and written to ``benchmarks/results/segmentation.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from rich.progress import Progress

from hematoma import __version__
from hematoma.storage import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"median_dice": 0.90, "volume_pearson_r": 0.98, "volume_mae_ml": 1.0, "label_agreement": 0.95,
           "median_seconds_per_scan": 3.0}
HEADER = ("| segmenter | patients (scans) | median Dice | volume r | volume MAE (mL) | HE label agreement "
          "| median s / scan (CPU s) | machine (load) |\n|---|---|---|---|---|---|---|---|")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_cohort(folder: Path, patients: int, size: str, seed: int) -> float:
    """Generate the cohort into ``folder`` (resumable: finished patients are kept); seconds taken."""
    from hematoma.synthetic import generate_cohort

    start = time.perf_counter()
    generate_cohort(folder, patients, seed=seed, size=size, progress=True)
    return time.perf_counter() - start


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def evaluate(cohort: Path, patients: int, model=None, label: str = "rule-based") -> dict:
    """Segment every scan of the first ``patients`` patients and compare with the truth."""
    from hematoma.segmentation import segment_hemorrhage
    from hematoma.volume import label_expansion, mask_volume_ml

    truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str}).set_index("patient_id")
    ids = sorted(truth.index)[:patients]
    rows = []
    with Progress(transient=True) as bar:
        task = bar.add_task(f"segmenting ({label})", total=2 * len(ids))
        for pid in ids:
            for scan in ("baseline", "followup"):
                ct = sitk.ReadImage(str(cohort / "images" / f"{pid}_{scan}.nii.gz"))
                true_mask = sitk.ReadImage(str(cohort / "masks" / f"{pid}_{scan}.nii.gz"))
                start, cpu_start = time.perf_counter(), time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # an empty result is scored, not announced
                    found = segment_hemorrhage(ct, model=model)
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
                rows.append({
                    "patient_id": pid, "scan": scan, "seconds": seconds, "cpu_seconds": cpu_seconds, "size": list(ct.GetSize()),
                    "dice": dice(sitk.GetArrayViewFromImage(found) > 0, sitk.GetArrayViewFromImage(true_mask) > 0),
                    "volume_ml": mask_volume_ml(found), "true_volume_ml": mask_volume_ml(true_mask),
                    "load_average": os.getloadavg()[0],
                })
                bar.advance(task)
    table = pd.DataFrame(rows)
    volumes = table.pivot(index="patient_id", columns="scan", values="volume_ml")
    labels = {pid: label_expansion(volumes.loc[pid, "baseline"], volumes.loc[pid, "followup"]) for pid in ids}
    agree = [int(labels[pid]) == int(truth.loc[pid, "he"]) for pid in ids]
    errors = table["volume_ml"] - table["true_volume_ml"]
    return {
        "segmenter": label,
        "patients": len(ids),
        "scans": len(table),
        "median_dice": round(float(table["dice"].median()), 4),
        "mean_dice": round(float(table["dice"].mean()), 4),
        "dice_5th_percentile": round(float(table["dice"].quantile(0.05)), 4),
        "min_dice": round(float(table["dice"].min()), 4),
        "volume_pearson_r": round(float(np.corrcoef(table["volume_ml"], table["true_volume_ml"])[0, 1]), 4),
        "volume_mae_ml": round(float(errors.abs().mean()), 3),
        "volume_mean_error_ml": round(float(errors.mean()), 3),
        "label_agreement": round(float(np.mean(agree)), 4),
        "label_disagreements": [pid for pid, ok in zip(ids, agree) if not ok],
        "median_seconds_per_scan": round(statistics.median(table["seconds"]), 3),
        "p90_seconds_per_scan": round(float(table["seconds"].quantile(0.9)), 3),
        # CPU time of the process (all its threads): what the wall time is on an otherwise idle machine.
        "median_cpu_seconds_per_scan": round(statistics.median(table["cpu_seconds"]), 3),
        "median_load_average": round(float(table["load_average"].median()), 2),
        "worst_scans": table.assign(abs_error=errors.abs()).nlargest(5, "abs_error")[
            ["patient_id", "scan", "dice", "volume_ml", "true_volume_ml"]].round(3).to_dict("records"),
    }


def train_classifier(cohort: Path, out: Path, seed: int, max_voxels_per_case: int):
    from threadpoolctl import threadpool_limits

    from hematoma.segmentation import train_from_manifest

    # One OpenMP thread: gradient boosting's spinning threads crawl on a shared, busy machine.
    with threadpool_limits(limits=1, user_api="openmp"):
        start = time.perf_counter()
        model = train_from_manifest(cohort / "manifest.csv", out, overwrite=True, seed=seed,
                                    max_voxels_per_case=max_voxels_per_case)
    return model, time.perf_counter() - start


def markdown_row(result: dict, machine: str) -> str:
    return (f"| {result['segmenter']} | {result['patients']} ({result['scans']}) | {result['median_dice']:.3f} "
            f"| {result['volume_pearson_r']:.4f} | {result['volume_mae_ml']:.2f} | {100 * result['label_agreement']:.0f} % "
            f"| {result['median_seconds_per_scan']:.2f} ({result['median_cpu_seconds_per_scan']:.2f}) "
            f"| {machine} (load {result['median_load_average']:.1f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cohort-dir", type=Path, default=None, help="keep/reuse the generated cohort here")
    parser.add_argument("--classifier", action="store_true", help="also train and measure the voxel classifier")
    parser.add_argument("--train-patients", type=int, default=20, help="patients of the classifier's training cohort")
    parser.add_argument("--train-seed", type=int, default=None, help="seed of the training cohort (default: --seed + 1)")
    parser.add_argument("--max-voxels-per-case", type=int, default=5000, help="candidate voxels sampled per training scan")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    tmp = Path(tempfile.gettempdir())
    cohort = args.cohort_dir or tmp / f"hematoma-bench-cohort-{args.size}-{args.patients}-{args.seed}"
    generation_seconds = make_cohort(cohort, args.patients, args.size, args.seed)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    machine_text = f"{machine['cores']}-core {machine['cpu']}"

    results = [evaluate(cohort, args.patients)]
    training = None
    if args.classifier:
        # An independent cohort (another seed): no test patient is seen in training.
        train_seed = args.train_seed if args.train_seed is not None else args.seed + 1
        train_cohort = tmp / f"hematoma-bench-cohort-{args.size}-{args.train_patients}-{train_seed}"
        make_cohort(train_cohort, args.train_patients, args.size, train_seed)
        model, seconds = train_classifier(train_cohort, tmp / f"hematoma-bench-segmenter-{train_seed}", seed=args.seed,
                                          max_voxels_per_case=args.max_voxels_per_case)
        training = {"cohort_seed": train_seed, "patients": args.train_patients, "seconds": round(seconds, 1),
                    "max_voxels_per_case": args.max_voxels_per_case, "voxels": model.training["n_voxels"],
                    "selected": model.classifier.selected_estimator_, "threshold": model.classifier.threshold_,
                    "cross_validation": model.classifier.cv_results_}
        results.append(evaluate(cohort, args.patients, model=model, label=f"voxel classifier ({model.classifier.selected_estimator_})"))

    record = {
        "benchmark": "hemorrhage segmentation vs synthetic ground truth (both scans of each patient)",
        "cohort": {"source": "hematoma.synthetic.generate_cohort", "patients": args.patients, "size": args.size,
                   "seed": args.seed, "generation_seconds": round(generation_seconds, 1)},
        "he_definition": "6ml-or-33pct",
        "targets": TARGETS,
        "results": results,
        "classifier_training": training,
        "timing": "segment_hemorrhage(image) per scan (brain mask + hemorrhage), file reading excluded; one call per scan",
        "machine": machine,
        "hematoma_version": __version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "segmentation.json", record)
    rows = [markdown_row(r, machine_text) for r in results]
    write_text(args.results / "segmentation.md", HEADER + "\n" + "\n".join(rows) + "\n")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
