"""Painting a :class:`~hematoma.synthetic.signs.SignPlan` into the scan, and the truth of what was painted.

All geometry is on the grid the scan is made at (0.45 mm or 1.8 mm in-plane, 5 mm slices), in
scanner space (LPS: +y posterior; the patient lies supine, so sediment settles towards +y).

What each sign looks like (definitions: Morotti et al., Ann Neurol 2019, and the originals):

* hypodensity (Boulouis, JAMA Neurol 2016): one oval region on one slice, in-plane radius 3-7 mm,
  ``contrast`` HU below the clot, with at least :data:`MARGIN_MM` (4 mm: >= 2 voxels of the 1.8 mm
  grid) of dense clot all round in-plane and dense clot over its whole footprint (plus the margin)
  on the slices above and below: encapsulated in 3D and in every axial slice.
* black hole (Li, Stroke 2016): that region with a contrast of 32-45 HU (threshold 28 HU); a
  hypodensity without black hole has 12-22 HU.
* blend (Li, Stroke 2015): the clot's cap beyond a curved (paraboloid) surface, 15-35 % of the clot,
  22-40 HU below it (threshold 18 HU), reaching the clot's border, with a sharp (one-voxel) margin;
  its axis lies at least 35 degrees off the antero-posterior one, so it never reads as a level.
* swirl (Selariu, BMC Neurol 2012): a hypodense region (encapsulated or open) whose own density is
  that of brain parenchyma: truth 1 when its HU is <= :data:`SWIRL_TRUTH_HU` (45 HU, the top of grey
  matter); the draw keeps regions <= 41 HU or >= 49 HU where the contrast range allows.
* fluid level (Barras density category 5): the clot anterior to a plane of constant scanner y
  (35-60 % of the clot) 18-30 HU below the clot, the posterior part 4 HU above it; a straight
  line across the clot on every slice it cuts.
* islands (Li, Stroke 2017) / satellites (Shimoda, Cerebrovasc Dis 2017): balls of radius 2.6-4.5 mm
  (diameter <= 9 mm) at clot density, centred on a slice of the main clot, 3-10 mm (edge to edge,
  in every axial slice: measured on the main clot's axial projection) from it, >= 3.5 mm from each
  other: separate components of the truth mask.  >= 3 of them: island sign (and satellite); 1-2:
  satellite sign.  They count in the volume: the main clot gives up as many voxels as they hold.

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
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..shape import solidity
from .signs import SignPlan

MARGIN_MM = 4.0  # dense clot all round an encapsulated region, in-plane (>= 2 voxels of the 1.8 mm grid)
MIN_RADIUS_MM = 3.0  # an encapsulated region smaller than this is not drawn (too few voxels of the 1.8 mm grid)
SWIRL_TRUTH_HU = 45.0
BLACK_HOLE_HU = 28.0  # Li et al., Stroke 2016
BLEND_HU = 18.0  # Li et al., Stroke 2015
SEPARATE_MIN_GAP_MM = 3.0
DENSITY_FRACTIONS = (0.08, 0.20)  # barras_density 2 | 3 | 4
SOLIDITY_GRADES = (0.93, 0.87, 0.80)  # barras_shape 1 | 2 | 3 | 4


def _swirl_contrast(contrast: float, density_hu: float, swirl: bool, low_high: tuple[float, float]) -> float:
    """The drawn contrast moved within its range so the region's own HU is clearly at parenchyma density
    (<= 41 HU) or clearly not (>= 49 HU): the side ``swirl`` asks for where the range reaches it, else the other."""
    low, high = low_high
    as_swirl = min(max(contrast, density_hu - 41.0), high)  # region HU <= 41 if the range allows
    as_not = max(min(contrast, density_hu - 49.0), low)  # region HU >= 49 if the range allows
    swirl_ok, not_ok = density_hu - as_swirl <= 41.0, density_hu - as_not >= 49.0
    if swirl and swirl_ok or not not_ok and swirl_ok:
        return as_swirl
    return as_not if not_ok else contrast


def _contrast_range(contrast: float, ranges) -> tuple[float, float]:
    return next((r for r in ranges if r[0] <= contrast <= r[1]), (contrast, contrast))


def paint_density_signs(lesion_hu: np.ndarray, clot: np.ndarray, extent: np.ndarray, spacing, origin,
                        density_hu: float, plan: SignPlan) -> dict:
    """Paint the plan's density signs into ``lesion_hu`` (box array z, y, x; in place) over the ``clot``.

    ``clot``: the truth mask; ``extent``: every voxel the clot's partial volume reaches (open regions
    are cut from it, so no dense partial-volume rim closes them).  ``spacing``/``origin``: the box's
    (x, y, z) spacing and scanner origin.  Returns the truth of what was painted (module docstring)
    and ``hypodense`` (bool array of the hypodense voxels inside the clot).
    """
    from .signs import BLACK_HOLE_HU as BH_RANGE
    from .signs import BLEND_HU as BLEND_RANGE
    from .signs import HYPODENSITY_HU

    rng = np.random.default_rng(plan.geometry_seed)
    sx, sy, sz = (float(v) for v in spacing)
    hypodense = np.zeros(clot.shape, dtype=bool)
    truth = {"hypodensity": 0, "black_hole": 0, "blend": 0, "swirl": 0, "fluid_level": 0,
             "hypodense_contrast_hu": 0.0, "hypodense_volume_ml": 0.0, "blend_contrast_hu": 0.0,
             "blend_volume_ml": 0.0, "fluid_level_contrast_hu": 0.0, "swirl_region_hu": 0.0}
    voxel_ml = sx * sy * sz / 1000.0
    n_clot = int(clot.sum())
    if n_clot == 0:
        return {**truth, "hypodense": hypodense}
    zz, yy, xx = np.nonzero(extent | clot)
    points = np.stack([origin[0] + sx * xx, origin[1] + sy * yy, origin[2] + sz * zz], axis=1)
    in_clot = clot[zz, yy, xx]
    centre = points[in_clot].mean(axis=0)
    region_hus = []

    if plan.fluid_level_hu is not None:
        level = np.quantile(points[in_clot, 1], plan.fluid_anterior_fraction)
        anterior = points[:, 1] < level
        if (anterior & in_clot).any() and (~anterior & in_clot).any():
            values = lesion_hu[zz, yy, xx]
            values[anterior] -= plan.fluid_level_hu
            values[~anterior] += 4.0
            lesion_hu[zz, yy, xx] = values
            hypodense[zz[anterior], yy[anterior], xx[anterior]] = True
            hypodense &= clot
            truth.update(fluid_level=1, fluid_level_contrast_hu=round(plan.fluid_level_hu + 4.0, 2))

    if plan.blend_hu is not None:
        angle = math.radians(rng.uniform(35.0, 145.0)) * (1 if rng.random() < 0.5 else -1)
        u = np.array([math.sin(angle), -math.cos(angle), 0.0])  # 0 deg: anterior (-y); >= 35 deg off the AP axis
        rel = points - centre
        along = rel @ u
        across2 = (rel * rel).sum(axis=1) - along * along
        radius = (3.0 * n_clot * voxel_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
        score = along - across2 / (4.0 * radius)
        cap = score >= np.quantile(score[in_clot], 1.0 - plan.blend_fraction)
        cap &= ~hypodense[zz, yy, xx]
        contrast = _swirl_contrast(plan.blend_hu, density_hu, plan.swirl, BLEND_RANGE)
        if (cap & in_clot).any():
            lesion_hu[zz[cap], yy[cap], xx[cap]] -= contrast
            cap &= in_clot
            hypodense[zz[cap], yy[cap], xx[cap]] = True
            region_hus.append(density_hu - contrast)
            truth.update(blend=int(contrast >= BLEND_HU), blend_contrast_hu=round(contrast, 2),
                         blend_volume_ml=round(int(cap.sum()) * voxel_ml, 4))

    if plan.encapsulated_hu is not None:
        dense = clot & ~hypodense
        placed = _encapsulated_region(dense, (sy, sx), plan.encapsulated_radius_mm, rng)
        if placed is not None:
            contrast = _swirl_contrast(plan.encapsulated_hu, density_hu, plan.swirl,
                                       _contrast_range(plan.encapsulated_hu, (HYPODENSITY_HU, BH_RANGE)))
            lesion_hu[placed] -= contrast
            hypodense |= placed
            region_hus.append(density_hu - contrast)
            truth.update(hypodensity=1, black_hole=int(contrast >= BLACK_HOLE_HU),
                         hypodense_contrast_hu=round(contrast, 2),
                         hypodense_volume_ml=round(int(placed.sum()) * voxel_ml, 4))
    if region_hus:
        truth["swirl_region_hu"] = round(min(region_hus), 2)
        truth["swirl"] = int(min(region_hus) <= SWIRL_TRUTH_HU)
    return {**truth, "hypodense": hypodense}


def _encapsulated_region(dense: np.ndarray, spacing_yx, radius_mm: float, rng) -> np.ndarray | None:
    """An oval region on one slice, with MARGIN_MM of dense clot round it in-plane and on the slices above
    and below; None when the clot cannot hold one of MIN_RADIUS_MM."""
    depth = np.stack([ndimage.distance_transform_edt(s, sampling=spacing_yx) if s.any() else np.zeros(s.shape)
                      for s in dense])
    below = np.roll(depth, 1, axis=0)
    above = np.roll(depth, -1, axis=0)
    below[0] = 0.0
    above[-1] = 0.0
    room = np.minimum(np.minimum(depth, below), above) - MARGIN_MM  # largest radius a region centred here can take
    best = float(room.max()) if room.size else 0.0
    if best < MIN_RADIUS_MM:
        return None
    radius = min(radius_mm, best)
    candidates = np.argwhere(room >= radius)
    k, j, i = candidates[int(rng.integers(len(candidates)))]
    sy, sx = spacing_yx
    ny, nx = dense.shape[1:]
    y = (np.arange(ny) - j)[:, None] * sy
    x = (np.arange(nx) - i)[None, :] * sx
    phase, stretch = rng.uniform(0.0, math.pi), rng.uniform(0.0, 0.25)
    theta = np.arctan2(y, x)
    r_theta = radius * (1.0 - stretch * (0.5 + 0.5 * np.cos(2.0 * (theta - phase))))  # oval, inside the room
    region = np.zeros(dense.shape, dtype=bool)
    region[k] = (np.hypot(x, y) <= r_theta) & dense[k]
    return region if region.any() else None


def barras_density(fluid_level: bool, hypodense_fraction: float) -> int:
    """Barras density grade from what a scan shows (module docstring)."""
    if fluid_level:
        return 5
    if hypodense_fraction <= 0.0:
        return 1
    low, high = DENSITY_FRACTIONS
    return 2 if hypodense_fraction < low else 3 if hypodense_fraction < high else 4


def largest_slice_solidity(main: np.ndarray, spacing_yx=None) -> float:
    """Solidity of the main clot on its largest axial slice (Barras mapping in the module docstring).

    Pixels over the lattice points of the convex hull of the pixel centres (Pick's theorem: area +
    boundary / 2 + 1), as the detector measures it; the ratio does not depend on the pixel size.
    """
    areas = main.reshape(main.shape[0], -1).sum(axis=1)
    if not areas.any():
        return 1.0
    return solidity(main[int(np.argmax(areas))])


def barras_shape(separate_parts: int, solidity: float) -> int:
    """Barras shape grade from what a scan shows (module docstring)."""
    if separate_parts:
        return 5
    g1, g2, g3 = SOLIDITY_GRADES
    return 1 if solidity >= g1 else 2 if solidity >= g2 else 3 if solidity >= g3 else 4


def ball_weight(shape, centre_index, spacing, radius_mm: float, sub_slices) -> tuple[np.ndarray, np.ndarray]:
    """(mask at the voxel centres, partial-volume weight over the slab's sub-slices) of a ball, on a box.

    ``centre_index``: the ball's centre in the box's (z, y, x) index space; ``spacing``: (x, y, z) mm.
    """
    sx, sy, sz = spacing
    nz, ny, nx = shape
    cz, cy, cx = centre_index
    z = ((np.arange(nz) - cz) * sz)[:, None, None]
    y = ((np.arange(ny) - cy) * sy)[None, :, None]
    x = ((np.arange(nx) - cx) * sx)[None, None, :]
    in_plane = x * x + y * y
    mask = in_plane + z * z <= radius_mm * radius_mm
    ramp = max(sx, 0.9)
    weight = np.zeros(shape, dtype=np.float32)
    for dz in sub_slices:
        distance = np.sqrt(in_plane + (z + dz) ** 2)
        weight += np.clip((radius_mm - distance) / ramp + 0.5, 0.0, 1.0).astype(np.float32)
    return mask, weight / len(sub_slices)


def place_separate_bleeds(main: np.ndarray, box, image_shape, spacing, plan: SignPlan, allowed, sub_slices) -> list:
    """The plan's small separate bleeds beside the ``main`` clot (box array z, y, x at ``box`` in the image).

    Each is centred on a slice of the main clot, along a random in-plane direction, its edge
    ``gap`` mm beyond the main clot's axial projection (so it is separate in every slice), away from
    the others.  ``allowed(slices)`` says where blood may be on an image box.  Returns
    ``[(image slices, mask, weight)]``; a bleed that finds no room in 24 directions is left out.
    """
    rng = np.random.default_rng(plan.geometry_seed + 1)
    sx, sy, sz = (float(v) for v in spacing)
    projection = main.any(axis=0)
    if not projection.any():
        return []
    outside = ndimage.distance_transform_edt(~projection, sampling=(sy, sx))
    areas = main.reshape(main.shape[0], -1).sum(axis=1)
    slices = np.flatnonzero(areas >= 0.5 * areas.max())
    cy, cx = (float(v.mean()) for v in np.nonzero(projection))
    reach = float(np.hypot(*projection.shape) * max(sx, sy))
    placed, centres = [], []
    for radius, gap in zip(plan.separate_radii_mm, plan.separate_gaps_mm):
        for _ in range(24):
            angle = rng.uniform(0.0, 2.0 * math.pi)
            k = int(slices[int(rng.integers(len(slices)))])
            steps = np.arange(0.0, reach, 0.5 * min(sx, sy))
            jj = np.round(cy + steps * math.sin(angle) / sy).astype(int)
            ii = np.round(cx + steps * math.cos(angle) / sx).astype(int)
            inside = (jj >= 0) & (jj < projection.shape[0]) & (ii >= 0) & (ii < projection.shape[1])
            hits = np.flatnonzero(inside)[projection[jj[inside], ii[inside]]]
            edge = steps[hits[-1]] if hits.size else 0.0
            distance = edge + gap + radius + max(sx, sy)
            centre = np.array([box[0].start + k, box[1].start + cy + distance * math.sin(angle) / sy,
                               box[2].start + cx + distance * math.cos(angle) / sx])
            if any(np.linalg.norm((centre - c) * np.array([sz, sy, sx])) < radius + r + 3.5 for c, r in centres):
                continue
            half = np.array([1, math.ceil(radius / sy) + 2, math.ceil(radius / sx) + 2])
            lo, hi = np.floor(centre - half).astype(int), np.ceil(centre + half).astype(int) + 1
            if (lo < 0).any() or (hi > np.asarray(image_shape)).any():
                continue
            where = tuple(slice(a, b) for a, b in zip(lo, hi))
            mask, weight = ball_weight(tuple(hi - lo), centre - lo, spacing, radius, sub_slices)
            ok = allowed(where)
            if not mask.any() or (mask & ok).sum() < 0.9 * mask.sum():
                continue
            if not _clear_of_main(mask, lo, box, outside):
                continue
            mask &= ok
            placed.append((where, mask, weight * ok))
            centres.append((centre, radius))
            break
    return placed


def _clear_of_main(mask: np.ndarray, lo, box, outside: np.ndarray) -> bool:
    """True when every voxel of a bleed lies >= SEPARATE_MIN_GAP_MM from the main clot's axial projection."""
    _, j, i = np.nonzero(mask)
    j = j + lo[1] - box[1].start
    i = i + lo[2] - box[2].start
    inside = (j >= 0) & (j < outside.shape[0]) & (i >= 0) & (i < outside.shape[1])
    return bool((outside[j[inside], i[inside]] >= SEPARATE_MIN_GAP_MM).all())


def sign_truth(painted: dict, bleeds: list, main: np.ndarray, spacing) -> dict:
    """The signs' truth dict (:mod:`.sign_rendering`) from what was painted."""
    sx, sy, sz = (float(v) for v in spacing)
    n_main = max(int(main.sum()), 1)
    hypodense = painted.pop("hypodense")
    fraction = float((hypodense & main).sum()) / n_main
    n_separate = len(bleeds)
    solidity = largest_slice_solidity(main, (sy, sx))
    return {
        **{k: v for k, v in painted.items() if k in ("hypodensity", "black_hole", "blend", "swirl", "fluid_level")},
        "island": int(n_separate >= 3), "satellite": int(n_separate >= 1),
        "barras_shape": barras_shape(n_separate, solidity),
        "barras_density": barras_density(bool(painted["fluid_level"]), fraction),
        **{k: v for k, v in painted.items() if k not in ("hypodensity", "black_hole", "blend", "swirl", "fluid_level")},
        "n_islands": n_separate if n_separate >= 3 else 0, "n_satellites": n_separate,
        "separate_bleeds_ml": round(sum(int(m.sum()) for _, m, _ in bleeds) * sx * sy * sz / 1000.0, 4),
        "hypodense_fraction": round(fraction, 4), "main_solidity": round(solidity, 4),
    }
