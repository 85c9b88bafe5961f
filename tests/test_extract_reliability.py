"""`hematoma extract` / `run` output folders (issue 15): whose folder it is, one run at a time, exit status, warnings.

Reproduces the issue's cases through the CLI: another manifest's extraction over a
finished folder (group 3), two runs on one folder at once (group 4), failed cases
with exit 0 and DICOM warnings seen by no one (group 10), a DICOM folder with two
equal-size series (group 9) and an all-ones mask (group 6).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.extraction import extract_cohort
from hematoma.parallel import DONE, FAILED, SKIPPED
from hematoma.storage import LOCK_RECORD_NAME, TRASH_PREFIX, folder_lock

from test_io import axial_positions, write_ct_series

runner = CliRunner()
N_PATIENTS = 4
DEFAULT_DEFINITION = "6ml-or-33pct"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A small synthetic cohort (NIfTI CTs and masks, clinical columns); its manifest."""
    from hematoma.synthetic import generate_cohort

    folder = tmp_path_factory.mktemp("cohort")
    generate_cohort(folder, N_PATIENTS, seed=3, size="small", progress=False)
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def finished(cohort, tmp_path_factory) -> Path:
    """A finished extraction of ``cohort`` (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    extract_cohort(cohort, out, workers=1, show_progress=False)
    return out


def _extract(*args: str):
    return runner.invoke(app, ["extract", *map(str, args), "--workers", "1"])


def _one_line(result) -> str:
    text = result.output.strip()
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text
    return text


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (but the lock's) and its content."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".hematoma.lock")}


def _copy(folder: Path, destination: Path) -> Path:
    shutil.copytree(folder, destination)
    return destination


def _other_manifest(cohort: Path, destination: Path) -> Path:
    """Another manifest (another file) with 2 of the same ids, each pointing at another patient's images."""
    table = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    other = table.iloc[[2, 3]].copy()
    other["patient_id"] = table["patient_id"].iloc[[0, 1]].to_numpy()
    for column in ("baseline_ct", "followup_ct", "baseline_mask", "followup_mask"):
        other[column] = [str((cohort.parent / value).resolve()) for value in other[column]]
    destination.parent.mkdir(parents=True, exist_ok=True)
    other.to_csv(destination, index=False)
    return destination


# --------------------------------------------------------------------------- group 3: whose folder


def test_another_manifest_on_a_finished_folder_is_refused_and_destroys_nothing(cohort, finished, tmp_path):
    out = _copy(finished, tmp_path / "out")
    (out / "split.csv").write_text("patient_id,part\n")  # a later stage's output (`run`)
    before = _snapshot(out)
    other = _other_manifest(cohort, tmp_path / "elsewhere" / "other.csv")

    result = _extract(other, "--out", out)
    assert result.exit_code == 2
    line = _one_line(result)
    assert (f"holds the extraction of {cohort.resolve()} ({N_PATIENTS} patients, definition {DEFAULT_DEFINITION}); "
            f"this run is {other.resolve()}: pass --overwrite") in line
    assert _snapshot(out) == before

    # `run` extracts first: refused the same way, before any stage.
    result = runner.invoke(app, ["run", str(other), "--out", str(out), "--workers", "1", "--features", "rad,clin"])
    assert result.exit_code == 2
    assert f"holds the extraction of {cohort.resolve()}" in _one_line(result)
    assert _snapshot(out) == before


def test_another_definition_on_the_same_manifest_is_refused(cohort, finished, tmp_path):
    out = _copy(finished, tmp_path / "out")
    before = _snapshot(out)
    result = _extract(cohort, "--out", out, "--definition", "33pct")
    assert result.exit_code == 2
    assert "this run has definition 33pct: pass --overwrite to replace it, or choose another --out" in _one_line(result)
    assert _snapshot(out) == before


