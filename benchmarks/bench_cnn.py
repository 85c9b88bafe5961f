"""CNN features: embedding time per patient, training throughput, and what the features know.

1. Embedding one patient (3 images: slices, crop, resample, Inception v3
   forward): median of ``--runs`` runs after a warm-up, for a full-size
   (512x512x~30) and a small synthetic scan; with and without reading the
   NIfTI files.
2. Training throughput (forward + backward + Adam step, batch 8, 299x299),
   images per second: every layer (the ``paper`` preset) and Mixed_7c + heads
   (the ``fast`` preset).
3. Quality on the synthetic cohort: ``--patients`` patients (size small) ->
   a pipeline output folder built here from the cohort's ground-truth masks ->
   ``train_cnn`` (fast preset, ``--weights``) on cohort 1 -> ``embed_output``
   -> a logistic regression on the 6144 CNN features alone, fitted on cohort
   2's train part (C chosen by inner CV) and scored on its test part (AUC),
   next to the oracle AUC (the generator's true P vs the realised HE) of the
   same test patients, and a 5x repeated 5-fold CV AUC over all of cohort 2.

Results: ``benchmarks/results/cnn.json`` (with the machine, load average and
versions; timings on a shared machine are upper bounds).

    python benchmarks/bench_cnn.py [--runs 7] [--patients 200] [--work DIR] [--only speed|quality]
"""

from __future__ import annotations

import argparse
import json
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
import torch

from hematoma.features.deep import build_network, embed_output, embed_patient, train_cnn
from hematoma.features.deep.bundle import CNNModel, versions
from hematoma.features.deep.cases import read_case_images
from hematoma.features.deep.network import offline
from hematoma.features.deep.training import normalize
from hematoma.storage import write_json

warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-learn deprecation notes

RESULTS = Path(__file__).resolve().parent / "results" / "cnn.json"


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1_5_15": list(os.getloadavg())}


def timed(function, runs: int) -> list[float]:
    function()  # warm-up (oneDNN picks its kernels on the first call)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def bench_embedding(runs: int, folder: Path) -> dict:
    from hematoma.synthetic import make_head_ct

    torch.manual_seed(0)
    network, _ = build_network("none")
    model = CNNModel.from_network(network)
    results = {}
    for size in ("full", "small"):
        ct, mask = make_head_ct(size=size, seed=1, hematoma_ml=25.0)
        ct_path, mask_path = folder / f"ct_{size}.nii.gz", folder / f"mask_{size}.nii.gz"
        sitk.WriteImage(ct, str(ct_path))
        sitk.WriteImage(mask, str(mask_path))
        in_memory = timed(lambda: embed_patient(ct, mask, model), runs)
        from_files = timed(lambda: embed_patient(*read_case_images(ct_path, mask_path), model), runs)
        results[size] = {"scan_size_xyz": list(ct.GetSize()), "spacing_mm": [round(s, 3) for s in ct.GetSpacing()],
                         "median_s_in_memory": statistics.median(in_memory),
                         "median_s_with_reading": statistics.median(from_files),
                         "runs_s_in_memory": in_memory, "runs_s_with_reading": from_files}
    return results


def bench_training(runs: int) -> dict:
    results = {}
    for name, prefixes in (("paper (all layers)", ()), ("fast (Mixed_7c + heads)", ("Mixed_7c.", "fc.", "AuxLogits."))):
        torch.manual_seed(0)
        network, _ = build_network("none")
        network.train()
        for parameter_name, parameter in network.named_parameters():
            parameter.requires_grad_(not prefixes or parameter_name.startswith(prefixes))
        optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)
        x = normalize(torch.rand(8, 3, 299, 299))
        y = torch.tensor([0, 1] * 4)

        def step():
            output = network(x)
            loss = torch.nn.functional.cross_entropy(output.logits, y)
            loss = loss + 0.4 * torch.nn.functional.cross_entropy(output.aux_logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        times = timed(step, runs)
        results[name] = {"batch": 8, "median_images_per_s": 8 / statistics.median(times), "runs_s": times}
    return results


def build_output_folder(cohort: Path, out: Path) -> pd.DataFrame:
    """What `hematoma extract` would write, from the cohort's ground-truth masks (labels from truth.csv)."""
    manifest = pd.read_csv(cohort / "manifest.csv", dtype={"patient_id": str})
    truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str})
    for row in manifest.itertuples(index=False):
        case = out / "cases" / row.patient_id
        case.mkdir(parents=True, exist_ok=True)
        (case / "case.json").write_text(json.dumps({
            "patient_id": row.patient_id, "baseline_ct": str((cohort / row.baseline_ct).resolve()),
            "baseline_mask": str((cohort / row.baseline_mask).resolve())}))
    table = truth[["patient_id", "he", "baseline_volume_ml"]].copy()
    table.to_csv(out / "features.csv", index=False)
    return truth


