"""Benchmark reading a scan: `hematoma.io` (with its integrity checks) against SimpleITK's plain read.

`read_image` refuses a truncated or corrupt file before ITK would zero-fill it
(issue 15): it inflates a gzip NIfTI once, checking the stream's end and CRC,
and hands ITK the plain copy.  This measures what that costs on a full-size
synthetic head CT (512 x 512 x 30, int16, .nii.gz) and its mask, interleaving
the readers so that a change in the machine's load hits them alike; medians
of ``--repeats`` reads are recorded.

    .venv/bin/python benchmarks/bench_read.py
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hematoma import __version__
from hematoma.io import read_geometry, read_image, read_mask
from hematoma.storage import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "read.json"


def make_files(folder: Path) -> tuple[Path, Path]:
    """A head-like CT (noise around 30 HU, air outside) and a 30 mL-ish mask, both gzip NIfTI."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:30, :512, :512]
    head = ((y - 256) / 200.0) ** 2 + ((x - 256) / 160.0) ** 2 <= 1
    ct = np.where(head, rng.normal(30, 5, (30, 512, 512)), -1024).astype(np.int16)
    mask = (((y - 250) / 30.0) ** 2 + ((x - 230) / 25.0) ** 2 + ((z - 15) / 5.0) ** 2 <= 1).astype(np.uint8)
    paths = folder / "ct.nii.gz", folder / "mask.nii.gz"
    for array, path in zip((ct, mask), paths):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.45, 0.45, 5.0))
        sitk.WriteImage(image, str(path), useCompression=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        ct, mask = make_files(Path(folder))
        readers = {
            "sitk_read_ct": lambda: sitk.ReadImage(str(ct)),
            "read_image_ct": lambda: read_image(ct),
            "sitk_header_ct": lambda: _header(ct),
            "read_geometry_ct": lambda: read_geometry(ct),
            "sitk_read_mask": lambda: sitk.ReadImage(str(mask)),
            "read_mask": lambda: read_mask(mask),
        }
        times: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.repeats):
            for name, read in readers.items():  # interleaved
                start = time.perf_counter()
                read()
                times[name].append(time.perf_counter() - start)
    medians = {name: round(statistics.median(values), 4) for name, values in times.items()}
    result = {
        "benchmark": "read",
        "what": "median seconds per read of a 512x512x30 int16 .nii.gz CT and its uint8 mask",
        "repeats": args.repeats,
        "medians_s": medians,
        "overhead_ct": round(medians["read_image_ct"] / medians["sitk_read_ct"], 2),
        "overhead_mask": round(medians["read_mask"] / medians["sitk_read_mask"], 2),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "hematoma": __version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    write_json(args.results, result)
    for name, value in medians.items():
        print(f"{name:18s} {value:.4f} s")
    print(f"read_image / SimpleITK: {result['overhead_ct']}x (CT), {result['overhead_mask']}x (mask) -> {args.results}")


def _header(path: Path) -> None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()


if __name__ == "__main__":
    main()
