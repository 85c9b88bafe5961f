"""`hematoma extract`: per-case results, the feature table, resuming, failures, Dask back ends."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hematoma.cohort import load_manifest
from hematoma.extraction import BASELINE_VOLUME_FEATURE, META_COLUMNS, extract_cohort
from hematoma.parallel import DONE, FAILED, SKIPPED
from hematoma.storage import sha1_file
from hematoma.volume import label_expansion

from test_parallel import scheduler_file  # noqa: F401  (a fixture: dask scheduler + worker processes)

N_PATIENTS = 6
N_RADIOMICS = 107


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A small synthetic cohort (baseline + follow-up CT and masks, clinical columns); its manifest."""
    from hematoma.synthetic import generate_cohort

    folder = tmp_path_factory.mktemp("cohort")
    generate_cohort(folder, N_PATIENTS, seed=0, size="small", progress=False)
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory):
    """One in-process run (workers=1), shared by the tests that only read it."""
    return extract_cohort(cohort, tmp_path_factory.mktemp("reference"), workers=1, show_progress=False)


def _copy_cohort(manifest: Path, destination: Path) -> Path:
    shutil.copytree(manifest.parent, destination)
    return destination / manifest.name


def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every case.json: a rewrite changes them."""
    return {p.parent.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "cases").glob("*/case.json")}


def _feature_columns(table: pd.DataFrame, prefix: str) -> list[str]:
    return [c for c in table.columns if c.startswith(prefix)]


# --------------------------------------------------------------------------- outputs


def test_table_columns_and_values(reference, cohort):
    table = reference.table
    assert reference.counts == {DONE: N_PATIENTS, SKIPPED: 0, FAILED: 0}
    assert list(table.columns[: 1 + len(META_COLUMNS)]) == ["patient_id", *META_COLUMNS]
    assert len(_feature_columns(table, "rad_")) == N_RADIOMICS
    # Nothing but meta and prefixed feature columns.
    assert set(table.columns) == {"patient_id", *META_COLUMNS, *_feature_columns(table, "rad_"),
                                  *_feature_columns(table, "sign_"), *_feature_columns(table, "clin_")}
    from hematoma.features.signs import SIGN_COLUMNS

    assert sorted(_feature_columns(table, "sign_")) == sorted(SIGN_COLUMNS)  # every case gets the NCCT sign group

    from hematoma.features.clinical import encode_clinical

    manifest = load_manifest(cohort)
    clinical = encode_clinical(manifest.table, source=cohort)
    expected_clinical = [c for c in clinical.columns if c != "patient_id"] + [BASELINE_VOLUME_FEATURE]
    assert len(expected_clinical) > 5
    assert _feature_columns(table, "clin_") == expected_clinical
    assert sorted(table["patient_id"]) == sorted(manifest.table["patient_id"])

    merged = table.merge(clinical, on="patient_id", suffixes=("", "_expected"))
    for column in clinical.columns.drop("patient_id"):
        pd.testing.assert_series_equal(merged[column], merged[f"{column}_expected"], check_names=False)
    assert (table[BASELINE_VOLUME_FEATURE] == table["baseline_volume_ml"]).all()
    for row in table.itertuples(index=False):
        assert row.he == label_expansion(row.baseline_volume_ml, row.followup_volume_ml)
        assert math.isclose(row.growth_ml, row.followup_volume_ml - row.baseline_volume_ml, abs_tol=1e-9)
    assert table[_feature_columns(table, "rad_")].notna().all().all()

    out = reference.out
    from_csv = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    from_parquet = pd.read_parquet(out / "features.parquet")
    pd.testing.assert_frame_equal(from_parquet, table)
    pd.testing.assert_frame_equal(from_csv, table, check_exact=False, rtol=1e-12)
    assert pd.read_csv(out / "failures.csv").columns.tolist() == ["patient_id", "stage", "reason"]
    assert len(pd.read_csv(out / "failures.csv")) == 0
    summary = json.loads((out / "extract.json").read_text())
    assert summary["counts"]["done"] == N_PATIENTS and summary["manifest"] == str(cohort.resolve())


def test_case_record_has_paths_masks_and_provenance(reference, cohort):
    from hematoma.io import read_mask
    from hematoma.volume import mask_volume_ml

    row = load_manifest(cohort).table.iloc[0]
    case_dir = reference.out / "cases" / row["patient_id"]
    record = json.loads((case_dir / "case.json").read_text())
    assert record["baseline_ct"] == row["baseline_ct"] and record["followup_ct"] == row["followup_ct"]
    for scan in ("baseline", "followup"):
        saved = Path(record[f"{scan}_mask"])
        assert saved.is_absolute() and saved == (case_dir / f"{scan}_mask.nii.gz").resolve()
        assert math.isclose(mask_volume_ml(read_mask(saved)), record[f"{scan}_volume_ml"])
        assert record[f"{scan}_mask_source"] == row[f"{scan}_mask"]
    provenance = record["provenance"]
    assert provenance["inputs_sha1"]["baseline_ct"] == sha1_file(row["baseline_ct"])
    assert provenance["inputs_sha1"]["followup_mask"] == sha1_file(row["followup_mask"])
    assert provenance["outputs_sha1"]["baseline_mask"] == sha1_file(record["baseline_mask"])
    assert provenance["settings"]["definition"] == "6ml-or-33pct"
    assert "radiomics" in provenance["versions"] or "pyradiomics-bhklab" in provenance["versions"]
    assert provenance["radiomics"]["settings"]["binWidth"] == 25
    assert record["he_source"] == "followup"
    assert len([k for k in record["features"] if k.startswith("rad_")]) == N_RADIOMICS
    # Provenance stays out of the table.
    assert not any("sha1" in c or "version" in c for c in reference.table.columns)


# --------------------------------------------------------------------------- resuming


def test_rerun_skips_unchanged_and_recomputes_changed(cohort, tmp_path):
    manifest = _copy_cohort(cohort, tmp_path / "cohort")
    out = tmp_path / "out"
    first = extract_cohort(manifest, out, workers=1, show_progress=False)
    stamps = _stamps(out)
    assert len(stamps) == N_PATIENTS

    again = extract_cohort(manifest, out, workers=1, show_progress=False)
    assert again.counts == {DONE: 0, SKIPPED: N_PATIENTS, FAILED: 0}
    assert _stamps(out) == stamps
    pd.testing.assert_frame_equal(again.table, first.table)

    # A changed input file recomputes that case only, even with its old mtime (the SHA-1 sees it).
    changed = load_manifest(manifest).table.iloc[2]
    path = Path(changed["baseline_ct"])
    from hematoma.io import read_image, write_image

    stat = path.stat()
    image = read_image(path)
    image[0, 0, 0] = image[0, 0, 0] + 1  # one corner voxel of air: same features, other file
    write_image(image, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = extract_cohort(manifest, out, workers=1, show_progress=False)
    statuses = {o.case_id: o.status for o in third.outcomes}
    assert {pid for pid, status in statuses.items() if status == DONE} == {changed["patient_id"]}
    unchanged = {pid: stamp for pid, stamp in stamps.items() if pid != changed["patient_id"]}
    assert {pid: _stamps(out)[pid] for pid in unchanged} == unchanged
    assert _stamps(out)[changed["patient_id"]] != stamps[changed["patient_id"]]

    # A changed setting (radiomics parameters) recomputes every case.
    from hematoma.features.radiomics import default_params_path

    params = yaml.safe_load(default_params_path().read_text())
    params["setting"]["binWidth"] = 10
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    fourth = extract_cohort(manifest, out, workers=1, radiomics_params=params_path, show_progress=False, overwrite=True)
    assert fourth.counts[DONE] == N_PATIENTS
    texture = "rad_original_glcm_JointEntropy"
    assert not (fourth.table[texture].to_numpy() == first.table[texture].to_numpy()).all()
    shape = "rad_original_shape_MeshVolume"
    assert (fourth.table[shape].to_numpy() == first.table[shape].to_numpy()).all()

    # A moved output folder is reused (contents, not paths, are fingerprinted); its records follow it.
    moved = tmp_path / "moved"
    out.rename(moved)
    fifth = extract_cohort(manifest, moved, workers=1, radiomics_params=params_path, show_progress=False)
    assert fifth.counts[SKIPPED] == N_PATIENTS
    record = json.loads(next((moved / "cases").glob("*/case.json")).read_text())
    assert Path(record["baseline_mask"]).parent.parent.parent == moved.resolve()


def test_failing_case_goes_to_failures_and_others_go_on(cohort, tmp_path):
    manifest = _copy_cohort(cohort, tmp_path / "cohort")
    rows = load_manifest(manifest).table
    bad = rows.iloc[1]
    original = Path(bad["baseline_ct"]).read_bytes()
    Path(bad["baseline_ct"]).write_bytes(b"this is not a CT")

    out = tmp_path / "out"
    result = extract_cohort(manifest, out, workers=1, show_progress=False)
    assert result.counts == {DONE: N_PATIENTS - 1, SKIPPED: 0, FAILED: 1}
    failures = pd.read_csv(out / "failures.csv", dtype=str)
    assert failures["patient_id"].tolist() == [bad["patient_id"]]
    assert failures["stage"].tolist() == ["read"]
    assert failures["reason"].iloc[0].startswith(f"{bad['baseline_ct']}: ")  # the InputError's one line
    assert bad["patient_id"] not in set(result.table["patient_id"])
    assert len(pd.read_parquet(out / "features.parquet")) == N_PATIENTS - 1
    assert not (out / "cases" / bad["patient_id"] / "case.json").exists()

    # Fixed: only that case runs; failures.csv is empty again.
    Path(bad["baseline_ct"]).write_bytes(original)
    fixed = extract_cohort(manifest, out, workers=1, show_progress=False)
    assert fixed.counts == {DONE: 1, SKIPPED: N_PATIENTS - 1, FAILED: 0}
    assert len(pd.read_csv(out / "failures.csv")) == 0


def test_every_case_failing_is_an_error(cohort, tmp_path):
    from hematoma.errors import HematomaError

    manifest = _copy_cohort(cohort, tmp_path / "cohort")
    for path in load_manifest(manifest).table["baseline_ct"]:
        Path(path).write_bytes(b"garbage")
    with pytest.raises(HematomaError, match="all 6 cases failed"):
        extract_cohort(manifest, tmp_path / "out", workers=1, show_progress=False)
    assert len(pd.read_csv(tmp_path / "out" / "failures.csv")) == N_PATIENTS


# --------------------------------------------------------------------------- CLI


def _cli():
    import hematoma.cli

    names = {c.name or c.callback.__name__ for c in hematoma.cli.app.registered_commands}
    if "extract" not in names:  # until the lead wires the command into cli.py
        from hematoma.commands import extract

        extract.register(hematoma.cli.app)
    return hematoma.cli.app


def test_cli_uses_manifest_label_without_follow_up(cohort, tmp_path):
    from typer.testing import CliRunner

    table = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    labels = ["1", "0"] * (len(table) // 2) + ["1"] * (len(table) % 2)
    table = table.drop(columns=["followup_ct", "followup_mask", "he"], errors="ignore").assign(he=labels)
    manifest = cohort.parent / "no_followup.csv"
    table.to_csv(manifest, index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(_cli(), ["extract", str(manifest), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"{N_PATIENTS} computed" in result.output
    features = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    assert features["he"].tolist() == [float(v) for v in labels]
    assert features["followup_volume_ml"].isna().all() and features["growth_ml"].isna().all()
    record = json.loads(next((out / "cases").glob("*/case.json")).read_text())
    assert record["he_source"] == "manifest" and record["followup_mask"] is None


def test_cli_bad_setting_is_one_line(cohort, tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        _cli(), ["extract", str(cohort), "--out", str(tmp_path / "out"), "--workers", "1", "--definition", "7ml"]
    )
    assert result.exit_code == 2
    assert "unknown HE definition '7ml'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing started


# --------------------------------------------------------------------------- Dask back ends


def test_local_cluster_threads_give_the_same_table(reference, cohort, tmp_path):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            result = extract_cohort(cohort, tmp_path / "out", client=client, show_progress=False)
    assert result.counts[DONE] == N_PATIENTS
    pd.testing.assert_frame_equal(result.table, reference.table)


@pytest.mark.slow
def test_scheduler_and_worker_processes(reference, cohort, tmp_path, scheduler_file):  # noqa: F811
    result = extract_cohort(cohort, tmp_path / "out", scheduler=str(scheduler_file), show_progress=False)
    assert result.counts[DONE] == N_PATIENTS
    pd.testing.assert_frame_equal(result.table, reference.table)
    record = json.loads(next((tmp_path / "out" / "cases").glob("*/case.json")).read_text())
    assert record["provenance"]["host"]


# Runs extract_cohort on 2 LocalCluster worker *processes*; each case lingers a
# little after writing its case.json so that the kill lands mid-run.
_KILLABLE_RUN = """
import sys, time
import hematoma.extraction as extraction

