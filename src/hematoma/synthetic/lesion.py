"""A spontaneous hematoma: shape, density, edema rim, growth, and its ground-truth mask.

The hematoma is an implicit shape in the head frame: with ``q`` the point in
the lesion's own normalised coordinates (its ellipsoid becomes the unit
ball), the shape function is

    rho(q) = min(|q|, |(q - o_k) / r_k| for each lobe k) * exp(-a * n(q))

where the lobes (union) and the smooth noise ``n`` (amplitude ``a``) grow
with the patient's irregularity.  The mask of a scan is ``rho <= t`` over the
voxels where blood may be (inside the brain, a few mm from its surface, off
the ventricles, in its own hemisphere / fossa), with ``t`` set to the k-th
smallest value of ``rho`` so that the mask holds exactly ``k = volume /
voxel volume`` voxels: the truth volume is the nominal one to one voxel.
The follow-up adds growth lobes (HE) and a new threshold.

Density: a homogeneous 58-82 HU clot with a fine texture (1-2.5 HU, growing
with heterogeneity) and a hypodense (~15-25 HU) edema rim; the NCCT signs
(hypodense regions, blend, swirl, fluid level, islands and satellites) are
painted only where the patient's :class:`~.signs.SignPlan` asks for them
(:mod:`.sign_rendering`), so a clot without a density sign holds no hypodense
region.  Separate small bleeds count in the volume: the main clot's threshold
is set for k minus their voxels.  Partial volume: along z (5 mm slices) the
lesion's weight is averaged over three sub-slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .phantom import (
    SLICE_MM,
    HeadAnatomy,
    RenderedHead,
    in_posterior_fossa,
    ventricle_radius,
)
from .scanner import Pose
from .sign_rendering import paint_density_signs, place_separate_bleeds, sign_truth
from .signs import SignPlan

_LATTICE = 25  # noise lattice points per axis over q in [-3, 3]
_Q_EXTENT = 3.0


@dataclass(frozen=True)
class Hematoma:
    """One hematoma in the head frame (drawn by :func:`draw_hematoma`)."""

    location: str
    side: float  # -1 right, +1 left (LPS x)
    centre_mm: tuple[float, float, float]
    rotation: tuple[float, ...]  # 3x3, row-major: columns are the lesion's axes in the head frame
    radii_mm: tuple[float, float, float]
    lobes: tuple[tuple[tuple[float, float, float], float], ...]  # (offset in q, radius in q)
    irregularity: float
    heterogeneity: float
    density_hu: float
    edema_mm: float
    edema_hu: float
    noise_seed: int
    growth_lobes: tuple[tuple[tuple[float, float, float], float], ...] = field(default=())

    def with_growth(self, lobes, edema_mm: float) -> Hematoma:
        return replace(self, growth_lobes=tuple(lobes), edema_mm=edema_mm)


def _random_rotation(rng: np.random.Generator, spread_deg: float) -> np.ndarray:
    angles = np.radians(rng.normal(0.0, spread_deg, size=3))
    return Pose(tuple(np.degrees(angles)), (0.0, 0.0, 0.0), 0.0).rotation()


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def draw_hematoma(rng: np.random.Generator, anatomy: HeadAnatomy, location: str, volume_ml: float,
                  irregularity: float, heterogeneity: float) -> Hematoma:
    """Place and shape a hematoma of about ``volume_ml`` at a typical site of ``location``."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    radius = 10.0 * (3.0 * volume_ml / (4.0 * math.pi)) ** (1.0 / 3.0)  # mm
    scale = anatomy.half_axes[0] / 66.0
    if location == "basal_ganglia":
        centre = (side * rng.uniform(20.0, 26.0), rng.uniform(-10.0, 2.0), rng.uniform(0.0, 12.0))
        elongation, rotation = (0.8, 1.35, 0.95), _random_rotation(rng, 10.0)
    elif location == "thalamus":
        centre = (side * rng.uniform(14.0, 18.0), rng.uniform(8.0, 16.0), rng.uniform(2.0, 9.0))
        elongation, rotation = (0.9, 1.15, 1.0), _random_rotation(rng, 10.0)
    elif location == "lobar":
        direction = _unit(rng)
        direction[2] = abs(direction[2]) * 0.7 + 0.05
        if abs(direction[0]) < 0.35:
            direction[0] = side * 0.35
        direction[0] = side * abs(direction[0])
        direction /= np.linalg.norm(direction)
        a, b, c_top, _ = anatomy.half_axes
        reach = 1.0 / math.sqrt((direction[0] / a) ** 2 + (direction[1] / b) ** 2 + (direction[2] / c_top) ** 2)
        depth = 0.85 * radius + anatomy.csf_mm + 9.0
        centre = tuple(direction * max(reach - depth, 15.0))
        elongation, rotation = (1.25, 0.9, 0.9), _random_rotation(rng, 40.0)
    elif location == "infratentorial":
        centre = (side * rng.uniform(16.0, 26.0), rng.uniform(38.0, 48.0), rng.uniform(-47.0, -40.0))
        elongation, rotation = (1.0, 0.9, 0.85), _random_rotation(rng, 15.0)
    else:
        raise ValueError(f"unknown hematoma location {location!r}")
    centre = tuple(float(v) * (scale if location != "lobar" else 1.0) for v in centre)
    n_lobes = int(rng.binomial(3, 0.15 + 0.7 * irregularity))
    lobes = tuple((tuple(_unit(rng) * rng.uniform(0.6, 0.95)), float(rng.uniform(0.35, 0.65))) for _ in range(n_lobes))
    return Hematoma(
        location=location, side=side, centre_mm=centre, rotation=tuple(rotation.ravel()),
        radii_mm=tuple(radius * e for e in elongation), lobes=lobes,
        irregularity=float(irregularity), heterogeneity=float(heterogeneity),
        density_hu=float(np.clip(rng.normal(68.0, 5.0), 58.0, 82.0)),
        edema_mm=float(rng.uniform(1.5, 3.5) + 0.04 * volume_ml), edema_hu=float(rng.uniform(16.0, 23.0)),
        noise_seed=int(rng.integers(2**31)),
    )


