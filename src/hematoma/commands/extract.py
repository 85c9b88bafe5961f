"""`hematoma extract`: volumes, labels, radiomics and clinical features for a cohort."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from rich.markup import escape

from ..volume import DEFAULT_DEFINITION, HE_DEFINITIONS

console = Console()
err_console = Console(stderr=True)
SHOWN_FAILURES = 10
# Exit status when the run finished but some cases failed (2 is a refused input: see hematoma.cli).
CASES_FAILED_EXIT = 3


# The literal default, not segmentation.options.DEFAULT_BLOOD: importing hematoma.segmentation here would slow every
# command's start by seconds (tests/test_segmentation_deep.py checks they agree).
BLOOD_HELP = ("Blood classes of the deep hematoma mask: blood (intraparenchymal + extra-axial + intraventricular, "
              "the default: best on measurement); iph (intraparenchymal only, as the HE definitions); iph+ivh.")

def extract(
    manifest: Path = typer.Argument(..., help="Manifest CSV (one row per patient; paths relative to it)."),
    out: Path = typer.Option(..., "--out", help="Output folder; a rerun resumes in it, skipping unchanged cases."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1,
        help="Local worker processes (default: the number of cores). 1 runs in this process, without Dask (debugging).",
    ),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler",
        help="Run on a Dask cluster: scheduler address (tcp://host:port) or scheduler JSON file. "
        "Workers need hematoma installed and the same paths to the data and OUT.",
    ),
    radiomics_params: Optional[Path] = typer.Option(
        None, "--radiomics-params", help="pyradiomics parameters YAML (default: the shipped 107-feature set)."
    ),
    segmentation_model: Optional[Path] = typer.Option(
        None, "--segmentation-model", help="Trained hemorrhage segmenter folder, for cases without a mask."
    ),
    method: str = typer.Option("rules", "--method", help="Segmenter for cases without a mask: rules; deep (BLAST-CT); auto (deep with a CUDA GPU); both (compared, QA flag)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="BLAST-CT weights folder (default: the blast-ct package's)."),
    models: int = typer.Option(1, "--models", min=1, help="BLAST-CT models averaged."),
    blood: str = typer.Option("blood", "--blood", help=BLOOD_HELP),
    dicom_seg: bool = typer.Option(False, "--seg", help="Also write each DICOM baseline CT's mask as a DICOM SEG "
                                                        "(cases/<id>/baseline_mask_seg.dcm), to review in a DICOM viewer."),
    definition: str = typer.Option(DEFAULT_DEFINITION, "--definition", help=f"HE definition: {', '.join(HE_DEFINITIONS)}."),
    extra_column: List[str] = typer.Option([], "--extra-column", help="Declare an extra clinical column (repeatable)."),
    ignore_column: List[str] = typer.Option([], "--ignore-column", help="Drop a manifest column (repeatable)."),
    overwrite: bool = typer.Option(
        False, "--overwrite",
        help="Replace OUT's results when they are another manifest's or other settings' (cases whose inputs and "
        "settings are unchanged are reused).",
    ),
) -> None:
    """Extract every case of MANIFEST into OUT: masks, volumes, HE labels, features (CSV and Parquet).

    OUT belongs to one manifest and one set of settings; one run at a time uses it.
    Exit status: 0 every case extracted; 3 the run finished but some cases failed
    (listed, and in OUT/failures.csv; the others are in the table); 2 refused input
    (one line says why), or every case failed.
    """
    from ..case_warnings import summarise_warnings
    from ..extraction import extract_cohort
    from ..segmentation.methods import segmenter_from_options, which_ran

    segmenter = segmenter_from_options(method, weights, models, blood)
    if segmenter is not None:
        err_console.print(which_ran(segmenter), highlight=False, soft_wrap=True)
    result = extract_cohort(
        manifest, out, workers=workers, scheduler=scheduler, radiomics_params=radiomics_params,
        segmentation_model=segmentation_model, segmenter=segmenter, dicom_seg=dicom_seg, definition=definition,
        extra_columns=extra_column,
        ignore_columns=ignore_column, console=err_console, overwrite=overwrite,
    )
    counts = result.counts
    console.print(
        f"{counts['done']} computed, {counts['skipped']} unchanged (skipped), {counts['failed']} failed; "
        f"features of {len(result.table)} patients in {escape(str(out / 'features.csv'))} and .parquet",
        soft_wrap=True,
    )
    if counts["failed"]:
        for row in result.failures.head(SHOWN_FAILURES).itertuples(index=False):
            err_console.print(f"[yellow]failed[/] {escape(str(row.patient_id))} ({row.stage}): {escape(str(row.reason))}",
                              highlight=False, soft_wrap=True)
        more = counts["failed"] - SHOWN_FAILURES
        err_console.print(f"{'and ' + str(more) + ' more; ' if more > 0 else ''}all in {escape(str(out / 'failures.csv'))}",
                          highlight=False, soft_wrap=True)
    if result.qa_flagged:
        shown = ", ".join(result.qa_flagged[:SHOWN_FAILURES]) + (" ..." if len(result.qa_flagged) > SHOWN_FAILURES else "")
        err_console.print(f"[yellow]QA[/] rules and BLAST-CT disagree on {len(result.qa_flagged)} case(s), look at them: "
                          f"{escape(shown)} (seg_qa_flag in features.csv; all in extract.json)", highlight=False, soft_wrap=True)
    if result.warnings:
        for line in summarise_warnings(result.warnings):
            err_console.print(f"[yellow]warnings[/] {escape(line)}", highlight=False, soft_wrap=True)
        err_console.print(f"each case's in its case.json; all in {escape(str(out / 'extract.json'))}",
                          highlight=False, soft_wrap=True)
    if counts["failed"]:
        raise typer.Exit(code=CASES_FAILED_EXIT)


def register(app: typer.Typer) -> None:
    app.command()(extract)
