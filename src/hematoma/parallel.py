"""Per-case execution: local worker processes or a Dask cluster; a resumable store.

One code path runs the cases: Dask.  Locally it starts a
``dask.distributed.LocalCluster`` of ``workers`` single-threaded *processes*
(pyradiomics and SimpleITK hold the GIL for long stretches, so threads would
not run cases in parallel); with ``scheduler="tcp://host:port"`` (or the path
of a scheduler JSON file written by ``dask scheduler --scheduler-file``) it
connects to an existing cluster instead.  The same per-case function runs
either way.  ``workers=1`` runs the cases one after the other in this process,
without any cluster: tracebacks, ``pdb`` and profilers then work as usual,
which is what it is for (debugging).

Worker processes take seconds to start; :func:`background_client` starts
them while the caller reads its inputs.  Local workers are forked from a
*fork server* (:func:`start_fork_server`) that has imported the case's modules
once, instead of each being a fresh interpreter that imports them all again.

Remote workers (and the scheduler, which unpickles the tasks) need the same ``hematoma`` version installed and must see the
input files and the output folder at the same paths (a shared file system).

Resumability (:class:`CaseStore`): each case's worker writes its own
``OUT/cases/<case_id>/case.json`` atomically (temp file + rename, after the
case's other files), so a run that is killed loses no finished case, and a
case folder either holds a complete record or none.  The record carries a
*fingerprint* of everything the result depends on: the SHA-1 of each input
file's content (not its size and mtime, which a copy or ``touch`` changes and
a same-size in-place edit need not change) and the settings.  A rerun
recomputes the fingerprint (on the workers, in parallel; hashing costs well
under a second per case) and skips a case whose stored fingerprint matches.

The per-case function must catch its own errors and return a
:class:`CaseOutcome`; anything that still escapes it (or a worker that dies)
becomes a ``failed`` outcome here, so one bad case never stops the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .errors import InputError
from .storage import sha1_file, write_json

if TYPE_CHECKING:  # imported where used: worker processes import this module too
    from rich.console import Console
    from rich.progress import Progress

RECORD_NAME = "case.json"
DONE, SKIPPED, FAILED = "done", "skipped", "failed"

# Thread pools inside one worker process (ITK's, BLAS's) would fight the other
# workers for the same cores; one thread each makes N workers ~N times faster.
SINGLE_THREAD_ENV = {
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


# Housekeeping timers of a local cluster, slowed down: by default every Dask
# server (scheduler, each worker) wakes every 20 ms to watch its event loop,
# and each worker's memory is polled every 100 ms.  On a 2-core machine that
# took ~1 s of CPU per 20 s run from the cases (driver CPU 4.2 -> 3.4 s,
# 100 cases 18.9 -> ~18 s).  Only the loop-blocking watch, the memory limit's
# reaction time and the dashboard's plots are coarser.
QUIET_LOCAL_CLUSTER = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    # The worker's sampling profiler (for the dashboard's profile page, which
    # a local run does not serve) wakes every 10 ms and takes the GIL from the case.
    "distributed.worker.profile.enabled": False,
}


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    # Set while a child process starts, as Dask does for its pre-spawn-environ.
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_fork_server(preload: Sequence[str]) -> bool:
    """Start this process's multiprocessing fork server with ``preload`` imported.

    A spawned worker is a fresh interpreter that imports distributed, numpy,
    SimpleITK, scipy and pyradiomics before its first case: ~2 s of CPU per
    worker, taken from the cores the cases need.  The fork server imports them
    once, in the background while the caller reads its inputs, and local
    workers are then forked from it ready to run (measured on 2 cores, 100
    cases with given masks: 2 workers ~16.5 s instead of ~19 s).  It is a
    single-threaded process (no thread pool has started in it), so forking it
    is safe, unlike forking this one.

    It starts once per process; a server already running keeps its modules.
    Returns ``False`` where there is no fork server (Windows): workers are
    then spawned.
    """
    global _fork_server_pid
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    with _fork_server_lock:
        if _fork_server_pid == os.getpid():  # started by this process already (a forked child has its own)
            return True
        multiprocessing.get_context("forkserver").set_forkserver_preload(["distributed", *preload])
        # The workers inherit the server's environment: single-threaded libraries
        # from the start (OpenBLAS sizes its pool when numpy is imported there).
        with _environment(SINGLE_THREAD_ENV), _sigint_ignored():
            forkserver.ensure_running()
        _fork_server_pid = os.getpid()
    return True


_fork_server_lock = threading.Lock()
_fork_server_pid: int | None = None


# Ctrl-C in a terminal sends SIGINT to the whole process group: workers too.
# Each then dies with its own KeyboardInterrupt traceback (and leaves its
# semaphores to the resource tracker, which warns), while the parent, which
# handles the interrupt, shuts them down anyway.  So local workers ignore it.


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    # A process started meanwhile inherits SIG_IGN (it survives exec, and Python
    # keeps it); the fork server hands its own start-up handler on to every
    # process it forks.  Only the main thread may set handlers; elsewhere the
    # workers' preload (dask_setup below) still does it.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def dask_setup(worker: Any) -> None:
    """Dask preload hook, run in each local worker process: leave Ctrl-C to the parent.

    Covers workers not forked from our fork server (spawned ones).  Only
    passed to worker *processes*: in-process workers share the parent's handler.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _keep_preload_after_dask(preload: Sequence[str]) -> None:
    # Dask's first use of the fork server sets its own preload list (distributed,
    # numpy, pandas...).  It does so once, and the list only matters if the
    # server has to be started again (it died): then it should be ours.
    import dask
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context()
    multiprocessing.get_context("forkserver").set_forkserver_preload(["distributed", *preload])


