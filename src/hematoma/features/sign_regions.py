"""The regions behind the NCCT signs of :mod:`hematoma.features.signs`.

Everything here works on arrays (z, y, x) in LPS orientation (row index
increasing = posterior, slice index increasing = superior), cropped around the
hematoma, with the spacing in millimetres; :mod:`~hematoma.features.signs`
orients the images, holds the settings and turns these regions into columns.

* :func:`hypodense_blood`: hypodense blood touching the clot that a segmenter's mask left out;
* :func:`hypodense_pieces`: per axial slice, the regions darker than the clot,
  each with its contrast, whether it is encapsulated and how sharp its margin is;
* :func:`fluid_levels`: per axial slice, a straight antero-posterior density step;
* :func:`separate_bleeds` and :func:`sprouts`: small bleeds apart from the main
  clot, and small bubbles budding from it;
* :func:`solidity`: the area of a slice's region over that of its convex hull.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

_PLANE_8 = np.ones((3, 3), dtype=bool)
_PLANE_4 = ndi.generate_binary_structure(2, 1)
#: 8-connected in plane, face-connected across slices (as the segmenter labels its components).
CONNECTIVITY_3D = np.zeros((3, 3, 3), dtype=bool)
CONNECTIVITY_3D[1] = True
CONNECTIVITY_3D[0, 1, 1] = CONNECTIVITY_3D[2, 1, 1] = True


def smooth_inplane(hu: np.ndarray, spacing_zyx, sigma_mm: float, min_sigma_px: float) -> np.ndarray:
    """Gaussian smoothing in each axial plane; sigma in mm, never below ``min_sigma_px`` pixels."""
    sigma = [0.0] + [max(sigma_mm / s, min_sigma_px) for s in spacing_zyx[1:]]
    return ndi.gaussian_filter(hu.astype(np.float32, copy=False), sigma)


def inner(region: np.ndarray, depth_mm: float, spacing_yx) -> np.ndarray:
    """The pixels of a 2D region at least ``depth_mm`` from its outline (at least its edge pixels go)."""
    if not region.any():
        return region.copy()
    distance = ndi.distance_transform_edt(region, sampling=spacing_yx)
    # A pixel's centre lies half a pixel inside the outline it touches.
    return distance - 0.5 * min(spacing_yx) >= max(depth_mm, 0.51 * max(spacing_yx))


def border(region: np.ndarray) -> np.ndarray:
    """The pixels of a 2D region that have a 4-neighbour outside it."""
    return region & ~ndi.binary_erosion(region, _PLANE_4, border_value=0)


def feret_mm(pixels: np.ndarray, spacing_yx) -> float:
    """The largest extent (mm) of a set of pixels given as (row, col) indices, pixel size included."""
    points = pixels * np.asarray(spacing_yx, dtype=float)
    if len(points) > 400:  # the diameter is reached on the hull: prune the interior first
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:
            pass
    gaps = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((gaps ** 2).sum(-1)).max()) + float(np.mean(spacing_yx))


# --------------------------------------------------------------------------- hypodense blood outside the mask
def hypodense_blood(main, other, smooth, spacing_zyx, low_hu: float, settings) -> np.ndarray:
    """Hypodense blood touching the clot that its mask leaves out (see the signs module's docstring).

    Per axial slice: pixels of the smoothed CT at least ``low_hu`` (acute blood, clearly denser than
    the parenchyma) and hypodense relative to the clot (below its reference by
    ``hypodensity_min_contrast_hu``), within ``extension_mm`` of the clot, 8-connected to it, away from
    other dense blood (a satellite's blurred rim is not the clot's), in pieces reaching at least the
    blend's minimum depth beyond the mask (a plateau; the partial-volume rim is one blur wide).
    """
    spacing_yx = spacing_zyx[1:]
    added = np.zeros_like(main)
    if not main.any():
        return added
    values = smooth[main]
    reference = float(np.median(values[values >= np.percentile(values, 90) - settings.hypodensity_min_contrast_hu]))
    high = reference - settings.hypodensity_min_contrast_hu
    if high <= low_hu:
        return added
    depth = max(settings.blend_min_depth_mm, settings.blend_min_depth_px * max(spacing_yx))
    elsewhere = ((smooth >= high) & ~main) | other
    for z in np.flatnonzero(main.any(axis=(1, 2))):
        distance = ndi.distance_transform_edt(~main[z], sampling=spacing_yx) - 0.5 * min(spacing_yx)
        candidate = ((smooth[z] >= low_hu) & (smooth[z] < high) & (distance <= settings.extension_mm)
                     & ~ndi.binary_dilation(elsewhere[z], _PLANE_8))
        labels, _ = ndi.label(candidate, _PLANE_8)
        touching = np.unique(labels[ndi.binary_dilation(main[z], _PLANE_8) & candidate])
        for index in touching[touching > 0]:
            piece = labels == index
            if distance[piece].max() >= depth:
                added[z] |= piece
    return added


# --------------------------------------------------------------------------- hypodense regions
@dataclass
class HypodensePiece:
    """A hypodense region on one axial slice of the clot."""

    slice_index: int
    region: np.ndarray  # bool (y, x): the pixels darker than half-way between the region and the clot
    area_mm2: float
    reference_hu: float  # the dense clot on this slice
    core_hu: float  # the region's median HU away from its edge
    contrast_hu: float  # reference_hu - core_hu
    encapsulated: bool  # dense clot all around it, in plane
    border_fraction: float  # share of the clot's outline that the region reaches (0 if encapsulated)
    margin_mm: float  # width of the step from the region to the dense clot (contrast / gradient)
    depth_mm: float  # how far into the clot (from its outline) the region reaches


def slice_reference(smooth2: np.ndarray, interior: np.ndarray, spread_hu: float) -> float:
    """The dense clot's HU on a slice: the median of the pixels within ``spread_hu`` of the 90th percentile."""
    values = smooth2[interior]
    top = float(np.percentile(values, 90))
    return float(np.median(values[values >= top - spread_hu]))


def hypodense_pieces(hu, smooth, filled, spacing_zyx, settings) -> list[HypodensePiece]:
    """The hypodense regions of each axial slice of the filled clot (see the signs module's docstring)."""
    spacing_yx = spacing_zyx[1:]
    pixel_mm2 = spacing_yx[0] * spacing_yx[1]
    pieces = []
    for z in np.flatnonzero(filled.any(axis=(1, 2))):
        clot = filled[z]
        interior = inner(clot, settings.edge_mm, spacing_yx)
        if interior.sum() * pixel_mm2 < 4 * settings.min_region_area_mm2:
            continue  # a clot this small on this slice cannot show a region inside it
        s2, h2 = smooth[z], hu[z]
        reference = slice_reference(s2, interior, settings.hypodensity_min_contrast_hu)
        # Regions are looked for in the interior: the partial-volume rim is dark all around any clot.
        # A region reaching the interior's outline is open to the brain.
        outline = border(interior)
        depth = ndi.distance_transform_edt(clot, sampling=spacing_yx) - 0.5 * min(spacing_yx)
        gradient = np.hypot(*np.gradient(s2, *spacing_yx))
        away = inner(clot, 2 * settings.edge_mm + max(spacing_yx), spacing_yx)
        labels, count = ndi.label(interior & (s2 < reference - settings.hypodensity_min_contrast_hu), _PLANE_8)
        for index in range(1, count + 1):
            candidate = labels == index
            if candidate.sum() * pixel_mm2 < settings.min_region_area_mm2:
                continue
            core = inner(candidate, settings.edge_mm, spacing_yx)
            if core.sum() < 3:  # too thin for an inside: its darker half
                core = candidate & (s2 <= np.median(s2[candidate]))
            core_hu = float(np.median(h2[core]))
            contrast = reference - core_hu
            if contrast < settings.hypodensity_min_contrast_hu:
                continue
            # The region is what lies below half-way between it and the clot (half maximum).
            low = interior & (s2 < reference - contrast / 2)
            low_labels, _ = ndi.label(low, _PLANE_8)
            ids = np.unique(low_labels[candidate & low])
            region = np.isin(low_labels, ids[ids > 0]) | candidate
            touching = region & outline
            encapsulated = not touching.any()
            margin = _margin_mm(region, interior, away, gradient, contrast)
            pieces.append(HypodensePiece(
                slice_index=int(z), region=region, area_mm2=float(region.sum() * pixel_mm2),
                reference_hu=reference, core_hu=core_hu, contrast_hu=float(contrast),
                encapsulated=encapsulated,
                border_fraction=0.0 if encapsulated else float(touching.sum() / max(outline.sum(), 1)),
                margin_mm=margin, depth_mm=float(depth[region].max()),
            ))
    return pieces


def _margin_mm(region, interior, away, gradient, contrast) -> float:
    """Width (mm) of the step between a region and the dense clot, measured away from the clot's outline.

    Along the interface (the pixels either side of the region's edge that are
    inside the clot and not in its partial-volume rim) the HU gradient of a
    sharp step is ``contrast / width``; partial volume at the clot's edge fades
    gradually (large width) or has no interface inside the clot at all (inf).
    """
    dense = interior & ~region
    grown = ndi.binary_dilation(region, _PLANE_4)
    # Away from the clot's outline, whose own edge is steep.
    interface = ((grown & dense) | (region & ndi.binary_dilation(dense, _PLANE_4))) & away
    if interface.sum() < 2:
        return math.inf
    return float(contrast / max(float(np.median(gradient[interface])), 1e-6))


# --------------------------------------------------------------------------- fluid level
@dataclass
class FluidLevel:
    """A straight antero-posterior step on one axial slice: hypodense in front, dense behind."""

    slice_index: int
    region: np.ndarray  # bool (y, x): the hypodense (anterior) part
    step_hu: float  # posterior median - anterior median
    line_rms_mm: float  # scatter of the interface about its fitted line
    tilt_deg: float  # angle of the line from the left-right axis
    line: tuple[float, float]  # the interface y = slope * x + intercept (mm in the slice's pixel frame)

    def in_front(self, region: np.ndarray, spacing_yx, tolerance_mm: float) -> float:
        """The share of a region (any slice) lying in front of this level's line."""
        rows, cols = np.nonzero(region)
        slope, intercept = self.line
        front = (rows + 0.5) * spacing_yx[0] < slope * cols * spacing_yx[1] + intercept + tolerance_mm
        return float(front.mean()) if front.size else 0.0


def fluid_levels(smooth, filled, spacing_zyx, settings) -> list[FluidLevel]:
    """Per slice, the best split of the clot's interior into an anterior and a posterior part (see signs)."""
    sy, sx = spacing_zyx[1:]
    found = []
    for z in np.flatnonzero(filled.any(axis=(1, 2))):
        interior = inner(filled[z], settings.edge_mm, (sy, sx))
        n = int(interior.sum())
        if n * sy * sx < 4 * settings.min_region_area_mm2:
            continue
        rows = np.flatnonzero(interior.any(axis=1))
        values = smooth[z]
        best = None
        for cut in rows[1:]:  # anterior: rows < cut (LPS: row index increases posteriorly)
            front = interior.copy()
            front[cut:] = False
            share = front.sum() / n
            if not 0.1 <= share <= 0.9:
                continue
            step = float(np.median(values[interior & ~front]) - np.median(values[front]))
            if best is None or step > best[0]:
                best = (step, front)
        if best is None or best[0] < settings.fluid_level_min_contrast_hu:
            continue
        step, front = best
        level = float(np.median(values[front]) + step / 2)
        low = interior & (values < level)
        line = _interface_line(low, interior, sy, sx)
        if line is None:
            continue
        rms, tilt, separation, fit = line
        if (rms <= max(settings.fluid_level_max_rms_mm, sy) and tilt <= settings.fluid_level_max_tilt_deg
                and separation >= 0.9):
            found.append(FluidLevel(int(z), low, step, rms, tilt, fit))
    return found


def _interface_line(low, interior, sy, sx):
    """Fit the anterior/posterior interface as a line y(x); None when it does not run across the clot."""
    columns = np.flatnonzero(interior.any(axis=0))
    xs, ys = [], []
    for col in columns:
        inside = np.flatnonzero(interior[:, col])
        dark = low[inside, col]
        if dark.all() or not dark.any():
            continue  # the interface does not cross this column
        xs.append(col * sx)
        ys.append((inside[0] + dark.sum()) * sy)  # the hypodense run from the front, if it is one run
    if len(xs) < max(3, 0.5 * len(columns)):
        return None
    xs, ys = np.asarray(xs), np.asarray(ys)
    slope, intercept = np.polyfit(xs, ys, 1)
    rms = float(np.sqrt(np.mean((ys - (slope * xs + intercept)) ** 2)))
    # How cleanly the line separates dark (in front of it) from dense (behind it).
    rr, cc = np.nonzero(interior)
    in_front = (rr + 0.5) * sy < slope * cc * sx + intercept  # pixel centres: the line runs between rows
    agree = (low[rr, cc] == in_front).mean()
    return rms, float(np.degrees(np.arctan(abs(slope)))), float(agree), (float(slope), float(intercept))


# --------------------------------------------------------------------------- separate bleeds, sprouts
@dataclass
class Bleed:
    """A small bleed apart from the main clot on at least one axial slice."""

    slice_index: int  # the slice where its separate part is largest
    region: np.ndarray  # bool (y, x) on that slice
    diameter_mm: float  # largest in-plane extent over the slices where it is separate
    distance_mm: float  # smallest gap to the main clot where it is separate
    area_mm2: float


def separate_bleeds(smooth, other_mask, main, spacing_zyx, settings, calcification) -> list[Bleed]:
    """Blood-density components (the mask's other components, or the CT near the clot) apart from the main clot."""
    low, high = settings.blood_hu
    spacing_yx = spacing_zyx[1:]
    pixel_mm2 = spacing_yx[0] * spacing_yx[1]
    near = ndi.distance_transform_edt(~main, sampling=spacing_zyx) <= settings.search_mm
    in_ct = ((smooth >= low) & (smooth <= high) & near) | other_mask
    # The mask's own components are separate where the mask says so, even if blurred blood bridges the gap.
    separate = _apart(other_mask & ~main, main, settings.mode) | _apart(in_ct & ~main, main, settings.mode)
    bleeds = []
    bleed_labels, count = ndi.label(separate, CONNECTIVITY_3D)
    dense_rim = ndi.binary_dilation(calcification, CONNECTIVITY_3D) if calcification.any() else calcification
    for index in range(1, count + 1):
        bleed = bleed_labels == index
        if (bleed & dense_rim).any():
            continue  # the partial-volume rim of a calcification or of bone, not blood
        slices = np.flatnonzero(bleed.any(axis=(1, 2)))
        areas = bleed[slices].sum(axis=(1, 2)) * pixel_mm2
        best = int(slices[np.argmax(areas)])
        if areas.max() < settings.min_region_area_mm2:
            continue
        diameter = max(feret_mm(np.argwhere(bleed[z]), spacing_yx) for z in slices)
        bleeds.append(Bleed(best, bleed[best], diameter, _gap_mm(bleed, main, slices, spacing_zyx), float(areas.max())))
    return bleeds


def _apart(candidates, main, mode) -> np.ndarray:
    """The candidate voxels not connected to the main clot: in 3D, or on their axial slice (Shimoda 2017)."""
    blood = candidates | main
    if mode == "3d":
        labels, _ = ndi.label(blood, CONNECTIVITY_3D)
        return blood & ~np.isin(labels, np.unique(labels[main]))
    separate = np.zeros_like(blood)
    for z in np.flatnonzero(candidates.any(axis=(1, 2))):
        labels, _ = ndi.label(blood[z], _PLANE_8)
        touching = np.unique(labels[main[z]])
        separate[z] = blood[z] & ~np.isin(labels, touching[touching > 0])
    return separate


def _gap_mm(bleed, main, slices, spacing_zyx) -> float:
    """Edge-to-edge distance from a bleed to the main clot: in plane where both are on a slice, else in 3D."""
    spacing_yx = spacing_zyx[1:]
    gaps = []
    for z in slices:
        if main[z].any():
            distance = ndi.distance_transform_edt(~main[z], sampling=spacing_yx)
            gaps.append(float(distance[bleed[z]].min()) - min(spacing_yx))
    if not gaps:
        distance = ndi.distance_transform_edt(~main, sampling=spacing_zyx)
        gaps.append(float(distance[bleed].min()) - spacing_zyx[0])
    return max(min(gaps), 0.0)


def sprouts(main, spacing_zyx, settings) -> list[tuple[int, np.ndarray]]:
    """Per axial slice, the small bubbles budding from the main clot (the connected islands of Li 2017).

    A bubble is what a morphological opening with a disc of the island's
    largest diameter removes, standing out at least ``island_min_height_mm``
    from the rest of the clot (the tip of an elongated clot hardly does).
    """
    spacing_yx = spacing_zyx[1:]
    pixel_mm2 = spacing_yx[0] * spacing_yx[1]
    radius = settings.island_max_diameter_mm / 2
    ry, rx = (max(round(radius / s), 1) for s in spacing_yx)
    yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    disc = (yy * spacing_yx[0]) ** 2 + (xx * spacing_yx[1]) ** 2 <= radius ** 2
    found = []
    for z in np.flatnonzero(main.any(axis=(1, 2))):
        clot = main[z]
        body = ndi.binary_opening(clot, disc)
        if not body.any():
            continue
        height = ndi.distance_transform_edt(~body, sampling=spacing_yx)
        labels, count = ndi.label(clot & ~body, _PLANE_8)
        for index in range(1, count + 1):
            bud = labels == index
            if (bud.sum() * pixel_mm2 >= settings.min_region_area_mm2
                    and height[bud].max() >= settings.island_min_height_mm
                    and feret_mm(np.argwhere(bud), spacing_yx) <= settings.island_max_diameter_mm):
                found.append((int(z), bud))
    return found


# --------------------------------------------------------------------------- shape
