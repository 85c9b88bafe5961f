"""The protocol end to end: model quality vs the oracle, `hematoma demo` time, `hematoma predict` time.

1. ``quality``: ``--patients`` (>= 300) small synthetic patients (generated with
   2 workers, kept in ``--workdir``), then :func:`hematoma.pipeline.run_protocol`
   as ``hematoma run`` does it (CNN ``--cnn-preset``, weights ``--cnn-weights``,
   every feature group, classifier auto, default grid).  Records the hybrid
   model's test AUC (DeLong 95 % CI) next to the oracle AUC (the generator's true
   P vs the realised HE) and the observable AUC (P without the generator's hidden
   term: the best any model of the observed variables can do) *on the same test
   patients*, the ablation and the baselines.  Nothing is tuned on the test set:
   the settings are ``hematoma run``'s defaults except the CNN preset.
   ``nested``: on the same table, the repeated nested CV estimate (rad + clin,
   every patient) next to the whole cohort's oracle and observable AUCs.
   ``splits``: how much one train/test split says.  The patients the CNN never
   saw (cohort 2: the run's train and test parts) are split again ``--repeats``
   times into stratified halves (about the paper protocol's 76/74); for each
   half the hybrid and the radiomics + clinical model are fitted on one half
   and tested on the other, next to the oracle and observable AUCs of the same
   test half.  The CNN stays the one trained on cohort 1.
2. ``demo``: ``hematoma demo`` in a fresh folder, in a subprocess pinned to 2 CPU
   cores (``taskset`` where present), wall time and each stage's seconds.
3. ``predict``: :class:`hematoma.prediction.Predictor` loaded once, then the
   median of ``--runs`` predictions of one patient (read, mask given or
   segmented, radiomics, CNN features when the model has them, model; the
   overlay PNG written too), for a small and a full-size synthetic scan.

Results: ``benchmarks/results/pipeline.json`` (each part updates its own
section; with the machine and its load average, which bounds what the times
mean on a shared machine).

    python benchmarks/bench_pipeline.py --part quality --patients 300   # long (tens of minutes)
    python benchmarks/bench_pipeline.py --part splits --repeats 5        # after quality
    python benchmarks/bench_pipeline.py --part demo
    python benchmarks/bench_pipeline.py --part predict                   # needs a quality or demo run first
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "hematoma-bench-pipeline"


def machine() -> dict:
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    try:
        info["cores_available"] = len(os.sched_getaffinity(0))
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except (AttributeError, OSError):
        pass
    return info


def save(section: str, result: dict) -> None:
    from hematoma import __version__
    from hematoma.storage import write_json

    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[section] = {**result, "machine": machine(), "hematoma": __version__,
                     "recorded": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(RESULTS, data)
    print(json.dumps(data[section], indent=2, default=str)[:4000])


def _ci(entry: dict) -> dict:
    return {"auc": round(entry["auc"], 4), "lower": round(entry["lower"], 4), "upper": round(entry["upper"], 4)}


def bench_quality(patients: int, workdir: Path, preset: str, weights: str, seed: int) -> dict:
    from hematoma.pipeline import RunSettings, run_protocol
    from hematoma.synthetic import generate_cohort

    cohort = workdir / f"cohort-{patients}-small-seed{seed}"
    out = workdir / f"run-{patients}-{preset}-{weights}-seed{seed}"
    started = time.perf_counter()
    generate_cohort(cohort, patients, seed=seed, size="small", workers=2)
    generation_s = time.perf_counter() - started
    settings = RunSettings(workers=2, cnn_preset=preset, cnn_weights=weights, seed=seed)
    started = time.perf_counter()
    result = run_protocol(cohort / "manifest.csv", out, settings)
    run_s = time.perf_counter() - started
    metrics = result.metrics
    oracle = metrics["oracle"]
    stages = json.loads((out / "run.json").read_text())["stages"]
    model_auc = _ci(metrics["model"]["auc_ci"]["delong"])
    oracle_auc = _ci(oracle["auc"])
    return {
        "patients": patients, "size": "small", "seed": seed, "cnn_preset": preset, "cnn_weights": weights,
        "cnn_weights_source": stages.get("cnn", {}).get("weights_source"),
        "out": str(out), "model_name": metrics["model_name"], "chosen_model": metrics["model"].get("model"),
        "test_patients": metrics["model"]["n"], "test_he": metrics["model"]["n_he"],
        "model_test_auc": model_auc, "model_test_auc_bootstrap": _ci(metrics["model"]["auc_ci"]["bootstrap"]),
        "model_average_precision": round(metrics["model"]["average_precision"], 4),
        "oracle_auc_same_patients": oracle_auc,
        "observable_auc_same_patients": _ci(oracle["observable_auc"]) if oracle.get("observable_auc") else None,
        "gap_to_oracle": round(oracle_auc["auc"] - model_auc["auc"], 4),
        "within_0.03_of_oracle": bool(oracle_auc["auc"] - model_auc["auc"] <= 0.03),
        "ablation": [{k: row.get(k) for k in ("feature_set", "status", "auc", "auc_lower", "auc_upper",
                                               "average_precision", "classifier", "k", "note")}
                     for row in metrics["ablation"]],
        "baselines": {key: (_ci(entry["metrics"]["auc_ci"]["delong"]) if entry.get("status") == "ok" else entry.get("status"))
                      for key, entry in metrics["baselines"].items()},
        "generation_s": round(generation_s, 1), "run_s": round(run_s, 1),
        "stage_s": {name: stage["seconds"] for name, stage in stages.items()},
    }


def bench_nested(patients: int, workdir: Path, preset: str, weights: str, seed: int) -> dict:
    """Repeated nested CV (rad + clin) over every patient of the quality run's table, vs the cohort's oracle."""
    from hematoma.protocols import TrainSettings, train

    out = workdir / f"run-{patients}-{preset}-{weights}-seed{seed}"
    oracle = json.loads((workdir / f"cohort-{patients}-small-seed{seed}" / "oracle.json").read_text())
    started = time.perf_counter()
    result = train(out, workdir / "nested-model", TrainSettings(protocol="nested-cv", groups=("rad", "clin"), seed=seed),
                   overwrite=True)
    estimate = result.evaluation["nested_cv"]
    return {"patients": patients, "features": "rad,clin (CNN features cannot enter nested CV)",
            "outer_splits": estimate["outer_splits"], "repeats": estimate["repeats"],
            "nested_cv_auc_mean": round(estimate["mean"], 4), "nested_cv_auc_sd": round(estimate["sd"], 4),
            "fold_aucs": [round(a, 4) for a in estimate["fold_aucs"]],
            "cohort_oracle_auc": round(oracle["oracle_auc"], 4), "cohort_observable_auc": round(oracle["observable_auc"], 4),
            "classifiers_chosen": sorted({f["classifier"] for f in estimate["folds"]}),
            "seconds": round(time.perf_counter() - started, 1)}


def bench_splits(patients: int, workdir: Path, preset: str, weights: str, seed: int, repeats: int) -> dict:
    """Hybrid vs radiomics + clinical over repeated 2-fold splits of cohort 2 (the quality run's table)."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    from hematoma.model import FEATURE_SETS, model_inputs
    from hematoma.protocols import TrainSettings, fit_on, read_features

    out = workdir / f"run-{patients}-{preset}-{weights}-seed{seed}"
    cohort = workdir / f"cohort-{patients}-small-seed{seed}"
    table = read_features(out).table
    split = pd.read_csv(out / "split.csv", dtype={"patient_id": str}).set_index("patient_id")["part"]
    table = table[table["patient_id"].astype(str).map(split).isin(["train", "test"])].reset_index(drop=True)
    truth = {}
    for pid in table["patient_id"].astype(str):
        record = json.loads((cohort / "records" / f"{pid}.json").read_text())["truth"]
        truth[pid] = (record["true_p"], record["observable_p"])
    y = table["he"].to_numpy(dtype=int)
    sets = {"hybrid": FEATURE_SETS["hybrid"], "radiomics+clinical": FEATURE_SETS["radiomics+clinical"]}
    aucs: dict[str, list[float]] = {name: [] for name in (*sets, "oracle", "observable")}
    started = time.perf_counter()
    folds = RepeatedStratifiedKFold(n_splits=2, n_repeats=repeats, random_state=seed)
    for train_index, test_index in folds.split(table, y):
        train, test = table.iloc[train_index], table.iloc[test_index]
        ids = test["patient_id"].astype(str)
        aucs["oracle"].append(roc_auc_score(test["he"], [truth[i][0] for i in ids]))
        aucs["observable"].append(roc_auc_score(test["he"], [truth[i][1] for i in ids]))
        for name, groups in sets.items():
            model = fit_on(train, TrainSettings(groups=groups, seed=seed), groups)
            X_test, y_test = model_inputs(test, groups=groups)
            aucs[name].append(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]))
        print(", ".join(f"{k} {v[-1]:.3f}" for k, v in aucs.items()), flush=True)
    return {
        "patients": len(table), "halves": f"2-fold x {repeats}", "train_size": len(table) // 2,
        "test_auc": {name: {"mean": round(statistics.mean(v), 4), "sd": round(statistics.stdev(v), 4),
                            "values": [round(a, 4) for a in v]} for name, v in aucs.items()},
        "hybrid_minus_radiomics_clinical": [round(a - b, 4) for a, b in zip(aucs["hybrid"], aucs["radiomics+clinical"])],
        "seconds": round(time.perf_counter() - started, 1),
    }


