"""Per-voxel predictors of hemorrhage on CT (PItcHPERFeCT / ichseg style).

Muschelli et al. (NeuroImage: Clinical 2017) describe each brain voxel by its
intensity and its neighbourhood; ichseg's ``make_predictors`` computes them
with FSL and ANTs.  Here they are array filters (scipy.ndimage) on an
LPS-ordered (z, y, x) array, all restricted to the brain: a neighbourhood
statistic is a normalised convolution (sum over brain voxels / number of brain
voxels), so that bone and air next to the brain do not leak in.

The template-based predictors of ichseg (z-score to a CT template, flipped
difference after registration) need a template and a registration; they are
replaced by registration-free versions: a whole-brain winsorised z-score and
a left-right difference across the brain's own midline.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Predictors, in the order of the feature matrix columns.
FEATURE_NAMES = (
    "hu",
    "local_mean",
    "local_sd",
    "local_skew",
    "local_kurtosis",
    "fraction_40_80",
    "zscore_axial",
    "zscore_coronal",
    "zscore_sagittal",
    "winsorized_z",
    "distance_to_centroid_mm",
    "distance_to_brain_edge_mm",
    "smooth_5mm",
    "smooth_10mm",
    "smooth_20mm",
    "left_right_difference",
)
#: ichseg's ``pct_thresh``: the share of neighbours in this range (acute blood).
BLOOD_NEIGHBOUR_HU = (40.0, 80.0)
#: Half-width of the in-plane neighbourhood (ichseg: one voxel each way).
NEIGHBOURHOOD_RADIUS_MM = 1.0
SMOOTHING_SIGMAS_MM = (5.0, 10.0, 20.0)
#: Distances to the brain edge are capped: beyond this a voxel is simply "deep".
EDGE_DISTANCE_CAP_MM = 20.0


def window_size(spacing_zyx, radius_mm: float = NEIGHBOURHOOD_RADIUS_MM, z_radius_voxels: int | None = 0) -> tuple[int, int, int]:
    """Odd box size (z, y, x): ``radius_mm`` in plane (at least one voxel each way).

    ``z_radius_voxels`` sets the z half-width in voxels (ichseg's 3x3x3 box
    uses 1); ``None`` uses ``radius_mm`` in z too.
    """
    in_plane = [2 * max(int(round(radius_mm / s)), 1) + 1 for s in spacing_zyx[1:]]
    if z_radius_voxels is None:
        z = 2 * int(round(radius_mm / spacing_zyx[0])) + 1
    else:
        z = 2 * z_radius_voxels + 1
    return (z, in_plane[0], in_plane[1])


def masked_mean(values: np.ndarray, mask: np.ndarray, size, counts: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``values`` over the voxels of ``mask`` in a box of ``size`` around each voxel."""
    if counts is None:
        counts = ndi.uniform_filter(mask.astype(np.float32), size=size, mode="constant")
    sums = ndi.uniform_filter(np.where(mask, values, 0).astype(np.float32), size=size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    return np.where(counts > 1e-6, mean, 0).astype(np.float32)


def blood_neighbour_fraction(hu: np.ndarray, brain: np.ndarray, size, counts=None, hu_range=BLOOD_NEIGHBOUR_HU) -> np.ndarray:
    """Share of brain neighbours whose HU lies in ``hu_range`` (default 40-80 HU: ichseg ``pct_thresh``)."""
    low, high = hu_range
    return masked_mean(((hu >= low) & (hu <= high)).astype(np.float32), brain, size, counts)


def plane_zscore(hu: np.ndarray, brain: np.ndarray, axis: int, robust: bool = False) -> np.ndarray:
    """z-score of each voxel against the brain voxels of its own plane (perpendicular to ``axis``).

    ``robust``: centre at the plane's median and scale by the spread of its
    lower half (median - 25th percentile), which bright blood cannot inflate
    unless it fills half of the plane.
    """
    moved_hu = np.moveaxis(hu, axis, 0)
    moved_brain = np.moveaxis(brain, axis, 0)
    n = moved_hu.shape[0]
    centre = np.zeros(n, dtype=np.float32)
    scale = np.ones(n, dtype=np.float32)
    inside = moved_hu[moved_brain]
    if inside.size == 0:
        return np.zeros_like(hu, dtype=np.float32)
    fallback = _centre_scale(inside, robust)
    for i in range(n):
        values = moved_hu[i][moved_brain[i]]
        # Planes with few brain voxels (vertex, edges) borrow the whole brain's statistics.
        centre[i], scale[i] = _centre_scale(values, robust) if values.size >= 100 else fallback
    shape = (n,) + (1,) * (hu.ndim - 1)
    z = (moved_hu - centre.reshape(shape)) / scale.reshape(shape)
    return np.moveaxis(np.where(moved_brain, z, 0).astype(np.float32), 0, axis)


def _centre_scale(values: np.ndarray, robust: bool) -> tuple[float, float]:
    if robust:
        q25, q50 = np.percentile(values, [25, 50])
        scale = (q50 - q25) / 0.6745
    else:
        q50, scale = float(values.mean()), float(values.std())
    return float(q50), float(max(scale, 1.0))


def winsorized_zscore(hu: np.ndarray, brain: np.ndarray, trim: float = 0.2) -> np.ndarray:
    """Whole-brain z-score after winsorising at ``trim`` (ichseg ``win_z``)."""
    inside = hu[brain]
    low, high = np.percentile(inside, [100 * trim, 100 * (1 - trim)])
    clipped = np.clip(inside, low, high)
    z = (hu - clipped.mean()) / max(float(clipped.std()), 1.0)
    return np.where(brain, z, 0).astype(np.float32)


def smooth_in_brain(hu: np.ndarray, brain: np.ndarray, sigma_mm: float, spacing_zyx) -> np.ndarray:
    """Gaussian smoothing (in plane and in z) normalised to the brain (ichseg: fslsmooth with a mask).

    Wide kernels are applied on a coarser in-plane grid (block means) and
    repeated back: the result is smooth at that scale anyway, and a 20 mm
    kernel on 0.45 mm pixels would cost seconds.
    """
    factor = max(int(sigma_mm / (3.0 * min(spacing_zyx[1:]))), 1)
    values = np.where(brain, hu, 0).astype(np.float32)
    weights = brain.astype(np.float32)
    small_values, small_weights = (_block_mean(a, factor) for a in (values, weights))
    spacing = (spacing_zyx[0], spacing_zyx[1] * factor, spacing_zyx[2] * factor)
    sigma = tuple(sigma_mm / s for s in spacing)
    num = ndi.gaussian_filter(small_values, sigma, mode="constant", truncate=3.0)
    den = ndi.gaussian_filter(small_weights, sigma, mode="constant", truncate=3.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(den > 1e-4, num / den, 0).astype(np.float32)
    smooth = _repeat_back(smooth, factor, hu.shape)
    return np.where(brain, smooth, 0)


def local_moments(hu: np.ndarray, brain: np.ndarray, size) -> tuple[np.ndarray, ...]:
    """Local mean, SD, skewness and kurtosis over the brain voxels of a box (ichseg ``local_moment``)."""
    counts = ndi.uniform_filter(brain.astype(np.float32), size=size, mode="constant")
    # Centre and clip before raising to the 4th power: float32 keeps its precision.
    x = np.clip(hu, -50.0, 150.0) - 40.0
    mean = masked_mean(x, brain, size, counts).astype(np.float64)
    raw2 = masked_mean(x * x, brain, size, counts).astype(np.float64)
    raw3 = masked_mean(x**3, brain, size, counts).astype(np.float64)
    raw4 = masked_mean(x**4, brain, size, counts).astype(np.float64)
    var = np.maximum(raw2 - mean**2, 0.0)
    m3 = raw3 - 3 * mean * raw2 + 2 * mean**3
    m4 = raw4 - 4 * mean * raw3 + 6 * mean**2 * raw2 - 3 * mean**4
    safe = var > 1e-3
    skew = np.where(safe, m3 / np.where(safe, var, 1.0) ** 1.5, 0.0)
    kurtosis = np.where(safe, m4 / np.where(safe, var, 1.0) ** 2, 0.0)
    return (
        (mean + 40.0).astype(np.float32),
        np.sqrt(var).astype(np.float32),
        skew.astype(np.float32),
        kurtosis.astype(np.float32),
    )


def compute_features(hu: np.ndarray, brain: np.ndarray, spacing_zyx, where: np.ndarray) -> np.ndarray:
    """Feature matrix (n_voxels, len(FEATURE_NAMES)) for the voxels of ``where`` (C order)."""
    columns: dict[str, np.ndarray] = {}
    size = window_size(spacing_zyx, z_radius_voxels=1)
    counts = ndi.uniform_filter(brain.astype(np.float32), size=size, mode="constant")
    columns["hu"] = hu
    mean, sd, skew, kurtosis = local_moments(hu, brain, size)
    columns.update(local_mean=mean, local_sd=sd, local_skew=skew, local_kurtosis=kurtosis)
    columns["fraction_40_80"] = blood_neighbour_fraction(hu, brain, size, counts)
    for name, axis in (("zscore_axial", 0), ("zscore_coronal", 1), ("zscore_sagittal", 2)):
        columns[name] = plane_zscore(hu, brain, axis)
    columns["winsorized_z"] = winsorized_zscore(hu, brain)
    centroid = np.array(ndi.center_of_mass(brain))
    columns["distance_to_centroid_mm"] = _distance_to_point(where, centroid, spacing_zyx)
    columns["distance_to_brain_edge_mm"] = _distance_to_edge(brain, spacing_zyx)
    for sigma in SMOOTHING_SIGMAS_MM:
        columns[f"smooth_{sigma:g}mm"] = smooth_in_brain(hu, brain, sigma, spacing_zyx)
    columns["left_right_difference"] = mean - _mirror_x(mean, brain, centroid[2])

    matrix = np.empty((int(where.sum()), len(FEATURE_NAMES)), dtype=np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        column = columns[name]
        matrix[:, j] = column if column.ndim == 1 else column[where]
    return matrix


def _distance_to_point(where: np.ndarray, point: np.ndarray, spacing_zyx) -> np.ndarray:
    coordinates = np.nonzero(where)
    squared = sum(((c - p) * s) ** 2 for c, p, s in zip(coordinates, point, spacing_zyx))
    return np.sqrt(squared).astype(np.float32)


def _distance_to_edge(brain: np.ndarray, spacing_zyx) -> np.ndarray:
    # In-plane distance only: with 5 mm slices the top and bottom slices are not "edge".
    # A huge z sampling makes the 3D transform a stack of 2D ones in one call.
    padded = np.pad(brain, ((0, 0), (1, 1), (1, 1)))
    distance = ndi.distance_transform_edt(padded, sampling=(1e6, spacing_zyx[1], spacing_zyx[2]))
    return np.minimum(distance[:, 1:-1, 1:-1], EDGE_DISTANCE_CAP_MM).astype(np.float32)


def _mirror_x(values: np.ndarray, brain: np.ndarray, centre_x: float) -> np.ndarray:
    """``values`` mirrored left-right about the column ``centre_x`` (the brain's midline)."""
    nx = values.shape[2]
    source = np.clip(np.round(2 * centre_x - np.arange(nx)).astype(int), 0, nx - 1)
    mirrored = values[:, :, source]
    return np.where(brain[:, :, source], mirrored, values)


def _block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return array
    nz, ny, nx = array.shape
    py, px = (-ny) % factor, (-nx) % factor
    padded = np.pad(array, ((0, 0), (0, py), (0, px)))
    return padded.reshape(nz, padded.shape[1] // factor, factor, padded.shape[2] // factor, factor).mean(axis=(2, 4))


def _repeat_back(array: np.ndarray, factor: int, shape) -> np.ndarray:
    if factor == 1:
        return array
    full = np.repeat(np.repeat(array, factor, axis=1), factor, axis=2)
    return full[:, : shape[1], : shape[2]]
