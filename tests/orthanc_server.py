"""A real Orthanc PACS with its DICOMweb plugin on loopback, for tests and benchmarks (Debian: orthanc, orthanc-dicomweb).

Started with a temporary configuration and storage, HTTP basic authentication on, remote access off; stopped
afterwards.  ``.ci/run`` installs the packages; where they are absent, :func:`orthanc_or_skip` says so.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PLUGIN_PLACES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")
USER, PASSWORD = "radiologist", "s3cret-test-only"


@dataclass
class Orthanc:
    http: str  # Orthanc's REST root
    dicomweb: str  # the DICOMweb root
    user: str = USER
    password: str = PASSWORD
    log: Path | None = None

    def upload(self, paths) -> None:
        """Store files through Orthanc's own REST API (independent of the code under test)."""
        import requests

        for path in paths:
            response = requests.post(f"{self.http}/instances", data=Path(path).read_bytes(),
                                     auth=(self.user, self.password), timeout=30)
            response.raise_for_status()

    def statistics(self) -> dict:
        import requests

        return requests.get(f"{self.http}/statistics", auth=(self.user, self.password), timeout=10).json()


def missing() -> str | None:
    """Why Orthanc cannot be started here, or None."""
    if shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists():
        return "Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb; .ci/run does)"
    if _plugin() is None:
        return "Orthanc's DICOMweb plugin is not installed (Debian: apt-get install orthanc-dicomweb)"
    return None


def _plugin() -> str | None:
    return next((p for p in PLUGIN_PLACES if Path(p).exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_orthanc(folder: Path, tls_pem: Path | None = None):
    """Start Orthanc storing into ``folder``; yield an :class:`Orthanc`; stop it. ``tls_pem``: serve HTTPS."""
    import requests

    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = {
        "Name": "hematoma-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": port, "HttpBindAddress": "127.0.0.1", "RemoteAccessAllowed": False,
        "DicomServerEnabled": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [_plugin()], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpCompressionEnabled": False, "StableAge": 1,
    }
    if tls_pem is not None:
        config.update({"SslEnabled": True, "SslCertificate": str(tls_pem)})
    (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = folder / "orthanc.log"
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    with open(log, "wb") as sink:
        process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=sink, stderr=subprocess.STDOUT)
    scheme = "https" if tls_pem is not None else "http"
    server = Orthanc(f"{scheme}://127.0.0.1:{port}", f"{scheme}://127.0.0.1:{port}/dicom-web", log=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{server.http}/system", auth=(USER, PASSWORD), timeout=2, verify=False)
                break
            except requests.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
