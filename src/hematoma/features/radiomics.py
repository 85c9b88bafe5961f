"""Radiomics features of the hematoma (pyradiomics), with the CT's real spacing.

The paper's 107 features come from pyradiomics' default feature set on the
original image (see ``radiomics_params.yaml``, shipped with the package).  A
user may replace that file; it is validated against pyradiomics' own schema
and every problem with it is reported as :class:`~hematoma.errors.InputError`
naming the file.

Speed (a 512x512x30 head CT is ~8 M voxels, a hematoma ~30 k):

* pyradiomics checks and casts the *whole* mask (``numpy.unique`` on 8 M
  voxels) and, with its default ``additionalInfo``, hashes both volumes.  We
  crop image and mask to the mask's bounding box first and switch the
  diagnostics off.  Where pyradiomics reads no voxel outside that box
  (original image, no resampling, no normalisation: it then crops to the box
  itself, without margin, before computing any feature) the features are
  bit-identical to the uncropped run; for the other settings (filters such
  as LoG/wavelet, resampling and normalisation read the surroundings) we do
  not crop.
* pyradiomics' shape class compares every pair of mesh vertices for the
  maximum diameters (~1 s for 30 mL at 0.45 mm); :class:`FastShape` gives the
  same values from far fewer pairs (see the comment above it).

Provenance (versions, settings) is kept apart from the feature values: see
:func:`radiomics_provenance`; the caller adds the input files' hashes.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.resources
import logging
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import radiomics
import SimpleITK as sitk
from radiomics import cShape, featureextractor
from radiomics.shape import RadiomicsShape

from ..errors import InputError

# pyradiomics logs every step at INFO and warns on stderr: quiet it (the
# logger's level too, so that INFO records are not even built).  pykwalify
# logs schema errors before raising them; we re-raise them as InputError.
radiomics.setVerbosity(logging.ERROR)
logging.getLogger("radiomics").setLevel(logging.ERROR)
logging.getLogger("pykwalify").setLevel(logging.CRITICAL)

PREFIX = "rad_"
DEFAULT_PARAMS_NAME = "radiomics_params.yaml"

# pyradiomics' default feature set per class (deprecated features left out);
# 107 in all, the paper's count.  Tests check the shipped file against it.
EXPECTED_FEATURE_COUNTS = {
    "shape": 14,
    "firstorder": 18,
    "glcm": 24,
    "glrlm": 16,
    "glszm": 16,
    "gldm": 14,
    "ngtdm": 5,
}


class MaskError(InputError, ValueError):
    """The mask holds no usable region (empty, a single voxel, too flat...)."""


def default_params_path() -> Path:
    """The params file shipped with the package."""
    return Path(str(importlib.resources.files("hematoma.features").joinpath(DEFAULT_PARAMS_NAME)))


def _resolve(params_path: str | Path | None) -> Path:
    return default_params_path() if params_path is None else Path(params_path)


@dataclass(frozen=True)
class _Plan:
    """A validated extractor and what we may do around it."""

    extractor: featureextractor.RadiomicsFeatureExtractor
    without_shape: featureextractor.RadiomicsFeatureExtractor  # the same, shape class removed
    crop_is_exact: bool
    shape_names: list[str] | None  # enabled shape features (None: pyradiomics' defaults)
    has_shape: bool


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "msg", None) or exc).split())
    return text or type(exc).__name__


@functools.lru_cache(maxsize=16)
def _cached_plan(path: str, mtime_ns: int, size: int) -> _Plan:
    # Keyed on the file's mtime and size so that an edited file is read again.
    try:
        with warnings.catch_warnings():
            # pykwalify loads pyradiomics' schema functions with the deprecated load_module()
            warnings.simplefilter("ignore", DeprecationWarning)
            extractor = featureextractor.RadiomicsFeatureExtractor(path)
    except Exception as exc:  # pykwalify SchemaError/CoreError, YAML errors, TypeError...
        raise InputError(path, f"invalid pyradiomics parameters file: {_one_line(exc)}") from exc
    # Diagnostics (image hashes, connected components) cost time and are not
    # features; radiomics_provenance() records what matters.
    extractor.settings["additionalInfo"] = False
    settings = extractor.settings
    resampling = settings.get("resampledPixelSpacing") is not None and settings.get("interpolator") is not None
    crop_is_exact = (
        set(extractor.enabledImagetypes) <= {"Original"}
        and not resampling
        and not settings.get("normalize", False)  # normalisation uses the whole image's mean and SD
    )
    without_shape = copy.copy(extractor)
    without_shape.enabledFeatures = {k: v for k, v in extractor.enabledFeatures.items() if k != "shape"}
    return _Plan(
        extractor=extractor,
        without_shape=without_shape,
        crop_is_exact=crop_is_exact,
        shape_names=extractor.enabledFeatures.get("shape"),
        has_shape="shape" in extractor.enabledFeatures,
    )


def _plan(params_path: str | Path | None) -> _Plan:
    path = _resolve(params_path)
    if not path.is_file():
        raise InputError(path, "pyradiomics parameters file not found")
    stat = path.stat()
    return _cached_plan(str(path), stat.st_mtime_ns, stat.st_size)


def load_extractor(params_path: str | Path | None = None) -> featureextractor.RadiomicsFeatureExtractor:
    """A validated pyradiomics extractor for ``params_path`` (default: the shipped file)."""
    return _plan(params_path).extractor


def _label_bounding_box(mask_array: np.ndarray, label: int) -> tuple[slice, ...] | None:
    """Bounding box (numpy z, y, x order) of ``label``; None when the label is absent."""
    inside = mask_array == label
    bounds = []
    for axis in range(inside.ndim):
        # any() over the other axes: a few passes over the array, cheaper than np.nonzero.
        other = tuple(a for a in range(inside.ndim) if a != axis)
        hits = np.flatnonzero(inside.any(axis=other))
        if hits.size == 0:
            return None
        bounds.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(bounds)


def _crop(image: sitk.Image, region: tuple[slice, ...]) -> sitk.Image:
    # SimpleITK indexes x, y, z; slicing keeps spacing and direction and moves the origin.
    return image[region[::-1]]


# ---------------------------------------------------------------------------
# Shape features without pyradiomics' O(n^2) diameter loop.
#
# pyradiomics' C shape code computes the surface area and volume of its
# marching-cubes mesh (cheap) and the four maximum diameters by comparing every
# pair of mesh vertices.  A 30 mL hematoma at 0.45 mm in-plane has ~20 k
# vertices, so that loop alone takes ~1 s.  We get the same numbers faster:
#   * surface area and volume: per-cube sums.  The contribution of a cube
#     depends only on its 8-corner configuration (area), or on the
#     configuration and linearly on the cube's position (signed volume); both
#     tables are measured by calling pyradiomics' own C function on single
#     cubes, so the mesh definition (its triangle table) is pyradiomics'.
#   * diameters: the mesh vertices are the midpoints of the edges between a
#     mask voxel and a background voxel; the farthest pair of a point set lies
#     on its convex hull, and a point strictly between two others on a line is
#     never part of it, so we prune to those candidates and compare pairs with
#     the same arithmetic as the C code.
# Tests check the result against pyradiomics' own shape class.
# ---------------------------------------------------------------------------

_CORNERS = [(dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]  # bit i of a cube code


def _cube(code: int) -> np.ndarray:
    cube = np.zeros((2, 2, 2), dtype=bool)
    for bit, corner in enumerate(_CORNERS):
        cube[corner] = bool(code >> bit & 1)
    return cube


@functools.lru_cache(maxsize=1)
def _unit_volume_tables() -> tuple[np.ndarray, np.ndarray]:
    """Signed volume of each cube configuration at the origin, and its change per unit shift along z, y, x."""
    unit = np.ones(3)
    v0 = np.array([cShape.calculate_coefficients(_cube(c), unit)[1] for c in range(256)])
    slope = np.zeros((3, 256))
    for axis in range(3):
        for code in range(256):
            cube = _cube(code)
            low_face = np.take(cube, [0], axis=axis)
            # [A, A, B] along the axis: cube (A, A) at 0 (known) then the target (A, B) at 1.
            stacked = np.concatenate([low_face, cube], axis=axis)
            doubled = np.concatenate([low_face, low_face], axis=axis)
            code_aa = sum(int(doubled[corner]) << bit for bit, corner in enumerate(_CORNERS))
            total = cShape.calculate_coefficients(np.ascontiguousarray(stacked), unit)[1]
            slope[axis, code] = total - v0[code_aa] - v0[code]
    return v0, slope


@functools.lru_cache(maxsize=32)
def _area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    spacing_array = np.array(spacing, dtype=float)
    return np.array([cShape.calculate_coefficients(_cube(c), spacing_array)[0] for c in range(256)])


def _surface_and_volume(mask: np.ndarray, spacing: np.ndarray) -> tuple[float, float]:
    """Mesh surface area (mm2) and volume (mm3) of a zero-padded boolean mask (z, y, x)."""
    nz, ny, nx = mask.shape
    codes = np.zeros((nz - 1, ny - 1, nx - 1), dtype=np.uint8)
    for bit, (dz, dy, dx) in enumerate(_CORNERS):
        codes |= mask[dz:nz - 1 + dz, dy:ny - 1 + dy, dx:nx - 1 + dx].astype(np.uint8) << bit
    surface_cubes = np.nonzero((codes != 0) & (codes != 255))
    cube_codes = codes[surface_cubes]
    area = float(_area_table(tuple(float(s) for s in spacing))[cube_codes].sum())
    v0, slope = _unit_volume_tables()
    unit_volume = v0[cube_codes].sum() + sum(
        (position * slope[axis, cube_codes]).sum() for axis, position in enumerate(surface_cubes)
    )
    return area, float(unit_volume * np.prod(spacing))


def _max_sq_distance(points: np.ndarray) -> float:
    """Largest squared distance between two rows of ``points``, summed in the C code's order."""
    best = 0.0
    for start in range(0, len(points), 512):
        block = points[start:start + 512, None, :] - points[None, :, :]
        sq = block * block
        best = max(best, float(((sq[..., 0] + sq[..., 1]) + sq[..., 2]).max()))
    return best