def bench_demo(workdir: Path) -> dict:
    out = workdir / "demo"
    shutil.rmtree(out, ignore_errors=True)
    hematoma = Path(sys.executable).with_name("hematoma")
    command = [str(hematoma), "demo", "--out", str(out)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0,1", *command]  # 2 cores, whatever the machine has
    load_before = os.getloadavg()
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"demo failed:\n{completed.stderr[-3000:]}")
    stages = json.loads((out / "run.json").read_text())["stages"]
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    return {"command": " ".join(command), "wall_s": round(wall, 1), "within_10_min": wall <= 600,
            "load_average_before": [round(x, 2) for x in load_before],
            "stage_s": {name: stage["seconds"] for name, stage in stages.items()},
            "patients": json.loads((out / "cohort" / "oracle.json").read_text())["n"],
            "model_test_auc": _ci(metrics["model"]["auc_ci"]["delong"]),
            "oracle_auc_same_patients": _ci(metrics["oracle"]["auc"]), "stdout": completed.stdout.strip().splitlines()}


def bench_predict(model: Path, runs: int, workdir: Path) -> dict:
    import SimpleITK as sitk

    from hematoma.prediction import Predictor, clinical_from_pairs, write_overlay
    from hematoma.synthetic import make_head_ct

    started = time.perf_counter()
    predictor = Predictor.load(model, device="cpu")
    load_s = time.perf_counter() - started
    clinical = clinical_from_pairs(["age=68", "sex=M", "sbp=165", "dbp=95", "hypertension=yes"], "bench",
                                   predictor.bundle.feature_columns)
    results = {"model": str(model), "uses_cnn": predictor.uses_cnn, "load_s": round(load_s, 2), "runs": runs, "cases": {}}
    for size in ("small", "full"):
        ct, mask = make_head_ct(size=size, seed=3, hematoma_ml=25.0)
        ct_path, mask_path = workdir / f"predict_ct_{size}.nii.gz", workdir / f"predict_mask_{size}.nii.gz"
        sitk.WriteImage(ct, str(ct_path))
        sitk.WriteImage(mask, str(mask_path))
        for mode, given in (("mask given", mask_path), ("segmented", None)):
            times, steps = [], []
            for run in range(runs + 1):  # the first is a warm-up
                t0 = time.perf_counter()
                prediction = predictor.predict(ct_path, mask=given, clinical=clinical)
                write_overlay(prediction, workdir / "predict_overlay.png", overwrite=True)
                if run:
                    times.append(time.perf_counter() - t0)
                    steps.append(prediction.seconds)
            step_medians = {k: round(statistics.median(s[k] for s in steps), 3) for k in steps[0]}
            results["cases"][f"{size} ({mode})"] = {
                "scan_size_xyz": list(ct.GetSize()), "median_s": round(statistics.median(times), 3),
                "runs_s": [round(t, 3) for t in times], "median_step_s": step_medians,
                "probability": round(prediction.probability, 4)}
    results["median_s_worst"] = max(case["median_s"] for case in results["cases"].values())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("quality", "nested", "splits", "demo", "predict", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=5, help="2-fold repeats for --part splits.")
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cnn-preset", default="fast")
    parser.add_argument("--cnn-weights", default="auto")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads for --part predict (default: torch's).")
    parser.add_argument("--model", type=Path, help="Bundle for --part predict (default: the quality run's, else the demo's).")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.part in ("quality", "all"):
        save("quality", bench_quality(args.patients, args.workdir, args.cnn_preset, args.cnn_weights, args.seed))
    if args.part in ("nested", "all"):
        save("nested_cv", bench_nested(args.patients, args.workdir, args.cnn_preset, args.cnn_weights, args.seed))
    if args.part in ("splits", "all"):
        save("repeated_splits", bench_splits(args.patients, args.workdir, args.cnn_preset, args.cnn_weights, args.seed,
                                             args.repeats))
    if args.part in ("demo", "all"):
        save("demo", bench_demo(args.workdir))
    if args.part in ("predict", "all"):
        model = args.model
        if model is None:
            quality = args.workdir / f"run-{args.patients}-{args.cnn_preset}-{args.cnn_weights}-seed{args.seed}" / "model"
            model = quality if quality.is_dir() else args.workdir / "demo" / "model"
        if args.torch_threads:
            import torch

            torch.set_num_threads(args.torch_threads)
        result = bench_predict(model, args.runs, args.workdir)
        import torch

        result["torch_threads"] = torch.get_num_threads()
        save("predict" if not args.torch_threads else f"predict_torch_threads_{args.torch_threads}", result)


if __name__ == "__main__":
    main()
