"""Benchmark brain extraction and hemorrhage segmentation on heads that defeat a closed-skull brain finder.

Each of ``--patients`` full-size synthetic heads (:func:`hematoma.synthetic.make_variant_ct`, seeds
``--seed`` onwards, the four hematoma locations in turn) is scanned intact and as each variant of
:data:`VARIANTS`: a craniotomy or burr hole (skull gaps of 12 and 30 mm, at the side, the front and low
at the back), thin temporal bone (150 HU), a head pitched by +-20 degrees, a head holder and table, a
scan reaching 20 mm below the skull base with RSNA-style -3024 HU padding, and all of gap, thin bone and
holder together.  For each variant it records how many scans were refused ("no brain found"), the
brain mask's Dice against the true intracranial space, the rule segmenter's
(``segment_hemorrhage(image)``) hemorrhage Dice, its change from the same head intact and from the same
scan segmented inside the true brain (the brain finder's own share: a tilt re-draws the lesion on
another voxel grid, which changes its Dice whatever the brain finder does).  Every
slice that shows brain (>= 10 cm^2 of brain density) is also given alone, as a single 2D image (its
refusals and brain Dice reported for the skull-base slices, the 4 lowest, the vertex slices, the 3
highest, and the others), and slices without brain in a volume are checked to be empty.
Times are of ``brain_mask`` on the whole scan (wall clock, one call).

    .venv/bin/python benchmarks/bench_variants.py                 # 10 full-size heads (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_variants.py --patients 3    # a quick look

Results: ``benchmarks/results/variants.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hematoma import __version__
from hematoma.errors import InputError
from hematoma.storage import write_json
from hematoma.synthetic import (
    LOCATIONS,
    Variant,
    axial_slice,
    make_variant_ct,
    skull_base_slices,
    slices_without_brain,
    vertex_slices,
)
from hematoma.synthetic.variants import brain_areas_cm2

RESULTS = Path(__file__).resolve().parent / "results" / "variants.json"
SHOWS_BRAIN_CM2 = 10.0  # a slice "shows brain" from this much visible brain (the finder's smallest head section)
VOLUMES_ML = (12.0, 20.0, 30.0, 8.0)  # hematoma volume of head i: VOLUMES_ML[i % 4], at LOCATIONS[i % 4]
VARIANTS = {
    "intact": Variant(),
    "burr_hole_12mm_left": Variant(skull_gap_mm=12.0, gap_height_mm=12.0),
    "craniotomy_30mm_left": Variant(skull_gap_mm=30.0),
    "craniotomy_30mm_frontal": Variant(skull_gap_mm=30.0, gap_azimuth_deg=0.0, gap_centre_z_mm=0.0),
    "craniotomy_30mm_low_occipital": Variant(skull_gap_mm=30.0, gap_azimuth_deg=200.0, gap_centre_z_mm=-20.0),
    "fracture_2mm_right": Variant(skull_gap_mm=2.0, gap_azimuth_deg=270.0, gap_height_mm=80.0, gap_centre_z_mm=0.0),
    "thin_temporal_bone_150hu": Variant(thin_bone_hu=150.0),
    "tilt_plus_20deg": Variant(tilt_deg=20.0),
    "tilt_minus_20deg": Variant(tilt_deg=-20.0),
    "head_holder_and_table": Variant(head_holder=True),
    "below_skull_base_20mm_rsna_padding": Variant(below_base_mm=20.0, fov_padding_hu=-3024.0),
    "gap_thin_bone_holder": Variant(skull_gap_mm=30.0, thin_bone_hu=150.0, head_holder=True),
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    total = int(x.sum()) + int(y.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(x, y).sum()) / total


def hemorrhage_with_true_brain(scan) -> sitk.Image:
    """The rule segmenter inside the true brain (bone removed): what a perfect brain finder would let it find."""
    from hematoma.segmentation.brain import BONE_HU, orient_ct
    from hematoma.segmentation.hemorrhage import bounding_box, rule_based_mask

    ct = orient_ct(scan.ct)  # the synthetic scans are LPS already: arrays line up with the truth's
    brain = (sitk.GetArrayFromImage(scan.brain) > 0) & (ct.hu < BONE_HU)
    box = bounding_box(brain)
    found = np.zeros(brain.shape, dtype=np.uint8)
    found[box] = rule_based_mask(ct.hu[box], brain[box], ct.spacing_zyx)
    return sitk.GetImageFromArray(found)


def measure_scan(scan) -> dict:
    """Brain and hemorrhage of one scan; its skull-base and vertex slices alone; its brain-free slices."""
    from hematoma.segmentation import brain_mask, segment_hemorrhage

    row: dict = {}
    try:
        start = time.perf_counter()
        brain = brain_mask(scan.ct)
        row["brain_seconds"] = time.perf_counter() - start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty hemorrhage mask is scored, not announced
            hemorrhage = segment_hemorrhage(scan.ct)
    except InputError as error:
        row["refused"] = str(error)
        return row
    row["brain_dice"] = dice(brain, scan.brain)
    row["hemorrhage_dice"] = dice(hemorrhage, scan.hematoma)
    row["hemorrhage_dice_true_brain"] = dice(hemorrhage_with_true_brain(scan), scan.hematoma)
    found = sitk.GetArrayViewFromImage(brain)
    empty = slices_without_brain(scan)
    row["brain_free_slices"] = len(empty)
    row["brain_free_slices_left_empty"] = int(sum(not found[k].any() for k in empty))
    slices = []
    base, vertex = skull_base_slices(scan), vertex_slices(scan)
    for k in np.nonzero(brain_areas_cm2(scan) >= SHOWS_BRAIN_CM2)[0]:
        kind = "skull_base" if k in base else "vertex" if k in vertex else "other"
        piece = axial_slice(scan, int(k))
        try:
            slices.append({"kind": kind, "slice": int(k), "dice": dice(brain_mask(piece.ct), piece.brain)})
        except InputError:
            slices.append({"kind": kind, "slice": int(k), "refused": True})
    row["slices"] = slices
    return row


def summarize(rows: list[dict], intact: list[dict]) -> dict:
    done = [(r, i) for r, i in zip(rows, intact) if "refused" not in r and "refused" not in i]
    slices = [s for r in rows for s in r.get("slices", [])]
    changes = [r["hemorrhage_dice"] - i["hemorrhage_dice"] for r, i in done]

    def median(values):
        return round(float(statistics.median(values)), 4) if values else None

    return {
        "scans": len(rows),
        "refused_scans": sum("refused" in r for r in rows),
        "refusals": sorted({r["refused"] for r in rows if "refused" in r}),
        "median_brain_dice": median([r["brain_dice"] for r, _ in done]),
        "min_brain_dice": round(min((r["brain_dice"] for r, _ in done), default=float("nan")), 4),
        "median_hemorrhage_dice": median([r["hemorrhage_dice"] for r, _ in done]),
        "median_hemorrhage_dice_change_vs_intact": median(changes),
        "worst_hemorrhage_dice_change_vs_intact": round(min(changes, default=float("nan")), 4),
        # The brain finder's own share: the same scan segmented inside the true brain instead.
        "worst_hemorrhage_dice_change_vs_true_brain": round(min(
            (r["hemorrhage_dice"] - r["hemorrhage_dice_true_brain"] for r, _ in done), default=float("nan")), 4),
        "single_slices": len(slices),
        "single_slices_refused": sum(bool(s.get("refused")) for s in slices),
        "median_single_slice_brain_dice": {
            kind: median([s["dice"] for s in slices if s["kind"] == kind and "dice" in s])
            for kind in ("skull_base", "vertex", "other")},
        "brain_free_slices": sum(r.get("brain_free_slices", 0) for r in rows),
        "brain_free_slices_left_empty": sum(r.get("brain_free_slices_left_empty", 0) for r in rows),
        "median_brain_mask_seconds": median([r["brain_seconds"] for r in rows if "brain_seconds" in r]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--seed", type=int, default=0, help="head i is make_variant_ct(seed=SEED + i)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    start = time.perf_counter()
    for i in range(args.patients):
        head = {"size": args.size, "seed": args.seed + i, "location": LOCATIONS[i % len(LOCATIONS)],
                "hematoma_ml": VOLUMES_ML[i % len(VOLUMES_ML)]}
        for name, variant in VARIANTS.items():
            row = measure_scan(make_variant_ct(variant, **head))
            rows[name].append({**head, **row})
            print(f"head {i} {name}: " + ", ".join(f"{k} {row[k]:.3f}" for k in ("brain_dice", "hemorrhage_dice")
                                                 if k in row) + (f" REFUSED: {row['refused']}" if "refused" in row else ""),
                  flush=True)
    summary = {name: summarize(rows[name], rows["intact"]) for name in VARIANTS}
    record = {
        "benchmark": "brain extraction and rule-based hemorrhage segmentation on synthetic variants "
                     "(open skull, thin bone, tilt, head holder, skull-base and vertex slices)",
        "heads": {"source": "hematoma.synthetic.make_variant_ct", "patients": args.patients, "size": args.size,
                  "seeds": [args.seed, args.seed + args.patients - 1], "locations_and_volumes_ml":
                  [[LOCATIONS[i % len(LOCATIONS)], VOLUMES_ML[i % len(VOLUMES_ML)]] for i in range(min(4, args.patients))]},
        "variants": {name: variant.settings() for name, variant in VARIANTS.items()},
        "summary": summary,
        "per_scan": rows,
        "targets": {"refused_scans": 0, "single_slices_refused": 0,
                    "worst_hemorrhage_dice_change_vs_intact": -0.03,
                    "worst_hemorrhage_dice_change_vs_true_brain": -0.03, "median_brain_dice_intact": 0.95},
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average": round(os.getloadavg()[0], 2)},
        "hematoma_version": __version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    write_json(args.results, record)
    print(f"{'variant':36s} refused  brain  hem   d(hem) worst  vs-true-brain  2D refused/n  2D dice base/vertex/other"
          "  empty  s")
    for name, s in summary.items():
        print(f"{name:36s} {s['refused_scans']:3d}/{s['scans']:<3d} {s['median_brain_dice'] or 0:.3f} "
              f"{s['median_hemorrhage_dice'] or 0:.3f} {s['median_hemorrhage_dice_change_vs_intact'] or 0:+.3f} "
              f"{s['worst_hemorrhage_dice_change_vs_intact']:+.3f}  {s['worst_hemorrhage_dice_change_vs_true_brain']:+.3f}"
              f"         {s['single_slices_refused']:3d}/{s['single_slices']:<3d}"
              f"       {s['median_single_slice_brain_dice']['skull_base'] or 0:.2f}/{s['median_single_slice_brain_dice']['vertex'] or 0:.2f}"
              f"/{s['median_single_slice_brain_dice']['other'] or 0:.2f}       {s['brain_free_slices_left_empty']}/{s['brain_free_slices']}  {s['median_brain_mask_seconds'] or 0:.2f}")


if __name__ == "__main__":
    main()