def _line_extremes(transitions: list[np.ndarray], axis: int) -> np.ndarray:
    """The first and last vertex of every line of vertices along ``axis``, as doubled indices (z, y, x).

    ``transitions[e]`` marks the voxel edges along axis ``e`` that cross the
    mask's border; each holds a vertex at doubled index 2 * index + 1 on ``e``.
    Vertices from different ``e`` never share a line (their parities differ).
    """
    points = []
    for edge_axis, crossing in enumerate(transitions):
        rows = np.nonzero(crossing.any(axis=axis))
        first = np.argmax(crossing, axis=axis)[rows]
        last = crossing.shape[axis] - 1 - np.argmax(np.flip(crossing, axis=axis), axis=axis)[rows]
        for along in (first, last):
            index = list(rows)
            index.insert(axis, along)
            doubled = np.stack(index, axis=1) * 2
            doubled[:, edge_axis] += 1
            points.append(doubled)
    return np.concatenate(points)


def _max_sq_distance_hull(points: np.ndarray, axes: list[int]) -> float:
    """As _max_sq_distance, comparing only the convex hull's vertices (over ``axes``) when there are many points."""
    if len(points) > 48:
        # Imported here: scipy.spatial takes ~0.5 s to import, and checking a
        # parameters file (in the driver of a parallel run) needs none of it.
        from scipy.spatial import ConvexHull, QhullError

        try:
            points = points[ConvexHull(points[:, axes]).vertices]
        except QhullError:  # degenerate (collinear or flat): compare all
            pass
    return _max_sq_distance(points)


