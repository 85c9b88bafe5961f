"""Benchmark `hematoma pacs pull` of 20 studies from a real Orthanc (DICOMweb plugin) on loopback, and its resume.

``--studies`` synthetic head CTs (full size: 512 x 512, 0.45 mm, about 27 slices of 5 mm; ``--size small`` for a
quick look) are written as DICOM studies and uploaded through Orthanc's REST API (tests/orthanc_server.py starts
it: Debian's orthanc + orthanc-dicomweb). Then, ``--repeats`` times into a new folder each:

* a full pull (the command line, `hematoma pacs pull --list`, wall clock);
* the same pull killed (SIGKILL) once about half the studies are in, then rerun: which studies the rerun
  fetched (it must fetch only the unfinished ones) and how long it took;
* a rerun with every study there (nothing fetched).

    .venv/bin/python benchmarks/bench_pacs.py                  # 20 full-size studies (~3 min on 2 cores)
    .venv/bin/python benchmarks/bench_pacs.py --size small     # a quick look

Results: ``benchmarks/results/pacs.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.uid import generate_uid

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import orthanc_server  # noqa: E402  (tests/ is not a package)
from test_dicom_seg import _positions  # noqa: E402
from test_io import write_ct_series  # noqa: E402

from hematoma import __version__  # noqa: E402
from hematoma.storage import write_json  # noqa: E402
from hematoma.synthetic import make_head_ct  # noqa: E402

RESULTS = HERE / "results" / "pacs.json"


def upload_studies(server, root: Path, count: int, size: str) -> list[str]:
    uids = []
    for k in range(count):
        ct, _ = make_head_ct(size=size, seed=k, hematoma_ml=10.0 + k)
        uid = generate_uid()
        folder = root / f"s{k:02d}"
        hu = np.clip(sitk.GetArrayFromImage(ct), -1024, 3071)
        write_ct_series(folder, hu, _positions(ct), pixel_spacing=ct.GetSpacing()[1::-1],
                        thickness=ct.GetSpacing()[2], study_uid=uid, patient_id=f"B{k:02d}")
        server.upload(sorted(folder.iterdir()))
        uids.append(uid)
    return uids


def pull_command(study_list: Path, out: Path, server) -> tuple[list[str], dict]:
    env = {**os.environ, "HEMATOMA_PACS_USER": server.user, "HEMATOMA_PACS_PASSWORD": server.password}
    return [sys.executable, "-m", "hematoma", "pacs", "pull", "--list", str(study_list), "--out", str(out),
            "--server", server.dicomweb], env


def timed(command, env) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, " ".join(done.stdout.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--size", default="full", choices=("full", "small"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if orthanc_server.missing():
        sys.exit(orthanc_server.missing())
    with tempfile.TemporaryDirectory() as tmp, orthanc_server.running_orthanc(Path(tmp) / "orthanc") as server:
        tmp = Path(tmp)
        uids = upload_studies(server, tmp / "upload", args.studies, args.size)
        megabytes = sum(p.stat().st_size for p in (tmp / "upload").rglob("*.dcm")) / 1e6
        study_list = tmp / "list.csv"
        study_list.write_text("patient_id,baseline_study_uid\n" + "".join(f"B{k:02d},{u}\n" for k, u in enumerate(uids)))
        full, resumed, nothing, interrupted = [], [], [], []
        for repeat in range(args.repeats):
            command, env = pull_command(study_list, tmp / f"full{repeat}", server)
            seconds, line = timed(command, env)
            full.append(seconds)
            nothing.append(timed(command, env)[0])
            out = tmp / f"killed{repeat}"
            command, env = pull_command(study_list, out, server)
            child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while len(list(out.glob("*/study.json"))) < args.studies // 2 and child.poll() is None:
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
            child.wait()
            finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/study.json")}
            seconds, line = timed(command, env)
            untouched = all((out / uid / "study.json").stat().st_mtime_ns == m for uid, m in finished.items())
            resumed.append(seconds)
            interrupted.append({"finished_before_kill": len(finished), "rerun_said": line,
                                "finished_studies_untouched": untouched})
    results = {
        "what": f"hematoma pacs pull --list of {args.studies} {args.size}-size synthetic CT studies from Orthanc "
                "(DICOMweb plugin) on loopback, as a subprocess (start-up included)",
        "studies": args.studies, "megabytes": round(megabytes, 1), "repeats": args.repeats,
        "full_pull_s": {"median": round(statistics.median(full), 2), "runs": [round(s, 2) for s in full]},
        "megabytes_per_s": round(megabytes / statistics.median(full), 1),
        "resume_after_kill_s": {"median": round(statistics.median(resumed), 2), "runs": [round(s, 2) for s in resumed]},
        "interruptions": interrupted,
        "rerun_with_all_there_s": {"median": round(statistics.median(nothing), 2)},
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "hematoma": __version__, "date": time.strftime("%Y-%m-%d"),
    }
    write_json(RESULTS, results)
    print(results)


if __name__ == "__main__":
    main()
