"""`hematoma pacs pull` and `hematoma pacs push`: a cohort from a PACS over DICOMweb, results back to it.

The server options are shared with `segment --push` (:data:`SERVER_OPTIONS` documents them); credentials come
from the environment or --auth-file only, never from the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

console = Console(soft_wrap=True)  # a summary line stays one line in a log or a pipe
pacs_app = typer.Typer(help="Fetch CT studies from a PACS over DICOMweb (with a manifest), store results back.",
                       no_args_is_help=True)

# Option declarations shared by every command that talks to a server.
SERVER = typer.Option(None, "--server", help="DICOMweb root URL (e.g. http://pacs:8042/dicom-web); default: "
                                             "$HEMATOMA_PACS_URL.")
AUTH_FILE = typer.Option(None, "--auth-file", help='JSON credentials: {"token": ...} or {"username": ..., '
                                                   '"password": ...}; default: $HEMATOMA_PACS_TOKEN, or '
                                                   '$HEMATOMA_PACS_USER and $HEMATOMA_PACS_PASSWORD.')
CA_BUNDLE = typer.Option(None, "--ca-bundle", help="PEM file of the certificate authorities to trust (a hospital's own CA).")
INSECURE = typer.Option(False, "--insecure", help="Do not check the server's TLS certificate (a warning says so).")
CLIENT_CERT = typer.Option(None, "--client-cert", help="PEM file with the client certificate and key, where the server asks for one.")


def server_from(server, auth_file, ca_bundle, insecure, client_cert):
    from ..pacs import PacsServer

    return PacsServer.from_options(server, auth_file, ca_bundle, insecure, client_cert)


@pacs_app.command("pull")
def pull(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to fetch into; a rerun resumes (finished studies are not fetched again)."),
    study: Optional[List[str]] = typer.Option(None, "--study", help="StudyInstanceUID to fetch (repeatable): one manifest row each."),
    study_list: Optional[Path] = typer.Option(None, "--list", help="CSV of patient_id, baseline_study_uid[, followup_study_uid] and any clinical columns."),
    server: Optional[str] = SERVER,
    auth_file: Optional[Path] = AUTH_FILE,
    ca_bundle: Optional[Path] = CA_BUNDLE,
    insecure: bool = INSECURE,
    client_cert: Optional[Path] = CLIENT_CERT,
) -> None:
    """Fetch the CT series of studies into OUT and write OUT/manifest.csv, ready for `extract` or `run`."""
    from ..errors import InputError
    from ..pacs import pull as pull_studies
    from ..pacs import read_study_list, rows_for_studies

    if bool(study) == (study_list is not None):
        raise InputError(None, "give either --study UID (repeatable) or --list FILE")
    connection = server_from(server, auth_file, ca_bundle, insecure, client_cert)
    rows = read_study_list(study_list) if study_list is not None else rows_for_studies(connection, list(study))
    summary = pull_studies(connection, rows, out)
    console.print(f"{summary['studies']} studies: {summary['fetched']} fetched, {summary['skipped']} already there "
                  f"-> {summary['manifest']}", highlight=False)


@pacs_app.command("push")
def push(
    files: List[Path] = typer.Argument(..., help="DICOM files to store (a SEG, an SR, ...)."),
    server: Optional[str] = SERVER,
    auth_file: Optional[Path] = AUTH_FILE,
    ca_bundle: Optional[Path] = CA_BUNDLE,
    insecure: bool = INSECURE,
    client_cert: Optional[Path] = CLIENT_CERT,
) -> None:
    """Store DICOM files on the server (STOW-RS); fails in one line if the server refuses any."""
    from ..pacs import push_files

    connection = server_from(server, auth_file, ca_bundle, insecure, client_cert)
    stored = push_files(connection, files)
    console.print(f"stored {len(stored)} object{'s' if len(stored) != 1 else ''} on {connection.url}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(pacs_app, name="pacs")
