"""The paper's protocol end to end, so that ``hematoma run`` and ``hematoma demo`` are one call.

Stages, each in OUT and each skipped on a rerun when what it depends on is unchanged:

==========  ===========================================================  ==================================
stage       writes                                                       skipped when
==========  ===========================================================  ==================================
extract     ``cases/<id>/``, ``features.*``, ``extract.json``            per case: inputs' and settings' hashes
split       ``split.csv`` (cohort 1 = CNN, cohort 2 = train / test)      it exists (same patients)
cnn         ``cnn/`` (warm-up trained on cohort 1 only)                  same cohort-1 data, preset, weights, seed
embed       ``cnn_features.parquet``, ``cnn_`` columns in ``features.*``  same CNN weights and cases
train       ``model/`` (fitted on cohort 2's train part only)            same feature table, split and settings
evaluate    ``report/`` (report.html, metrics.json, PNGs)                same model, table and truth
==========  ===========================================================  ==================================

``run.json`` records each stage's outcome, time and fingerprint.  ``cnn`` and
``embed`` run only when the CNN feature group is asked for.

OUT is locked for the whole run (one run at a time), and belongs to one
manifest and one set of extraction settings: another is refused unless
``overwrite``, which moves every stage's old results away first (see
:func:`hematoma.output_folder.claim_folder`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape

from .errors import InputError
from .parallel import fingerprint
from .protocols import ID, LABEL, PAPER_GROUPS, TrainSettings, parse_groups, parse_optional_groups
from .storage import atomic_path, folder_lock, sha1_file, write_json

RUN_RECORD = "run.json"
DEMO_PATIENTS = 200  # a test part of ~50 patients; ~7 min on 2 idle cores
DEMO_SIZE = "small"


@dataclass
class RunSettings:
    """Everything ``hematoma run`` lets a user choose."""

    workers: int | None = None
    scheduler: str | None = None
    groups: tuple[str, ...] = PAPER_GROUPS
    classifier: str = "auto"
    grid: str = "default"
    scaling: str = "standard"
    selection_scope: str = "group"
    optional_groups: tuple[str, ...] | str = ()
    seed: int = 0
    cnn_preset: str = "paper"
    cnn_weights: str = "auto"
    cnn_epochs: int | None = None  # overrides the preset's
    device: str = "auto"
    definition: str | None = None  # HE definition (None: the default)
    segmentation_model: str | None = None
    radiomics_params: str | None = None
    segmenter: Any = None  # segmentation.methods.SegmenterSettings; None: the rules
    inner_repeats: int | None = None  # repetitions of the inner model-choice CV; None: the model's default
    prior: str | None = None  # build_model's prior; None: its default
    prior_weight: float | None = None  # the known model's weight; None: build_model's default
    anchor: str | None = None  # build_model's anchor; None: train's default
    anchor_weight: float | None = None  # the published score's weight; None: build_model's default

    def __post_init__(self):
        self.groups = parse_groups(self.groups) or PAPER_GROUPS
        self.optional_groups = parse_optional_groups(self.optional_groups)
        TrainSettings(classifier=self.classifier, groups=self.groups, grid=self.grid, scaling=self.scaling,
                      selection_scope=self.selection_scope, inner_repeats=self.inner_repeats, prior=self.prior,
                      prior_weight=self.prior_weight, anchor=self.anchor,
                      anchor_weight=self.anchor_weight)  # fail on a bad choice now, not after an hour of extraction
        if self.anchor == "brain" and "clin" not in self.groups:
            raise InputError(None, f"--anchor brain needs the clin feature group; --features is {','.join(self.groups)}")
        if self.prior == "known" and not {"clin", "sign"} & set(self.groups):
            raise InputError(None, f"--prior known needs the clin or sign feature group; --features is "
                             f"{','.join(self.groups)}")
        if "cnn" in self.groups:
            from .features.deep import WEIGHT_CHOICES, preset

            preset(self.cnn_preset, epochs=self.cnn_epochs)
            if self.cnn_weights not in WEIGHT_CHOICES and not Path(self.cnn_weights).is_file():
                raise InputError(self.cnn_weights, f"no such weights file (or choose one of {', '.join(WEIGHT_CHOICES)})")


@dataclass
class RunResult:
    out: Path
    report: Path
    metrics: dict
    stages: dict = field(default_factory=dict)

    @property
    def test_auc(self) -> dict:
        return self.metrics["model"]["auc_ci"]["delong"]

    @property
    def oracle_auc(self) -> dict | None:
        oracle = self.metrics.get("oracle")
        return oracle["auc"] if oracle else None


class _Stages:
    """Runs stages, timing them and recording outcome + fingerprint in ``run.json`` after each."""

    def __init__(self, out: Path, console: Console):
        self.path = out / RUN_RECORD
        self.console = console
        try:
            self.previous = json.loads(self.path.read_text(encoding="utf-8")).get("stages", {})
        except (OSError, ValueError):
            self.previous = {}
        self.record: dict = {}

    def fingerprint_of(self, name: str) -> str | None:
        return (self.previous.get(name) or {}).get("fingerprint")

    def done(self, name: str, status: str, seconds: float, print_line: str = "", **extra) -> None:
        self.record[name] = {"status": status, "seconds": round(seconds, 3), **extra}
        self.console.print(f"[bold]{name}[/]: {status} ({seconds:.1f} s){'; ' + print_line if print_line else ''}",
                           highlight=False)
        write_json(self.path, {"stages": {**self.previous, **self.record}})


def run_protocol(manifest: str | Path, out: str | Path, settings: RunSettings | None = None,
                 progress: bool = True, console: Console | None = None, overwrite: bool = False) -> RunResult:
    """Extract -> split -> CNN on cohort 1 -> embed -> train on cohort 2's train part -> evaluate on its test part.

    ``overwrite``: replace OUT's results when they are another manifest's or other extraction settings'.
    """
    settings = settings or RunSettings()
    console = console or Console(stderr=True)
    manifest = Path(manifest).resolve()  # case.json must hold absolute paths whatever the current folder
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    with folder_lock(out):
        return _run_protocol(manifest, out, settings, progress, console, overwrite)


def _run_protocol(manifest: Path, out: Path, settings: RunSettings, progress: bool, console: Console,
                  overwrite: bool) -> RunResult:
    start = time.perf_counter()
    table = _extract(manifest, out, settings, progress, console, overwrite)
    counts = table.attrs["counts"]
    stages = _Stages(out, console)  # after extract: an overwrite moves the old run.json away
    stages.done("extract", "done", time.perf_counter() - start,
                f"{counts['done']} computed, {counts['skipped']} unchanged, {counts['failed']} failed", counts=counts)

    from .cohort import load_or_make_split

    start = time.perf_counter()
    existed = (out / "split.csv").exists()
    split = load_or_make_split(out / "split.csv", table, seed=settings.seed, label=LABEL,
                               remedy="the manifest's patients changed since OUT's split was made: rerun with "
                                      "--overwrite for a new split (unchanged cases are reused)")
    sizes = split["part"].value_counts().to_dict()
    stages.done("split", "skipped (exists)" if existed else "done", time.perf_counter() - start,
                ", ".join(f"{part} {sizes.get(part, 0)}" for part in ("cnn", "train", "test")), sizes=sizes)

    if "cnn" in settings.groups:
        _cnn(out, settings, stages, progress)
        _embed(out, table, stages, progress)

    model_dir, model_status = _train(out, settings, stages, progress)
    report, metrics = _evaluate(out, model_dir, stages)
    return RunResult(out=out, report=report, metrics=metrics, stages=stages.record)


# --------------------------------------------------------------------------- stages


def _extract(manifest: Path, out: Path, settings: RunSettings, progress: bool, console,
             overwrite: bool) -> pd.DataFrame:
    from .case_warnings import summarise_warnings
    from .extraction import extract_cohort

    kwargs = {"definition": settings.definition} if settings.definition else {}
    result = extract_cohort(manifest, out, workers=settings.workers, scheduler=settings.scheduler,
                            radiomics_params=settings.radiomics_params, segmentation_model=settings.segmentation_model,
                            segmenter=settings.segmenter, show_progress=progress, console=console, overwrite=overwrite, **kwargs)
    for line in summarise_warnings(result.warnings):
        console.print(f"[yellow]warnings[/] {escape(line)}", highlight=False, soft_wrap=True)
    table = result.table
    table.attrs["counts"] = result.counts
    return table


def _cnn_cases(out: Path) -> pd.DataFrame:
    """Cohort 1's labelled patients with their image paths, as ``train_cnn`` selects them."""
    from .features.deep.cases import case_inputs
    from .protocols import read_features

    table = read_features(out).table
    split = pd.read_csv(out / "split.csv", dtype={ID: str})
    cohort1 = set(split.loc[split["part"] == "cnn", ID])
    chosen = table.loc[table[ID].isin(cohort1) & table[LABEL].notna(), [ID, LABEL]]
    return chosen.merge(case_inputs(out, chosen[ID]), on=ID, validate="one_to_one")