@dataclass
class CaseOutcome:
    """What happened to one case: ``done`` (computed), ``skipped`` (up to date) or ``failed``."""

    case_id: str
    status: str
    stage: str | None = None
    reason: str | None = None
    seconds: float = 0.0


# --------------------------------------------------------------------------- fingerprints


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (and hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(*parts: Any) -> str:
    """SHA-1 of the canonical JSON of ``parts`` (file hashes, settings...)."""
    return hashlib.sha1(canonical_json(parts).encode()).hexdigest()


def file_hashes(paths: Mapping[str, str | Path | None]) -> dict[str, str | None]:
    """SHA-1 of each file's (or DICOM folder's) content; ``None`` for absent entries."""
    return {name: (None if path is None else sha1_file(path)) for name, path in paths.items()}


# --------------------------------------------------------------------------- the store


def check_case_id(case_id: str) -> str | None:
    """Why ``case_id`` cannot name a folder, or ``None`` when it can."""
    if not case_id or case_id in (".", ".."):
        return f"patient_id {case_id!r} cannot name a folder"
    if "/" in case_id or "\\" in case_id or "\0" in case_id:
        return f"patient_id {case_id!r} contains a path separator"
    if any(unicodedata.category(c) == "Cc" for c in case_id):
        # A newline or tab in a folder name breaks every line-based tool (ls, shell loops, logs).
        return f"patient_id {case_id!r} contains a control character (newline, tab...)"
    if case_id != case_id.strip():
        return f"patient_id {case_id!r} has leading or trailing whitespace"
    if case_id.startswith("."):
        return f"patient_id {case_id!r} starts with '.' (hidden folder)"
    return None


class CaseStore:
    """Per-case results under ``root/<case_id>/``, each with an atomically written ``case.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def case_dir(self, case_id: str) -> Path:
        problem = check_case_id(case_id)
        if problem:
            raise ValueError(problem)
        return self.root / case_id

    def record_path(self, case_id: str) -> Path:
        return self.case_dir(case_id) / RECORD_NAME

    def read(self, case_id: str) -> dict | None:
        """The case's record, or ``None`` when there is none (or it is unreadable)."""
        try:
            return json.loads(self.record_path(case_id).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def is_current(self, case_id: str, case_fingerprint: str, files: Sequence[str | Path] = ()) -> bool:
        """True when the stored record has ``case_fingerprint`` and every file in ``files`` exists.

        ``files`` are the case's other outputs (masks): a record whose files were
        deleted is recomputed.
        """
        record = self.read(case_id)
        if record is None or record.get("fingerprint") != case_fingerprint:
            return False
        return all(Path(f).is_file() for f in files)

    def write(self, case_id: str, record: Mapping[str, Any]) -> Path:
        """Write the record atomically; call it last, after the case's other files."""
        return write_json(self.record_path(case_id), dict(record))


# --------------------------------------------------------------------------- running


def default_workers() -> int:
    """Cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _guarded(func: Callable[[Any], CaseOutcome], case_id: str, item: Any) -> CaseOutcome:
    # Runs on the worker: whatever escapes the case function is this case's failure only.
    start = time.perf_counter()
    try:
        outcome = func(item)
    except Exception as error:  # noqa: BLE001 - reported per case, the run goes on
        return CaseOutcome(case_id, FAILED, "run", one_line(error), time.perf_counter() - start)
    if not isinstance(outcome, CaseOutcome):
        return CaseOutcome(case_id, FAILED, "run", f"case function returned {type(outcome).__name__}")
    return outcome


def one_line(error: BaseException) -> str:
    """An exception as one line: its message, or its type when the message is empty."""
    text = " ".join(str(error).split())
    return text if text else type(error).__name__


@contextlib.contextmanager
def dask_client(
    workers: int, scheduler: str | None = None, processes: bool = True, preload: Sequence[str] = (),
) -> Iterator[Any]:
    """A Dask client: to ``scheduler`` (address or scheduler-file path) or to a new LocalCluster.

    ``preload``: modules the cases need, imported once by the fork server the
    local worker processes are forked from (:func:`start_fork_server`); empty,
    or on a platform without one, the workers are spawned.
    """
    import dask
    from dask.distributed import Client, LocalCluster

    with _quiet_dask_logs():
        if scheduler:
            kwargs = {"scheduler_file": scheduler} if Path(scheduler).is_file() else {"address": scheduler}
            try:
                # Waits up to Dask's connect timeout (config distributed.comm.timeouts.connect).
                client = Client(**kwargs)
            except (OSError, TimeoutError, ValueError) as error:
                raise InputError(None, f"cannot connect to the Dask scheduler {scheduler}: {one_line(error)}") from None
            # Closed explicitly, not with `with client`: Client.__enter__ sets a
            # context variable, and background_client leaves from another thread.
            try:
                yield client
            finally:
                client.close()
            return
        cluster_kwargs = {"env": SINGLE_THREAD_ENV, "preload": [__name__]} if processes else {}
        forked = processes and bool(preload) and start_fork_server(preload)
        start_method = {"distributed.worker.multiprocessing-method": "forkserver"} if forked else {}
        if forked:
            _keep_preload_after_dask(preload)
        # Dask starts worker processes with MALLOC_TRIM_THRESHOLD_ set, which
        # also switches off glibc's adaptive mmap threshold: every large numpy
        # temporary (a CT is tens of MB) is then a fresh mmap, zero-filled page
        # by page; measured: twice the system time per case.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                              **QUIET_LOCAL_CLUSTER, **start_method}), LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            # The scheduler always serves HTTP (health, metrics): on a free loopback
            # port, not 8787, which another cluster may hold.
            dashboard_address="127.0.0.1:0",
            # CRITICAL, not ERROR: a worker whose heartbeat meets the scheduler closing at the end of a run
            # logged "Failed to communicate with scheduler during heartbeat" and a 30-line traceback into the
            # user's terminal (seen in `hematoma run` on a busy machine). What a case or a dead worker does
            # reaches the caller through its future, not through these logs.
            silence_logs=logging.CRITICAL,
            **cluster_kwargs,
        ) as cluster:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()


@contextlib.contextmanager
def background_client(
    workers: int, scheduler: str | None = None, preload: Sequence[str] = (),
) -> Iterator[Callable[[], Any]]:
    """Start :func:`dask_client` in a thread now; yield a function that waits for the client.

    Worker processes take seconds to start (the fork server imports numpy,
    SimpleITK, pyradiomics...): the caller reads and checks its inputs
    meanwhile.  The client is closed on leaving, whether or not it was used.
    """
    if preload and not scheduler:
        # Here, not in the thread: the fork server's environment is set in this process.
        start_fork_server(preload)
    stack = contextlib.ExitStack()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dask-start") as pool:
        future = pool.submit(lambda: stack.enter_context(dask_client(workers, scheduler, preload=preload)))
        try:
            yield future.result
        finally:
            with contextlib.suppress(Exception):  # a failed start was reported to whoever asked
                future.result()
            stack.close()


@contextlib.contextmanager
def _quiet_dask_logs() -> Iterator[None]:
    # Dask logs every start, connection and cancellation at INFO; an app that
    # configured the root logger (our CLI does) would print them all.  Shown
    # again when the root logger is at DEBUG (`hematoma --debug`).
    logger = logging.getLogger("distributed")
    old = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(max(old, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(old)


def make_progress(console: Console | None = None) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def run_cases(
    func: Callable[[Any], CaseOutcome],
    items: Sequence[Any],
    case_ids: Sequence[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    description: str = "cases",
    show_progress: bool = True,
    console: Console | None = None,
) -> list[CaseOutcome]:
    """Run ``func(item)`` for every item; return the outcomes in the order of ``items``.

    Parameters
    ----------
    func:
        A module-level function (it is pickled to the workers) that writes the
        case's results itself and returns a :class:`CaseOutcome`.
    items, case_ids:
        One input and one id per case.
    workers:
        Local worker processes (default: the cores available).  ``1`` without
        ``scheduler``/``client`` runs in this process, without Dask (debugging).
    scheduler:
        ``tcp://host:port`` of a running Dask scheduler, or its scheduler file.
    client:
        An existing ``dask.distributed.Client`` to use as is (tests, notebooks).
    """
    if len(items) != len(case_ids):
        raise ValueError("items and case_ids differ in length")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(None, f"--workers must be at least 1, got {workers}")
    outcomes: dict[int, CaseOutcome] = {}
    counts = {DONE: 0, SKIPPED: 0, FAILED: 0}

    with make_progress(console) as progress:
        task = progress.add_task(description, total=len(items), visible=show_progress)

        def record(index: int, outcome: CaseOutcome) -> None:
            outcomes[index] = outcome
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
            progress.update(task, advance=1, description=f"{description} ({summary})")

        try:
            if not items:
                pass
            elif client is None and scheduler is None and workers == 1:
                for index, (case_id, item) in enumerate(zip(case_ids, items)):
                    record(index, _guarded(func, case_id, item))
            else:
                with contextlib.ExitStack() as stack:
                    if client is None:
                        client = stack.enter_context(dask_client(min(workers, len(items)), scheduler))
                    _run_on_dask(client, func, items, case_ids, record)
        except KeyboardInterrupt as error:
            interrupted: KeyboardInterrupt | None = error
        else:
            interrupted = None
    if interrupted is not None:
        # After the progress bar has stopped, so that this is the last line shown.
        _say_interrupted(console, counts[DONE] + counts[SKIPPED], len(items))
        raise interrupted
    return [outcomes[i] for i in range(len(items))]


def _say_interrupted(console: Console | None, finished: int, total: int) -> None:
    # One line instead of a traceback: the CLI exits 130 (128 + SIGINT) on the re-raised KeyboardInterrupt.
    text = (f"interrupted ({finished} of {total} cases reported so far); every finished case is kept: "
            "rerun the same command to resume")
    if console is None:
        print(text, file=sys.stderr, flush=True)
    else:
        console.print(text, highlight=False, soft_wrap=True, markup=False)


def _run_on_dask(client: Any, func, items, case_ids, record: Callable[[int, CaseOutcome], None]) -> None:
    from dask.distributed import as_completed

    # One map call (one message to the scheduler) rather than a submit per
    # case: less driver CPU on the cores the cases run on.  Results are still
    # fetched one by one with result(): as_completed(with_results=True) never
    # yields a future whose fetch fails (a lost link, an unpicklable result),
    # so the run would wait forever.
    # pure=False and fresh keys: a rerun must run the case again (the function decides whether to skip).
    keys = [f"case-{case_id}-{os.urandom(4).hex()}" for case_id in case_ids]
    futures = client.map(_guarded, [func] * len(items), list(case_ids), list(items), key=keys, pure=False)
    index_of = {future.key: index for index, future in enumerate(futures)}
    try:
        for future in as_completed(futures):
            index = index_of[future.key]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - a worker died (KilledWorker) or similar
                outcome = CaseOutcome(case_ids[index], FAILED, "worker", f"{type(error).__name__}: {one_line(error)}")
            record(index, outcome)
    except BaseException:
        # Ctrl-C: stop the queued cases (a shared cluster would run them on);
        # finished ones are already on disk.
        client.cancel(futures)
        raise