def test_the_same_cohort_moved_elsewhere_resumes_without_recomputing(cohort, finished, tmp_path):
    # A copy of the same manifest (same content, the cohort folder moved) is the same cohort, not another one.
    moved_cohort = _copy(cohort.parent, tmp_path / "moved_cohort")
    out = _copy(finished, tmp_path / "out")
    result = extract_cohort(moved_cohort / cohort.name, out, workers=1, show_progress=False)
    assert result.counts == {DONE: 0, SKIPPED: N_PATIENTS, FAILED: 0}
    record = json.loads((out / "extract.json").read_text())
    assert record["manifest"] == str((moved_cohort / cohort.name).resolve())


def test_radiomics_parameters_count_by_content_not_by_path(cohort, finished, tmp_path):
    import yaml

    from hematoma.features.radiomics import default_params_path

    out = _copy(finished, tmp_path / "out")
    same = tmp_path / "same.yaml"
    shutil.copyfile(default_params_path(), same)
    result = _extract(cohort, "--out", out, "--radiomics-params", same)
    assert result.exit_code == 0, result.output
    assert f"0 computed, {N_PATIENTS} unchanged" in result.output

    params = yaml.safe_load(default_params_path().read_text())
    params["setting"]["binWidth"] = 10
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(params))
    result = _extract(cohort, "--out", out, "--radiomics-params", other)
    assert result.exit_code == 2
    assert f"this run has other radiomics parameters ({other.resolve()})" in _one_line(result)


