"""Per-case execution (in-process, LocalCluster, scheduler + worker processes) and the resumable store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hematoma.errors import InputError
from hematoma.parallel import (
    DONE,
    FAILED,
    SKIPPED,
    CaseOutcome,
    CaseStore,
    check_case_id,
    file_hashes,
    fingerprint,
    run_cases,
)

def square_case(item: dict) -> CaseOutcome:
    """A toy per-case function with the real one's contract: writes its record, skips if current."""
    store = CaseStore(item["root"])
    case_id = item["id"]
    case_fingerprint = fingerprint(item["value"])
    if store.is_current(case_id, case_fingerprint):
        return CaseOutcome(case_id, SKIPPED)
    if item.get("fail"):
        raise RuntimeError(f"cannot square {item['value']}")
    if item.get("die"):
        os._exit(1)  # the worker process dies (a crash in a C library, the OOM killer...)
    store.write(case_id, {"fingerprint": case_fingerprint, "square": item["value"] ** 2, "pid": os.getpid()})
    return CaseOutcome(case_id, DONE)


def _items(root: Path, n: int, fail: set[int] = frozenset()) -> tuple[list[dict], list[str]]:
    items = [{"root": str(root), "id": f"p{i:02d}", "value": i, "fail": i in fail} for i in range(n)]
    return items, [item["id"] for item in items]


# --------------------------------------------------------------------------- store


def test_store_round_trip_and_currency(tmp_path):
    store = CaseStore(tmp_path)
    assert store.read("a") is None
    assert not store.is_current("a", "f1")
    mask = store.case_dir("a") / "mask.nii.gz"
    mask.parent.mkdir(parents=True)
    mask.write_bytes(b"x")
    store.write("a", {"fingerprint": "f1", "value": 3})
    assert store.read("a")["value"] == 3
    assert store.is_current("a", "f1", files=[mask])
    assert not store.is_current("a", "f2")  # settings or inputs changed
    mask.unlink()
    assert not store.is_current("a", "f1", files=[mask])  # an output was deleted
    # No temporary files are left next to the record.
    assert sorted(p.name for p in store.case_dir("a").iterdir()) == ["case.json"]


def test_store_ignores_a_corrupt_record(tmp_path):
    store = CaseStore(tmp_path)
    store.record_path("a").parent.mkdir(parents=True)
    store.record_path("a").write_text("{truncated")
    assert store.read("a") is None
    assert not store.is_current("a", "f1")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "..\\x", ".hidden"])
def test_case_ids_that_cannot_name_a_folder(tmp_path, bad):
    assert check_case_id(bad)
    with pytest.raises(ValueError):
        CaseStore(tmp_path).case_dir(bad)
    assert check_case_id("P-001_a") is None


def test_fingerprint_depends_on_content_not_key_order(tmp_path):
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    file = tmp_path / "ct.nii.gz"
    file.write_bytes(b"one")
    before = file_hashes({"ct": file, "mask": None})
    assert before["mask"] is None
    stat = file.stat()
    file.write_bytes(b"two")  # same size; restore the mtime: the hash still sees the change
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_hashes({"ct": file})["ct"] != before["ct"]


# --------------------------------------------------------------------------- in-process


def test_in_process_runs_skips_and_isolates_failures(tmp_path):
    items, ids = _items(tmp_path, 4, fail={2})
    outcomes = run_cases(square_case, items, ids, workers=1, show_progress=False)
    assert [o.case_id for o in outcomes] == ids
    assert [o.status for o in outcomes] == [DONE, DONE, FAILED, DONE]
    assert outcomes[2].stage == "run" and outcomes[2].reason == "cannot square 2"
    assert CaseStore(tmp_path).read("p03")["square"] == 9
    assert CaseStore(tmp_path).read("p03")["pid"] == os.getpid()  # workers=1: no cluster

    items[2]["fail"] = False
    again = run_cases(square_case, items, ids, workers=1, show_progress=False)
    assert [o.status for o in again] == [SKIPPED, SKIPPED, DONE, SKIPPED]


def test_bad_worker_count(tmp_path):
    items, ids = _items(tmp_path, 1)
    with pytest.raises(InputError, match="at least 1"):
        run_cases(square_case, items, ids, workers=0, show_progress=False)


def test_empty_run(tmp_path):
    assert run_cases(square_case, [], [], workers=2, show_progress=False) == []


# --------------------------------------------------------------------------- Dask


def test_local_cluster_threads_client(tmp_path):
    from dask.distributed import Client, LocalCluster

    items, ids = _items(tmp_path, 5, fail={1})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            outcomes = run_cases(square_case, items, ids, client=client, show_progress=False)
            assert [o.status for o in outcomes] == [DONE, FAILED, DONE, DONE, DONE]
            assert "cannot square 1" in outcomes[1].reason
            again = run_cases(square_case, items, ids, client=client, show_progress=False)
            assert [o.status for o in again] == [SKIPPED, FAILED, SKIPPED, SKIPPED, SKIPPED]
    assert CaseStore(tmp_path).read("p04")["square"] == 16


@pytest.mark.slow
def test_local_cluster_worker_processes(tmp_path):
    items, ids = _items(tmp_path, 4)
    outcomes = run_cases(square_case, items, ids, workers=2, show_progress=False)
    assert [o.status for o in outcomes] == [DONE] * 4
    pids = {CaseStore(tmp_path).read(i)["pid"] for i in ids}
    assert os.getpid() not in pids  # computed in worker processes, written by them


