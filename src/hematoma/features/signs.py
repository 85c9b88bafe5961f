"""NCCT signs of hematoma expansion (``sign_`` columns) from a CT and its hematoma mask.

Definitions follow Morotti et al., "Standards for detecting, interpreting, and
reporting noncontrast CT markers of intracerebral hemorrhage expansion"
(Ann Neurol 2019) and the originals it cites.  Every choice a definition leaves
open is a field of :class:`SignSettings`, with the published value as default.

Preparation.  Both images are put in LPS orientation (rows increase
posteriorly, whatever the input's direction matrix), cropped around the mask;
the largest mask component (8-connected in plane, face-connected across
slices) is the main clot, and its holes are filled slice by slice (a segmenter
may leave a very hypodense core out).  The CT is smoothed in plane (Gaussian,
``smoothing_sigma_mm``, never under ``smoothing_min_sigma_px``): CT noise
(SD ~5 HU) would otherwise make specks; contrasts are read on the unsmoothed
CT as region medians.

Hypodense blood outside the mask.  Li et al. (Stroke 2015) read the blend
sign's hypoattenuating part as hematoma, and acute blood is 40-90 HU against
20-45 HU for parenchyma and 5-25 HU for oedema (Morotti 2019 HU facts); a
segmenter whose blood threshold lies above that part leaves it out.  So before
analysis, per axial slice, the main clot takes in the pixels of the smoothed CT
that are blood yet hypodense relative to it: at least ``extension_min_hu`` (40
HU, the low end of acute blood, above oedema) and ``extension_above_parenchyma_hu``
(10 HU, twice CT noise) above the parenchyma (median 15-50 HU tissue 5-15 mm
around the clot), below the clot's reference by ``hypodensity_min_contrast_hu``,
within ``extension_mm`` (5 mm) of the mask and 8-connected to it, not next to
other dense blood (a satellite's blurred rim), in pieces reaching the blend's
minimum depth beyond the mask: the partial-volume rim, one blur wide, and
normal brain, at or below the threshold, stay out.  Published ranges overlap
(grey matter up to 45 HU): hypodense blood at parenchyma density cannot be
told from brain by its HU and stays out.

Hypodense regions (per axial slice).  The dense clot's HU (reference) is the
median of the smoothed clot interior (``edge_mm`` in from its outline, out of
the partial-volume rim) within ``hypodensity_min_contrast_hu`` of its 90th
percentile.  Candidates are connected regions of the filled clot darker than
reference - ``hypodensity_min_contrast_hu``, at least ``min_region_area_mm2``;
a region's contrast is the reference minus its median HU ``edge_mm`` in from
its edge, and its extent is what lies below half-way between the two (half
maximum).  It is *encapsulated* when it does not reach the filled clot's
in-plane outline; in ``mode="slice"`` (default: readers judge axial slices) a
region is encapsulated when it is on one slice, in ``mode="3d"`` only when it
is on every slice it spans and the clot covers it on the slices above and below.  Its *margin* is the width of the step to the dense
clot (contrast / median HU gradient along the interface, away from the clot's
outline).

* hypodensity (Boulouis et al., JAMA Neurol 2016): an encapsulated region.
  Boulouis sets no minimum; we use 10 HU (twice CT noise, so that noise is not
  a "hypodensity"; still below the 18 and 28 HU of the blend and black hole
  signs, which are special hypodensities) and ``min_region_area_mm2`` = 5 mm²
  (a ~2.5 mm disc: two pixels at 1.8 mm in plane, the coarsest grid we read).
* black hole (Li et al., Stroke 2016): an encapsulated region >= 28 HU darker
  than the clot.  Its shape (round, oval, rod-like) is not restricted: the
  three shapes leave almost none out.
* blend (Li et al., Stroke 2015): a region >= 18 HU darker than the clot that
  reaches the clot's outline, with a well-defined margin: a step no wider than
  ``blend_max_margin_mm`` (or ``blend_max_margin_px`` pixels on coarse grids),
  running along at most ``blend_max_border_fraction`` of the outline and
  reaching at least ``blend_min_depth_mm`` (or ``blend_min_depth_px`` pixels)
  into the clot.  Partial volume at a clot's edge fades gradually, forms a rim
  all around or a thin band along the outline: not blend.
* swirl (Selariu et al., BMC Neurol 2012): an encapsulated region, or an open
  one with a well-defined margin, hypo- or iso-attenuating relative to brain
  parenchyma: its HU at most ``swirl_max_hu`` (45 HU, the top of normal
  parenchyma, grey matter 35-45 HU).  Iso-attenuating means like any normal
  brain, grey matter included: the median of the tissue around a clot is mostly
  white matter and oedema (20-30 HU) and would call grey-matter density hyperdense.
* fluid level (Morotti 2019; Barras 2009 density 5): on an axial slice, the
  clot interior split by a row into an anterior and a posterior part with the
  posterior >= ``fluid_level_min_contrast_hu`` denser (supine: sediment lies
  posterior, LPS +y), the interface fitted as a line (scatter <=
  ``fluid_level_max_rms_mm``, tilt <= ``fluid_level_max_tilt_deg`` from the
  left-right axis) separating dark from dense for >= 90 % of the interior.

Small bleeds.  Blood-density voxels (smoothed CT within ``blood_hu``, acute
blood 50-90 HU) within ``search_mm`` of the main clot, plus the mask's other
components, apart from the main clot on at least one axial slice (``mode=
"slice"``) or in 3D; those touching calcification or bone (> ``calcification_hu``)
are its partial-volume rim and dropped.  Size = largest in-plane extent.

* satellite (Shimoda et al., AJNR 2017): a bleed <= 10 mm across, 1-20 mm from
  the main clot (edge to edge, in plane).
* island (Li et al., Stroke 2017): >= 3 separate bleeds <= ``island_max_diameter_mm``
  (Li gives no size; we use the satellite's 10 mm), or >= 4 counting the
  bubbles budding from the clot on its richest slice (what an opening with a
  10 mm disc removes, standing out >= ``island_min_height_mm``).

Barras grades (Barras et al., Stroke 2009), one mapping shared word for word by the generator
(hematoma.synthetic.sign_rendering) and the detector (hematoma.features.signs).  Barras's 5-point
scales add one degree of margin irregularity (shape) or of density variation (density) per
category; categories 1-2 are regular / homogeneous and 3-5 irregular / heterogeneous; density 5 is a
fluid level and shape 5 has separated parts.  The scales are visual (no numbers published): the
cut-offs below are ours, one category per step, mapped to what both sides measure:

* barras_shape: 5 if any small bleed lies separate from the main clot (island or satellite: the
  "separated parts"); else from the solidity s of the main clot on its largest axial slice (pixels
  over the lattice points of the convex hull of the pixel centres, so a digital disc scores 1 at any
  pixel size): 1 if s >= 0.93 (round or ellipsoid), 2 if 0.87 <= s < 0.93, 3 if 0.80 <= s < 0.87,
  4 if s < 0.80 (lobulated).
* barras_density: 5 if a fluid level; else from the hypodense fraction f (volume of the hypodense
  regions, >= 10 HU below the clot, over the clot's volume): 1 if there is none (homogeneous), 2 if
  f < 0.08, 3 if 0.08 <= f < 0.20, 4 if f >= 0.20 (large hypodense areas).

  Here the hypodense regions are the 3D groups of encapsulated regions and of open ones with a
  well-defined margin (contrast >= ``hypodensity_min_contrast_hu``), the separate bleeds those of
  the satellite and island signs; thresholds ``barras_solidity`` and ``barras_density_fraction``.

BAT score (Morotti et al., Stroke 2018): blend 1 point, any hypodensity 2,
onset to CT < 2.5 h 2; missing onset time -> NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..errors import InputError
from ..segmentation.brain import fill_holes_inplane
from ..shape import solidity
from . import sign_regions as sr

PREFIX = "sign_"
SIGNS = ("hypodensity", "black_hole", "blend", "swirl", "fluid_level", "island", "satellite")
SIGN_COLUMNS = (
    "sign_hypodensity", "sign_hypodensity_count", "sign_hypodensity_volume_ml", "sign_hypodensity_contrast_hu",
    "sign_black_hole", "sign_black_hole_contrast_hu",
    "sign_blend", "sign_blend_contrast_hu", "sign_blend_margin_mm",
    "sign_swirl", "sign_swirl_hu",
    "sign_fluid_level", "sign_fluid_level_step_hu",
    "sign_island", "sign_island_count", "sign_island_separate_count",
    "sign_satellite", "sign_satellite_count", "sign_satellite_distance_mm",
    "sign_barras_shape", "sign_barras_shape_solidity", "sign_barras_density",
)
BAT_COLUMN = "bat_score"
#: The parenchyma's HU when too little of it surrounds the clot (normal brain 20-45 HU).
_PARENCHYMA_HU = (15.0, 50.0)
_PARENCHYMA_DEFAULT_HU = 35.0
_PARENCHYMA_SHELL_MM = (5.0, 15.0)


@dataclass(frozen=True)
class SignSettings:
    """Every choice the published definitions leave open (see the module docstring for each one)."""

    mode: Literal["slice", "3d"] = "slice"  # encapsulation and separation judged per axial slice, or in 3D
    smoothing_sigma_mm: float = 0.75  # in-plane Gaussian against CT noise (SD ~5 HU)
    smoothing_min_sigma_px: float = 0.6  # ... at least this many pixels on coarse grids
    edge_mm: float = 1.0  # partial-volume rim left out where HU are read (in-plane CT blur ~1 mm)
    min_region_area_mm2: float = 5.0  # smallest region or bleed on a slice (none published)
    hypodensity_min_contrast_hu: float = 10.0  # none published (Boulouis 2016): twice CT noise
    black_hole_min_contrast_hu: float = 28.0  # Li et al., Stroke 2016
    blend_min_contrast_hu: float = 18.0  # Li et al., Stroke 2015
    blend_max_margin_mm: float = 3.0  # "well-defined margin" (Li 2015): step width at most this ...
    blend_max_margin_px: float = 2.75  # ... or this many pixels, whichever is wider
    blend_max_border_fraction: float = 0.6  # a dark rim all around the clot is partial volume
    blend_min_depth_mm: float = 3.0  # ... and so is a dark band along the outline: the region reaches this deep
    blend_min_depth_px: float = 2.0  # ... or this many pixels, whichever is deeper
    swirl_max_hu: float = 45.0  # "iso-attenuating" to parenchyma: no denser than grey matter (35-45 HU)
    fluid_level_min_contrast_hu: float = 18.0  # none published: the blend sign's step
    fluid_level_max_rms_mm: float = 1.5  # "straight line": interface scatter (or one pixel)
    fluid_level_max_tilt_deg: float = 20.0  # line roughly perpendicular to the AP axis
    blood_hu: tuple[float, float] = (50.0, 90.0)  # acute blood (Morotti 2019 HU facts: 50-90, often 60-80)
    calcification_hu: float = 100.0  # denser than acute blood
    search_mm: float = 20.0  # small bleeds looked for in the CT this far from the clot
    satellite_max_diameter_mm: float = 10.0  # Shimoda et al., AJNR 2017
    satellite_distance_mm: tuple[float, float] = (1.0, 20.0)  # Shimoda et al., AJNR 2017
    island_max_diameter_mm: float = 10.0  # "small" (Li 2017 gives no size): the satellite's
    island_min_separate: int = 3  # Li et al., Stroke 2017
    island_min_total: int = 4  # Li et al., Stroke 2017
    island_min_height_mm: float = 2.5  # a bubble stands out this far from the clot
    barras_solidity: tuple[float, float, float] = (0.93, 0.87, 0.80)  # shape grades 1|2|3|4 (5: separated parts)
    barras_density_fraction: tuple[float, float] = (0.08, 0.20)  # density grades 2|3|4 (5: fluid level)
    extension_min_hu: float = 40.0  # clot extension: at least acute blood's lowest HU (40-90 HU) ...
    extension_above_parenchyma_hu: float = 10.0  # ... and this far above the parenchyma (twice CT noise)
    extension_mm: float = 5.0  # ... within this distance (in plane) of the given mask

    def __post_init__(self):
        if self.mode not in ("slice", "3d"):
            raise InputError(None, f"sign mode must be 'slice' or '3d', got {self.mode!r}")

    def as_record(self) -> dict:
        """The settings as a JSON-able dict (provenance)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict) -> SignSettings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(record) - set(known))
        if unknown:
            raise InputError(None, f"unknown sign settings: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


@dataclass
class SignFinding:
    """A sign found on a CT: the axial slice that shows it best and its region there.

    ``slice_index`` indexes the input CT's third axis (k) and ``region`` is a
    bool array shaped like ``sitk.GetArrayFromImage(ct)[slice_index]``: the
    usual axial acquisition draws directly.
    """

    sign: str
    slice_index: int
    region: np.ndarray
    measurement: str
    value: float


# --------------------------------------------------------------------------- preparation
@dataclass
class _Case:
    hu: np.ndarray
    smooth: np.ndarray
    main: np.ndarray
    filled: np.ndarray
    other: np.ndarray
    spacing_zyx: tuple[float, float, float]
    offset: tuple[int, int, int]
    oriented: sitk.Image
    original: sitk.Image


def _oriented(image: sitk.Image) -> sitk.Image:
    if image.GetDimension() == 2:
        return sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InputError(None, f"expected a 2D or 3D image, got {image.GetDimension()}D")
    return sitk.DICOMOrient(image, "LPS")


def _prepare(ct: sitk.Image, mask: sitk.Image, settings: SignSettings) -> _Case | None:
    if ct.GetSize() != mask.GetSize():
        raise InputError(None, f"CT and mask sizes differ: {ct.GetSize()} vs {mask.GetSize()}")
    if not np.allclose(ct.GetSpacing(), mask.GetSpacing(), rtol=1e-3):
        raise InputError(None, f"CT and mask spacings differ: {ct.GetSpacing()} vs {mask.GetSpacing()}")
    oriented = _oriented(ct)
    labels = sitk.GetArrayFromImage(_oriented(mask)) > 0
    if not labels.any():
        return None
    spacing = oriented.GetSpacing()
    spacing_zyx = (float(spacing[2]) if ct.GetDimension() == 3 else 1.0, float(spacing[1]), float(spacing[0]))
    # Crop: the mask's box widened by the search distance (and the smoothing's reach).
    margin_mm = settings.search_mm + 3 * settings.smoothing_sigma_mm + 2 * max(spacing_zyx[1:])
    box = ndi.find_objects(labels.astype(np.uint8))[0]
    window = tuple(
        slice(max(b.start - math.ceil(margin_mm / s), 0), min(b.stop + math.ceil(margin_mm / s), n))
        for b, s, n in zip(box, spacing_zyx, labels.shape)
    )
    hu = sitk.GetArrayFromImage(oriented)[window].astype(np.float32)
    labels = labels[window]
    components, count = ndi.label(labels, sr.CONNECTIVITY_3D)
    sizes = ndi.sum(labels, components, range(1, count + 1))
    main = components == 1 + int(np.argmax(sizes))
    smooth = sr.smooth_inplane(hu, spacing_zyx, settings.smoothing_sigma_mm, settings.smoothing_min_sigma_px)
    other = labels & ~main
    # Hypodense blood a segmenter left out (below its blood threshold) goes back into the clot.
    threshold = max(settings.extension_min_hu,
                    _parenchyma_hu(fill_holes_inplane(main), smooth, spacing_zyx) + settings.extension_above_parenchyma_hu)
    main = main | sr.hypodense_blood(main, other, smooth, spacing_zyx, threshold, settings)
    return _Case(
        hu=hu, smooth=smooth, main=main, filled=fill_holes_inplane(main), other=other, spacing_zyx=spacing_zyx,
        offset=tuple(w.start for w in window), oriented=oriented, original=ct,
    )


def _parenchyma_hu(filled: np.ndarray, smooth: np.ndarray, spacing_zyx) -> float:
    """Median HU of the brain-like tissue in a shell around the clot (normal parenchyma 20-45 HU)."""
    # In-plane distance: a huge slice spacing keeps the transform within each slice.
    distance = ndi.distance_transform_edt(~filled, sampling=(1e6,) + tuple(spacing_zyx[1:]))
    shell = (distance >= _PARENCHYMA_SHELL_MM[0]) & (distance <= _PARENCHYMA_SHELL_MM[1])
    values = smooth[shell]
    values = values[(values >= _PARENCHYMA_HU[0]) & (values <= _PARENCHYMA_HU[1])]
    return float(np.median(values)) if values.size >= 20 else _PARENCHYMA_DEFAULT_HU


# --------------------------------------------------------------------------- analysis
@dataclass
class _Analysis:
    values: dict[str, float]
    best: dict[str, tuple[int, np.ndarray, str, float]]  # sign -> (slice in the crop, region, measurement, value)


def _nan_values() -> dict[str, float]:
    values = dict.fromkeys(SIGN_COLUMNS, math.nan)
    for sign in SIGNS:
        values[PREFIX + sign] = 0.0
    return values


def _group_3d(pieces, shape) -> np.ndarray:
    """Label of each piece's 3D region (pieces on adjacent slices that overlap are one region)."""
    union = np.zeros(shape, dtype=bool)
    for piece in pieces:
        union[piece.slice_index] |= piece.region
    labels, _ = ndi.label(union, sr.CONNECTIVITY_3D)
    return labels, np.array([int(labels[p.slice_index][p.region].max()) for p in pieces], dtype=int)


def _analyse(ct: sitk.Image, mask: sitk.Image, settings: SignSettings) -> tuple[_Analysis, _Case | None]:
    case = _prepare(ct, mask, settings)
    values = _nan_values()
    best: dict[str, tuple[int, np.ndarray, str, float]] = {}
    if case is None:
        return _Analysis(values, best), None
    voxel_ml = float(np.prod(case.spacing_zyx)) / 1000.0
    pieces = sr.hypodense_pieces(case.hu, case.smooth, case.filled, case.spacing_zyx, settings)
    labels, group = _group_3d(pieces, case.hu.shape)
    open_groups = {g for p, g in zip(pieces, group) if not p.encapsulated}
    if settings.mode == "3d":  # open also through the clot's top or bottom
        open_groups |= {g for p, g in zip(pieces, group) if _uncovered(p, case.filled)}
        encapsulated = [p.encapsulated and g not in open_groups for p, g in zip(pieces, group)]
    else:
        encapsulated = [p.encapsulated for p in pieces]
    enclosed_groups = {g for e, g in zip(encapsulated, group) if e}

    pixel_mm = max(case.spacing_zyx[1:])

    def sharp(p) -> bool:
        """An open region distinct from the partial-volume rim: deep, local, with a well-defined margin."""
        return (
            p.margin_mm <= max(settings.blend_max_margin_mm, settings.blend_max_margin_px * pixel_mm)
            and p.border_fraction <= settings.blend_max_border_fraction
            and p.depth_mm >= max(settings.blend_min_depth_mm, settings.blend_min_depth_px * pixel_mm)
        )

    def keep(sign, candidates, measurement, key):
        if candidates:
            chosen = max(candidates, key=key)
            best[sign] = (chosen.slice_index, chosen.region, measurement, getattr(chosen, measurement))

    # hypodensity, black hole
    enclosed = [p for p, e in zip(pieces, encapsulated) if e]
    values["sign_hypodensity_count"] = float(len(enclosed_groups))
    if enclosed:
        values["sign_hypodensity"] = 1.0
        volumes = {g: float((labels == g).sum()) * voxel_ml for g in enclosed_groups}
        values["sign_hypodensity_volume_ml"] = max(volumes.values())
        values["sign_hypodensity_contrast_hu"] = max(p.contrast_hu for p in enclosed)
        values["sign_black_hole_contrast_hu"] = values["sign_hypodensity_contrast_hu"]
        keep("hypodensity", enclosed, "contrast_hu", lambda p: p.area_mm2)
        holes = [p for p in enclosed if p.contrast_hu >= settings.black_hole_min_contrast_hu]
        values["sign_black_hole"] = float(bool(holes))
        keep("black_hole", holes, "contrast_hu", lambda p: p.contrast_hu)
    # blend
    levels = sr.fluid_levels(case.smooth, case.filled, case.spacing_zyx, settings)
    open_sharp = [
        p for p, e in zip(pieces, encapsulated)
        if not e and not p.encapsulated and sharp(p) and not _is_level(p, levels, case.spacing_zyx, settings)
    ]
    if open_sharp:
        top = max(open_sharp, key=lambda p: p.contrast_hu)
        values["sign_blend_contrast_hu"], values["sign_blend_margin_mm"] = top.contrast_hu, top.margin_mm
        # On a clot's top or bottom slice the slab's partial volume darkens part of it: not a blend.
        blends = [p for p in open_sharp
                  if p.contrast_hu >= settings.blend_min_contrast_hu and not _uncovered(p, case.filled, 1.0)]
        values["sign_blend"] = float(bool(blends))
        keep("blend", blends, "contrast_hu", lambda p: p.contrast_hu)
    # swirl
    visible = enclosed + open_sharp
    if visible:
        values["sign_swirl_hu"] = min(p.core_hu for p in visible)
        swirls = [p for p in visible if p.core_hu <= settings.swirl_max_hu]
        values["sign_swirl"] = float(bool(swirls))
        keep("swirl", swirls, "core_hu", lambda p: -p.core_hu)
    # fluid level
    if levels:
        values["sign_fluid_level"] = 1.0
        values["sign_fluid_level_step_hu"] = max(f.step_hu for f in levels)
        keep("fluid_level", levels, "step_hu", lambda f: f.step_hu)
    # small bleeds: satellites and islands
    calcification = case.smooth > settings.calcification_hu
    bleeds = sr.separate_bleeds(case.smooth, case.other, case.main, case.spacing_zyx, settings, calcification)
    low, high = settings.satellite_distance_mm
    satellites = [b for b in bleeds if b.diameter_mm <= settings.satellite_max_diameter_mm and low <= b.distance_mm <= high]
    values["sign_satellite_count"] = float(len(satellites))
    values["sign_satellite"] = float(bool(satellites))
    if satellites:
        values["sign_satellite_distance_mm"] = min(b.distance_mm for b in satellites)
        keep("satellite", satellites, "distance_mm", lambda b: b.area_mm2)
    islands = [b for b in bleeds if b.diameter_mm <= settings.island_max_diameter_mm]
    buds = sr.sprouts(case.filled, case.spacing_zyx, settings)
    per_slice: dict[int, list[np.ndarray]] = {}
    for z, bud in buds:
        per_slice.setdefault(z, []).append(bud)
    richest = max(per_slice, key=lambda z: len(per_slice[z]), default=None)
    total = len(islands) + (len(per_slice[richest]) if richest is not None else 0)
    values["sign_island_separate_count"] = float(len(islands))
    values["sign_island_count"] = float(total)
    values["sign_island"] = float(len(islands) >= settings.island_min_separate or total >= settings.island_min_total)
    if values["sign_island"]:
        best["island"] = _island_view(islands, per_slice, total)
    # Barras grades
    values.update(_barras(case, pieces, group, encapsulated, sharp, labels, bool(levels), bleeds, settings))
    return _Analysis(values, best), case


def _uncovered(piece, filled, share: float = 0.5) -> bool:
    """Whether the slice above or below has no clot over more than ``share`` of a region (1: over none of it)."""
    z = piece.slice_index
    for other in (z - 1, z + 1):
        cover = filled[other] if 0 <= other < filled.shape[0] else np.zeros_like(piece.region)
        covered = (piece.region & cover).sum()
        if covered < (1.0 - share) * piece.region.sum() or not covered:
            return True
    return False


def _is_level(piece, levels, spacing_zyx, settings) -> bool:
    """Whether an open hypodense region is mostly the upper layer of a fluid level (not a blend)."""
    tolerance = settings.edge_mm + max(spacing_zyx[1:])
    return any(level.in_front(piece.region, spacing_zyx[1:], tolerance) >= 0.5 for level in levels)


def _island_view(islands, per_slice, total) -> tuple[int, np.ndarray, str, float]:
    """The slice showing most islands (separate bleeds and buds), with all of them there."""
    shown: dict[int, list[np.ndarray]] = {z: list(b) for z, b in per_slice.items()}
    for bleed in islands:
        shown.setdefault(bleed.slice_index, []).append(bleed.region)
    z = max(shown, key=lambda k: len(shown[k]))
    return z, np.logical_or.reduce(shown[z]), "count", float(total)


def _barras(case, pieces, group, encapsulated, sharp, labels, fluid, bleeds, settings) -> dict[str, float]:
    areas = case.filled.sum(axis=(1, 2))
    s = solidity(case.filled[int(np.argmax(areas))])
    t1, t2, t3 = settings.barras_solidity
    shape = 5 if bleeds else 1 if s >= t1 else 2 if s >= t2 else 3 if s >= t3 else 4
    foci = {g for p, g, e in zip(pieces, group, encapsulated) if e or sharp(p)}
    fraction = sum(float((labels == g).sum()) for g in foci) / max(float(case.filled.sum()), 1.0)
    low, high = settings.barras_density_fraction
    density = 5 if fluid else 1 if not foci else 2 if fraction < low else 3 if fraction < high else 4
    return {"sign_barras_shape": float(shape), "sign_barras_shape_solidity": s, "sign_barras_density": float(density)}


# --------------------------------------------------------------------------- public API
def compute_signs(ct: sitk.Image, mask: sitk.Image, settings: SignSettings = SignSettings()) -> dict[str, float]:
    """The ``sign_`` columns of one case (flags 0/1, measurements; NaN where there is nothing to measure)."""
    return _analyse(ct, mask, settings)[0].values


def find_signs(ct: sitk.Image, mask: sitk.Image, settings: SignSettings = SignSettings()) -> list[SignFinding]:
    """Each sign present, with the axial slice that shows it best and its region outlined there."""
    return analyse_signs(ct, mask, settings)[1]


def analyse_signs(ct: sitk.Image, mask: sitk.Image,
                  settings: SignSettings = SignSettings()) -> tuple[dict[str, float], list[SignFinding]]:
    """Both :func:`compute_signs`' columns and :func:`find_signs`' findings, from one analysis."""
    analysis, case = _analyse(ct, mask, settings)
    findings = []
    for sign in SIGNS:
        if sign not in analysis.best:
            continue
        z, region, measurement, value = analysis.best[sign]
        k, region2d = _to_input_grid(case, z, region)
        findings.append(SignFinding(sign, k, region2d, measurement, float(value)))
    return analysis.values, findings


def _to_input_grid(case: _Case, z: int, region: np.ndarray) -> tuple[int, np.ndarray]:
    """A 2D region of the cropped oriented slice ``z`` on the input CT's own grid (slice index, bool array)."""
    rows, cols = np.nonzero(region)
    oz, oy, ox = case.offset
    index = np.stack([cols + ox, rows + oy, np.full_like(rows, z + oz)], axis=1).astype(float)  # (i, j, k)
    geometry = case.oriented
    points = np.asarray(geometry.GetOrigin()) + (
        np.asarray(geometry.GetDirection()).reshape(3, 3) @ (index * np.asarray(geometry.GetSpacing())).T
    ).T
    original = case.original
    if original.GetDimension() == 2:
        out = np.zeros(sitk.GetArrayViewFromImage(original).shape, dtype=bool)
        out[rows + oy, cols + ox] = True
        return 0, out
    direction = np.asarray(original.GetDirection()).reshape(3, 3)
    ijk = np.rint(
        (np.linalg.inv(direction) @ (points - np.asarray(original.GetOrigin())).T).T / np.asarray(original.GetSpacing())
    ).astype(int)
    k = int(np.bincount(ijk[:, 2]).argmax())  # one value for an axial acquisition
    size = original.GetSize()
    out = np.zeros((size[1], size[0]), dtype=bool)
    on = ijk[:, 2] == k
    out[ijk[on, 1], ijk[on, 0]] = True
    return k, out


def bat_score(blend: float, hypodensity: float, onset_to_ct_hours: float | None) -> float:
    """BAT score (Morotti et al., Stroke 2018): blend 1, any hypodensity 2, onset-to-CT < 2.5 h 2 (0-5).

    NaN when the onset time (or a sign) is missing.
    """
    parts = (blend, hypodensity, onset_to_ct_hours)
    if any(p is None or (isinstance(p, float) and math.isnan(p)) for p in parts):
        return math.nan
    return float(1 * (blend >= 0.5) + 2 * (hypodensity >= 0.5) + 2 * (float(onset_to_ct_hours) < 2.5))
