"""`hematoma demo`: the main job on the embedded synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def demo(
    out: Path = typer.Option(Path("hematoma-demo"), "--out", help="Output folder (reruns resume in it)."),
    patients: int = typer.Option(40, "--patients", min=8, help="Synthetic patients."),
    seed: int = typer.Option(0, "--seed"),
    size: str = typer.Option("small", "--size", help="Synthetic scan size: small or full."),
) -> None:
    """Run the pipeline on a synthetic cohort with known truth and print where the results are."""
    from ..pipeline import run_demo

    result = run_demo(out, patients=patients, seed=seed, size=size)
    table = Table(title="hematoma demo (synthetic cohort)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.summary.items():
        table.add_row(key, "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"results: {result.out.resolve()}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
