"""Refuse a given mask that cannot be a hematoma.

A mask handed in by a user (or another tool) can be inverted, filled or meant
for another scan; it then reads as a valid 0/1 image and gives a 7-litre
"hematoma" with a prediction.  Three checks, each a bound no real hematoma
comes near, so that small, empty (0 mL is valid), large (150 mL) and
border-touching masks all pass:

- its volume is at most the adult intracranial volume: a hematoma lies inside
  the skull;
- it does not cover the whole border of a slice (every edge voxel in-plane)
  whose field of view could hold a head: that edge is air or the table, never
  all blood (a small crop around a clot may lie inside it, and is let be);
- with the CT, at most half of it lies in air (HU below -200): blood is
  +40 to +90 HU, and fat, the least dense tissue, is about -100 HU, so voxels
  below -200 HU are air, outside the head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

__all__ = ["check_hematoma_mask", "MAX_HEMATOMA_ML", "AIR_HU_BELOW", "MAX_AIR_FRACTION", "MIN_FIELD_OF_VIEW_MM"]

# Adult total intracranial volume is about 1.1-2.0 L, the largest heads near 2.0 L (Buckner et al.,
# NeuroImage 2004;23:724-738, manual and atlas-based TIV of young and old adults); a hematoma is
# inside it.  The largest spontaneous ICH in trials are a few hundred mL, far below.
MAX_HEMATOMA_ML = 2000.0
# Air is -1000 HU by definition of the Hounsfield scale; fat, the least dense tissue, is about
# -50 to -150 HU.  Below -200 HU a voxel is air (or mostly air): outside the head.
AIR_HU_BELOW = -200.0
# Partial volume puts some of a hematoma's edge voxels near air (e.g. under a craniotomy); more than
# half of a mask in air is not an outline of blood.
MAX_AIR_FRACTION = 0.5
# The border rule applies to slices at least this wide both ways: wider than any hematoma (a 500 mL
# sphere, over 3x the largest clots, is 98 mm across), so its edge cannot all be blood.  Narrower
# images are crops around a lesion, whose edge may lie inside it.
MIN_FIELD_OF_VIEW_MM = 100.0


def check_hematoma_mask(mask: sitk.Image, source: str | Path | None, ct: sitk.Image | None = None) -> None:
    """Raise :class:`InputError` naming ``source`` if ``mask`` (0/1 on ``ct``'s grid) cannot be a hematoma."""
    array = sitk.GetArrayViewFromImage(mask)
    if array.ndim == 2:
        array = array[np.newaxis]
    count = int(np.count_nonzero(array))
    if count == 0:
        return
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    volume_ml = count * voxel_ml
    if volume_ml > MAX_HEMATOMA_ML:
        raise InputError(source, f"mask of {volume_ml:.1f} mL cannot be a hematoma: larger than the largest "
                                 f"adult intracranial volume ({MAX_HEMATOMA_ML:.0f} mL); is it inverted or "
                                 "meant for another image?")
    field_of_view = np.array(mask.GetSize()[:2]) * np.array(mask.GetSpacing()[:2])
    if field_of_view.min() >= MIN_FIELD_OF_VIEW_MM:
        _check_border(array, source, volume_ml)
    if ct is not None:
        _check_air(array, ct, source, count)


def _check_border(array: np.ndarray, source, volume_ml: float) -> None:
    filled = array != 0
    whole = (filled[:, 0, :].all(axis=1) & filled[:, -1, :].all(axis=1)
             & filled[:, :, 0].all(axis=1) & filled[:, :, -1].all(axis=1))
    slices = np.flatnonzero(whole)
    if slices.size:
        more = f" (and {slices.size - 1} other slice{'s' if slices.size > 2 else ''})" if slices.size > 1 else ""
        raise InputError(source, f"mask of {volume_ml:.1f} mL cannot be a hematoma: it covers the whole border "
                                 f"of slice {int(slices[0])}{more}, where a head CT shows air; is it inverted "
                                 "or filled?")


def _check_air(array: np.ndarray, ct: sitk.Image, source, count: int) -> None:
    if not isinstance(ct, sitk.Image):
        return  # a header-only reader: no voxel values to look at
    hu = sitk.GetArrayViewFromImage(ct)
    if hu.ndim == 2:
        hu = hu[np.newaxis]
    if hu.shape != array.shape:
        return  # not on the CT's grid: the geometry check says so
    in_air = int(np.count_nonzero(hu[array != 0] < AIR_HU_BELOW))
    if in_air > MAX_AIR_FRACTION * count:
        raise InputError(source, f"mask cannot be a hematoma: {100 * in_air / count:.0f}% of its {count} voxels "
                                 f"are air in the CT (below {AIR_HU_BELOW:.0f} HU; at most "
                                 f"{100 * MAX_AIR_FRACTION:.0f}% allowed), i.e. outside the head; is it meant "
                                 "for another scan?")