def _max_sq_distance_per_plane(doubled: np.ndarray, coords: np.ndarray, plane_axis: int) -> float:
    """Largest squared distance between two points with the same coordinate on ``plane_axis``."""
    keys = doubled[:, plane_axis]
    order = np.argsort(keys, kind="stable")
    splits = np.flatnonzero(np.diff(keys[order])) + 1
    in_plane = [a for a in range(3) if a != plane_axis]
    return max(_max_sq_distance_hull(coords[group], in_plane) for group in np.split(order, splits))


def _diameters(mask: np.ndarray, spacing: np.ndarray) -> tuple[float, float, float, float]:
    """Maximum 2D diameters (same z, same y, same x) and 3D diameter of the mesh vertices."""
    transitions = []
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        transitions.append(mask[tuple(lo)] != mask[tuple(hi)])
    # Candidates: the ends of each line of vertices along x (serve planes of
    # constant z or y, and 3D), and along y (planes of constant x).
    along_x = _line_extremes(transitions, axis=2)
    along_y = _line_extremes(transitions, axis=1)
    # Same arithmetic as pyradiomics: (index + 0.5) * spacing.
    coords_x = (along_x * 0.5) * spacing
    coords_y = (along_y * 0.5) * spacing
    slice_, column = (_max_sq_distance_per_plane(along_x, coords_x, a) for a in (0, 1))
    row = _max_sq_distance_per_plane(along_y, coords_y, 2)
    longest = _max_sq_distance_hull(coords_x, [0, 1, 2])
    return tuple(float(np.sqrt(d)) for d in (slice_, column, row, longest))


class FastShape(RadiomicsShape):
    """pyradiomics' 3D shape class, with area, volume and diameters computed as above."""

    def _initSegmentBasedCalculation(self):
        self.pixelSpacing = np.array(self.inputImage.GetSpacing()[::-1])
        # Zero padding as in pyradiomics, so that the mesh closes.
        self.maskArray = np.pad(sitk.GetArrayViewFromImage(self.inputMask) == self.label, 1)
        self.labelledVoxelCoordinates = np.where(self.maskArray != 0)
        self.SurfaceArea, self.Volume = _surface_and_volume(self.maskArray, self.pixelSpacing)
        self.diameters = _diameters(self.maskArray, self.pixelSpacing)
        # Principal axes: the same computation as pyradiomics' shape class.
        n_voxels = len(self.labelledVoxelCoordinates[0])
        coordinates = np.array(self.labelledVoxelCoordinates, dtype="int").transpose((1, 0))
        physical = coordinates * self.pixelSpacing[None, :]
        physical -= np.mean(physical, axis=0)
        physical /= np.sqrt(n_voxels)
        covariance = np.dot(physical.T.copy(), physical)
        self.eigenValues = np.linalg.eigvals(covariance)
        rounding = np.bitwise_and(self.eigenValues < 0, self.eigenValues > -1e-10)
        self.eigenValues[rounding] = 0
        self.eigenValues.sort()