class LesionDoesNotFit(RuntimeError):
    """The asked-for volume cannot be placed in the allowed brain region (a large posterior-fossa bleed).

    Internal to the generator: :func:`~hematoma.synthetic.patient.place_lesions` catches it and
    searches wider, re-draws or shrinks the lesion (recording why), so no user ever sees it.
    """


def smallest_growth_ratio(expands: bool, volume_ml: float) -> float:
    """The least follow-up/baseline ratio that keeps the drawn label: just past 6 mL or 33 % for HE."""
    return 1.0 + min(0.35, 6.5 / volume_ml) if expands else 1.0


def draw_growth(rng: np.random.Generator, hematoma: Hematoma, expands: bool, volume_ml: float) -> tuple[Hematoma, float]:
    """Follow-up lesion and its volume ratio to ``volume_ml`` (the baseline volume).

    HE: +40 % .. +150 % (+40 % .. +80 % above 40 mL), clearly past the
    6 mL / 33 % definition.  No HE: -10 % .. +15 %, and never +5 mL or more.
    All draws happen whatever ``expands`` is, so the stream stays aligned.
    """
    n_lobes = 1 + int(rng.integers(0, 3))
    lobes = [(tuple(_unit(rng) * rng.uniform(0.8, 1.15)), float(rng.uniform(0.5, 0.9))) for _ in range(n_lobes)]
    grow = float(rng.uniform(0.40, 1.50))
    grow_large = float(rng.uniform(0.40, 0.80))
    change = float(rng.uniform(-0.10, 0.15))
    extra_edema = float(rng.uniform(0.5, 2.0))
    if expands:
        ratio = 1.0 + (grow if volume_ml < 40.0 else grow_large)  # very large bleeds grow less in relative terms
        return hematoma.with_growth(lobes, hematoma.edema_mm + extra_edema), ratio
    return hematoma.with_growth((), hematoma.edema_mm + 0.5 * extra_edema), 1.0 + min(change, 5.0 / volume_ml)


def hematoma_volume_hint(hematoma: Hematoma) -> float:
    """Volume (mL) of the core ellipsoid: what the hematoma was drawn for."""
    return 4.0 / 3.0 * math.pi * math.prod(hematoma.radii_mm) / 1000.0


