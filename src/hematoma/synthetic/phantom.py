"""Synthetic head anatomy: a noise-free head in its own frame, then scanned in a pose.

Coordinates are millimetres in LPS (x to the patient's left, y posterior,
z superior), the convention of ITK / SimpleITK; the head frame's origin is the
centre of the cranial vault.  The head is rendered once, noise-free, on a
"canonical" grid in the head frame (0.9 mm in-plane for ``full``, 2.5 mm
along z), and each scan (baseline, follow-up) resamples it through its own
pose onto the scanner grid, so both scans show the same anatomy.

Tissues and their attenuation (HU): air -1000, scalp +40, skull tables
~1450 with diploe ~800, CSF ~5, grey matter ~38, white matter ~28, deep grey
nuclei ~36, falx ~55, skull base with sphenoid / ethmoid / mastoid air.
Layers are painted with linear ramps about one render voxel wide (partial
volume), the volume is smoothed along z to mimic a 5 mm slab, and noise is
added after resampling (in :mod:`hematoma.synthetic.patient`).

Shapes are analytic (ellipsoids and a skull-base "floor" with its three
fossae), perturbed by smooth random fields (:mod:`.fields`): the sulcal
pattern, the brain's texture, the head's outline, the air cells.  Signed
distances use the first-order estimate f / |grad f| of the ellipsoid's
implicit function: exact on the surface, good to a few per cent within the
20 mm shell where the layers live.  Scanning is in :mod:`.scanner`.

Hand-written rather than taken from a phantom library: the head must be
random per patient, fast (~0.5 s at 0.9 mm on one core), in HU, and carry
the depth map that keeps the hematoma inside the brain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .fields import RandomFields

# Output grids: in-plane matrix and spacing, and the in-plane spacing the head is rendered at.
SIZES: dict[str, dict[str, float]] = {
    "full": {"matrix": 512, "spacing": 0.45, "render": 0.9},
    "small": {"matrix": 128, "spacing": 1.8, "render": 1.8},
}
SLICE_MM = 5.0
RENDER_Z_MM = 2.5

HU_AIR, HU_SCALP, HU_CSF, HU_FALX, HU_FAT = -1000.0, 40.0, 5.0, 55.0, -80.0


@dataclass(frozen=True)
class HeadAnatomy:
    """One head's shape and tissue parameters (drawn by :func:`draw_anatomy`)."""

    half_axes: tuple[float, float, float, float]  # inner skull: x, y, z above centre, z below centre
    skull_mm: float
    scalp_mm: float
    base_mm: float  # skull-base bone thickness at the petrous ridges (thinner elsewhere)
    csf_mm: float  # subarachnoid CSF over the brain (grows with atrophy)
    cortex_mm: float
    sulcus_depth_mm: float
    sulcus_width: float  # width of a sulcus in units of the sulcal field (grows with atrophy)
    ventricle_scale: float
    hu_gm: float
    hu_wm: float
    hu_deep_grey: float
    hu_bone: float
    floor_mm: tuple[float, float, float]  # anterior, middle, posterior cranial fossa floors (z)
    bottom_mm: float  # z of the lowest scanned slice, head frame
    field_seed: int

    @property
    def top_mm(self) -> float:
        return self.half_axes[2] + self.skull_mm + self.scalp_mm


def draw_anatomy(rng: np.random.Generator, age: float = 60.0) -> HeadAnatomy:
    """A head that differs a little from patient to patient; older heads have more atrophy."""
    scale = float(np.clip(rng.normal(1.0, 0.045), 0.9, 1.1))
    sx, sy = (float(np.clip(rng.normal(1.0, 0.035), 0.92, 1.08)) for _ in range(2))
    atrophy = float(np.clip((age - 45.0) / 40.0 + rng.normal(0.0, 0.15), 0.0, 1.0))
    return HeadAnatomy(
        half_axes=(66.0 * scale * sx, 84.0 * scale * sy, 70.0 * scale, 100.0 * scale),
        skull_mm=float(rng.uniform(4.8, 6.5)),
        scalp_mm=float(rng.uniform(4.0, 6.5)),
        base_mm=float(rng.uniform(9.0, 12.0)),
        csf_mm=1.5 + 2.5 * atrophy,
        cortex_mm=float(rng.uniform(2.6, 3.4)),
        sulcus_depth_mm=float(rng.uniform(12.0, 18.0)),
        sulcus_width=0.13 + 0.15 * atrophy,
        ventricle_scale=1.0 + 0.55 * atrophy + float(rng.normal(0.0, 0.05)),
        hu_gm=float(rng.normal(38.0, 1.0)),
        hu_wm=float(rng.normal(28.0, 1.0)),
        hu_deep_grey=float(rng.normal(34.5, 1.0)),
        hu_bone=float(rng.uniform(1350.0, 1550.0)),
        floor_mm=(-24.0 * scale, -40.0 * scale, -64.0 * scale),
        bottom_mm=-56.0 * scale + float(rng.normal(0.0, 2.0)),
        field_seed=int(rng.integers(2**31)),
    )


