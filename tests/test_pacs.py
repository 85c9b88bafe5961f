"""The PACS round trip against a real Orthanc with its DICOMweb plugin on loopback (tests/orthanc_server.py).

Upload a synthetic DICOM study through Orthanc's own REST API, `hematoma pacs pull` it, segment it to a SEG and
an SR pushed back with `segment --push`, fetch those back from the server and compare voxel for voxel.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid
from typer.testing import CliRunner

import orthanc_server
from hematoma.cli import app
from hematoma.io import read_image, read_mask
from hematoma.pacs import PacsError, PacsServer, pull, read_study_list, rows_for_studies
from hematoma.pacs.connection import read_credentials
from test_dicom_seg import _positions
from test_io import write_ct_series

pytestmark = pytest.mark.skipif(orthanc_server.missing() is not None, reason=orthanc_server.missing() or "")
runner = CliRunner()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with orthanc_server.running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def credentials(orthanc, monkeypatch):
    monkeypatch.setenv("HEMATOMA_PACS_USER", orthanc.user)
    monkeypatch.setenv("HEMATOMA_PACS_PASSWORD", orthanc.password)
    monkeypatch.delenv("HEMATOMA_PACS_TOKEN", raising=False)
    monkeypatch.setenv("HEMATOMA_PACS_URL", orthanc.dicomweb)
    return orthanc


def _study(folder: Path, patient_id: str, seed: int = 0, hematoma_ml: float = 20.0) -> tuple[str, sitk.Image]:
    """A synthetic head CT written as a one-series DICOM study; (StudyInstanceUID, the CT)."""
    from hematoma.synthetic import make_head_ct

    ct, _ = make_head_ct(size="small", seed=seed, hematoma_ml=hematoma_ml)
    study_uid = generate_uid()
    hu = np.clip(sitk.GetArrayFromImage(ct), -1024, 3071)
    write_ct_series(folder, hu, _positions(ct), pixel_spacing=ct.GetSpacing()[1::-1], thickness=ct.GetSpacing()[2],
                    study_uid=study_uid, patient_id=patient_id)
    return study_uid, ct


@pytest.fixture(scope="module")
def studies(orthanc, tmp_path_factory):
    """Three patients on the server: P1 and P2 with baseline and follow-up, P3 with a baseline only."""
    root = tmp_path_factory.mktemp("upload")
    uids = {}
    for k, (pid, when) in enumerate([("P1", "b"), ("P1", "f"), ("P2", "b"), ("P2", "f"), ("P3", "b")]):
        uid, _ = _study(root / f"{pid}{when}", pid, seed=k)
        orthanc.upload(sorted((root / f"{pid}{when}").iterdir()))
        uids[pid + when] = uid
    return uids


def _list_file(path: Path, studies: dict, patients=("P1", "P2", "P3")) -> Path:
    lines = ["patient_id,baseline_study_uid,followup_study_uid,age"]
    lines += [f"{p},{studies[p + 'b']},{studies.get(p + 'f', '')},{60 + k}" for k, p in enumerate(patients)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the round trip


def test_pull_segment_push_round_trip_is_voxel_equal(credentials, studies, tmp_path):
    """--study pull -> segment to SEG+SR with --push -> fetched back from the server: same mask, same volume."""
    from dicomweb_client import DICOMwebClient

    out = tmp_path / "pulled"
    result = runner.invoke(app, ["pacs", "pull", "--study", studies["P3b"], "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = (out / "manifest.csv").read_text().splitlines()
    assert manifest[0].startswith("patient_id,baseline_ct") and manifest[1].startswith("P3,")
    series_folder = out / manifest[1].split(",")[1]
    original = read_image(series_folder)
    _, expected_ct = _study(tmp_path / "again", "P3", seed=4)  # the same synthetic CT as uploaded
    assert np.array_equal(sitk.GetArrayFromImage(original), sitk.GetArrayFromImage(expected_ct))

    seg, sr = tmp_path / "mask.dcm", tmp_path / "report.dcm"
    result = runner.invoke(app, ["segment", str(series_folder), "--out", str(seg), "--sr", str(sr), "--push"])
    assert result.exit_code == 0, result.output
    assert "stored 2 objects" in result.output
    local = read_mask(seg, reference=original)

    client = DICOMwebClient(credentials.dicomweb, session=_session(credentials))
    found = {m: client.search_for_series(study_instance_uid=studies["P3b"], search_filters={"Modality": m})
             for m in ("SEG", "SR")}
    assert len(found["SEG"]) == 1 and len(found["SR"]) == 1
    seg_series = found["SEG"][0]["0020000E"]["Value"][0]
    (fetched,) = client.retrieve_series(studies["P3b"], seg_series)
    back = tmp_path / "from_server.dcm"
    fetched.save_as(back, enforce_file_format=True)
    mask = read_mask(back, reference=original)
    assert np.array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(local))
    assert sitk.GetArrayFromImage(mask).sum() > 100

    sr_series = found["SR"][0]["0020000E"]["Value"][0]
    (report,) = client.retrieve_series(studies["P3b"], sr_series)
    volume = _sr_volume(report)
    voxel_ml = float(np.prod(original.GetSpacing())) / 1000.0
    assert volume == pytest.approx(sitk.GetArrayFromImage(mask).sum() * voxel_ml, abs=0.01)


def _session(orthanc):
    import requests

    session = requests.Session()
    session.auth = (orthanc.user, orthanc.password)
    return session


def _sr_volume(report) -> float:
    """The hematoma volume (mL) in a TID 1500 report, read with pydicom only."""
    values = []

    def walk(items):
        for item in items:
            if item.get("ValueType") == "NUM":
                measured = item.MeasuredValueSequence[0]
                if measured.MeasurementUnitsCodeSequence[0].CodeValue == "ml":
                    values.append(float(measured.NumericValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(report.ContentSequence)
    assert values, "no volume in mL in the SR"
    return values[0]


def test_predict_writes_and_pushes_seg_and_sr_with_the_probability(credentials, studies, synthetic_run, tmp_path):
    """`predict --seg --sr --push` on a pulled study: the server holds a SEG and an SR whose HE probability is the
    printed one."""
    import re

    from dicomweb_client import DICOMwebClient

    from hematoma.io.dicom_sr import HE_PROBABILITY

    out = tmp_path / "pulled"
    assert runner.invoke(app, ["pacs", "pull", "--study", studies["P2b"], "--out", str(out)]).exit_code == 0
    series_folder = out / (out / "manifest.csv").read_text().splitlines()[1].split(",")[1]
    seg, sr = tmp_path / "p.dcm", tmp_path / "p_sr.dcm"
    model = synthetic_run[0] / "model"
    result = runner.invoke(app, ["predict", str(model), "--ct", str(series_folder), "--overlay", str(tmp_path / "o.png"),
                                 "--seg", str(seg), "--sr", str(sr), "--push"])
    assert result.exit_code == 0, result.output
    printed = float(re.search(r"probability of HE ([0-9.]+)", result.output).group(1))
    client = DICOMwebClient(credentials.dicomweb, session=_session(credentials))
    (found,) = client.search_for_series(study_instance_uid=studies["P2b"], search_filters={"Modality": "SR"})
    (report,) = client.retrieve_series(studies["P2b"], found["0020000E"]["Value"][0])
    probabilities, signs = [], []

    def walk(items):
        for item in items:
            if item.get("ValueType") == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == HE_PROBABILITY[0]:
                probabilities.append(float(item.MeasuredValueSequence[0].NumericValue))
            if item.ConceptNameCodeSequence[0].CodeValue.startswith("SIGN-"):
                signs.append(item.ConceptNameCodeSequence[0].CodeValue)
            walk(item.get("ContentSequence", []))

    walk(report.ContentSequence)
    assert probabilities and probabilities[0] == pytest.approx(printed, abs=5e-4)
    assert len(signs) == 7  # each NCCT sign, present or absent


def test_predict_refuses_dicom_outputs_that_cannot_work(tmp_path):
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"")
    model = tmp_path / "model"
    cases = [(["--sr", str(tmp_path / "r.dcm")], "give --seg too"),
             (["--push"], "--push stores the DICOM SEG"),
             (["--seg", str(tmp_path / "s.nii.gz")], "name it .dcm"),
             (["--seg", str(tmp_path / "s.dcm")], "is not DICOM")]
    for options, message in cases:
        result = runner.invoke(app, ["predict", str(model), "--ct", str(ct), "--overlay", str(tmp_path / "o.png"),
                                     *options])
        assert result.exit_code == 2 and message in result.output, (options, result.output)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian: dicom3tools) is not installed")
def test_pushed_seg_and_sr_pass_dciodvfy(credentials, studies, tmp_path):
    out = tmp_path / "pulled"
    assert runner.invoke(app, ["pacs", "pull", "--study", studies["P1b"], "--out", str(out)]).exit_code == 0
    series_folder = out / (out / "manifest.csv").read_text().splitlines()[1].split(",")[1]
    seg, sr = tmp_path / "m.dcm", tmp_path / "r.dcm"
    assert runner.invoke(app, ["segment", str(series_folder), "--out", str(seg), "--sr", str(sr)]).exit_code == 0
    for path in (seg, sr):
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


# --------------------------------------------------------------------------- a cohort from a study list


def test_list_pull_writes_a_ready_manifest(credentials, studies, tmp_path):
    from hematoma.cohort import load_manifest

    study_list = _list_file(tmp_path / "list.csv", studies)
    out = tmp_path / "cohort"
    result = runner.invoke(app, ["pacs", "pull", "--list", str(study_list), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 studies: 5 fetched, 0 already there" in result.output
    manifest = load_manifest(out / "manifest.csv", require_followup=False)
    table = manifest.table.set_index("patient_id")
    assert list(table.index) == ["P1", "P2", "P3"]
    assert float(table.loc["P1", "age"]) == 60 and pd.isna(table.loc["P3", "followup_ct"])
    for pid in ("P1", "P2"):
        for when, column in (("b", "baseline_ct"), ("f", "followup_ct")):
            record = json.loads((out / studies[pid + when] / "study.json").read_text())
            assert record["dicom_patient_id"] == pid and record["series"][0]["instances"] > 10
            assert Path(table.loc[pid, column]) == (out / studies[pid + when] / record["ct_series"]).resolve()


def test_interrupted_pull_resumes_without_fetching_finished_studies(credentials, studies, tmp_path):
    """A pull killed mid-run, rerun: finished studies untouched (same files), the rest fetched, manifest complete."""
    study_list = _list_file(tmp_path / "list.csv", studies)
    out = tmp_path / "cohort"
    env = {**os.environ, "HEMATOMA_PACS_USER": credentials.user, "HEMATOMA_PACS_PASSWORD": credentials.password}
    command = [sys.executable, "-m", "hematoma", "pacs", "pull", "--list", str(study_list), "--out", str(out),
               "--server", credentials.dicomweb]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(out.glob("*/study.json")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)  # the hardest interruption: no clean-up runs
    child.wait()
    finished = {p.parent.name: p.stat().st_ino for p in out.glob("*/study.json")}
    assert 1 <= len(finished), "the pull ended before the first study was complete"
    files_before = {p: p.stat().st_mtime_ns for p in out.glob("*/*/*.dcm")}
    if len(finished) == 5:
        pytest.skip("the pull finished before it could be interrupted")
    assert not (out / "manifest.csv").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"5 studies: {5 - len(finished)} fetched, {len(finished)} already there" in rerun.stdout
    for uid, inode in finished.items():
        assert (out / uid / "study.json").stat().st_ino == inode
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in files_before.items())
    assert len((out / "manifest.csv").read_text().splitlines()) == 4
    assert not (out / ".partial").exists()


def test_different_patient_ids_in_a_row_are_warned(credentials, studies, tmp_path):
    study_list = tmp_path / "list.csv"
    study_list.write_text(f"patient_id,baseline_study_uid,followup_study_uid\nX,{studies['P1b']},{studies['P2f']}\n")
    server = PacsServer.from_options(credentials.dicomweb)
    with pytest.warns(UserWarning, match="different DICOM patient IDs"):
        pull(server, read_study_list(study_list), tmp_path / "out", progress=False)


# --------------------------------------------------------------------------- failures: one line, nothing half-written


def test_wrong_password_is_one_line_with_exit_3(credentials, studies, tmp_path, monkeypatch):
    monkeypatch.setenv("HEMATOMA_PACS_PASSWORD", "wrong")
    result = runner.invoke(app, ["pacs", "pull", "--study", studies["P1b"], "--out", str(tmp_path / "o")])
    assert result.exit_code == 3
    assert "refused the credentials (HTTP 401)" in result.output and len(result.output.strip().splitlines()) == 1


def test_auth_file_credentials_are_used(credentials, studies, tmp_path, monkeypatch):
    monkeypatch.delenv("HEMATOMA_PACS_USER")
    monkeypatch.delenv("HEMATOMA_PACS_PASSWORD")
    secrets = tmp_path / "pacs.json"
    secrets.write_text(json.dumps({"username": credentials.user, "password": credentials.password}))
    secrets.chmod(0o600)
    result = runner.invoke(app, ["pacs", "pull", "--study", studies["P2b"], "--out", str(tmp_path / "o"),
                                 "--auth-file", str(secrets)])
    assert result.exit_code == 0, result.output


def test_missing_study_fails_in_one_line_and_keeps_the_others(credentials, studies, tmp_path):
    study_list = tmp_path / "list.csv"
    study_list.write_text(f"patient_id,baseline_study_uid\nP1,{studies['P1b']}\nGHOST,1.2.3.4.5.6.7.8.9\n")
    out = tmp_path / "o"
    result = runner.invoke(app, ["pacs", "pull", "--list", str(study_list), "--out", str(out)])
    assert result.exit_code == 3
    assert "1 of 2 studies could not be fetched" in result.output and "1.2.3.4.5.6.7.8.9 is not on the server" in result.output
    assert (out / studies["P1b"] / "study.json").is_file()
    assert not (out / "manifest.csv").exists() and not (out / ".partial").exists()
    assert not (out / "1.2.3.4.5.6.7.8.9").exists()


def test_unreachable_server_is_one_line(credentials, tmp_path):
    result = runner.invoke(app, ["pacs", "pull", "--study", "1.2.3", "--out", str(tmp_path / "o"),
                                 "--server", "http://127.0.0.1:9/dicom-web"])
    assert result.exit_code == 3
    assert "cannot connect" in result.output and len(result.output.strip().splitlines()) == 1


def test_push_of_a_non_dicom_file_names_it(credentials, tmp_path):
    bogus = tmp_path / "x.dcm"
    bogus.write_text("not dicom")
    result = runner.invoke(app, ["pacs", "push", str(bogus)])
    assert result.exit_code == 2 and "x.dcm" in result.output


def test_push_needs_a_seg_output(credentials, tmp_path):
    result = runner.invoke(app, ["segment", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "m.nii.gz"),
                                 "--push"])
    assert result.exit_code == 2 and "--push stores a DICOM SEG" in result.output


def test_tls_needs_the_servers_ca_and_works_with_it(tmp_path, monkeypatch):
    """HTTPS with a self-signed certificate: refused in one line without --ca-bundle, trusted with it.

    Debian's Orthanc 1.10.1 crashes (SIGSEGV) on its first TLS connection here, so the HTTPS server is the standard
    library's, answering every search with no match: getting that answer proves the TLS handshake passed.
    """
    import http.server
    import ssl
    import threading

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)

    class NoMatches(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoMatches)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/dicom-web"
    monkeypatch.delenv("HEMATOMA_PACS_USER", raising=False)
    try:
        refused = runner.invoke(app, ["pacs", "pull", "--study", "1.2.3", "--out", str(tmp_path / "a"), "--server", url])
        assert refused.exit_code == 3 and "TLS failed" in refused.output and "--ca-bundle" in refused.output
        trusted = runner.invoke(app, ["pacs", "pull", "--study", "1.2.3", "--out", str(tmp_path / "b"),
                                      "--server", url, "--ca-bundle", str(cert)])
        assert trusted.exit_code == 3 and "study 1.2.3 is not on the server" in trusted.output
    finally:
        server.shutdown()


# --------------------------------------------------------------------------- inputs checked before any network


def test_study_list_problems_are_listed(tmp_path):
    bad = tmp_path / "list.csv"
    bad.write_text("patient_id,baseline_study_uid\nA,1.2.3\nA,1.2.x\n,\n")
    with pytest.raises(Exception) as caught:
        read_study_list(bad)
    message = str(caught.value)
    assert "'1.2.x' is not a DICOM UID" in message and "appears 2 times" in message and "empty patient_id" in message
    missing = tmp_path / "m.csv"
    missing.write_text("id,study\n1,1.2\n")
    with pytest.raises(Exception, match="missing column"):
        read_study_list(missing)


def test_credentials_come_from_env_or_file_only(tmp_path, monkeypatch):
    for name in ("HEMATOMA_PACS_TOKEN", "HEMATOMA_PACS_USER", "HEMATOMA_PACS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert read_credentials(None) == {}
    monkeypatch.setenv("HEMATOMA_PACS_TOKEN", "abc")
    assert read_credentials(None) == {"token": "abc"}
    broken = tmp_path / "c.json"
    broken.write_text("{not json")
    broken.chmod(0o600)
    with pytest.raises(Exception, match="not a JSON credentials file"):
        read_credentials(str(broken))
    loose = tmp_path / "loose.json"
    loose.write_text('{"token": "t"}')
    loose.chmod(0o644)
    with pytest.warns(UserWarning, match="readable by other users"):
        assert read_credentials(str(loose)) == {"token": "t"}


def test_server_address_and_tls_options_are_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("HEMATOMA_PACS_URL", raising=False)
    with pytest.raises(Exception, match="no DICOMweb server"):
        PacsServer.from_options(None)
    with pytest.raises(Exception, match="not a DICOMweb address"):
        PacsServer.from_options("pacs:8042")
    with pytest.raises(Exception, match="no such file"):
        PacsServer.from_options("https://pacs", ca_bundle=tmp_path / "none.pem")
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(Exception, match="--insecure skips"):
        PacsServer.from_options("https://pacs", ca_bundle=tmp_path / "ca.pem", insecure=True)


def test_pull_refuses_a_users_folder(credentials, studies, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="not a `hematoma pacs pull` folder"):
        pull(PacsServer.from_options(credentials.dicomweb), rows_for_studies(
            PacsServer.from_options(credentials.dicomweb), [studies["P1b"]]), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_pacs_error_pickles():
    import pickle

    error = pickle.loads(pickle.dumps(PacsError("x: y")))
    assert str(error) == "x: y" and error.exit_code == 3