def _noise_lattices(hematoma: Hematoma) -> list[sitk.Image]:
    """Smooth unit-SD noise lattices over q in [-3, 3]^3: shape, hypodense islands, clot texture."""
    rng = np.random.default_rng(hematoma.noise_seed)
    lattices = []
    for sigma in (2.6, 1.8, 0.8):
        smooth = ndimage.gaussian_filter(rng.standard_normal((_LATTICE,) * 3), sigma, mode="wrap")
        image = sitk.GetImageFromArray((smooth / (smooth.std() + 1e-9)).astype(np.float32))
        image.SetOrigin((-_Q_EXTENT,) * 3)
        image.SetSpacing((2.0 * _Q_EXTENT / (_LATTICE - 1),) * 3)
        lattices.append(image)
    return lattices


def _affine(matrix: np.ndarray, offset: np.ndarray) -> sitk.AffineTransform:
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(np.asarray(matrix, dtype=float).ravel().tolist())
    transform.SetTranslation(np.asarray(offset, dtype=float).tolist())
    return transform


class _Box:
    """A box of scan voxels (optionally strided, optionally shifted along scanner z).

    Everything the lesion needs on the box is either an affine map of the
    voxel indices (head-frame and lesion coordinates: built by broadcasting
    1-D vectors) or a smooth volume resampled onto the box with SimpleITK
    (noise lattices, depth below the brain surface): multi-threaded C++
    instead of per-point Python-side interpolation.
    """

    def __init__(self, reference: sitk.Image, pose: Pose, hematoma: Hematoma, box, dz: float = 0.0):
        self.box = box
        self.shape = tuple(len(range(b.start, b.stop, b.step or 1)) for b in box)
        origin, spacing = np.asarray(reference.GetOrigin()), np.asarray(reference.GetSpacing())
        steps = np.array([box[2].step or 1, box[1].step or 1, box[0].step or 1])
        self.origin = origin + spacing * np.array([box[2].start, box[1].start, box[0].start]) + np.array([0.0, 0.0, dz])
        self.spacing = spacing * steps
        self.grid = sitk.Image(self.shape[2], self.shape[1], self.shape[0], sitk.sitkUInt8)  # geometry only
        self.grid.SetOrigin(self.origin.tolist())
        self.grid.SetSpacing(self.spacing.tolist())
        rotation, translation = pose.rotation(), np.asarray(pose.translation_mm)
        # scanner -> head: p_h = R^T (p - t); head -> lesion: q = D L^T (p_h - c), D = diag(1 / radii)
        self.to_head = (rotation.T, -rotation.T @ translation)
        lesion = np.diag(1.0 / np.asarray(hematoma.radii_mm)) @ np.asarray(hematoma.rotation).reshape(3, 3).T
        self.to_lesion = (lesion @ rotation.T, -lesion @ (rotation.T @ translation + np.asarray(hematoma.centre_mm)))

    def coordinates(self, affine) -> np.ndarray:
        """(3, n) float32 coordinates of the voxels under an affine map (matrix, offset) of scanner space."""
        matrix, offset = affine
        nz, ny, nx = self.shape
        xs = (self.origin[0] + self.spacing[0] * np.arange(nx)).astype(np.float32)[None, None, :]
        ys = (self.origin[1] + self.spacing[1] * np.arange(ny)).astype(np.float32)[None, :, None]
        zs = (self.origin[2] + self.spacing[2] * np.arange(nz)).astype(np.float32)[:, None, None]
        out = np.empty((3, nz, ny, nx), dtype=np.float32)
        for c in range(3):
            out[c] = np.float32(matrix[c, 0]) * xs + np.float32(matrix[c, 1]) * ys + np.float32(matrix[c, 2]) * zs
            out[c] += np.float32(offset[c])
        return out.reshape(3, -1)

    def resample(self, image: sitk.Image, affine, default: float, extrapolate: bool = False) -> np.ndarray:
        """A volume (in head or lesion space) resampled onto the box, linear, flat float32."""
        result = sitk.Resample(image, self.grid, _affine(*affine), sitk.sitkLinear, default, sitk.sitkFloat32, extrapolate)
        return sitk.GetArrayFromImage(result).reshape(-1)


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def _shape_function(hematoma: Hematoma, q: np.ndarray, shape_noise: np.ndarray) -> np.ndarray:
    """rho(q) of the module docstring, for points q (3, n) with the shape noise sampled there."""
    rho = _norm(q)
    for offset, radius in hematoma.lobes + hematoma.growth_lobes:
        np.minimum(rho, _norm(q - np.asarray(offset, dtype=np.float32)[:, None]) / np.float32(radius), out=rho)
    amplitude = np.float32(0.06 + 0.32 * hematoma.irregularity)
    rho *= np.exp(-amplitude * shape_noise)
    return rho