# -- analytic pieces, usable on the whole grid (broadcast) or on point lists --------------


def _vault_distance(anatomy: HeadAnatomy, x, y, z):
    """Signed distance (mm, + outside) to the inner table of the vault (no skull base)."""
    a, b, c_top, c_bottom = anatomy.half_axes
    c = np.where(z >= 0, c_top, c_bottom)
    fx, fy, fz = x / (a * a), y / (b * b), z / (c * c)
    implicit = x * fx + y * fy + z * fz - 1.0  # (x/a)^2 + ... - 1
    gradient = 2.0 * np.sqrt(fx * fx + fy * fy + fz * fz) + 1e-6
    return implicit / gradient


def floor_height(anatomy: HeadAnatomy, x, y):
    """z of the skull-base floor: anterior, middle and posterior cranial fossae.

    The sphenoid ridges and the petrous ridges run obliquely (a V open to
    the back), the orbital roofs dome up laterally, the middle fossae deepen
    laterally, the posterior fossa is a bowl, and the sella is raised.
    """
    anterior, middle, posterior = anatomy.floor_mm
    ax = np.abs(x)
    step1 = 0.5 * (1.0 + np.tanh((y + 26.0 + 0.25 * ax) / 4.0))  # sphenoid ridge
    step2 = 0.5 * (1.0 + np.tanh((y - 2.0 - 0.45 * ax) / 4.0))  # petrous ridge
    anterior = anterior + 7.0 * np.minimum((x / 35.0) ** 2, 1.0)
    # Each middle fossa is a bowl under its temporal lobe, rising to the sella and to both ridges.
    middle = middle + 9.0 * np.minimum(((ax - 38.0) / 22.0) ** 2, 1.5) + 8.0 * np.minimum(((y + 4.0) / 18.0) ** 2, 1.5)
    posterior = posterior + 12.0 * np.minimum((x / 55.0) ** 2 + ((y - 40.0) / 60.0) ** 2, 1.0)
    floor = anterior + (middle - anterior) * step1
    floor = floor + (posterior - floor) * step2
    sella = 6.0 * np.exp(-((x / 13.0) ** 2)) * step1 * (1.0 - 0.5 * (1.0 + np.tanh((y - 4.0) / 3.0)))
    return floor + sella


def base_thickness(anatomy: HeadAnatomy, x, y):
    """Skull-base bone thickness (mm): thin orbital roofs, thick petrous ridges, ~6 mm occipital bone."""
    ridge = np.exp(-(((y - 2.0 - 0.45 * np.abs(x)) / 6.0) ** 2))
    posterior = 0.5 * (1.0 + np.tanh((y - 10.0 - 0.45 * np.abs(x)) / 4.0))
    return 3.0 + (anatomy.base_mm - 3.0) * ridge + 3.0 * posterior


def _ellipsoid_radius(x, y, z, centre, half_axes):
    return np.sqrt(((x - centre[0]) / half_axes[0]) ** 2 + ((y - centre[1]) / half_axes[1]) ** 2 + ((z - centre[2]) / half_axes[2]) ** 2)


def ventricles(anatomy: HeadAnatomy) -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """(centre, half-axes) of the ellipsoids that make the ventricular system."""
    k = anatomy.ventricle_scale
    parts = []
    for side in (-1.0, 1.0):
        parts += [
            ((side * 7.0 * k, 0.0, 20.0), (5.0 * k, 22.0, 7.0 * k)),  # body
            ((side * 9.5 * k, -22.0, 13.0), (5.5 * k, 9.0, 8.0)),  # frontal horn
            ((side * 14.0 * k, 22.0, 15.0), (6.5 * k, 10.0, 8.0)),  # atrium
            ((side * 17.0 * k, 36.0, 10.0), (4.0 * k, 9.0, 5.0)),  # occipital horn
            ((side * 28.0, 6.0, -12.0), (3.0 * k, 11.0, 3.5 * k)),  # temporal horn
        ]
    parts.append(((0.0, 4.0, 2.0), (1.2 * k, 11.0, 7.0)))  # third ventricle
    parts.append(((0.0, 36.0, -38.0), (5.0, 3.5 * k, 6.0)))  # fourth ventricle
    return parts