_extract_case = extraction.extract_case

def slow_case(job):
    outcome = _extract_case(job)
    time.sleep(1.0)
    return outcome

extraction.extract_case = slow_case
if __name__ == "__main__":
    extraction.extract_cohort(sys.argv[1], sys.argv[2], workers=2, show_progress=False)
"""


@pytest.mark.slow
def test_killed_run_loses_no_finished_case_and_recomputes_none(cohort, tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(_KILLABLE_RUN)
    log = open(tmp_path / "run.log", "wb")
    # Own session: the driver and its worker processes are killed together.
    process = subprocess.Popen([sys.executable, str(script), str(cohort), str(out)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("cases/*/case.json"))) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the run ended or stalled before 2 cases were done: " + (tmp_path / "run.log").read_text())
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    time.sleep(0.5)  # let the killed workers' last file operations settle
    finished = _stamps(out)
    assert 2 <= len(finished) < N_PATIENTS, "the kill should land mid-run"
    assert not (out / "features.csv").exists()

    result = extract_cohort(cohort, out, workers=1, show_progress=False)
    statuses = {o.case_id: o.status for o in result.outcomes}
    assert {pid for pid, s in statuses.items() if s == SKIPPED} == set(finished)
    assert {pid for pid, s in statuses.items() if s == DONE} == set(statuses) - set(finished)
    after = _stamps(out)
    assert {pid: after[pid] for pid in finished} == finished  # not rewritten
    assert len(result.table) == N_PATIENTS and result.counts[FAILED] == 0


def test_missing_masks_are_segmented_and_saved(reference, cohort, tmp_path, monkeypatch):
    """Cases without masks get them from the segmenter (a stand-in here: the truth), saved in the case folder."""
    import types

    import hematoma.segmentation.methods as methods
    from hematoma.io import read_mask

    table = pd.read_csv(cohort, dtype=str, keep_default_na=False).head(2)
    truth = {str((cohort.parent / row.baseline_ct).resolve()): cohort.parent / row.baseline_mask for row in table.itertuples()}
    truth.update({str((cohort.parent / row.followup_ct).resolve()): cohort.parent / row.followup_mask for row in table.itertuples()})
    calls = []

    def segment_with(ct, settings, model=None, source=None):
        calls.append((str(Path(source).resolve()), settings.method, model))
        mask = read_mask(truth[str(Path(source).resolve())], reference=ct, reference_path=source)
        return types.SimpleNamespace(mask=mask, method="rules", columns={}, notes=[])

    monkeypatch.setattr(methods, "segment_with", segment_with)
    manifest = cohort.parent / "unmasked.csv"
    table.drop(columns=["baseline_mask", "followup_mask"]).to_csv(manifest, index=False)
    result = extract_cohort(manifest, tmp_path / "out", workers=1, show_progress=False)

    assert sorted(calls) == sorted((path, "rules", None) for path in truth)
    expected = reference.table.set_index("patient_id").loc[result.table["patient_id"]].reset_index()
    pd.testing.assert_frame_equal(result.table, expected)
    record = json.loads((tmp_path / "out" / "cases" / table["patient_id"][0] / "case.json").read_text())
    assert record["baseline_mask_source"] == "segmented" and Path(record["baseline_mask"]).is_file()
