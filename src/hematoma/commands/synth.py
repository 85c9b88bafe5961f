"""`hematoma synth`: write a synthetic cohort with known ground truth."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the cohort into (created if absent)."),
    patients: int = typer.Option(..., "--patients", min=1, help="Number of patients."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed; patient i depends only on (seed, i)."),
    size: str = typer.Option("full", "--size", help="full: 512x512 at ~0.45 mm; small: 128x128 at 1.8 mm (fast)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes making patients in parallel."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what this generator wrote in OUT (any settings); other files are kept."),
    skull_gap_mm: float = typer.Option(0.0, "--skull-gap-mm", min=0.0, max=120.0,
                                       help="Variant: a craniotomy / fracture this wide (mm): vault bone replaced by soft tissue."),
    gap_at_deg: float = typer.Option(90.0, "--gap-at-deg",
                                     help="Where the skull gap is, degrees in the axial plane: 0 anterior, 90 left, 180 posterior, 270 right."),
    thin_bone_hu: float | None = typer.Option(None, "--thin-bone-hu",
                                              help="Variant: temporal squamae no denser than this (HU), as thin bone under partial volume (e.g. 150)."),
    tilt_deg: float = typer.Option(0.0, "--tilt-deg", min=-40.0, max=40.0,
                                   help="Variant: the head pitched this much more (degrees, chin down > 0)."),
    head_holder: bool = typer.Option(False, "--head-holder", help="Variant: a carbon-fibre head holder on a foam pad, and the table."),
    below_base_mm: float = typer.Option(0.0, "--below-base-mm", min=0.0, max=20.0,
                                        help="Variant: start the scan this much lower (slices below the skull base, no brain)."),
    fov_padding_hu: float | None = typer.Option(None, "--fov-padding-hu",
                                                help="Variant: voxels outside the circular field of view set to this (e.g. -3024, as RSNA DICOM)."),
) -> None:
    """Write a synthetic head-CT cohort: baseline and follow-up scans, masks, manifest, truth.

    A rerun into the same folder with the same seed, size and variant skips the patients already written.
    The variant options alter every head the way real scans defeat brain extraction (see
    hematoma.synthetic.variants); the variant is recorded in synthetic_settings.json and each record.
    """
    from ..synthetic import Variant, generate_cohort

    variant = Variant(skull_gap_mm=skull_gap_mm, gap_azimuth_deg=gap_at_deg, thin_bone_hu=thin_bone_hu,
                      tilt_deg=tilt_deg, head_holder=head_holder, below_base_mm=below_base_mm,
                      fov_padding_hu=fov_padding_hu)
    summary = generate_cohort(out, patients, seed=seed, size=size, workers=workers, overwrite=overwrite,
                              variant=variant)
    console.print(
        f"wrote {summary['generated']} patient(s), skipped {summary['skipped']} already written, in {out}",
        highlight=False,
    )
    if not variant.is_intact:
        console.print(f"variant: {variant.label()}", highlight=False)
    console.print(f"HE rate: {summary['he_rate']:.3f} ({summary['n_he']} of {summary['n']})", highlight=False)
    # On the console too, not only in the records: these lesions were not placed as first drawn.
    redrawn, noted = summary.get("redrawn") or {}, summary.get("placement_notes") or {}
    if redrawn:
        listed = ", ".join(f"{pid} ({n}x)" for pid, n in redrawn.items())
        console.print(f"re-drew the hematoma of {len(redrawn)} patient(s) to fit the brain: {listed}; "
                      "why: 'redraw_reasons' in records/<patient>.json", highlight=False)
    if noted:
        console.print(f"placed the hematoma of {len(noted)} patient(s) with less growth or a wider search: "
                      f"{', '.join(noted)}; how: 'placement_notes' in records/<patient>.json", highlight=False)
    auc = summary["oracle_auc"]
    console.print(f"oracle AUC (true P vs HE): {'n/a (one class)' if auc is None else f'{auc:.3f}'}", highlight=False)
    table = Table(title="baseline volume (mL)")
    for column in ("group", "n", "Q1", "median", "Q3"):
        table.add_column(column, justify="right" if column != "group" else "left")
    quartiles = summary["baseline_volume_quartiles_ml"]
    counts = {"all": summary["n"], "he": summary["n_he"], "no_he": summary["n"] - summary["n_he"]}
    for group, label in (("all", "all"), ("no_he", "no HE"), ("he", "HE")):
        values = quartiles[group]
        table.add_row(label, str(counts[group]), *(["-"] * 3 if values is None else [f"{v:.1f}" for v in values]))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(synth)