def deep_grey_nuclei() -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    parts = []
    for side in (-1.0, 1.0):
        parts += [
            ((side * 22.0, -5.0, 6.0), (7.0, 16.0, 10.0)),  # lentiform nucleus
            ((side * 12.0, -19.0, 14.0), (5.0, 8.0, 8.0)),  # caudate head
            ((side * 11.0, 12.0, 5.0), (8.5, 13.0, 8.5)),  # thalamus
        ]
    return parts


def in_posterior_fossa(x, y, z):
    """Below the tentorium and behind the petrous ridges (head frame)."""
    tentorium = -14.0 - 0.3 * (y - 10.0) - 0.004 * x * x
    return (z < tentorium) & (y > 2.0 + 0.45 * np.abs(x))


def ventricle_radius(anatomy: HeadAnatomy, x, y, z):
    """Smallest normalised ellipsoid radius over the ventricles (< 1 inside a ventricle)."""
    radii = [_ellipsoid_radius(x, y, z, c, h) for c, h in ventricles(anatomy)]
    return np.minimum.reduce(radii)


# -- the canonical rendering ------------------------------------------------------------


@dataclass(frozen=True)
class CanonicalGrid:
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]  # numpy order: z, y, x

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable coordinate vectors x (1,1,nx), y (1,ny,1), z (nz,1,1)."""
        nz, ny, nx = self.shape
        x = (self.origin[0] + self.spacing[0] * np.arange(nx, dtype=np.float32)).reshape(1, 1, nx)
        y = (self.origin[1] + self.spacing[1] * np.arange(ny, dtype=np.float32)).reshape(1, ny, 1)
        z = (self.origin[2] + self.spacing[2] * np.arange(nz, dtype=np.float32)).reshape(nz, 1, 1)
        return x, y, z


def canonical_grid(anatomy: HeadAnatomy, size: str) -> CanonicalGrid:
    a, b, c_top, _ = anatomy.half_axes
    shell = anatomy.skull_mm + anatomy.scalp_mm + 4.0
    step = SIZES[size]["render"]
    # Reach 25 mm below the lowest slice so that a pitched scan never leaves the grid.
    lower = (-(a + shell), -(b + shell), anatomy.bottom_mm - 25.0)
    upper = (a + shell, b + shell, c_top + shell + 2.0)
    spacing = (step, step, RENDER_Z_MM)
    shape = tuple(int(math.ceil((hi - lo) / s)) + 1 for lo, hi, s in zip(lower, upper, spacing))
    return CanonicalGrid(origin=lower, spacing=spacing, shape=(shape[2], shape[1], shape[0]))


def _ramp_inside(distance, width: float, out=None):
    """Partial-volume weight of being inside (distance < 0): 1 deep inside, 0 outside."""
    out = np.multiply(distance, -1.0 / width, out=out)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def _paint(image, value, weight, scratch):
    """image <- image + weight * (value - image), in place (value: scalar or array)."""
    np.subtract(value, image, out=scratch)
    scratch *= weight
    image += scratch


def _box(grid: CanonicalGrid, centre, half_axes, margin: float = 2.0):
    """Index slices (z, y, x) of the grid box around an ellipsoid."""
    slices = []
    for axis, numpy_axis in ((2, 0), (1, 1), (0, 2)):
        lo = (centre[axis] - half_axes[axis] - margin - grid.origin[axis]) / grid.spacing[axis]
        hi = (centre[axis] + half_axes[axis] + margin - grid.origin[axis]) / grid.spacing[axis]
        n = grid.shape[numpy_axis]
        slices.append(slice(int(np.clip(np.floor(lo), 0, n)), int(np.clip(np.ceil(hi) + 1, 0, n))))
    return tuple(slices)


def _paint_ellipsoids(image, grid, parts, value, width, texture=None, restrict=None):
    x, y, z = grid.axes()
    for centre, half_axes in parts:
        box = _box(grid, centre, half_axes)
        bx, by, bz = x[..., box[2]], y[:, box[1]], z[box[0]]
        radius = _ellipsoid_radius(bx, by, bz, centre, half_axes)
        # Radius -> approximate mm from the surface, for a one-voxel ramp.
        weight = _ramp_inside((radius - 1.0) * min(half_axes), width)
        if restrict is not None:
            weight *= restrict[box]
        target = value if texture is None else value + texture[box]
        image[box] += weight * (target - image[box])


@dataclass
class RenderedHead:
    """A rendered head: its noise-free image and the depth below the brain's surface (mm)."""

    anatomy: HeadAnatomy
    grid: CanonicalGrid
    image: sitk.Image  # float32 HU, head frame
    depth: sitk.Image  # float32, same grid: mm below the brain surface (< 0 outside the brain)


