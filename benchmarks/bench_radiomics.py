"""Radiomics time per case on one core: ours (crop + FastShape) vs plain pyradiomics.

Cases: 512x512x30 head CTs at 0.45x0.45x5 mm with a 20-40 mL hematoma, from
``hematoma.synthetic.make_head_ct(size="full")`` when that exists, else a
simple phantom built here (head ellipse, skull, 20-40 HU brain, an irregular
50-90 HU blob, noise).  Each variant runs ``--runs`` times per case after one
warm-up run; medians over all runs go to ``benchmarks/results/radiomics.json``
together with the machine and package versions.

    python benchmarks/bench_radiomics.py [--runs 5] [--cases 3]
"""

from __future__ import annotations

import os

# One core: no BLAS/OpenMP threads (set before numpy is imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from scipy import ndimage  # noqa: E402

from hematoma.features.radiomics import extract_radiomics, radiomics_provenance  # noqa: E402
from hematoma.storage import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "radiomics.json"
SPACING = (0.45, 0.45, 5.0)  # x, y, z mm
SIZE = (512, 512, 30)

VARIANTS = {
    "ours (crop + FastShape)": dict(crop=True, fast_shape=True),
    "crop only (pyradiomics shape)": dict(crop=True, fast_shape=False),
    "plain pyradiomics (whole image)": dict(crop=False, fast_shape=False),
}


def phantom(hematoma_ml: float, seed: int) -> tuple[sitk.Image, sitk.Image]:
    """A 512x512x30 head CT (int16 HU) and an irregular hematoma mask of about ``hematoma_ml``."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = SIZE
    z, y, x = np.ogrid[:nz, :ny, :nx]
    head = ((x - 256) * SPACING[0] / 75) ** 2 + ((y - 256) * SPACING[1] / 90) ** 2 + ((z - 15) * SPACING[2] / 80) ** 2
    ct = np.full((nz, ny, nx), -1000.0, dtype=np.float32)
    ct[head < 1.0] = 1000.0  # skull
    brain = head < 0.88
    ct[brain] = 30.0 + rng.normal(0, 6, int(brain.sum())).astype(np.float32)

    # Irregular blob: smoothed noise plus an ellipsoidal envelope; the top-N voxels.
    voxel_ml = np.prod(SPACING) / 1000.0
    n_voxels = int(round(hematoma_ml / voxel_ml))
    box = (12, 160, 160)
    bz, by, bx = np.ogrid[:box[0], :box[1], :box[2]]
    envelope = ((bx - 80) / 60.0) ** 2 + ((by - 80) / 50.0) ** 2 + ((bz - 6) / 3.5) ** 2
    field = ndimage.gaussian_filter(rng.normal(size=box), (0.6, 6, 6)) * 6 - envelope
    threshold = np.partition(field.ravel(), -n_voxels)[-n_voxels]
    blob = field >= threshold
    labels, count = ndimage.label(blob)
    blob = labels == 1 + int(np.argmax(ndimage.sum(blob, labels, range(1, count + 1))))
    mask = np.zeros((nz, ny, nx), dtype=np.uint8)
    cz, cy, cx = 9, 190, 200
    mask[cz:cz + box[0], cy:cy + box[1], cx:cx + box[2]] = blob
    mask &= brain
    ct[mask > 0] = rng.uniform(50, 90) + rng.normal(0, 8, int(mask.sum()))

    image = sitk.GetImageFromArray(np.round(ct).astype(np.int16))
    image.SetSpacing(SPACING)
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(image)
    return image, mask_image


def make_cases(n_cases: int) -> tuple[list[tuple[sitk.Image, sitk.Image]], str]:
    volumes = np.linspace(20.0, 40.0, n_cases) if n_cases > 1 else [30.0]
    try:
        from hematoma.synthetic import make_head_ct  # written by another stage; may not exist yet

        return [make_head_ct(size="full", seed=i, hematoma_ml=float(v)) for i, v in enumerate(volumes)], (
            "hematoma.synthetic.make_head_ct(size='full')"
        )
    except (ImportError, AttributeError, NotImplementedError):
        return [phantom(float(v), seed=i) for i, v in enumerate(volumes)], "benchmarks/bench_radiomics.py phantom()"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    load_before = [round(x, 2) for x in os.getloadavg()]
    cases, source = make_cases(args.cases)
    case_info = []
    for image, mask in cases:
        n = int(sitk.GetArrayViewFromImage(mask).sum())
        case_info.append({
            "size": list(image.GetSize()),
            "spacing_mm": [round(s, 4) for s in image.GetSpacing()],
            "hematoma_ml": round(n * float(np.prod(mask.GetSpacing())) / 1000.0, 2),
        })

    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu_times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    per_case: dict[str, list[float]] = {name: [] for name in VARIANTS}
    largest_rel_diff = 0.0
    for image, mask in cases:
        results = {}
        for name, options in VARIANTS.items():
            results[name] = extract_radiomics(image, mask, **options)  # warm-up (tables, caches)
            runs = []
            for _ in range(args.runs):
                start, start_cpu = time.perf_counter(), time.process_time()
                extract_radiomics(image, mask, **options)
                runs.append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - start_cpu)
            times[name].extend(runs)
            per_case[name].append(round(statistics.median(runs), 4))
        reference = results["plain pyradiomics (whole image)"]
        for key, value in results["ours (crop + FastShape)"].items():
            scale = max(abs(reference[key]), 1e-300)
            largest_rel_diff = max(largest_rel_diff, abs(value - reference[key]) / scale)

    medians = {name: round(statistics.median(values), 4) for name, values in times.items()}
    cpu_medians = {name: round(statistics.median(values), 4) for name, values in cpu_times.items()}
    provenance = radiomics_provenance()
    record = {
        "what": "radiomics time per case (107 features, default params), seconds, one thread",
        "cases": case_info,
        "case_source": source,
        "n_runs_per_case": args.runs,
        "n_runs_total": args.runs * len(cases),
        "median_s": medians,
        # CPU time of this process: the same as wall time on an idle core, and
        # less disturbed than wall time when other jobs share the machine.
        "median_cpu_s": cpu_medians,
        "load_average_before": load_before,
        "median_cropped_s": medians["ours (crop + FastShape)"],
        "median_uncropped_s": medians["plain pyradiomics (whole image)"],
        "per_case_median_s": per_case,
        "speedup_vs_plain": round(medians["plain pyradiomics (whole image)"] / medians["ours (crop + FastShape)"], 2),
        "largest_relative_difference_vs_plain": largest_rel_diff,
        "target": "median <= 0.3 s per case",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "threads": 1,
        },
        "versions": provenance["versions"],
    }
    write_json(args.out, record)
    for name, value in medians.items():
        print(f"{name:34s} median {value:.3f} s (CPU {cpu_medians[name]:.3f} s)")
    print(f"largest relative difference vs plain pyradiomics: {largest_rel_diff:.2e}; written to {args.out}")


if __name__ == "__main__":
    main()