def _cnn(out: Path, settings: RunSettings, stages: _Stages, progress: bool) -> None:
    from .features.deep import SliceSettings, preset, train_cnn
    from .features.deep.cases import data_sha1

    start = time.perf_counter()
    cnn_dir = out / "cnn"
    training = preset(settings.cnn_preset, epochs=settings.cnn_epochs).to_dict()
    slices = SliceSettings()
    data = data_sha1(_cnn_cases(out))
    try:
        previous = json.loads((cnn_dir / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    weights = str(settings.cnn_weights)
    if (previous and (cnn_dir / "model.safetensors").is_file() and previous.get("data_sha1") == data
            and _same(previous.get("training"), training) and previous.get("weights_requested") == weights
            and previous.get("seed") == settings.seed and _same(previous.get("slices"), slices.to_dict())):
        stages.done("cnn", "skipped (trained on the same cohort 1 with the same settings)", time.perf_counter() - start,
                    model_sha1=previous.get("model_sha1"))
        return
    result = train_cnn(out, cnn_dir, preset_name=settings.cnn_preset, weights=weights, seed=settings.seed,
                       device=settings.device, slices=slices, overwrite=True, progress=progress,
                       epochs=settings.cnn_epochs)
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    stages.done("cnn", "done", time.perf_counter() - start,
                f"{len(result.history)} epoch(s), weights {result.weights_source}, best validation accuracy "
                f"{best['validation_accuracy']:.3f}", weights_source=result.weights_source)


def _same(a, b) -> bool:
    # JSON turns tuples into lists: compare as JSON.
    return json.dumps(a, sort_keys=True, default=list) == json.dumps(b, sort_keys=True, default=list)


def _case_fingerprints(out: Path, ids) -> dict[str, str | None]:
    prints = {}
    for pid in ids:
        try:
            prints[pid] = json.loads((out / "cases" / pid / "case.json").read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError):
            prints[pid] = None
    return prints


def _embed(out: Path, table: pd.DataFrame, stages: _Stages, progress: bool) -> None:
    """CNN features of every patient, merged into ``features.*`` (from cache when CNN and cases are unchanged)."""
    from .features.deep import embed_output, merge_features

    start = time.perf_counter()
    model_sha1 = json.loads((out / "cnn" / "settings.json").read_text(encoding="utf-8")).get("model_sha1")
    ids = sorted(table[ID].astype(str))
    key = fingerprint(model_sha1, _case_fingerprints(out, ids))
    cached = out / "cnn_features.parquet"
    if stages.fingerprint_of("embed") == key and cached.is_file():
        features = pd.read_parquet(cached)
        if sorted(features[ID].astype(str)) == ids:
            # extract rewrote features.* without cnn_ columns: put the cached ones back.
            merged = merge_features(table, features.astype({ID: str}))
            _write_features(out, merged)
            stages.done("embed", "skipped (same CNN and cases; cached features merged)", time.perf_counter() - start,
                        fingerprint=key)
            return
    embeddings = embed_output(out, out / "cnn", progress=progress)
    stages.done("embed", "done", time.perf_counter() - start, f"{len(embeddings.failures)} failed",
                fingerprint=key)


def _write_features(out: Path, table: pd.DataFrame) -> None:
    with atomic_path(out / "features.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(out / "features.csv") as tmp:
        table.to_csv(tmp, index=False)


def _train(out: Path, settings: RunSettings, stages: _Stages, progress: bool) -> tuple[Path, str]:
    from .model import prior_text
    from .model_bundle import table_hash
    from .protocols import read_features, train

    start = time.perf_counter()
    model_dir = out / "model"
    train_settings = TrainSettings(protocol="paper", groups=settings.groups, classifier=settings.classifier,
                                   grid=settings.grid, scaling=settings.scaling,
                                   selection_scope=settings.selection_scope, optional_groups=settings.optional_groups,
                                   seed=settings.seed, inner_repeats=settings.inner_repeats, prior=settings.prior,
                                   prior_weight=settings.prior_weight, anchor=settings.anchor,
                                   anchor_weight=settings.anchor_weight)
    table = read_features(out).table
    key = fingerprint(table_hash(table), sha1_file(out / "split.csv"), asdict(train_settings))
    try:
        recorded = json.loads((model_dir / "bundle.json").read_text(encoding="utf-8"))["settings"].get("run_fingerprint")
    except (OSError, ValueError, KeyError):
        recorded = None
    if recorded == key and (model_dir / "model.skops").is_file():
        stages.done("train", "skipped (same features, split and settings)", time.perf_counter() - start, fingerprint=key)
        return model_dir, "skipped"
    result = train(out, model_dir, train_settings, overwrite=True, progress=progress,
                   extra_settings={"run_fingerprint": key})
    test = (result.evaluation or {}).get("test") or {}
    stages.done("train", "done", time.perf_counter() - start,
                f"{result.summary['classifier']} on {len(result.train_ids)} patients, k={result.summary['k']}, "
                f"groups used: {'+'.join(result.summary['groups_used'])}{prior_text(result.summary)}",
                fingerprint=key, test_auc=test.get("auc"))
    return model_dir, "done"


def _evaluate(out: Path, model_dir: Path, stages: _Stages) -> tuple[Path, dict]:
    from .assessment import assess
    from .model_bundle import table_hash
    from .protocols import read_features
    from .report.build import write_report_folder

    start = time.perf_counter()
    report_dir = out / "report"
    source = read_features(out)
    truth = source.truth_path()
    key = fingerprint(sha1_file(model_dir / "model.skops"), table_hash(source.table),
                      sha1_file(truth) if truth else None, sha1_file(out / "split.csv"))
    try:
        metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = None
    if metrics and metrics.get("fingerprint") == key and (report_dir / "report.html").is_file():
        stages.done("evaluate", "skipped (same model, features and truth)", time.perf_counter() - start, fingerprint=key)
        return report_dir / "report.html", metrics
    assessment = assess(model_dir, out)
    folder = write_report_folder(assessment, report_dir, extra={"fingerprint": key})
    metrics = json.loads(folder.metrics.read_text(encoding="utf-8"))
    auc = metrics["model"]["auc_ci"]["delong"]
    stages.done("evaluate", "done", time.perf_counter() - start,
                f"test AUC {auc['auc']:.3f} ({auc['lower']:.3f}-{auc['upper']:.3f})", fingerprint=key)
    return folder.html, metrics


# --------------------------------------------------------------------------- the demo


def run_demo(out: str | Path = "hematoma-demo", patients: int = DEMO_PATIENTS, seed: int = 0, size: str = DEMO_SIZE,
             workers: int | None = None, settings: RunSettings | None = None, progress: bool = True,
             console: Console | None = None, overwrite: bool = False) -> RunResult:
    """``hematoma run`` on a synthetic cohort written to ``OUT/cohort`` (fast CNN preset, small search grid)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    with folder_lock(out):  # the cohort too is written into OUT
        return _run_demo(out, patients, seed, size, workers, settings, progress, console, overwrite)


def _run_demo(out: Path, patients: int, seed: int, size: str, workers: int | None, settings: RunSettings | None,
              progress: bool, console: Console | None, overwrite: bool) -> RunResult:
    from .parallel import default_workers
    from .synthetic import generate_cohort

    console = console or Console(stderr=True)
    workers = workers or default_workers()
    start = time.perf_counter()
    summary = generate_cohort(out / "cohort", patients, seed=seed, size=size, workers=workers, progress=progress,
                              overwrite=overwrite)
    console.print(f"[bold]synthetic cohort[/]: {summary['generated']} generated, {summary['skipped']} already there "
                  f"({time.perf_counter() - start:.1f} s); HE rate {summary['he_rate']:.2f}", highlight=False)
    settings = settings or RunSettings(workers=workers, cnn_preset="fast", grid="small", seed=seed)
    return run_protocol(out / "cohort" / "manifest.csv", out, settings, progress=progress, console=console,
                        overwrite=overwrite)