def extract_radiomics(
    image: sitk.Image,
    mask: sitk.Image,
    params_path: str | Path | None = None,
    *,
    crop: bool = True,
    fast_shape: bool = True,
    source: str | Path | None = None,
) -> dict[str, float]:
    """Radiomics features of ``mask``'s region of ``image`` as ``{"rad_<name>": value}``.

    Parameters
    ----------
    image:
        The CT (HU) with its real spacing, origin and direction.
    mask:
        The hematoma mask on the same grid (label 1 unless the params file says otherwise).
    params_path:
        A pyradiomics YAML/JSON parameters file; default: the shipped ``radiomics_params.yaml``.
    crop:
        Crop to the mask's bounding box first where that gives the same values (see module doc).
    fast_shape:
        Shape features with :class:`FastShape` (same values as pyradiomics' shape class, faster).
    source:
        The mask's file, only to name it in error messages.

    Returns only feature values (pyradiomics' ``diagnostics_*`` entries are
    dropped), in pyradiomics' order, with keys such as ``rad_original_firstorder_Mean``.
    """
    plan = _plan(params_path)
    label = int(plan.extractor.settings.get("label", 1))
    if image.GetSize() != mask.GetSize():
        raise MaskError(source, f"mask size {mask.GetSize()} differs from the image's {image.GetSize()}")

    mask_array = sitk.GetArrayViewFromImage(mask)
    box = _label_bounding_box(mask_array, label)
    if box is None:
        values = np.unique(mask_array)
        values = values[values != 0]
        if values.size == 0:
            raise MaskError(source, "mask is empty (all voxels 0); radiomics features need a region")
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise MaskError(
            source, f"mask has no voxel with label {label} (its values: {shown}); set 'label' in the params file"
        )
    if all(s.stop - s.start == 1 for s in box):
        raise MaskError(source, "mask holds a single voxel; pyradiomics cannot compute features of one voxel")

    if crop and plan.crop_is_exact:
        # With these settings pyradiomics itself computes every feature on the
        # image cropped to the bounding box with no margin (padDistance only
        # serves filters and resampling), so the values do not change.
        image, mask = _crop(image, box), _crop(mask, box)
        box = tuple(slice(0, s.stop - s.start) for s in box)

    settings = plan.extractor.settings
    resegmented_shape = settings.get("resegmentRange") is not None and settings.get("resegmentShape", False)
    own_shape = (
        fast_shape and plan.has_shape and plan.crop_is_exact and mask.GetDimension() == 3 and not resegmented_shape
    )
    extractor = plan.without_shape if own_shape else plan.extractor
    try:
        result = extractor.execute(image, mask, label=label)
    except ValueError as exc:  # pyradiomics' checkMask: ROI too small or flat, geometry mismatch
        raise MaskError(source, f"pyradiomics refused the mask: {_one_line(exc)}") from exc

    features: dict[str, float] = {}
    if own_shape:
        # As pyradiomics: shape on the image and mask cropped to the bounding box, no margin.
        if mask.GetSize()[::-1] != tuple(s.stop - s.start for s in box):
            image, mask = _crop(image, box), _crop(mask, box)
        shape = FastShape(image, mask, **{**settings, "label": label})
        for name in plan.shape_names or ():
            shape.enableFeatureByName(name)
        features.update({f"{PREFIX}original_shape_{k}": float(v) for k, v in shape.execute().items()})
    features.update({PREFIX + k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")})
    return features


def radiomics_provenance(params_path: str | Path | None = None) -> dict[str, Any]:
    """What produced the features: package versions, the params file and its settings.

    Goes into each case's JSON (with the SHA-1 of the image and mask files,
    which the caller computes), not into the model's columns.
    """
    path = _resolve(params_path)
    extractor = load_extractor(path)
    settings = {k: v for k, v in extractor.settings.items() if k != "additionalInfo"}
    return {
        "versions": {
            "radiomics": radiomics.__version__,
            "SimpleITK": sitk.Version_VersionString(),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "params_file": "default" if params_path is None else str(path),
        "params_sha1": hashlib.sha1(path.read_bytes()).hexdigest(),
        "settings": _plain(settings),
        "image_types": _plain(extractor.enabledImagetypes),
        "feature_classes": _plain(extractor.enabledFeatures),
    }


def _plain(value: Any) -> Any:
    """JSON-safe copy of pyradiomics' settings (tuples, numpy scalars)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
