"""The ``deep_`` columns of two synthetic cohorts on a GPU machine (issue 16 part 1's measurement).

On the 2-core CPU here BLAST-CT takes ~33 s per small case, so the deep_
group's AUC over the 10 halves of ``bench_selection.py`` (150 cohort-2 patients
of the 300-patient cohorts of seeds 0 and 1) was not measured.  The lent GPU
machine has torch but neither pyradiomics nor dask, so this script does there
only what needs the network, with the same functions ``extract --method
deep|both`` calls: each patient is synthesised again in memory
(``synthesize_patient``: the generator is deterministic), its baseline CT
written and read back as NIfTI (as ``extract`` reads it), segmented by
``segment_with`` with the deep settings, and its ``deep_`` columns written.
The SHA-256 of each read-back CT's voxels and geometry is compared with the
one computed here from the cohort ``extract`` read (``--hashes``), so the
features joined to that run's table are those of the same scan.

    python benchmarks/bench_ct_network_gpu.py --patients P.csv --weights W --out DIR [--processes 8]

``P.csv``: seed, patient_id, sha256 (``--write-patients`` makes it from run folders here).
Output: ``DIR/deep_features.csv.gz`` (seed, patient_id, sha256_match, synth_s, segment_s, deep_ columns) and
``DIR/gpu_timing.json``.  ``bench_ct_network.py --deep-table`` joins it to the runs' feature tables.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path


def ct_sha256(image) -> str:
    """Voxels (as stored) + origin, spacing and direction: equal only for the same scan on the same grid."""
    import SimpleITK as sitk

    digest = hashlib.sha256(sitk.GetArrayViewFromImage(image).tobytes())
    digest.update(repr((image.GetOrigin(), image.GetSpacing(), image.GetDirection())).encode())
    return digest.hexdigest()


def write_patients(runs: list[str], out: Path) -> None:
    """The cohort-2 patients of each ``seed=RUN:COHORT`` with the hash of the baseline CT extract read."""
    import SimpleITK as sitk

    rows = []
    for spec in runs:
        seed, paths = spec.split("=", 1)
        run, cohort = paths.split(":", 1)
        with open(Path(run) / "split.csv") as handle:
            patients = [r["patient_id"] for r in csv.DictReader(handle) if r["part"] in ("train", "test")]
        for pid in patients:
            image = sitk.ReadImage(str(Path(cohort) / "images" / f"{pid}_baseline.nii.gz"))
            rows.append({"seed": seed, "patient_id": pid, "sha256": ct_sha256(image)})
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["seed", "patient_id", "sha256"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} patients to {out}")


def one_patient(seed: int, pid: str, expected: str, weights: str, size: str) -> dict:
    import SimpleITK as sitk
    import torch

    from hematoma.segmentation.methods import SegmenterSettings, segment_with
    from hematoma.synthetic.cohort import write_nifti_gz
    from hematoma.synthetic.patient import synthesize_patient

    torch.set_num_threads(2)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)  # several processes share the machine's cores
    started = time.perf_counter()
    patient = synthesize_patient(int(pid[1:]) - 1, seed=seed, size=size)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ct.nii.gz"
        write_nifti_gz(patient.baseline_ct, path)
        image = sitk.ReadImage(str(path))
    synth_s = time.perf_counter() - started
    started = time.perf_counter()
    result = segment_with(image, SegmenterSettings("deep", weights, 1, "blood"))
    segment_s = time.perf_counter() - started
    return {"seed": seed, "patient_id": pid, "sha256_match": int(ct_sha256(image) == expected),
            "synth_s": round(synth_s, 3), "segment_s": round(segment_s, 3),
            "mask_ml": float(sitk.GetArrayViewFromImage(result.mask).sum() * _voxel_ml(image)), **result.features}


def _voxel_ml(image) -> float:
    x, y, z = image.GetSpacing()
    return x * y * z / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=Path, required=True)
    parser.add_argument("--weights", type=str)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--size", default="small")
    parser.add_argument("--limit", type=int, default=None, help="only the first N patients (a dry run)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds: then keep what is done, drop the rest and write (a lease is short)")
    parser.add_argument("--write-patients", nargs="+", metavar="SEED=RUN:COHORT",
                        help="make --patients from run folders here, then stop")
    args = parser.parse_args()
    if args.write_patients:
        write_patients(args.write_patients, args.patients)
        return
    import multiprocessing

    import torch

    with open(args.patients) as handle:
        patients = list(csv.DictReader(handle))[: args.limit]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, failures = [], []
    context = multiprocessing.get_context("spawn")  # CUDA and SimpleITK's threads do not survive fork
    pool = ProcessPoolExecutor(args.processes, mp_context=context)
    futures = {pool.submit(one_patient, int(p["seed"]), p["patient_id"], p["sha256"], args.weights, args.size): p
               for p in patients}
    try:
        for n, future in enumerate(as_completed(futures, timeout=args.deadline), 1):
            try:
                rows.append(future.result())
            except Exception as error:  # keep the others; report the failure
                failures.append({**futures[future], "error": f"{type(error).__name__}: {error}"[:300]})
            if n % 20 == 0 or n == len(patients):
                print(f"{n}/{len(patients)} in {time.perf_counter() - started:.0f} s", flush=True)
    except TimeoutError:
        print(f"deadline: {len(rows)} of {len(patients)} done; the rest dropped", flush=True)
    workers = list(pool._processes.values())  # private, but the only handle on workers still running
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.kill()
    wall = time.perf_counter() - started
    rows.sort(key=lambda r: (r["seed"], r["patient_id"]))
    if rows:
        with gzip.open(args.out / "deep_features.csv.gz", "wt", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    timing = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "torch": torch.__version__, "python": platform.python_version(), "cores": os.cpu_count(),
              "processes": args.processes, "patients": len(patients), "done": len(rows), "failures": failures,
              "wall_s": round(wall, 1), "median_segment_s": statistics.median([r["segment_s"] for r in rows] or [float("nan")]),
              "median_synth_s": statistics.median([r["synth_s"] for r in rows] or [float("nan")]),
              "sha256_matches": sum(r["sha256_match"] for r in rows)}
    (args.out / "gpu_timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(json.dumps({k: v for k, v in timing.items() if k != "failures"}), f"failures: {len(failures)}",
          failures[:2], flush=True)
    os._exit(0)  # do not wait for workers still running past the deadline


if __name__ == "__main__":
    main()
