"""A DICOMweb server (a PACS: Orthanc, dcm4chee, a cloud DICOM store): address, credentials, TLS, one-line errors.

The HTTP work is dicomweb-client's (QIDO-RS search, WADO-RS retrieve, STOW-RS
store) over a :class:`requests.Session` that carries the credentials and the
TLS settings.  Credentials never come from the command line (they would sit
in the shell's history and in ``ps``): a bearer token or a user name and
password from environment variables, or a JSON file.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import HematomaError, InputError

URL_ENV = "HEMATOMA_PACS_URL"
TOKEN_ENV = "HEMATOMA_PACS_TOKEN"
USER_ENV = "HEMATOMA_PACS_USER"
PASSWORD_ENV = "HEMATOMA_PACS_PASSWORD"
CREDENTIALS_HELP = (f"set {TOKEN_ENV} (a bearer token) or {USER_ENV} and {PASSWORD_ENV}, or give --auth-file "
                    'FILE holding {"token": ...} or {"username": ..., "password": ...}')


class PacsError(HematomaError):
    """The server could not be reached, refused, or answered without what was asked: one line, exit 3."""

    exit_code = 3

    def __init__(self, message: str):  # one argument: survives pickling
        super().__init__(message)


@dataclass(frozen=True)
class PacsServer:
    """How to reach a DICOMweb server.

    ``url`` is the DICOMweb root (Orthanc: ``http://host:8042/dicom-web``); ``auth_file`` a JSON file of
    credentials (else the environment, else none); ``ca_bundle`` the certificate authorities to trust (a PEM
    file, for a hospital's own CA); ``insecure`` skips certificate checks (a warning says so);
    ``client_cert`` a PEM file with the client's certificate and key, for servers that ask for one.
    """

    url: str
    auth_file: str | None = None
    ca_bundle: str | None = None
    insecure: bool = False
    client_cert: str | None = None
    timeout_s: float = 60.0
    max_attempts: int = 3  # a busy server's 429/503/504 are retried with exponential back-off

    @classmethod
    def from_options(cls, url: str | None, auth_file=None, ca_bundle=None, insecure: bool = False,
                     client_cert=None) -> "PacsServer":
        url = url or os.environ.get(URL_ENV, "")
        if not url:
            raise InputError(None, f"no DICOMweb server: give --server URL or set {URL_ENV}")
        return cls(url.rstrip("/"), *(None if p is None else str(p) for p in (auth_file, ca_bundle)), insecure,
                   None if client_cert is None else str(client_cert)).check()

    def check(self) -> "PacsServer":
        if not self.url.startswith(("http://", "https://")):
            raise InputError(None, f"--server {self.url!r} is not a DICOMweb address (http:// or https://)")
        for name, path in (("--auth-file", self.auth_file), ("--ca-bundle", self.ca_bundle),
                           ("--client-cert", self.client_cert)):
            if path is not None and not Path(path).is_file():
                raise InputError(path, f"{name}: no such file")
        if self.insecure and self.ca_bundle:
            raise InputError(None, "--insecure skips the certificate check that --ca-bundle asks for; give one")
        return self

    def client(self):
        """A dicomweb-client over a session with this server's credentials and TLS settings."""
        from dicomweb_client import DICOMwebClient

        session = _session_class()()
        credentials = read_credentials(self.auth_file)
        if "token" in credentials:
            session.headers["Authorization"] = f"Bearer {credentials['token']}"
        elif credentials:
            session.auth = (credentials["username"], credentials["password"])
        if self.insecure:
            warnings.warn(f"--insecure: the certificate of {self.url} is not checked", stacklevel=2)
            session.verify = False
        elif self.ca_bundle:
            session.verify = self.ca_bundle
        if self.client_cert:
            session.cert = self.client_cert
        client = DICOMwebClient(self.url, session=session, timeout=self.timeout_s)
        client.set_http_retry_params(max_attempts=self.max_attempts, wait_exponential_multiplier=500)
        return client


def _session_class():
    import requests

    class Session(requests.Session):
        """A session whose own ``verify`` wins: plain requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the
        environment replace it (psf/requests#3829), which would ignore --ca-bundle and --insecure."""

        def request(self, method, url, **kwargs):
            if kwargs.get("verify") is None:
                kwargs["verify"] = self.verify
            return super().request(method, url, **kwargs)

    return Session


def read_credentials(auth_file: str | None) -> dict:
    """``{"token": ...}``, ``{"username": ..., "password": ...}`` or ``{}``: from ``auth_file``, else the environment."""
    if auth_file is not None:
        path = Path(auth_file)
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.warn(f"{path}: credentials readable by other users; chmod 600 it", stacklevel=2)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(path, f"not a JSON credentials file ({error.__class__.__name__}); {CREDENTIALS_HELP}") \
                from None
        if isinstance(data, dict) and isinstance(data.get("token"), str) and data["token"]:
            return {"token": data["token"]}
        if isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("username", "password")):
            return {"username": data["username"], "password": data["password"]}
        raise InputError(path, f"no credentials in it; {CREDENTIALS_HELP}")
    if os.environ.get(TOKEN_ENV):
        return {"token": os.environ[TOKEN_ENV]}
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user and password is None:
        raise InputError(None, f"{USER_ENV} is set but {PASSWORD_ENV} is not")
    return {"username": user, "password": password} if user else {}


@contextmanager
def pacs_errors(server: PacsServer, doing: str) -> Iterator[None]:
    """Turn what the network and the server can do wrong into one :class:`PacsError` line.

    ``doing`` says what was asked, e.g. ``"retrieving study 1.2.3"``.
    """
    import requests

    where = server.url
    try:
        yield
    except requests.exceptions.SSLError as error:
        raise PacsError(f"{where}: TLS failed while {doing} ({_reason(error)}); for a hospital's own certificate "
                        "authority give --ca-bundle CA.pem") from None
    except requests.exceptions.ConnectionError as error:
        raise PacsError(f"{where}: cannot connect while {doing} ({_reason(error)})") from None
    except requests.exceptions.Timeout:
        raise PacsError(f"{where}: no answer in {server.timeout_s:g} s while {doing}") from None
    except requests.exceptions.HTTPError as error:
        code = error.response.status_code if error.response is not None else 0
        if code in (401, 403):
            raise PacsError(f"{where}: the server refused the credentials (HTTP {code}) while {doing}; "
                            f"{CREDENTIALS_HELP}") from None
        if code == 404:
            raise PacsError(f"{where}: not found (HTTP 404) while {doing}") from None
        raise PacsError(f"{where}: HTTP {code} while {doing}") from None
    except requests.exceptions.RequestException as error:
        raise PacsError(f"{where}: {error.__class__.__name__} while {doing} ({_reason(error)})") from None


def _reason(error: BaseException) -> str:
    """The innermost cause in a few words (requests nests urllib3's errors several deep)."""
    while error.__context__ is not None and error.__context__ is not error:
        error = error.__context__
    text = str(error).splitlines()[0] if str(error) else error.__class__.__name__
    if "]" in text and text.startswith("["):  # "[Errno 111] Connection refused"
        text = text.split("]", 1)[1].strip()
    return text.rsplit(": ", 1)[-1][:120]