def _may_bleed(hematoma: Hematoma, anatomy: HeadAnatomy, points: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Where blood may be: brain >= 3 mm under its surface, off the ventricles, in its own compartment.

    ``points`` (3, n) are head-frame coordinates and ``depth`` the depth below the brain surface there.
    """
    x, y, z = points
    ok = depth >= 3.0
    ok &= ventricle_radius(anatomy, x, y, z) > 1.15
    if hematoma.location == "infratentorial":
        ok &= in_posterior_fossa(x, y, z)
    else:  # supratentorial: above the tentorium and on its own side of the falx
        ok &= ~in_posterior_fossa(x, y, z)
        ok &= x * hematoma.side > 2.5
    return ok


class _LesionField:
    """rho and the blood-allowed test on one box."""

    def __init__(self, hematoma: Hematoma, head: RenderedHead, reference: sitk.Image, pose: Pose, lattices, box,
                 dz: float = 0.0, depth: np.ndarray | None = None):
        self.hematoma, self.head, self.lattices = hematoma, head, lattices
        self.box = _Box(reference, pose, hematoma, box, dz)
        q = self.box.coordinates(self.box.to_lesion)
        self.rho = _shape_function(hematoma, q, self.box.resample(lattices[0], self.box.to_lesion, 0.0, True))
        self.points = self.box.coordinates(self.box.to_head)
        self.depth = self.box.resample(head.depth, self.box.to_head, -100.0) if depth is None else depth

    def allowed(self, indices: np.ndarray) -> np.ndarray:
        """The indices (flat, into the box) where blood may be."""
        ok = _may_bleed(self.hematoma, self.head.anatomy, self.points[:, indices], self.depth[indices])
        return indices[ok]

    def likely(self, n_needed: int, wide: bool = False) -> np.ndarray:
        """Flat indices of the ~3 n_needed smallest rho (the only ones the costlier tests see); all if ``wide``."""
        if wide:
            return np.arange(self.rho.size)
        cap_rank = min(3 * n_needed + 64, self.rho.size - 1)
        return np.flatnonzero(self.rho <= np.partition(self.rho, cap_rank)[cap_rank])


def render_hematoma(image: np.ndarray, reference: sitk.Image, pose: Pose, head: RenderedHead,
                    hematoma: Hematoma, volume_ml: float, wide: bool = False, signs: SignPlan | None = None,
                    truth: dict | None = None) -> np.ndarray:
    """Paint the hematoma (and its edema) into the scan ``image`` (in place); return its uint8 mask.

    ``volume_ml`` is met to one voxel: the threshold of ``rho`` is the k-th
    smallest value over the voxels where blood may be (k minus the voxels of
    the separate small bleeds when ``signs`` asks for some).  On fine grids the
    shape is first located on a coarse sub-grid (every ~1.8 mm in-plane),
    then evaluated at every voxel of its tight box only.  ``wide``: see
    :func:`fit_hematoma`.  ``signs``: the NCCT signs to paint (None: a
    homogeneous clot); their truth (:mod:`.sign_rendering`) is written into
    ``truth`` when given.  Raises :class:`LesionDoesNotFit`.
    """
    field, allowed, threshold, box = fit_hematoma(reference, pose, head, hematoma, volume_ml, image.shape, wide)
    signs = signs or SignPlan()
    bleeds = []
    if signs.separate_radii_mm:
        n_voxels = int((field.rho[allowed] <= threshold).sum())
        main = np.zeros(field.rho.size, dtype=bool)
        main[allowed[field.rho[allowed] <= threshold]] = True
        bleeds = place_separate_bleeds(main.reshape(field.box.shape), box, image.shape, field.box.spacing, signs,
                                       lambda where: _blood_allowed(reference, pose, head, hematoma, where),
                                       (-SLICE_MM / 3.0, 0.0, SLICE_MM / 3.0))
        taken = sum(int(m.sum()) for _, m, _ in bleeds)
        if bleeds and taken < 0.3 * n_voxels:
            threshold = np.partition(field.rho[allowed], n_voxels - taken - 1)[n_voxels - taken - 1]
        else:
            bleeds = []
    box_mask = np.zeros(field.rho.size, dtype=bool)
    box_mask[allowed[field.rho[allowed] <= threshold]] = True

    weight, lesion_hu, edema = _appearance(field, reference, pose, threshold, box_mask)
    shape3 = field.box.shape
    hu3 = lesion_hu.reshape(shape3)
    painted = paint_density_signs(hu3, box_mask.reshape(shape3), weight.reshape(shape3) > 0, field.box.spacing,
                                  field.box.origin, hematoma.density_hu, signs)
    lesion_hu = hu3.reshape(-1)
    region = image[box].reshape(-1)
    edema *= np.clip((region - 12.0) / 8.0, 0.0, 1.0) * np.clip((70.0 - region) / 10.0, 0.0, 1.0)  # brain only
    region += edema * (hematoma.edema_hu - region)
    region += weight * (lesion_hu - region)
    image[box] = region.reshape(shape3)
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[box] = box_mask.reshape(shape3)
    for where, bleed_mask, bleed_weight in bleeds:
        patch = image[where]
        patch += bleed_weight * (np.float32(hematoma.density_hu) - patch)
        mask[where][bleed_mask] = 1
    if truth is not None:
        truth.update(sign_truth(painted, bleeds, box_mask.reshape(shape3), field.box.spacing))
    return mask


def _blood_allowed(reference: sitk.Image, pose: Pose, head: RenderedHead, hematoma: Hematoma, where) -> np.ndarray:
    """Where blood may be (:func:`_may_bleed`) on an image box (z, y, x slices), as a bool array of its shape."""
    small = _Box(reference, pose, hematoma, where)
    points = small.coordinates(small.to_head)
    depth = small.resample(head.depth, small.to_head, -100.0)
    return _may_bleed(hematoma, head.anatomy, points, depth).reshape(small.shape)


def fit_hematoma(reference: sitk.Image, pose: Pose, head: RenderedHead, hematoma: Hematoma, volume_ml: float,
                 shape, wide: bool = False):
    """Where the hematoma goes: (field, allowed indices, rho threshold, box) for a scan of ``shape``.

    Placement only (no painting).  The
    default search tests only the ~3k voxels of smallest rho for the k it
    needs: fast, but a large bleed beside the falx, the ventricles or the
    cortex can have fewer than k allowed voxels among them although the
    brain holds it (that made whole cohorts fail).  ``wide`` tests every
    voxel of the box instead: the same definition (the k smallest rho where
    blood may be), only slower; the caller asks for it after the default
    search failed, so lesions that fitted before are unchanged to the bit.
    Raises :class:`LesionDoesNotFit` when the box never holds k allowed voxels.
    """
    spacing = np.asarray(reference.GetSpacing())
    n_voxels = max(round(volume_ml * 1000.0 / float(np.prod(spacing))), 1)
    lattices = _noise_lattices(hematoma)
    edema_rho = hematoma.edema_mm / float(np.mean(hematoma.radii_mm))
    reach = 1.8 * max(hematoma.radii_mm) * max(volume_ml / hematoma_volume_hint(hematoma), 1.0) ** (1 / 3) + 6.0
    stride = max(1, round(1.8 / spacing[0]))
    previous = None
    for _ in range(6):
        box = _index_box(reference, pose, hematoma.centre_mm, reach, shape)
        if box == previous:  # the box already spans the scan: every further try would fail the same way
            break
        previous = box
        if stride > 1:
            coarse = tuple(slice(b.start, b.stop, stride if k else 1) for k, b in enumerate(box))
            needed = max(n_voxels // stride**2, 1)
            field = _LesionField(hematoma, head, reference, pose, lattices, coarse)
            allowed = field.allowed(field.likely(needed, wide))
            if allowed.size < needed:
                reach *= 1.4
                continue
            level = np.partition(field.rho[allowed], needed - 1)[needed - 1] * 1.15 + edema_rho
            box = _tight_box(coarse, field.rho.reshape(field.box.shape) <= level, shape)
        field = _LesionField(hematoma, head, reference, pose, lattices, box)
        allowed = field.allowed(field.likely(n_voxels, wide))
        if allowed.size < n_voxels:
            reach *= 1.4
            continue
        threshold = np.partition(field.rho[allowed], n_voxels - 1)[n_voxels - 1]
        if _touches_open_face(field.rho.reshape(field.box.shape), threshold + edema_rho, box, shape):
            reach *= 1.4
            continue
        return field, allowed, threshold, box
    raise LesionDoesNotFit(f"a {volume_ml:.1f} mL {hematoma.location} hematoma does not fit in the brain"
                           f"{' (whole-box search)' if wide else ''}")


def _tight_box(coarse, selected: np.ndarray, shape) -> tuple[slice, slice, slice]:
    """Full-resolution box around the selected coarse voxels, one coarse step (and slice) wider."""
    if not selected.any():
        return tuple(slice(b.start, b.stop) for b in coarse)
    box = []
    for axis, (b, n) in enumerate(zip(coarse, shape)):
        step = b.step or 1
        hits = np.flatnonzero(selected.any(axis=tuple(a for a in range(3) if a != axis)))
        pad = step + 1
        box.append(slice(max(b.start + hits[0] * step - pad, 0), min(b.start + hits[-1] * step + pad + 1, n)))
    return tuple(box)


def _touches_open_face(rho: np.ndarray, level: float, box, shape) -> bool:
    """True when the shape (with its edema) reaches a face of the box that is not the image's edge."""
    for axis, (b, n) in enumerate(zip(box, shape)):
        for index, at_edge in ((0, b.start == 0), (-1, b.stop >= n)):
            if not at_edge and (np.take(rho, index, axis=axis) <= level).any():
                return True
    return False


def _appearance(field: _LesionField, reference, pose, threshold, box_mask):
    """Partial-volume weight, clot HU and edema weight for every voxel of the box."""
    hematoma = field.hematoma
    radius = float(np.mean(hematoma.radii_mm))
    ramp = 0.9 / radius  # about one voxel of the 0.9 mm render grid, in rho units
    weight = box_mask.astype(np.float32)
    # Boundary band: average the weight over three sub-slices (5 mm slab partial volume).
    band = np.flatnonzero(np.abs(field.rho - threshold) < threshold * (0.5 * SLICE_MM / radius + 0.3) + 2 * ramp)
    if band.size:
        total = np.zeros(band.size, dtype=np.float32)
        for dz in (-SLICE_MM / 3.0, 0.0, SLICE_MM / 3.0):
            # Sub-slices reuse the slice's depth map: lesions stay >= 3 mm inside the brain anyway.
            sub_field = field if dz == 0.0 else _LesionField(hematoma, field.head, reference, pose, field.lattices,
                                                             field.box.box, dz, depth=field.depth)
            sub = np.clip((threshold - sub_field.rho[band]) / ramp + 0.5, 0.0, 1.0)
            sub *= _may_bleed(hematoma, field.head.anatomy, sub_field.points[:, band], sub_field.depth[band])
            total += sub
        weight[band] = total / 3.0
    # Clot density where there is clot: a fine texture only (the signs are painted by the caller).
    clot = np.flatnonzero(weight > 0)
    lesion_hu = np.full(weight.shape, hematoma.density_hu, dtype=np.float32)
    if clot.size:
        texture = field.box.resample(field.lattices[2], field.box.to_lesion, 0.0, True)[clot]
        lesion_hu[clot] += np.float32(1.0 + 1.5 * hematoma.heterogeneity) * texture
    # Edema: from the clot's edge out to ``edema_mm``, fading; not across the falx.
    edema_rho = hematoma.edema_mm / radius
    edema = np.clip((threshold + edema_rho - field.rho) / edema_rho, 0.0, 1.0) ** 0.7
    if hematoma.location != "infratentorial":
        edema *= field.points[0] * hematoma.side > 0.5
    return weight, lesion_hu, edema.astype(np.float32)


def _index_box(reference: sitk.Image, pose: Pose, centre_head, reach_mm: float, shape) -> tuple[slice, slice, slice]:
    """Numpy index box (z, y, x) of the scan around a head-frame point, ``reach_mm`` each way."""
    centre = pose.rotation() @ np.asarray(centre_head) + np.asarray(pose.translation_mm)
    origin, spacing = np.asarray(reference.GetOrigin()), np.asarray(reference.GetSpacing())
    lo = np.floor((centre - reach_mm - origin) / spacing).astype(int)
    hi = np.ceil((centre + reach_mm - origin) / spacing).astype(int) + 1
    nz, ny, nx = shape
    return (slice(max(lo[2], 0), min(hi[2], nz)), slice(max(lo[1], 0), min(hi[1], ny)), slice(max(lo[0], 0), min(hi[0], nx)))