@pytest.mark.slow
def test_a_case_that_kills_its_worker_fails_alone(tmp_path):
    import dask

    # 12 cases: more than twice the workers' threads, so the scheduler queues
    # them and hands each worker one at a time (with worker-saturation 1.0).
    items, ids = _items(tmp_path, 12)
    items[1]["die"] = True
    # No retries on other workers (Dask's default is 3, each killing one more
    # worker), and only the dying case on the dying worker (a task queued
    # there would count a failure too).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}):
        outcomes = run_cases(square_case, items, ids, workers=2, show_progress=False)
    assert [o.status for o in outcomes] == [DONE, FAILED] + [DONE] * 10
    assert outcomes[1].stage == "worker" and "KilledWorker" in outcomes[1].reason
    assert CaseStore(tmp_path).read(ids[1]) is None


def _dask_cli() -> Path:
    return Path(sys.executable).parent / "dask"


@pytest.fixture
def scheduler_file(tmp_path):
    """A `dask scheduler` and one `dask worker` on loopback, always stopped afterwards."""
    if not _dask_cli().exists():
        pytest.skip(f"{_dask_cli()} not found (dask's command line is not installed)")
    file = tmp_path / "scheduler.json"
    # Scheduler and worker unpickle this module's case function by name, like a
    # real cluster needs hematoma installed: put the tests folder on their path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "dask.log", "wb")
    processes = []
    try:
        processes.append(
            subprocess.Popen(
                [str(_dask_cli()), "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--scheduler-file", str(file), "--no-dashboard"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        )
        deadline = time.monotonic() + 60
        while not (file.exists() and file.stat().st_size > 0):
            if time.monotonic() > deadline or processes[0].poll() is not None:
                pytest.fail("dask scheduler did not start: " + (tmp_path / "dask.log").read_text())
            time.sleep(0.1)
        processes.append(
            subprocess.Popen(
                [str(_dask_cli()), "worker", "--scheduler-file", str(file), "--nthreads", "1", "--no-dashboard",
                 "--local-directory", str(tmp_path / "worker")],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        )
        yield file
    finally:
        for process in reversed(processes):  # the worker first, then the scheduler
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@pytest.mark.slow
def test_scheduler_and_worker_processes(tmp_path, scheduler_file):
    address = json.loads(scheduler_file.read_text())["address"]
    assert address.startswith("tcp://127.0.0.1:")
    root = tmp_path / "cases"
    items, ids = _items(root, 3, fail={0})
    outcomes = run_cases(square_case, items, ids, scheduler=address, show_progress=False)
    assert [o.status for o in outcomes] == [FAILED, DONE, DONE]
    assert CaseStore(root).read("p02")["pid"] != os.getpid()
    # A scheduler file works as the address too; finished cases are skipped.
    again = run_cases(square_case, items, ids, scheduler=str(scheduler_file), show_progress=False)
    assert [o.status for o in again] == [FAILED, SKIPPED, SKIPPED]


def test_unreachable_scheduler(tmp_path):
    import dask
    import dask.distributed  # noqa: F401  (its config defaults must exist before dask.config.set, which
    # otherwise deletes the whole "distributed" section on exit)

    items, ids = _items(tmp_path, 1)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(InputError, match="cannot connect to the Dask scheduler"):
        run_cases(square_case, items, ids, scheduler="tcp://127.0.0.1:1", show_progress=False)


def test_background_client_start_failure_is_raised_only_when_asked():
    import dask
    import dask.distributed  # noqa: F401  (see test_unreachable_scheduler)

    from hematoma.parallel import background_client

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with background_client(1, "tcp://127.0.0.1:1") as get_client:
            with pytest.raises(InputError, match="cannot connect"):
                get_client()
        with background_client(1, "tcp://127.0.0.1:1"):
            pass  # never asked for (the caller failed first): leaving must not raise


# A fresh interpreter: the fork server is started once per process, and the
# test must not depend on which test started it first.
_FORK_SERVER_PROBE = """
import json, os, sys
from hematoma.parallel import background_client

def probe():
    import os, sys
    import SimpleITK as sitk
    return {"preloaded": "hematoma.features.radiomics" in sys.modules,
            "itk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
            "parent": os.getppid()}

if __name__ == "__main__":
    preload = ("hematoma.features.radiomics",) if sys.argv[1] == "preload" else ()
    with background_client(2, preload=preload) as get_client:
        seen = list(get_client().run(probe).values())
    print(json.dumps({"workers": seen, "driver_pid": os.getpid(),
                      "driver_itk_env": os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")}))
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")
@pytest.mark.parametrize("mode", ["preload", "spawn"])
def test_local_workers_are_forked_from_a_server_with_the_case_modules(tmp_path, mode):
    script = tmp_path / "probe.py"
    script.write_text(_FORK_SERVER_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}
    run = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    workers = result["workers"]
    assert len(workers) == 2
    assert all(w["itk_threads"] == 1 for w in workers)  # single-threaded either way
    assert result["driver_itk_env"] is None  # the server's environment was set only while it started
    parents = {w["parent"] for w in workers}
    if mode == "preload":
        # Both forked by one server process (not by the driver), with the module already imported.
        assert all(w["preloaded"] for w in workers)
        assert len(parents) == 1 and result["driver_pid"] not in parents
    else:
        assert not any(w["preloaded"] for w in workers)
        assert parents == {result["driver_pid"]}
