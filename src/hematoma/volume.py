"""Hematoma volume and hematoma-expansion (HE) labels.

Volume is the voxel count times the voxel volume taken from the image's own
spacing (mm^3 / 1000 = mL), so thick- and thin-slice scans agree.

HE definitions (growth from baseline to follow-up CT, usually <= 72 h):

==================  ==========================================================
``6ml-or-33pct``    absolute growth > 6 mL or relative growth > 33 % (default;
                    Bo, Xiong et al. 2023; Dowlatshahi et al., Stroke 2011)
``12.5ml-or-33pct`` absolute growth > 12.5 mL or relative growth > 33 %
                    (Brott et al., Stroke 1997; Davis et al. 2006)
``33pct``           relative growth > 33 %
``6ml``             absolute growth > 6 mL
==================  ==========================================================

Thresholds are strict: growth of exactly 6 mL or exactly 33 % is not
expansion.  Relative growth from a 0 mL baseline is undefined, so only the
absolute criterion can fire there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import SimpleITK as sitk

from .errors import HematomaError, InputError


@dataclass(frozen=True)
class HEDefinition:
    """Expansion when growth exceeds ``absolute_ml`` or ``relative`` (either one set)."""

    name: str
    absolute_ml: float | None
    relative: float | None
    reference: str

    def __call__(self, baseline_ml: float, followup_ml: float) -> bool:
        growth = followup_ml - baseline_ml
        # Compare in rounded units so 6.000000001 from floating-point spacing
        # products is not called growth "above 6 mL".
        if self.absolute_ml is not None and round(growth, 6) > self.absolute_ml:
            return True
        if self.relative is not None and baseline_ml > 0:
            return round(growth / baseline_ml, 9) > self.relative
        return False


HE_DEFINITIONS: Mapping[str, HEDefinition] = {
    d.name: d
    for d in (
        HEDefinition("6ml-or-33pct", 6.0, 0.33, "Bo, Xiong et al., Int J Gen Med 2023; Dowlatshahi et al., Stroke 2011"),
        HEDefinition("12.5ml-or-33pct", 12.5, 0.33, "Brott et al., Stroke 1997; Davis et al., Neurology 2006"),
        HEDefinition("33pct", None, 0.33, "Brott et al., Stroke 1997"),
        HEDefinition("6ml", 6.0, None, "Dowlatshahi et al., Stroke 2011"),
    )
}
DEFAULT_DEFINITION = "6ml-or-33pct"


class UnknownDefinitionError(HematomaError):
    def __init__(self, name: str):
        super().__init__(f"unknown HE definition {name!r}; choose one of: {', '.join(HE_DEFINITIONS)}")


def get_definition(name: str) -> HEDefinition:
    try:
        return HE_DEFINITIONS[name]
    except KeyError:
        raise UnknownDefinitionError(name) from None


def voxel_volume_ml(image: sitk.Image) -> float:
    """Volume of one voxel in mL (a 2D image counts as one 1 mm thick slice)."""
    return float(np.prod(image.GetSpacing())) / 1000.0


# Voxel spacing a CT scanner can produce, per axis (mm): in-plane pixels of ~0.1 to 1 mm
# (0.05 leaves room for micro-CT-like reconstructions), slices of 0.5 to 10 mm (30 leaves
# room for a thick scout).  Outside it the header is wrong (a unit slip: metres or
# micrometres), and so is every volume: 0.001 mm makes a hematoma 0.00 mL.
SCANNER_SPACING_MM = (0.05, 30.0)


def check_scanner_spacing(image: sitk.Image, path) -> None:
    """Refuse (:class:`InputError` naming ``path``) an image whose spacing no CT scanner gives."""
    spacing = image.GetSpacing()
    low, high = SCANNER_SPACING_MM
    if not all(low <= s <= high for s in spacing):
        shown = " x ".join(f"{s:g}" for s in spacing)
        raise InputError(path, f"voxel spacing {shown} mm is outside the range of CT scanners ({low:g} to {high:g} mm "
                               "per axis): its header is wrong, so would be any volume from it")


def mask_volume_ml(mask: sitk.Image) -> float:
    """Volume of the non-zero voxels of ``mask`` in mL, from the mask's spacing."""
    count = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return count * voxel_volume_ml(mask)


def label_expansion(baseline_ml: float, followup_ml: float, definition: str = DEFAULT_DEFINITION) -> bool:
    """True when growth from ``baseline_ml`` to ``followup_ml`` is expansion under ``definition``."""
    if baseline_ml < 0 or followup_ml < 0:
        raise ValueError("volumes must be >= 0 mL")
    return get_definition(definition)(baseline_ml, followup_ml)


def growth(baseline_ml: float, followup_ml: float) -> dict[str, float]:
    """Absolute (mL) and relative (fraction; NaN from a 0 mL baseline) growth."""
    absolute = followup_ml - baseline_ml
    relative = absolute / baseline_ml if baseline_ml > 0 else float("nan")
    return {"growth_ml": absolute, "growth_relative": relative}
