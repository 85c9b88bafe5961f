"""`hematoma segment` and `hematoma segment-train`: hemorrhage masks from CT.

Two flat commands rather than a `segment` group: a Typer group whose default
callback takes the CT path would swallow `train` as a CT name, so training
is its own command, `segment-train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .pacs import AUTH_FILE, CA_BUNDLE, CLIENT_CERT, INSECURE, SERVER

console = Console()


# The literal default, not segmentation.options.DEFAULT_BLOOD: importing hematoma.segmentation here would slow every
# command's start by seconds (tests/test_segmentation_deep.py checks they agree).
BLOOD_HELP = ("Blood classes of the deep hematoma mask: blood (intraparenchymal + extra-axial + intraventricular, "
              "the default: best on measurement); iph (intraparenchymal only, as the HE definitions); iph+ivh.")

def segment(
    ct: Path = typer.Argument(..., help="Head CT in HU: NIfTI, NRRD, MHA, a DICOM file or a DICOM series folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Mask to write (.nii.gz, .nrrd, .mha), UInt8 0/1 on the CT's grid; "
                                                     ".dcm: a DICOM SEG of a DICOM CT's slices."),
    out_format: Optional[str] = typer.Option(None, "--format", help="seg: write a DICOM SEG (any name but an image "
                                                                     "format's); image: by the name (default: .dcm is a SEG)."),
    sr: Optional[Path] = typer.Option(None, "--sr", help="Also write the volumes as a DICOM Structured Report "
                                                         "(.dcm, TID 1500) referencing the SEG of --out."),
    overlay: Optional[Path] = typer.Option(None, "--overlay", help="Also write the figure (PNG): largest-area slice with the hematoma in red."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder from `hematoma segment-train` (default: rule-based, no model)."),
    method: str = typer.Option("rules", "--method", help="rules; deep (BLAST-CT); auto (deep with a CUDA GPU, else rules); both (compared, QA flag)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="BLAST-CT weights folder (config.json, model_*.pt); default: the blast-ct package's."),
    models: int = typer.Option(1, "--models", min=1, help="BLAST-CT models averaged (an ensemble)."),
    blood: str = typer.Option("blood", "--blood", help=BLOOD_HELP),
    series: Optional[str] = typer.Option(None, "--series", help="For a DICOM folder holding several series: the SeriesInstanceUID to read."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    push: bool = typer.Option(False, "--push", help="Also store the SEG (and the SR) on the DICOMweb server of --server."),
    server: Optional[str] = SERVER,
    auth_file: Optional[Path] = AUTH_FILE,
    ca_bundle: Optional[Path] = CA_BUNDLE,
    insecure: bool = INSECURE,
    client_cert: Optional[Path] = CLIENT_CERT,
) -> None:
    """Segment the hemorrhage of CT, write the mask and print its volume in mL."""
    from ..errors import InputError
    from ..io import WRITE_SUFFIXES, read_image, write_image
    from ..io.paths import DICOM_SUFFIXES, _is_dicom_file
    from ..segmentation import HemorrhageSegmentationModel, save_overlay
    from ..segmentation.methods import SegmenterSettings, segment_with, which_ran
    from ..storage import refuse_overwrite
    from ..volume import mask_volume_ml
    from .output_paths import refuse_clashes

    # Refuse before the work is done, not after.
    if out_format not in (None, "seg", "image"):
        raise InputError(None, f"unknown --format {out_format!r}; choose seg or image")
    as_seg = out_format == "seg" or (out_format is None and out.name.lower().endswith(DICOM_SUFFIXES))
    if as_seg and out.name.lower().endswith(WRITE_SUFFIXES):
        raise InputError(out, "a DICOM SEG is a DICOM file: name it .dcm (or drop --format seg)")
    if not as_seg and not out.name.lower().endswith(WRITE_SUFFIXES):
        raise InputError(out, f"unsupported mask format (expected one of {', '.join(WRITE_SUFFIXES)}, "
                              "or .dcm / --format seg for a DICOM SEG)")
    if as_seg and not (ct.is_dir() or _is_dicom_file(ct)):
        raise InputError(out, f"a DICOM SEG refers to the slices of a DICOM CT, and {ct} is not DICOM; "
                              "write the mask as .nii.gz")
    if sr is not None and not as_seg:
        raise InputError(sr, "a DICOM SR of the volumes references the DICOM SEG it measures: give --out a .dcm "
                             "(a DICOM CT's SEG)")
    if sr is not None and not sr.name.lower().endswith(DICOM_SUFFIXES):
        raise InputError(sr, "a DICOM SR is a DICOM file: name it .dcm")
    if push and not as_seg:
        raise InputError(out, "--push stores a DICOM SEG: give --out a .dcm (a DICOM CT's SEG)")
    connection = None
    if push:
        from .pacs import server_from

        connection = server_from(server, auth_file, ca_bundle, insecure, client_cert)
    refuse_clashes({"--out": out, "--overlay": overlay, "--sr": sr}, {"CT": ct})
    refuse_overwrite(out, overwrite)
    if sr is not None:
        refuse_overwrite(sr, overwrite)
    if overlay is not None:
        refuse_overwrite(overlay, overwrite)
    settings = SegmenterSettings(method, None if weights is None else str(weights), models, blood).check()
    loaded = HemorrhageSegmentationModel.load(model) if model is not None else None
    if settings.method != "rules":  # the default says nothing: a refused input stays one line
        Console(stderr=True).print(which_ran(settings), highlight=False, soft_wrap=True)
    image = read_image(ct, series_uid=series)
    seg_slices = None
    if as_seg:  # a resampled series has no slice per mask plane: refused before segmenting
        from ..io.dicom_seg import seg_source

        seg_slices = seg_source(image, ct, series)
    result = segment_with(image, settings, model=loaded, source=ct)
    mask = result.mask
    if as_seg:
        from ..io.dicom_seg import write_dicom_seg

        write_dicom_seg({"hematoma": mask, **result.structures}, seg_slices, out, algorithm=result.method,
                        overwrite=overwrite)
        if sr is not None:
            from ..io.dicom_sr import write_volume_report

            volumes = {"hematoma": mask_volume_ml(mask), "ivh": result.columns.get("ivh_volume_ml", float("nan")),
                       "oedema": result.columns.get("phe_volume_ml", float("nan"))}  # NaN: not measured, left out
            from ..features.signs import compute_signs

            write_volume_report(out, seg_slices, sr, volumes, overwrite=overwrite, signs=compute_signs(image, mask))
    else:
        write_image(mask, out, overwrite=overwrite)
    if overlay is not None:
        save_overlay(image, mask, overlay, overwrite=overwrite, title=f"{ct.name}: largest hematoma area")
    console.print(f"hemorrhage volume {mask_volume_ml(mask):.2f} mL ({result.method}) -> {out}"
                  + (f", report -> {sr}" if sr is not None else ""), highlight=False)
    _print_columns(result)
    if connection is not None:
        from ..pacs import push_files

        stored = push_files(connection, [out] + ([sr] if sr is not None else []))
        console.print(f"stored {len(stored)} object{'s' if len(stored) != 1 else ''} on {connection.url}",
                      highlight=False)


def _print_columns(result) -> None:
    import math

    columns = {k: v for k, v in result.columns.items() if not math.isnan(v)}
    if "ivh_volume_ml" in columns:
        console.print(f"intraventricular blood {columns['ivh_volume_ml']:.2f} mL, perihematomal oedema "
                      f"{columns['phe_volume_ml']:.2f} mL (BLAST-CT)", highlight=False)
    if "seg_dice_rules_deep" in columns:
        flag = " [yellow]QA flag: look at this case[/]" if columns.get("seg_qa_flag") else ""
        console.print(f"rules vs deep: Dice {columns['seg_dice_rules_deep']:.3f}, volume difference "
                      f"{columns['seg_volume_difference_ml']:+.2f} mL{flag}")
    elif columns.get("seg_qa_flag"):
        console.print("[yellow]QA flag: look at this case[/]")
    for note in result.notes:
        console.print(note, highlight=False, soft_wrap=True)


def segment_train(
    manifest: Path = typer.Argument(..., help="Cohort manifest (CSV) with baseline_ct/baseline_mask (and follow-up) columns."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (model.skops + settings.json)."),
    max_voxels: int = typer.Option(20000, "--max-voxels-per-case", min=100, help="Candidate voxels sampled per scan."),
    seed: int = typer.Option(0, "--seed", help="Seed of the voxel sampling, folds and models."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model folder's files."),
) -> None:
    """Train the voxel classifier on the scans of MANIFEST that have masks."""
    from ..segmentation import train_from_manifest

    model = train_from_manifest(manifest, out, overwrite=overwrite, max_voxels_per_case=max_voxels, seed=seed)
    clf = model.classifier
    scores = ", ".join(f"{name} {result['dice']:.3f}" for name, result in clf.cv_results_.items())
    console.print(
        f"trained on {model.training['n_cases']} scans of {model.training['n_patients']} patients "
        f"({model.training['n_voxels']} voxels); cross-validated Dice: {scores}; "
        f"chose {clf.selected_estimator_} with cut-off {clf.threshold_:.2f} -> {out}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("segment-train")(segment_train)
