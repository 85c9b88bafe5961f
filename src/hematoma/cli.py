"""The ``hematoma`` command line: a thin Typer app over the Python API.

Each command group lives in ``hematoma/commands/<name>.py`` and registers
itself here.  Errors a user can act on (:class:`~hematoma.errors.HematomaError`)
are printed as one line naming the file and the problem, with a non-zero exit;
``--debug`` (or ``HEMATOMA_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer
from rich.console import Console

from . import __version__
from .errors import HematomaError

err_console = Console(stderr=True)


class _App(typer.Typer):
    """Typer app that turns user-facing errors into one line and an exit code."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except HematomaError as error:
            if _debug_requested():
                raise
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            sys.exit(error.exit_code)


def _debug_requested() -> bool:
    return os.environ.get("HEMATOMA_DEBUG", "") not in ("", "0") or "--debug" in sys.argv


app = _App(
    name="hematoma",
    help="Predict hematoma expansion after intracerebral hemorrhage from admission CT and clinical data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # Warnings meant for the user (resampling, empty masks) as one plain line.
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()
    if debug:
        os.environ["HEMATOMA_DEBUG"] = "1"
    warnings.showwarning = _show_warning
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    from .commands import basic

    for module in (basic,):
        module.register(app)
    # Later stages register themselves here when present.
    import importlib

    for name in ("segment", "extract", "cnn", "modeling"):
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith(f"{__package__}.commands.{name}"):
                continue
            raise
        module.register(app)


_register_commands()
