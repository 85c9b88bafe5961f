"""`hematoma demo`: `hematoma run` on a synthetic cohort with known truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

err_console = Console(stderr=True)


def demo(
    out: Path = typer.Option(Path("hematoma-demo"), "--out", help="Output folder (a rerun resumes in it)."),
    patients: int = typer.Option(200, "--patients", min=24, help="Synthetic patients."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cohort, the split, the CNN and every fit."),
    size: str = typer.Option("small", "--size", help="Synthetic scan size: small (fast) or full."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes (default: the cores)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the synthetic cohort and results already in OUT (made with another seed, size or "
        "number of patients); unchanged cases are reused.",
    ),
) -> None:
    """Generate a synthetic cohort into OUT/cohort and run the whole protocol on it (fast CNN preset).

    Opens nothing: prints where the report is.
    """
    from ..pipeline import run_demo
    from .modeling import print_result

    result = run_demo(out, patients=patients, seed=seed, size=size, workers=workers, console=err_console,
                      overwrite=overwrite)
    print_result(result)


def register(app: typer.Typer) -> None:
    app.command()(demo)