def bench_quality(patients: int, seed: int, weights: str, folder: Path) -> dict:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hematoma.synthetic import generate_cohort

    started = time.perf_counter()
    generate_cohort(folder / "cohort", patients, seed=seed, size="small")
    generated = time.perf_counter() - started
    out = folder / "out"
    truth = build_output_folder(folder / "cohort", out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        result = train_cnn(out, folder / "cnn", preset_name="fast", weights=weights, seed=seed, overwrite=True)
        trained = time.perf_counter() - started
    started = time.perf_counter()
    embed_output(out, folder / "cnn")
    embedded = time.perf_counter() - started

    features = pd.read_parquet(out / "features.parquet")
    split = pd.read_csv(out / "split.csv", dtype={"patient_id": str})
    data = features.merge(split, on="patient_id").merge(truth[["patient_id", "true_p"]], on="patient_id")
    columns = [c for c in data.columns if c.startswith("cnn_")]
    train, test = data[data["part"] == "train"], data[data["part"] == "test"]
    cohort2 = data[data["cohort"] == 2]
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-5, 0, 11), cv=3, scoring="roc_auc",
                                                                 max_iter=5000))
    model.fit(train[columns], train["he"].astype(int))
    test_auc = roc_auc_score(test["he"].astype(int), model.predict_proba(test[columns])[:, 1])
    oracle_auc = roc_auc_score(test["he"].astype(int), test["true_p"])
    volume_auc = roc_auc_score(test["he"].astype(int), test["baseline_volume_ml"])
    fixed = make_pipeline(StandardScaler(), LogisticRegression(C=float(model[-1].C_[0]), max_iter=5000))
    cv = RepeatedStratifiedKFold(n_splits=5, n_repeats=5, random_state=seed)
    cv_auc = cross_val_score(fixed, cohort2[columns], cohort2["he"].astype(int), cv=cv, scoring="roc_auc")
    cv_oracle = [roc_auc_score(cohort2["he"].iloc[te], cohort2["true_p"].iloc[te])
                 for _, te in cv.split(cohort2, cohort2["he"].astype(int))]
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    return {
        "patients": patients, "seed": seed, "size": "small", "weights_requested": weights,
        "weights_source": result.weights_source, "warnings": [str(w.message) for w in caught],
        "cohort1_train_patients": int((result.cases["part"] == "train").sum()),
        "cohort1_validation_patients": int((result.cases["part"] == "validation").sum()),
        "cohort2_train_patients": int(len(train)), "cohort2_test_patients": int(len(test)),
        "he_rate": float(data["he"].mean()),
        "cnn_validation_accuracy_best_epoch": float(best["validation_accuracy"]),
        "lr_on_cnn_features_test_auc": float(test_auc),
        "oracle_test_auc_same_patients": float(oracle_auc),
        "baseline_volume_test_auc_same_patients": float(volume_auc),
        "lr_chosen_C": float(model[-1].C_[0]),
        "lr_on_cnn_features_cohort2_repeated_cv_auc_mean": float(np.mean(cv_auc)),
        "lr_on_cnn_features_cohort2_repeated_cv_auc_sd": float(np.std(cv_auc)),
        "oracle_cohort2_repeated_cv_auc_mean": float(np.mean(cv_oracle)),
        "seconds": {"generate_cohort": generated, "train_cnn_fast": trained, "embed_all_patients": embedded},
        "training_history": result.history.to_dict(orient="records"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="auto", help="auto, imagenet, none or a state-dict file")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the quality part")
    parser.add_argument("--speed-threads", type=lambda text: [int(t) for t in text.split(",")], default=[1, 2],
                        help="thread counts the speed part is measured with (comma-separated)")
    parser.add_argument("--only", choices=("speed", "quality"), help="Run one part; the other's results are kept.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, help="Working folder to keep (default: a temporary one).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # Parts run separately (speed needs a quiet machine, quality takes minutes) share one file.
    results = json.loads(args.output.read_text()) if args.only and args.output.exists() else {}
    results.update({"versions": versions(), "offline": offline()})
    if not torch.cuda.is_available():
        results["gpu"] = "not run: this machine has no CUDA GPU (all figures are CPU figures)"
    with tempfile.TemporaryDirectory(prefix="bench_cnn.") as temporary:
        folder = args.work or Path(temporary)  # --work keeps the cohort for a rerun (it resumes)
        if args.only != "quality":
            results["speed_machine"] = machine()
            results["embedding_one_patient"], results["training_throughput"] = {}, {}
            for threads in args.speed_threads:  # on a shared machine 1 thread can beat 2 spinning ones
                torch.set_num_threads(threads)
                key = f"{threads}_thread{'s' if threads > 1 else ''}"
                results["embedding_one_patient"][key] = bench_embedding(args.runs, folder)
                results["training_throughput"][key] = bench_training(max(3, args.runs // 2))
                print(key, json.dumps({size: round(r["median_s_in_memory"], 3) for size, r in
                                       results["embedding_one_patient"][key].items()}),
                      json.dumps({name: round(r["median_images_per_s"], 2) for name, r in
                                  results["training_throughput"][key].items()}))
            results["speed_machine"]["load_average_after"] = list(os.getloadavg())
            torch.set_num_threads(args.threads)
        if args.only != "speed":
            results["quality_machine"] = machine()
            results["quality_synthetic"] = bench_quality(args.patients, args.seed, args.weights, folder)
    write_json(args.output, results)
    print(json.dumps({k: v for k, v in results.get("quality_synthetic", {}).items() if k != "training_history"},
                     indent=1))
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