def render_head(anatomy: HeadAnatomy, size: str) -> RenderedHead:
    """Noise-free head in the head frame on its canonical grid (float32 HU, 5 mm slab in z)."""
    grid = canonical_grid(anatomy, size)
    x, y, z = grid.axes()
    width = grid.spacing[0]
    fields = RandomFields(anatomy.field_seed, grid)
    sulcal = fields.sulcal()
    texture = np.roll(sulcal, (3, 11, 13), axis=(0, 1, 2))  # another, independent-looking pattern

    vault = _vault_distance(anatomy, x, y, z).astype(np.float32)
    vault += fields.wobble(1.2)
    below_floor = (floor_height(anatomy, x, y) - z).astype(np.float32)
    cavity = np.maximum(vault, below_floor)  # signed distance to the intracranial wall

    image = np.full(grid.shape, HU_AIR, dtype=np.float32)
    weight = np.empty_like(image)
    scratch = np.empty_like(image)
    # Scalp with a thin fat layer under the skin, then the skull (vault and base).
    # The vault is thinner over the temples than at the front, back and top.
    a, b, c_top, _ = anatomy.half_axes
    thickness = anatomy.skull_mm * (0.6 + 0.45 * np.minimum((y / b) ** 2, 1.0) + 0.1 * np.clip(z / c_top, 0.0, 1.0))
    outer_table = vault - thickness  # broadcast: full grid
    _paint(image, HU_SCALP, _ramp_inside(outer_table - anatomy.scalp_mm, width, out=weight), scratch)
    _paint(image, HU_FAT, _ramp_inside(np.abs(outer_table - 0.35 * anatomy.scalp_mm) - 0.6, width, out=weight), scratch)
    _skull_base_soft_tissue(image, grid, anatomy)
    bone_depth = np.divide(cavity, thickness, out=scratch)  # 0 at the inner table
    bone_depth -= 0.5
    np.abs(bone_depth, out=bone_depth)
    bone = np.multiply(bone_depth, -1.0 / 0.3)
    bone += 1.0
    np.clip(bone, 0.0, 1.0, out=bone)  # 1 mid-diploe, 0 at the tables
    bone *= 0.55 * anatomy.hu_bone
    np.subtract(anatomy.hu_bone, bone, out=bone)
    _ramp_inside(outer_table, width, out=weight)
    weight *= _ramp_inside(below_floor - base_thickness(anatomy, x, y), width, out=scratch)
    weight *= np.clip(cavity / width + 0.5, 0.0, 1.0)  # not inside the cavity
    image += weight * (bone - image)
    del bone
    _air_cells(image, grid, anatomy, fields, cavity)

    # Intracranial: CSF first, then the brain with its sulci, cortex and white matter.
    _paint(image, HU_CSF, _ramp_inside(cavity, width, out=weight), scratch)
    sulcus = np.abs(sulcal)
    sulcus *= -1.0 / anatomy.sulcus_width
    sulcus += 1.0
    np.maximum(sulcus, 0.0, out=sulcus)  # 1 on the sulcus' mid-plane
    depth = np.negative(cavity, out=cavity)
    depth -= anatomy.csf_mm  # depth below the brain's surface, mm
    surface = depth - anatomy.sulcus_depth_mm * sulcus
    cortex = np.abs(sulcal)
    cortex *= -1.0 / 0.55
    cortex += 1.0
    np.maximum(cortex, 0.0, out=cortex)  # wide: white matter retreats under each sulcus
    cortex *= anatomy.sulcus_depth_mm + 2.0
    cortex += anatomy.cortex_mm
    np.subtract(cortex, depth, out=cortex)  # > 0 above the grey-white boundary
    brain = _ramp_inside(cortex, 1.5 * width, out=scratch)  # white-matter weight
    brain *= anatomy.hu_wm - anatomy.hu_gm
    brain += anatomy.hu_gm
    brain += 1.2 * texture
    _paint(image, brain, _ramp_inside(-surface, width, out=weight), cortex)

    inside = np.clip(depth / 4.0, 0.0, 1.0)  # keep deep structures off the skull
    _paint_ellipsoids(image, grid, deep_grey_nuclei(), anatomy.hu_deep_grey, 4.0, 1.2 * texture, inside)
    _paint_ellipsoids(image, grid, ventricles(anatomy), HU_CSF, width, restrict=inside)
    _falx(image, grid, anatomy, depth, width)
    # 5 mm slab: a [1, 2, 1]/4 filter along z at 2.5 mm, plus linear interpolation when scanned.
    image = ndimage.correlate1d(image, np.array([0.25, 0.5, 0.25], dtype=np.float32), axis=0, mode="nearest")
    images = []
    for array in (image, depth):
        result = sitk.GetImageFromArray(array)
        result.SetOrigin(grid.origin)
        result.SetSpacing(grid.spacing)
        images.append(result)
    return RenderedHead(anatomy=anatomy, grid=grid, image=images[0], depth=images[1])


