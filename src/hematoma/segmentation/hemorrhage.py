"""Hemorrhage segmentation on non-contrast head CT.

``segment_hemorrhage(image)`` runs a rule-based segmenter that needs no
trained model; ``segment_hemorrhage(image, model)`` uses a voxel classifier
trained with :mod:`hematoma.segmentation.classifier`.  Both share the brain
mask, the candidate rules and the post-processing below.

Rules (HU values from the CT literature; the rules were checked, not fitted,
on synthetic images, and the code is meant for real CT):

* candidates (seeds): brain voxels whose local mean (a ~2 mm in-plane box)
  lies in the acute-blood range 30-100 HU (ichseg's include rule), at least
  80 % of whose neighbours have blood density (ichseg's ``pct_thresh`` counts
  40-80 HU; here 40-100 HU, so that dense clots of 80-95 HU are not lost) and
  which are brighter than their axial slice by 1.5 robust SDs (a within-plane
  z-score, ichseg's ``zscore3``);
* calcifications (choroid plexus, pineal gland, vessel walls, falx) and bone
  are denser than acute blood (> 100 HU): no candidate lies within
  ``CALCIFICATION_MARGIN_MM`` of them in plane, or in the adjacent slab of a
  thick-slice scan (an obliquely cut skull base raises the next slab's HU);
* partial volume of the skull raises the HU of the brain's outer rim to that
  of blood: candidates closer than ``SKULL_MARGIN_MM`` to the brain's edge
  (in plane, and one slab towards the skull base or vault) are dropped; a
  real hematoma there is recovered by the delineation step;
* isolated specks (< ``MIN_COMPONENT_ML``) are removed;
* the index hematoma is kept: the largest connected component, with the
  components within ``SATELLITE_MM`` of it (lobes of an irregular clot that
  a dimmer part disconnects, the "satellite sign"), plus any other component
  at least ``SECONDARY_FRACTION`` of its volume.  Spontaneous ICH is nearly
  always one index hematoma; smaller distant bright foci are more often
  calcifications, beam hardening or contusions that the HE definitions do
  not measure; comparable foci are kept so a multifocal bleed is not halved;
* delineation: each kept component is grown (no further than ``GROWTH_MM``
  in plane, not into the rim of bone or calcifications) over voxels above an
  edge threshold placed ``EDGE_FRACTION`` of the way from the median HU of
  the tissue around it to the clot's median HU, kept within 40-55 HU.  The
  half-maximum (0.5) rule places a blurred edge exactly in plane, but with
  5 mm slices a convex clot's border slab is partly outside the clot and
  reads lower, so half-maximum underestimates the volume (by ~5 % on the
  synthetic cohort); 0.4 puts the edge at 40-45 HU for usual clots, the lower
  threshold of semi-automated ICH volumetry.  Concavities narrower than
  ~2 x ``ISLAND_MM`` over tissue denser than edema and white matter are
  hypodense parts of the clot (blend sign) and are added; the result is
  closed and hole-filled slice by slice.  Hypodense clot (< 40 HU) that is
  not enclosed by denser clot cannot be told from grey matter by density
  and is missed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .brain import box_size, brain_mask_array, close_inplane, fill_holes_inplane, orient_ct
from .voxel_features import blood_neighbour_fraction, masked_mean, plane_zscore, window_size

#: ichseg's candidate range: acute blood is 30-100 HU (typically 50-80 HU).
CANDIDATE_HU = (30.0, 100.0)
#: At least this share of a candidate's neighbours have blood density.  ichseg
#: counts 40-80 HU neighbours (``pct_thresh``, kept as a classifier feature);
#: the rule counts up to 100 HU so that dense clots (high haematocrit, 80-95 HU)
#: are not lost, calcifications being removed by their own rule.
RULE_NEIGHBOUR_HU = (40.0, 100.0)
MIN_BLOOD_NEIGHBOUR_FRACTION = 0.8
#: Candidates are brighter than their axial slice by this many (robust) SDs.
MIN_AXIAL_ZSCORE = 1.5
#: Denser than acute blood: calcification or bone.
CALCIFICATION_HU = 100.0
CALCIFICATION_MARGIN_MM = 2.0
#: Partial volume of the inner table reaches a few mm into the brain.
SKULL_MARGIN_MM = 3.0
#: Components smaller than this (mL) are specks.
MIN_COMPONENT_ML = 0.05
#: Components at least this fraction of the index hematoma's volume are kept too.
SECONDARY_FRACTION = 0.5
#: Components this close (mm, 3D) to the index hematoma are its satellites / lobes.
SATELLITE_MM = 10.0
#: The delineated edge lies at most this far (in plane) from the candidates.
GROWTH_MM = 4.0
#: Where between the surrounding tissue's HU (0) and the clot's (1) its edge lies (half maximum).
EDGE_FRACTION = 0.4
#: Bounds of the half-way edge threshold (HU): never below grey matter, never above typical clot.
EDGE_HU_BOUNDS = (40.0, 55.0)
#: Shell around the candidates whose median is "the tissue around" the hematoma.
SURROUND_MM = (2.0, 6.0)
CLOSING_MM = 1.0
#: Concavities of the clot narrower than about twice this are hypodense parts of it ...
ISLAND_MM = 3.0
#: ... when their tissue is denser than edema (15-25 HU) and white matter (~28 HU).
ISLAND_MIN_HU = 33.0

_CONNECTIVITY = ndi.generate_binary_structure(3, 1)
_CONNECTIVITY[1] = True  # 8-connected in plane, face-connected across slices


class NoHemorrhageWarning(UserWarning):
    """The segmenter found no hemorrhage: the mask is empty (0 mL)."""


def segment_hemorrhage(image: sitk.Image, model=None, source: str | Path | None = None, method: str = "rules",
                       **deep_options) -> sitk.Image:
    """Binary (UInt8) hemorrhage mask of a head CT, on the image's own grid.

    ``image`` is a 3D volume or a single 2D slice in HU.  ``model`` is a
    :class:`~hematoma.segmentation.classifier.HemorrhageSegmentationModel`
    (or ``None``: the rule-based default).  ``source`` names the file in errors.
    ``method``: "rules" (default), "deep" (BLAST-CT), "auto" or "both"
    (:mod:`hematoma.segmentation.methods`); ``deep_options``: ``weights``,
    ``n_models``, ``blood`` of :class:`~hematoma.segmentation.methods.SegmenterSettings`.
    An empty mask from the rules comes with a :class:`NoHemorrhageWarning`.
    """
    if method != "rules" or deep_options:
        from .methods import SegmenterSettings, segment_with

        settings = SegmenterSettings(method=method, **deep_options).check()
        return segment_with(image, settings, model=model, source=source).mask
    ct = orient_ct(image, source)
    if model is not None:
        model.check_image(ct, source)
    brain = brain_mask_array(ct.hu, ct.spacing_zyx, source)
    box = bounding_box(brain, margin=(1, 8, 8))
    hu, brain_box = ct.hu[box], brain[box]
    if model is None:
        found = rule_based_mask(hu, brain_box, ct.spacing_zyx)
    else:
        found = model.predict_mask(hu, brain_box, ct.spacing_zyx)
    mask = np.zeros(ct.hu.shape, dtype=np.uint8)
    mask[box] = found
    if not found.any():
        name = f"{source}: " if source is not None else ""
        warnings.warn(f"{name}no hemorrhage found; the mask is empty (0 mL)", NoHemorrhageWarning, stacklevel=2)
    return ct.restore(mask)


def mask_for_case(ct: sitk.Image, ct_path: str | Path, mask_path: str | Path | None = None, model=None) -> sitk.Image:
    """The case's hematoma mask: the given one (geometry-checked against the CT, and refused if it
    cannot be a hematoma: :func:`hematoma.mask_checks.check_hematoma_mask`) or a segmented one."""
    if not _missing(mask_path):
        from ..io import read_mask
        from ..mask_checks import check_hematoma_mask

        mask = read_mask(mask_path, reference=ct, reference_path=ct_path)
        check_hematoma_mask(mask, mask_path, ct)
        return mask
    return segment_hemorrhage(ct, model=model, source=ct_path)


def _missing(value) -> bool:
    """None, NaN / pandas NA (an empty manifest cell) or a blank string."""
    if value is None:
        return True
    try:
        import pandas

        if pandas.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return str(value).strip() == ""


# --- rule-based segmenter ------------------------------------------------------


def rule_based_mask(hu: np.ndarray, brain: np.ndarray, spacing_zyx) -> np.ndarray:
    """Hemorrhage mask (bool) from the rules above, on an LPS (z, y, x) array."""
    core = candidate_voxels(hu, brain, spacing_zyx, strict=True)
    kept = keep_index_hematoma(core, spacing_zyx)
    if not kept.any():
        return kept
    return delineate(kept, hu, brain, spacing_zyx)


def candidate_voxels(hu: np.ndarray, brain: np.ndarray, spacing_zyx, strict: bool = True) -> np.ndarray:
    """Voxels that may be acute blood.

    ``strict`` applies every rule (the rule-based segmenter's seeds);
    otherwise only the HU range, the calcification and a lenient
    neighbourhood rule are applied, keeping nearly every hematoma voxel for
    the voxel classifier to decide on.
    """
    size = window_size(spacing_zyx, z_radius_voxels=0)
    counts = ndi.uniform_filter(brain.astype(np.float32), size=size, mode="constant")
    local_mean = masked_mean(hu, brain, size, counts)
    candidates = brain & (local_mean >= CANDIDATE_HU[0]) & (local_mean <= CANDIDATE_HU[1])
    candidates &= ~near_calcification(hu, brain, spacing_zyx)
    fraction = blood_neighbour_fraction(hu, brain, size, counts, hu_range=RULE_NEIGHBOUR_HU)
    if not strict:
        return candidates & (fraction >= 0.25)
    candidates &= fraction >= MIN_BLOOD_NEIGHBOUR_FRACTION
    candidates &= plane_zscore(local_mean, brain, axis=0, robust=True) >= MIN_AXIAL_ZSCORE
    candidates &= distance_from_edge_at_least(brain, SKULL_MARGIN_MM, spacing_zyx)
    return candidates


def near_calcification(hu: np.ndarray, brain: np.ndarray, spacing_zyx, across_slices: bool = True) -> np.ndarray:
    """Voxels within ``CALCIFICATION_MARGIN_MM`` of a dense (> 100 HU) spot: calcification or bone.

    In plane the reach is the margin; across slices it is one slice each way
    when slices are thick, because a dense surface cut obliquely (skull base,
    tentorium, a calcified vessel) raises the HU of the neighbouring slab by
    partial volume, several mm away from any dense voxel of that slab.
    """
    # A 3x3 in-plane mean: one noisy voxel of clot above 100 HU is not a calcification.
    dense = ndi.uniform_filter(np.minimum(hu, 400.0), size=(1, 3, 3)) > CALCIFICATION_HU
    z_radius = (1 if spacing_zyx[0] >= 2.0 else None) if across_slices else 0
    reach = window_size(spacing_zyx, radius_mm=CALCIFICATION_MARGIN_MM, z_radius_voxels=z_radius)
    return ndi.maximum_filter(dense, size=reach)


def distance_from_edge_at_least(brain: np.ndarray, margin_mm: float, spacing_zyx) -> np.ndarray:
    """Brain voxels at least ``margin_mm`` from the brain's edge (a box erosion: separable, fast).

    With thick slices the margin across slices is one slice: a voxel whose
    neighbouring slab is not brain lies on the skull base or vault, whose
    partial volume raises its HU.  Outside the scanned volume counts as not
    brain, except for a single slice, which has no neighbours to judge by.
    """
    z_radius = 0 if brain.shape[0] == 1 else (1 if spacing_zyx[0] >= 2.0 else None)
    reach = window_size(spacing_zyx, radius_mm=margin_mm, z_radius_voxels=z_radius)
    return ndi.minimum_filter(brain, size=reach, mode="constant", cval=False)


def keep_index_hematoma(candidates: np.ndarray, spacing_zyx) -> np.ndarray:
    """The index hematoma (largest component), its satellites and components of comparable size; specks removed."""
    labels, count = ndi.label(candidates, structure=_CONNECTIVITY)
    if count == 0:
        return np.zeros_like(candidates)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    volumes = np.bincount(labels.ravel())[1:] * voxel_ml
    index = int(np.argmax(volumes))
    largest = volumes[index]
    if largest < MIN_COMPONENT_ML:
        return np.zeros_like(candidates)
    keep = (volumes >= SECONDARY_FRACTION * largest) | _satellites(labels, index + 1, count, spacing_zyx)
    keep &= volumes >= MIN_COMPONENT_ML
    return np.concatenate([[False], keep])[labels]


def _satellites(labels: np.ndarray, index: int, count: int, spacing_zyx) -> np.ndarray:
    """Which components lie within ``SATELLITE_MM`` (3D) of component ``index``."""
    piece = ndi.find_objects((labels == index).view(np.uint8))[0]
    region = _expand(piece, SATELLITE_MM, labels.shape, spacing_zyx, z_margin_mm=SATELLITE_MM)
    distance = ndi.distance_transform_edt(labels[region] != index, sampling=spacing_zyx)
    near = np.unique(labels[region][distance <= SATELLITE_MM])
    result = np.zeros(count, dtype=bool)
    result[near[near > 0] - 1] = True
    return result


def delineate(seeds: np.ndarray, hu: np.ndarray, brain: np.ndarray, spacing_zyx) -> np.ndarray:
    """Grow ``seeds`` to the half-way HU between the clot and the tissue around it.

    Growth reaches ``GROWTH_MM`` in plane from the seeds of the same or an
    adjacent slice, so the hematoma's top and bottom slices (thinned by
    partial volume across the slab) are delineated too.
    """
    size = window_size(spacing_zyx, z_radius_voxels=0)
    labels, _ = ndi.label(seeds, structure=_CONNECTIVITY)
    grown = np.zeros_like(seeds)
    reach_mm = max(GROWTH_MM, SURROUND_MM[1]) + 2 * spacing_zyx[1]
    # Each kept component is delineated in its own box with its own edge threshold: clots differ in density.
    for index, piece in enumerate(ndi.find_objects(labels), start=1):
        region = _expand(piece, reach_mm, seeds.shape, spacing_zyx)
        own, h, b = labels[region] == index, hu[region], brain[region]
        same_slice = _inplane_distance(own, spacing_zyx)
        near_slices = _inplane_distance(ndi.maximum_filter(own, size=(3, 1, 1)), spacing_zyx)
        shell = (same_slice > SURROUND_MM[0]) & (same_slice <= SURROUND_MM[1]) & b & (h < CALCIFICATION_HU)
        clot_hu = float(np.median(h[own]))
        around_hu = float(np.median(h[shell])) if shell.any() else 30.0
        edge = float(np.clip(around_hu + EDGE_FRACTION * (clot_hu - around_hu), *EDGE_HU_BOUNDS))
        local_mean = masked_mean(h, b, size)
        # Growth stops short of the skull and of calcifications (their partial volume looks like blood).
        dense_rim = near_calcification(h, b, spacing_zyx, across_slices=False)
        allowed = (near_slices <= GROWTH_MM) & b & (local_mean >= edge) & (local_mean <= CANDIDATE_HU[1]) & ~dense_rim
        reached = _reconstruct(own, allowed | own)
        # Hypodense islands of a heterogeneous clot (blend sign) that open to its edge are
        # concavities of the mask: close them, but only over tissue denser than edema and white matter.
        islands = close_inplane(reached, ISLAND_MM, spacing_zyx) & b & (local_mean >= ISLAND_MIN_HU) & (local_mean <= CANDIDATE_HU[1])
        grown[region] |= reached | islands
    return finish_mask(grown, brain, spacing_zyx)


def finish_mask(mask: np.ndarray, brain: np.ndarray, spacing_zyx) -> np.ndarray:
    """Close small gaps and fill holes slice by slice, inside the brain (in the mask's bounding box)."""
    if not mask.any():
        return mask
    region = bounding_box(mask, margin=(0,) + box_size(2 * CLOSING_MM, spacing_zyx)[1:])
    finished = np.zeros_like(mask)
    closed = close_inplane(mask[region], CLOSING_MM, spacing_zyx) & brain[region]
    finished[region] = fill_holes_inplane(closed)
    return finished


def bounding_box(mask: np.ndarray, margin=(1, 8, 8)) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask``, widened by ``margin`` voxels (whole array if empty)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for axis, extra in enumerate(margin):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.nonzero(mask.any(axis=other))[0]
        box.append(slice(max(present[0] - extra, 0), min(present[-1] + extra + 1, mask.shape[axis])))
    return tuple(box)


def _expand(piece: tuple[slice, ...], margin_mm: float, shape, spacing_zyx, z_margin_mm: float = 0.0) -> tuple[slice, ...]:
    extra = [max(int(np.ceil(z_margin_mm / spacing_zyx[0])), 1)] + [int(np.ceil(margin_mm / s)) for s in spacing_zyx[1:]]
    return tuple(slice(max(p.start - e, 0), min(p.stop + e, n)) for p, e, n in zip(piece, extra, shape))


def _inplane_distance(mask: np.ndarray, spacing_zyx) -> np.ndarray:
    """In-plane distance (mm) to the nearest voxel of ``mask`` in the same slice (inf where a slice has none)."""
    # A huge z sampling turns the 3D transform into a stack of 2D ones in one call.
    distance = ndi.distance_transform_edt(~mask, sampling=(1e6, spacing_zyx[1], spacing_zyx[2]))
    distance[distance >= 1e5] = np.inf
    return distance


def _reconstruct(seeds: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Connected parts of ``allowed`` that touch ``seeds`` (morphological reconstruction)."""
    labels, _ = ndi.label(allowed, structure=_CONNECTIVITY)
    touched = np.unique(labels[seeds & allowed])
    touched = touched[touched > 0]
    return np.isin(labels, touched)


__all__ = [
    "NoHemorrhageWarning",
    "bounding_box",
    "candidate_voxels",
    "delineate",
    "finish_mask",
    "keep_index_hematoma",
    "mask_for_case",
    "rule_based_mask",
    "segment_hemorrhage",
]
