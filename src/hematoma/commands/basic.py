"""`hematoma volume` and `hematoma label`: volumes and HE labels from masks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import InputError
from ..volume import (
    DEFAULT_DEFINITION,
    HE_DEFINITIONS,
    check_scanner_spacing,
    get_definition,
    growth,
    label_expansion,
    mask_volume_ml,
)

console = Console()


def volume(mask: Path = typer.Argument(..., help="Hematoma mask (NIfTI, NRRD, MHA or DICOM).")) -> None:
    """Print the hematoma volume of MASK in mL (voxel count x voxel volume from its spacing)."""
    console.print(f"{mask_volume_ml(_read_hematoma_mask(mask)):.2f} mL")


def _read_hematoma_mask(path: Path):
    """A 0/1 mask, refused if it cannot be a hematoma (no CT here: volume and border only) or its spacing is no CT's."""
    from ..io import read_mask
    from ..mask_checks import check_hematoma_mask

    mask = read_mask(path)
    check_scanner_spacing(mask, path)
    check_hematoma_mask(mask, path)
    return mask


def _check_distinct(baseline: Path, followup: Path) -> None:
    """Refuse a follow-up that is the baseline mask itself, and say so of a copy of it (growth 0, HE "no")."""
    from ..storage import same_file, sha1_file

    if not baseline.exists() or not followup.exists():
        return  # reading reports the missing file
    if same_file(baseline, followup):
        raise InputError(followup, "--followup is the same file as --baseline")
    if sha1_file(baseline) == sha1_file(followup):
        # Two masks of the same voxels on the same grid can be true (registered scans, no growth): said, not refused,
        # as extract does.
        import warnings

        warnings.warn(f"{followup}: has the same content as --baseline {baseline} (a copy?): growth 0", stacklevel=2)


def label(
    baseline: Path = typer.Option(..., "--baseline", help="Baseline hematoma mask."),
    followup: Path = typer.Option(..., "--followup", help="Follow-up hematoma mask."),
    definition: str = typer.Option(
        DEFAULT_DEFINITION, "--definition", help=f"HE definition: {', '.join(HE_DEFINITIONS)}."
    ),
) -> None:
    """Label hematoma expansion (HE) from a baseline and a follow-up mask."""
    get_definition(definition)  # an unknown name fails before any file is read
    _check_distinct(baseline, followup)
    v0 = mask_volume_ml(_read_hematoma_mask(baseline))
    v1 = mask_volume_ml(_read_hematoma_mask(followup))
    g = growth(v0, v1)
    expanded = label_expansion(v0, v1, definition)
    relative = "n/a" if g["growth_relative"] != g["growth_relative"] else f"{100 * g['growth_relative']:+.1f}%"
    console.print(
        f"baseline {v0:.2f} mL, follow-up {v1:.2f} mL, growth {g['growth_ml']:+.2f} mL ({relative}): "
        f"HE={'yes' if expanded else 'no'} ({definition})"
    )


def register(app: typer.Typer) -> None:
    app.command()(volume)
    app.command()(label)