def _falx(image, grid, anatomy, depth, width):
    """Interhemispheric fissure (CSF) with the falx (slightly hyperdense) in it, above the callosum."""
    x, y, z = grid.axes()
    box = (slice(None), slice(None), _box(grid, (0.0, 0.0, 0.0), (4.0, 1.0, 1.0), margin=0.0)[2])
    bx, by, bz = x[..., box[2]], y, z
    # Reaches down to the corpus callosum in the middle, lower in front and behind.
    bottom = 30.0 - 0.012 * (by + 2.0) ** 2
    below = np.clip((bz - bottom) / 3.0, 0.0, 1.0) * np.clip(depth[box] / 2.0 + 1.0, 0.0, 1.0)
    fissure = _ramp_inside(np.abs(bx) - 1.3, width) * below
    region = image[box]
    region += fissure * (HU_CSF - region)
    falx = _ramp_inside(np.abs(bx) - 0.45, width) * below
    region += falx * (HU_FALX - region)


def _skull_base_soft_tissue(image, grid, anatomy):
    """Orbits (fat and globes) and the sphenoid sinus under the skull base."""
    s = anatomy.half_axes[0] / 66.0
    width = grid.spacing[0]
    for side in (-1.0, 1.0):
        _paint_ellipsoids(image, grid, [((side * 31.0 * s, -68.0 * s, -34.0 * s), (15.0, 20.0, 13.0))], HU_FAT, width)
        _paint_ellipsoids(image, grid, [((side * 32.0 * s, -76.0 * s, -33.0 * s), (11.5, 11.5, 11.5))], 12.0, width)
    air = [((0.0, -20.0 * s, -50.0 * s), (13.0, 11.0, 8.0)),  # sphenoid sinus
           ((0.0, -80.0 * s, -56.0 * s), (8.0, 18.0, 12.0)),  # nasal cavity
           ((-27.0 * s, -66.0 * s, -68.0 * s), (13.0, 15.0, 14.0)),  # maxillary sinuses
           ((27.0 * s, -66.0 * s, -68.0 * s), (13.0, 15.0, 14.0))]
    _paint_ellipsoids(image, grid, air, HU_AIR, width)


def _air_cells(image, grid, anatomy, fields, cavity):
    """Ethmoid and mastoid air cells: a honeycomb of air in the bone, outside the cavity."""
    s = anatomy.half_axes[0] / 66.0
    for centre, half in (((0.0, -62.0 * s, -38.0 * s), (7.0, 16.0, 9.0)),
                         ((-54.0 * s, 15.0 * s, -52.0 * s), (9.0, 11.0, 10.0)),
                         ((54.0 * s, 15.0 * s, -52.0 * s), (9.0, 11.0, 10.0))):
        box = _box(grid, centre, half)
        if any(b.stop <= b.start for b in box):
            continue
        honeycomb = np.clip(fields.cells(box) * 2.0, 0.0, 1.0) * np.clip(cavity[box] / grid.spacing[0], 0.0, 1.0)
        x, y, z = grid.axes()
        radius = _ellipsoid_radius(x[..., box[2]], y[:, box[1]], z[box[0]], centre, half)
        weight = _ramp_inside((radius - 1.0) * min(half), grid.spacing[0]) * honeycomb
        image[box] += weight * (HU_AIR - image[box])
