"""The ``hematoma`` command line: a thin Typer app over the Python API.

Each command group lives in ``hematoma/commands/<name>.py`` and registers
itself here.  Errors a user can act on (:class:`~hematoma.errors.HematomaError`)
are printed as one line naming the file and the problem, with a non-zero exit;
``--debug`` (or ``HEMATOMA_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import warnings

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from . import __version__
from .errors import HematomaError

err_console = Console(stderr=True)


class _Group(TyperGroup):
    """Command group that turns user-facing errors into one line and an exit code.

    Done at the command-group level (not around ``app()``) so that the console script,
    ``python -m hematoma`` and ``typer.testing.CliRunner`` behave the same.
    """

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except HematomaError as error:
            if ctx.meta.get("hematoma.debug") or os.environ.get("HEMATOMA_DEBUG", "") not in ("", "0"):
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=error.exit_code) from None


app = typer.Typer(
    name="hematoma",
    cls=_Group,
    help="Predict hematoma expansion after intracerebral hemorrhage from admission CT and clinical data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # Warnings meant for the user (resampling, empty masks) as one plain line.
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    ctx.meta["hematoma.debug"] = debug
    warnings.showwarning = _show_warning
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    from .commands import basic, cnn, demo, extract, modeling, pacs, segment, synth

    for module in (basic, synth, segment, extract, cnn, modeling, pacs, demo):
        module.register(app)


_register_commands()