def test_columns_count_only_where_they_change_the_table(cohort, tmp_path):
    """An extra clinical column changes the table; ignoring a column the table never uses does not."""
    folder = _copy(cohort.parent, tmp_path / "cohort")
    manifest = folder / cohort.name
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table.assign(score=[str(i) for i in range(len(table))]).to_csv(manifest, index=False)
    out = tmp_path / "out"
    assert _extract(manifest, "--out", out, "--ignore-column", "score").exit_code == 0

    result = _extract(manifest, "--out", out, "--extra-column", "score")
    assert result.exit_code == 2
    assert "this run declares extra columns score (that one: none), ignores columns none (that one: score)" in \
        _one_line(result)

    # The same manifest edited (a note column added, ignored; a clinical value fixed; a patient added): resumed.
    edited = pd.read_csv(manifest, dtype=str, keep_default_na=False).assign(note="checked")
    extra_row = edited.iloc[[0]].assign(patient_id="added")
    edited = pd.concat([edited, extra_row], ignore_index=True)
    edited.loc[1, "age"] = str(int(float(edited.loc[1, "age"])) + 1)
    edited.to_csv(manifest, index=False)
    result = _extract(manifest, "--out", out, "--ignore-column", "score", "--ignore-column", "note")
    assert result.exit_code == 0, result.output
    assert f"1 computed, {N_PATIENTS} unchanged" in result.output
    features = pd.read_csv(out / "features.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert features.loc[edited.loc[1, "patient_id"], "clin_age"] == float(edited.loc[1, "age"])


def test_results_without_a_record_of_whose_they_are_are_refused(tmp_path, cohort):
    out = tmp_path / "out"
    out.mkdir()
    (out / "features.csv").write_text("patient_id\nsomeone\n")
    result = _extract(cohort, "--out", out)
    assert result.exit_code == 2
    assert "holds results (features.csv) but no readable extract.json" in _one_line(result)
    assert (out / "features.csv").read_text() == "patient_id\nsomeone\n"


_STUCK_RUN = """
import sys, time
import hematoma.extraction as extraction

def stuck(*args, **kwargs):
    print("running", flush=True)
    time.sleep(120)

extraction.run_cases = stuck
extraction.extract_cohort(sys.argv[1], sys.argv[2], workers=1, show_progress=False)
"""


def test_a_killed_first_run_already_protects_its_folder(cohort, tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "stuck.py"
    script.write_text(_STUCK_RUN)
    process = subprocess.Popen([sys.executable, str(script), str(cohort), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "running"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    other = _other_manifest(cohort, tmp_path / "other.csv")
    result = _extract(other, "--out", out)
    assert result.exit_code == 2
    assert f"holds the unfinished extraction of {cohort.resolve()} ({N_PATIENTS} patients" in _one_line(result)
    # Its own manifest resumes it (the dead run's lock does not block).
    result = _extract(cohort, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "extract.json").read_text())["status"] == "finished"


def _later_stage_outputs(out: Path) -> list[str]:
    names = ["split.csv", "run.json", "cnn_features.parquet", "model/model.skops", "report/report.html",
             "cnn/settings.json"]
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("old")
    return names


def test_overwrite_leaves_nothing_of_the_old_cohort(cohort, finished, tmp_path):
    out = _copy(finished, tmp_path / "out")
    later = _later_stage_outputs(out)
    other = _other_manifest(cohort, tmp_path / "other.csv")
    other_ids = pd.read_csv(other, dtype=str)["patient_id"].tolist()

    result = _extract(other, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "2 computed, 0 unchanged" in result.output  # same ids, other images: recomputed
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(other_ids)
    assert not [name for name in later if (out / name).exists()]
    assert not list(out.glob(f"{TRASH_PREFIX}*"))
    record = json.loads((out / "extract.json").read_text())
    assert record["manifest"] == str(other.resolve()) and record["patients"] == 2
    features = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    assert sorted(features["patient_id"]) == sorted(other_ids)
    for pid, row in pd.read_csv(other, dtype=str).set_index("patient_id").iterrows():
        case = json.loads((out / "cases" / pid / "case.json").read_text())
        assert case["baseline_ct"] == row["baseline_ct"]


def test_an_overwrite_that_crashes_midway_never_leaves_a_mixed_folder(cohort, finished, tmp_path, monkeypatch):
    import hematoma.storage as storage

    out = _copy(finished, tmp_path / "out")
    _later_stage_outputs(out)
    other = _other_manifest(cohort, tmp_path / "other.csv")
    real_replace, moved = os.replace, []

    def crash_on_the_third_move(source, destination):
        if TRASH_PREFIX in str(destination):
            if len(moved) == 2:
                raise OSError("disk gone")
            moved.append(source)
        return real_replace(source, destination)

    monkeypatch.setattr(storage.os, "replace", crash_on_the_third_move)
    with pytest.raises(OSError, match="disk gone"):
        extract_cohort(other, out, workers=1, show_progress=False, overwrite=True)
    monkeypatch.undo()
    assert Path(moved[0]).name == "extract.json"  # the ownership record goes first

    # Half the old results are left and no record of whose: no run resumes it without --overwrite.
    for manifest in (cohort, other):
        result = _extract(manifest, "--out", out)
        assert result.exit_code == 2
        assert "no readable extract.json" in _one_line(result)
    result = _extract(other, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not list(out.glob(f"{TRASH_PREFIX}*")) and not (out / "split.csv").exists()
    assert len(pd.read_csv(out / "features.csv")) == 2


# --------------------------------------------------------------------------- group 4: one run at a time


_HOLDER = """
import sys, time
from hematoma.storage import folder_lock

with folder_lock(sys.argv[1], command="hematoma extract holder.csv --out OUT"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A folder whose lock another process holds: (folder, that process)."""
    folder = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield folder, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_a_second_run_on_a_held_folder_refuses_naming_the_holder(cohort, finished, held):
    out, holder = held
    for item in finished.iterdir():  # a finished extraction that the holder is using
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
    before = _snapshot(out)
    result = _extract(cohort, "--out", out, "--definition", "33pct")
    assert result.exit_code == 2
    line = _one_line(result)
    assert f"{out}: is in use by another run (pid {holder.pid} on " in line
    assert "hematoma extract holder.csv --out OUT" in line
    assert _snapshot(out) == before

    result = runner.invoke(app, ["run", str(cohort), "--out", str(out), "--workers", "1", "--features", "rad,clin"])
    assert result.exit_code == 2
    assert f"is in use by another run (pid {holder.pid} on " in _one_line(result)
    assert _snapshot(out) == before

    # The CNN stages write into OUT too (split.csv, the merged feature table).
    for command in (["cnn", "train", str(out), "--out", str(out.parent / "cnn"), "--preset", "fast"],
                    ["cnn", "embed", str(out), "--model", str(out.parent / "cnn")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert f"is in use by another run (pid {holder.pid} on " in _one_line(result)
        assert _snapshot(out) == before


def test_cnn_stages_wait_their_turn_before_reading_a_held_folder(held):
    # Seen: `cnn train` during `extract --overwrite` read a half-replaced folder ("has no features.csv").
    out, holder = held
    for command in (["cnn", "train", str(out), "--out", str(out.parent / "cnn"), "--preset", "fast"],
                    ["cnn", "embed", str(out), "--model", str(out.parent / "cnn")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert f"is in use by another run (pid {holder.pid} on " in _one_line(result)


def test_the_lock_of_a_killed_process_does_not_block(held):
    out, holder = held
    with pytest.raises(InputError, match=f"pid {holder.pid}"):
        with folder_lock(out):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert json.loads((out / LOCK_RECORD_NAME).read_text())["pid"] == holder.pid  # left behind by the kill
    with folder_lock(out, command="next"):
        assert json.loads((out / LOCK_RECORD_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_RECORD_NAME).exists()


def test_nested_holds_in_one_thread_share_the_lock(tmp_path):
    """`run` holds OUT and calls extract, which takes the same lock."""
    with folder_lock(tmp_path / "out"):
        with folder_lock(tmp_path / "out"):
            pass
        assert (tmp_path / "out" / LOCK_RECORD_NAME).exists()  # still held by the outer one


def test_two_extract_processes_at_once_one_wins_and_no_table_is_mixed(cohort, tmp_path):
    """The issue's case: two runs with different definitions on one folder at the same time."""
    out = tmp_path / "out"
    table = pd.read_csv(cohort, dtype=str, keep_default_na=False).head(2)
    small = cohort.parent / "two.csv"
    table.to_csv(small, index=False)
    command = [sys.executable, "-m", "hematoma", "extract", str(small), "--out", str(out), "--workers", "1"]
    runs = {definition: subprocess.Popen([*command, "--definition", definition], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
            for definition in (DEFAULT_DEFINITION, "33pct")}
    results = {definition: (p.wait(timeout=180), p.stdout.read()) for definition, p in runs.items()}
    winners = [d for d, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (loser,) = set(results) - set(winners)
    code, output = results[loser]
    assert code == 2 and "Traceback" not in output
    assert "is in use by another run" in output or "this run has definition" in output

    from hematoma.volume import label_expansion

    features = pd.read_csv(out / "features.csv")
    expected = [label_expansion(b, f, winners[0]) for b, f in zip(features["baseline_volume_ml"],
                                                                   features["followup_volume_ml"])]
    assert features["he"].tolist() == [float(v) for v in expected]
    assert json.loads((out / "extract.json").read_text())["settings"]["definition"] == winners[0]


# --------------------------------------------------------------------------- DICOM cohort: groups 10, 9, 6


def _series(folder: Path, hu: np.ndarray, positions, name: str) -> str:
    """A DICOM series in ``folder`` whose files are named ``<name>NNN.dcm`` (several series share a folder)."""
    return write_ct_series(folder, hu, positions, names=[f"{name}{k:03d}.dcm" for k in range(len(hu))])


def _head(seed: int, blob_hu: float, slices: int = 8, air_outside: bool = False) -> np.ndarray:
    """(z, y, x) HU: brain-like 30 HU with a 'hematoma' blob of ``blob_hu`` in the middle slices (air around)."""
    rng = np.random.default_rng(seed)
    hu = 30 + rng.normal(0, 3, (slices, 32, 32))
    z, y, x = np.ogrid[:slices, :32, :32]
    if air_outside:
        hu[np.broadcast_to((y - 16) ** 2 + (x - 16) ** 2 > 144, hu.shape)] = -1000
    blob = ((y - 16) ** 2 + (x - 15) ** 2 <= 36) & (z >= 2) & (z <= slices - 3)
    hu[blob] = blob_hu + rng.normal(0, 3, int(blob.sum()))
    return np.rint(hu).astype(np.int16)


def _mask_for(ct: Path, destination: Path, series_uid: str | None = None, everything: bool = False) -> Path:
    """A mask on the grid ``read_image`` gives for ``ct``: its blob (HU >= 55), or every voxel."""
    from hematoma.io import array_to_image, image_to_array, read_image, write_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reading's own warnings are the extraction's to report
        image = read_image(ct, series_uid=series_uid)
    hu = image_to_array(image)
    mask = np.ones(hu.shape, np.uint8) if everything else (hu >= 55).astype(np.uint8)
    write_image(array_to_image(mask, image), destination)
    return destination


@pytest.fixture(scope="module")
def dicom_cohort(tmp_path_factory) -> Path:
    """Four DICOM patients: two series (one chosen), a missing slice (resampled), a corrupt CT, an all-ones mask."""
    root = tmp_path_factory.mktemp("dicom")
    _series(root / "two_series", _head(0, 70), axial_positions(8), "a")
    _series(root / "two_series", _head(1, 70, slices=5), axial_positions(5), "b")
    gap = axial_positions(9)
    write_ct_series(root / "gap", _head(2, 70, slices=8), gap[:4] + gap[5:])
    (root / "corrupt.nii.gz").write_bytes(b"not an image at all")
    write_ct_series(root / "filled", _head(3, 70, air_outside=True), axial_positions(8))
    rows = [
        ("series", root / "two_series", _mask_for(root / "two_series", root / "series_mask.nii.gz")),
        ("resampled", root / "gap", _mask_for(root / "gap", root / "gap_mask.nii.gz")),
        ("corrupt", root / "corrupt.nii.gz", ""),
        ("filled", root / "filled", _mask_for(root / "filled", root / "filled_mask.nii.gz", everything=True)),
    ]
    manifest = root / "manifest.csv"
    pd.DataFrame([{"patient_id": pid, "baseline_ct": str(ct), "baseline_mask": str(mask), "he": i % 2}
                  for i, (pid, ct, mask) in enumerate(rows)]).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def dicom_run(dicom_cohort):
    out = dicom_cohort.parent / "out"
    return out, runner.invoke(app, ["extract", str(dicom_cohort), "--out", str(out), "--workers", "1"])


def test_failed_cases_give_a_distinct_exit_status_and_are_listed(dicom_run):
    out, result = dicom_run
    assert result.exit_code == 3, result.output
    assert "2 computed, 0 unchanged (skipped), 2 failed" in result.output
    assert "failed corrupt (read): " in result.output and "failed filled (mask): " in result.output
    failures = pd.read_csv(out / "failures.csv", dtype=str)
    assert sorted(failures["patient_id"]) == ["corrupt", "filled"]
    assert sorted(pd.read_csv(out / "features.csv", dtype=str)["patient_id"]) == ["resampled", "series"]
    assert "exit status" in runner.invoke(app, ["extract", "--help"]).output.lower()


def test_dicom_warnings_are_summarised_on_the_console_and_in_extract_json(dicom_run):
    out, result = dicom_run
    assert "warnings DICOM series chosen: 1 case (series)" in result.output
    assert "warnings DICOM slices resampled: 1 case (resampled)" in result.output
    summary = json.loads((out / "extract.json").read_text())["warnings"]
    assert sorted(summary) == ["resampled", "series"]
    assert "2 series in folder; took the largest" in summary["series"][0]
    assert "resampled onto a regular grid" in summary["resampled"][0]
    case = json.loads((out / "cases" / "series" / "case.json").read_text())
    assert case["warnings"] == summary["series"]


def test_an_all_ones_mask_fails_its_case_in_one_line(dicom_run):
    out, _ = dicom_run
    failures = pd.read_csv(out / "failures.csv", dtype=str).set_index("patient_id")
    assert failures.loc["filled", "stage"] == "mask"
    reason = failures.loc["filled", "reason"]
    assert reason.startswith(str(out.parent / "filled_mask.nii.gz")) and "cannot be a hematoma" in reason
    assert "air" in reason  # the mask covers the air around the head
    assert "\n" not in reason


def test_the_manifest_chooses_the_series_of_a_folder_with_two_equal_ones(tmp_path):
    """Group 9: two series of 8 slices in one folder could not be read at all."""
    first = _series(tmp_path / "ct", _head(0, 70), axial_positions(8), "a")
    second = _series(tmp_path / "ct", _head(0, 80), axial_positions(8), "b")
    followup_first = _series(tmp_path / "ct2", _head(4, 70), axial_positions(8), "a")
    _series(tmp_path / "ct2", _head(5, 70), axial_positions(8), "b")
    mask = _mask_for(tmp_path / "ct", tmp_path / "mask.nii.gz", series_uid=first)
    _mask_for(tmp_path / "ct2", tmp_path / "mask2.nii.gz", series_uid=followup_first)
    write_ct_series(tmp_path / "plain", _head(6, 70), axial_positions(8))  # a second patient, one series
    _mask_for(tmp_path / "plain", tmp_path / "plain_mask.nii.gz")
    manifest, out = tmp_path / "manifest.csv", tmp_path / "out"

    def run(baseline_series: str, followup_series: str):
        pd.DataFrame([
            {"patient_id": "two", "baseline_ct": "ct", "baseline_mask": "mask.nii.gz", "followup_ct": "ct2",
             "followup_mask": "mask2.nii.gz", "baseline_series": baseline_series, "followup_series": followup_series},
            {"patient_id": "plain", "baseline_ct": "plain", "baseline_mask": "plain_mask.nii.gz", "followup_ct": "",
             "followup_mask": "", "baseline_series": "", "followup_series": "", "he": 0},
        ]).to_csv(manifest, index=False)
        result = _extract(manifest, "--out", out)
        failures = pd.read_csv(out / "failures.csv", dtype=str).set_index("patient_id")
        return result, failures

    result, failures = run("", "")
    assert result.exit_code == 3
    assert failures.loc["two", "stage"] == "read" and "2 series tie for the most slices" in failures.loc["two", "reason"]
    result, failures = run(second, "")
    assert result.exit_code == 3
    assert failures.loc["two", "stage"] == "followup" and "tie" in failures.loc["two", "reason"]

    result, failures = run(second, followup_first)
    assert result.exit_code == 0, result.output
    features = pd.read_csv(out / "features.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert abs(features.loc["two", "rad_original_firstorder_Mean"] - 80) < 2  # the second series' blob
    case = json.loads((out / "cases" / "two" / "case.json").read_text())
    assert case["baseline_series"] == second and case["followup_series"] == followup_first
    assert case["he_source"] == "followup"

    # The CNN stages read the case's CT again: the chosen series, not the folder's tie.
    from hematoma.features.deep.cases import case_inputs, read_case_images

    inputs = case_inputs(out, ["two", "plain"]).set_index("patient_id")
    assert inputs.loc["two", "baseline_series"] == second and pd.isna(inputs.loc["plain", "baseline_series"])
    ct, mask = read_case_images(inputs.loc["two", "baseline_ct"], inputs.loc["two", "baseline_mask"],
                                series_uid=inputs.loc["two", "baseline_series"])
    import SimpleITK as sitk

    assert abs(sitk.GetArrayFromImage(ct)[sitk.GetArrayFromImage(mask) > 0].mean() - 80) < 2

    # Another series is another input: the case is recomputed, the other patient is not.
    result, _ = run(first, followup_first)
    assert result.exit_code == 0, result.output
    assert "1 computed, 1 unchanged" in result.output
    features = pd.read_csv(out / "features.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert abs(features.loc["two", "rad_original_firstorder_Mean"] - 70) < 2


def test_inputs_inside_the_results_are_never_replaced(cohort, finished, tmp_path):
    """A manifest whose masks are another run's outputs, in that run's folder: --overwrite would delete them."""
    out = _copy(finished, tmp_path / "out")
    table = pd.read_csv(cohort, dtype=str, keep_default_na=False).head(2)
    table["baseline_mask"] = [str(out / "cases" / pid / "baseline_mask.nii.gz") for pid in table["patient_id"]]
    table["patient_id"] = ["new1", "new2"]
    for column in ("baseline_ct", "followup_ct", "followup_mask"):
        table[column] = [str((cohort.parent / value).resolve()) for value in table[column]]
    manifest = tmp_path / "reuses_masks.csv"
    table.to_csv(manifest, index=False)
    before = _snapshot(out)
    result = _extract(manifest, "--out", out, "--overwrite")
    assert result.exit_code == 2
    assert f"holds this run's input {table['baseline_mask'][0]} (and 1 more) where its results go" in _one_line(result)
    assert _snapshot(out) == before


def test_a_manifest_named_by_a_relative_path_gives_cases_the_cnn_can_read(cohort, tmp_path, monkeypatch):
    # Seen: `extract c1/manifest.csv` stored "c1/images/..." in case.json; `cnn train` then looked for it
    # relative to the case folder and refused a valid cohort.
    from hematoma.features.deep.cases import case_inputs

    monkeypatch.chdir(cohort.parent.parent)
    relative = Path(cohort.parent.name) / cohort.name
    out = tmp_path / "out"
    result = _extract(relative, "--out", out)
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    ids = pd.read_csv(out / "features.csv", dtype={"patient_id": str})["patient_id"]
    inputs = case_inputs(out, ids)
    assert all(Path(p).is_absolute() and Path(p).exists() for p in inputs["baseline_ct"])


def test_baseline_and_follow_up_as_two_series_of_one_folder(tmp_path):
    # One DICOM folder holding both scans is not "the same file twice": the series columns tell them apart.
    baseline = _series(tmp_path / "study", _head(0, 70), axial_positions(8), "a")
    followup = _series(tmp_path / "study", _head(1, 70), axial_positions(8), "b")
    _mask_for(tmp_path / "study", tmp_path / "m1.nii.gz", series_uid=baseline)
    _mask_for(tmp_path / "study", tmp_path / "m2.nii.gz", series_uid=followup)
    manifest, out = tmp_path / "manifest.csv", tmp_path / "out"
    pd.DataFrame([{"patient_id": "p", "baseline_ct": "study", "followup_ct": "study", "baseline_mask": "m1.nii.gz",
                   "followup_mask": "m2.nii.gz", "baseline_series": baseline, "followup_series": followup}]
                 ).to_csv(manifest, index=False)
    result = _extract(manifest, "--out", out)
    assert result.exit_code == 0, result.output
    case = json.loads((out / "cases" / "p" / "case.json").read_text())
    assert case["baseline_series"] == baseline and case["followup_series"] == followup
    # The same series twice is a copy-paste slip, refused as before.
    pd.DataFrame([{"patient_id": "p", "baseline_ct": "study", "followup_ct": "study",
                   "baseline_series": baseline, "followup_series": baseline}]).to_csv(manifest, index=False)
    assert "followup_ct is the same file as baseline_ct" in _one_line(_extract(manifest, "--out", out))
