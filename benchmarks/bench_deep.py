"""Benchmark the deep (BLAST-CT) segmenter: speed against the package's own loop, accuracy against the truth.

Speed (``--part speed``): one full-size synthetic head CT (512 x 512 x 27 at
0.45 x 0.45 x 5 mm), segmented side by side in one run by the rules, our
BLAST-CT inference with 1 model and with 4 models, and the ``blast-ct``
package's own inference loop (``blast_ct.inference.run_inference``) with the
same weights, interleaved so a change in load hits them alike; medians of
``--repeats`` runs (the package's loop ``--package-repeats`` times: minutes
each).  The package's mask is compared with ours (Dice of each blood class).

Accuracy (``--part accuracy``): the baseline scans of ``--patients``
full-size synthetic patients, rules and BLAST-CT (1 model; ``--models`` to
change), Dice and volume r against the generator's true masks, for each
choice of blood classes (iph, iph+ivh, blood) and for ``both``.

    .venv/bin/python benchmarks/bench_deep.py --weights ../shared/models/blast-ct-v1

Results: ``benchmarks/results/deep.json``.
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
import SimpleITK as sitk

from hematoma import __version__
from hematoma.storage import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "deep.json"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "models" / "blast-ct-v1"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def package_loop(ct_path: Path, weights: Path, folder: Path) -> tuple[np.ndarray, float]:
    """The blast-ct package's own inference (its DataLoader, patches and saver), one model, on the CPU."""
    import pandas as pd
    from blast_ct.inference import run_inference

    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "test.csv"
    pd.DataFrame({"id": ["scan"], "image": [str(ct_path)]}).to_csv(table, index=False)
    start = time.perf_counter()
    run_inference(str(folder / "job"), str(table), str(weights / "config.json"), "cpu", str(weights / "model_1.pt"),
                  False, False, False, 1, True, True)
    seconds = time.perf_counter() - start
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "job" / "predictions" / "scan_prediction.nii.gz")))
    return labels.astype(np.uint8), seconds


def speed(weights: Path, repeats: int, package_repeats: int) -> dict:
    from hematoma.segmentation import segment_hemorrhage
    from hematoma.segmentation.deep import DeepSegmenter
    from hematoma.synthetic import make_head_ct

    ct, truth = make_head_ct(size="full", seed=0, hematoma_ml=20.0)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ct_path = folder / "ct.nii.gz"
        sitk.WriteImage(ct, str(ct_path))
        ct = sitk.ReadImage(str(ct_path))  # the package reads the file: both see the same voxels and geometry
        one, four = DeepSegmenter(weights, 1), DeepSegmenter(weights, 4)
        runs = {"rules": [], "deep_1_model": [], "deep_4_models": [], "package_loop_1_model": []}
        ours = package = None
        for repeat in range(max(repeats, package_repeats)):
            if repeat < repeats:
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    segment_hemorrhage(ct)
                runs["rules"].append(time.perf_counter() - start)
                result = one.segment(ct)
                runs["deep_1_model"].append(result.seconds)
                ours = sitk.GetArrayFromImage(result.labels)
                runs["deep_4_models"].append(four.segment(ct).seconds)
            if repeat < package_repeats:
                package, seconds = package_loop(ct_path, weights, folder / f"package{repeat}")
                runs["package_loop_1_model"].append(seconds)
            print({k: [round(s, 1) for s in v] for k, v in runs.items()}, flush=True)
        medians = {k: round(statistics.median(v), 2) for k, v in runs.items() if v}
        true_mask = sitk.GetArrayFromImage(truth) > 0
        return {
            "scan": {"size": list(ct.GetSize()), "spacing_mm": [round(s, 3) for s in ct.GetSpacing()],
                     "source": "make_head_ct(size='full', seed=0, hematoma_ml=20)"},
            "seconds": {k: [round(s, 2) for s in v] for k, v in runs.items()},
            "median_seconds": medians,
            "speedup_vs_package_loop": round(medians["package_loop_1_model"] / medians["deep_1_model"], 2),
            "ours_vs_package_dice": {name: round(dice(np.isin(ours, c), np.isin(package, c)), 4)
                                     for name, c in (("iph", (1,)), ("iph+ivh", (1, 4)), ("blood", (1, 2, 4)))},
            "ours_vs_package_voxels_equal": round(float(np.mean(ours == package)), 6),
            "deep_1_model_dice_vs_truth": round(dice(np.isin(ours, (1,)), true_mask), 4),
        }


def accuracy(weights: Path, patients: int, n_models: int, seed: int, cohort: Path | None) -> dict:
    import pandas as pd
    from rich.progress import Progress

    from hematoma.segmentation.methods import SegmenterSettings, agreement, segment_with
    from hematoma.segmentation.deep import HEMATOMA_CLASSES, DeepSegmenter
    from hematoma.synthetic import generate_cohort
    from hematoma.volume import mask_volume_ml

    cohort = cohort or Path(tempfile.gettempdir()) / f"hematoma-bench-cohort-full-{patients}-{seed}"
    generate_cohort(cohort, patients, seed=seed, size="full", progress=True)
    truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str}).set_index("patient_id")
    segmenter = DeepSegmenter(weights, n_models)
    rows = []
    with Progress(transient=True) as bar:
        task = bar.add_task("rules + BLAST-CT", total=patients)
        for pid in sorted(truth.index)[:patients]:
            ct = sitk.ReadImage(str(cohort / "images" / f"{pid}_baseline.nii.gz"))
            true_mask = sitk.ReadImage(str(cohort / "masks" / f"{pid}_baseline.nii.gz"))
            true = sitk.GetArrayFromImage(true_mask) > 0
            voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rules = segment_with(ct, SegmenterSettings("rules")).mask
            rules_array = sitk.GetArrayFromImage(rules) > 0
            deep = segmenter.segment(ct)
            labels = sitk.GetArrayFromImage(deep.labels)
            row = {"patient_id": pid, "true_ml": mask_volume_ml(true_mask), "rules_dice": dice(rules_array, true),
                   "rules_ml": mask_volume_ml(rules), "deep_seconds": deep.seconds}
            for name, classes in HEMATOMA_CLASSES.items():
                found = np.isin(labels, classes)
                row[f"deep_{name}_dice"] = dice(found, true)
                row[f"deep_{name}_ml"] = float(found.sum()) * voxel_ml
            row["rules_vs_deep_dice"], _ = agreement(rules_array, np.isin(labels, (1,)), voxel_ml)
            rows.append(row)
            bar.advance(task)
    table = pd.DataFrame(rows)

    def summary(dice_column: str, ml_column: str) -> dict:
        return {"median_dice": round(float(table[dice_column].median()), 4),
                "min_dice": round(float(table[dice_column].min()), 4),
                "volume_pearson_r": round(float(np.corrcoef(table[ml_column], table["true_ml"])[0, 1]), 4),
                "volume_mae_ml": round(float((table[ml_column] - table["true_ml"]).abs().mean()), 3)}

    return {
        "cohort": {"patients": patients, "seed": seed, "size": "full", "scans": "baseline"},
        "n_models": n_models,
        "rules": summary("rules_dice", "rules_ml"),
        **{f"deep_{name}": summary(f"deep_{name}_dice", f"deep_{name}_ml") for name in HEMATOMA_CLASSES},
        "rules_vs_deep_iph_median_dice": round(float(table["rules_vs_deep_dice"].median()), 4),
        "deep_median_seconds": round(float(table["deep_seconds"].median()), 1),
        "per_patient": table.round(4).to_dict("records"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--part", choices=["speed", "accuracy", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--package-repeats", type=int, default=1)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--models", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cohort-dir", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    record = {}
    if args.results.exists():
        import json

        record = json.loads(args.results.read_text())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()}-core {cpu_model()} (CPU)"
    machine = {"device": device, "cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
    if args.part in ("speed", "all"):
        record["speed"] = {**speed(args.weights, args.repeats, args.package_repeats), "machine": machine,
                           "date": time.strftime("%Y-%m-%d")}
    if args.part in ("accuracy", "all"):
        record["accuracy"] = {**accuracy(args.weights, args.patients, args.models, args.seed, args.cohort_dir),
                              "machine": machine, "date": time.strftime("%Y-%m-%d")}
    record.update(benchmark="BLAST-CT deep segmentation: speed vs the blast-ct package's loop, accuracy vs synthetic truth",
                  hematoma_version=__version__, weights=str(args.weights))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.results, record)
    print({k: v for k, v in record.items() if k in ("speed", "accuracy")}.__repr__()[:3000])


if __name__ == "__main__":
    main()
