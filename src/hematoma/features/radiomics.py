"""Radiomics features of the hematoma (pyradiomics), with the CT's real spacing.

The paper's 107 features come from pyradiomics' default feature set on the
original image (see ``radiomics_params.yaml``, shipped with the package).  A
user may replace that file; it is validated against pyradiomics' own schema
and every problem with it is reported as :class:`~hematoma.errors.InputError`
naming the file.

Speed: pyradiomics checks and crops the *whole* CT before computing anything
(a 512x512x30 head CT is ~8 M voxels, a hematoma ~30 k), and with its default
``additionalInfo`` it also hashes both volumes and counts connected
components.  We crop image and mask to the mask's bounding box (plus
``padDistance`` voxels) first and switch the diagnostics off.  For the
settings where pyradiomics only ever reads voxels inside that box (original
image, no resampling, no normalisation) the features are then bit-identical to
the uncropped run; for the others (filters such as LoG/wavelet, resampling,
normalisation, which read the surroundings) we do not crop.

Provenance (versions, settings) is separate from the feature values: see
:func:`radiomics_provenance`; the caller adds the input files' hashes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

# pyradiomics logs every step at INFO and warns on stderr; quiet it (the
# logger level too, so that the INFO records are not even built).  pykwalify
# logs schema errors before raising them: we re-raise them as InputError.
import radiomics  # noqa: E402  (imported after the stdlib on purpose)
from radiomics import featureextractor  # noqa: E402

radiomics.setVerbosity(logging.ERROR)
logging.getLogger("radiomics").setLevel(logging.ERROR)
logging.getLogger("pykwalify").setLevel(logging.CRITICAL)

PREFIX = "rad_"
DEFAULT_PARAMS_NAME = "radiomics_params.yaml"

# pyradiomics' default feature set per class (deprecated features excluded);
# 107 in all, the paper's count.  Tests check the default file against it.
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
    """The mask holds no usable region (empty, one voxel, wrong label...)."""


def default_params_path() -> Path:
    """The params file shipped with the package (a real file in an installed package)."""
    resource = importlib.resources.files("hematoma.features").joinpath(DEFAULT_PARAMS_NAME)
    return Path(str(resource))


def _resolve(params_path: str | Path | None) -> Path:
    return default_params_path() if params_path is None else Path(params_path)


@functools.lru_cache(maxsize=16)
def _cached_extractor(path: str, mtime_ns: int, size: int) -> featureextractor.RadiomicsFeatureExtractor:
    # Keyed on the file's mtime and size so that an edited file is re-read.
    try:
        extractor = featureextractor.RadiomicsFeatureExtractor(path)
    except Exception as exc:  # pykwalify SchemaError/CoreError, yaml errors, TypeError...
        raise InputError(path, f"invalid pyradiomics parameters file: {_one_line(exc)}") from exc
    # Diagnostics (image hashes, connected components) cost time and are not
    # features; our provenance is recorded by radiomics_provenance().
    extractor.settings["additionalInfo"] = False
    return extractor


def load_extractor(params_path: str | Path | None = None) -> featureextractor.RadiomicsFeatureExtractor:
    """A validated pyradiomics extractor for ``params_path`` (default: the shipped file)."""
    path = _resolve(params_path)
    if not path.is_file():
        raise InputError(path, "pyradiomics parameters file not found")
    stat = path.stat()
    return _cached_extractor(str(path), stat.st_mtime_ns, stat.st_size)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "msg", None) or exc).split())
    return text or type(exc).__name__


def _crop_is_exact(extractor: featureextractor.RadiomicsFeatureExtractor) -> bool:
    """True when pyradiomics reads no voxel outside the mask's bounding box + padDistance."""
    settings = extractor.settings
    only_original = set(extractor.enabledImagetypes) <= {"Original"}
    resampling = settings.get("resampledPixelSpacing") is not None and settings.get("interpolator") is not None
    # normalisation uses the whole image's mean and SD.
    return only_original and not resampling and not settings.get("normalize", False)


def _label_bounding_box(mask_array: np.ndarray, label: int) -> tuple[slice, ...] | None:
    """Bounding box (numpy z, y, x order) of ``label``; None when the label is absent."""
    # np.any over axes: three passes over a uint8 view, much faster than np.nonzero.
    inside = mask_array == label
    bounds = []
    for axis in range(inside.ndim):
        other = tuple(a for a in range(inside.ndim) if a != axis)
        hits = np.flatnonzero(inside.any(axis=other))
        if hits.size == 0:
            return None
        bounds.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(slice(lo, hi) for lo, hi in bounds)


def _crop(image: sitk.Image, mask: sitk.Image, box: tuple[slice, ...], margin: int) -> tuple[sitk.Image, sitk.Image]:
    size_zyx = mask.GetSize()[::-1]
    lo = [max(s.start - margin, 0) for s in box][::-1]  # -> x, y, z
    hi = [min(s.stop + margin, n) for s, n in zip(box, size_zyx)][::-1]
    # SimpleITK slicing keeps spacing and direction and moves the origin.
    region = tuple(slice(a, b) for a, b in zip(lo, hi))
    return image[region], mask[region]


def extract_radiomics(
    image: sitk.Image,
    mask: sitk.Image,
    params_path: str | Path | None = None,
    *,
    crop: bool = True,
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
        Crop to the mask's bounding box first (faster, same values; see module doc).
    source:
        The mask's file, only to name it in error messages.

    Returns only feature values (pyradiomics' ``diagnostics_*`` entries are dropped),
    in pyradiomics' order, with keys such as ``rad_original_firstorder_Mean``.
    """
    extractor = load_extractor(params_path)
    label = int(extractor.settings.get("label", 1))
    if image.GetSize() != mask.GetSize():
        raise MaskError(source, f"mask size {mask.GetSize()} differs from the image's {image.GetSize()}")

    box = _label_bounding_box(sitk.GetArrayViewFromImage(mask), label)
    if box is None:
        raise MaskError(source, f"mask is empty: no voxel has label {label}; no radiomics features can be computed")
    n_voxels = int(np.prod([s.stop - s.start for s in box]))
    if n_voxels == 1:
        raise MaskError(source, "mask holds a single voxel; pyradiomics cannot compute features of one voxel")

    if crop and _crop_is_exact(extractor):
        margin = int(extractor.settings.get("padDistance", 5) or 0)
        image, mask = _crop(image, mask, box, margin)

    try:
        result = extractor.execute(image, mask, label=label)
    except ValueError as exc:  # pyradiomics' checkMask: ROI too small / flat, geometry mismatch
        raise MaskError(source, f"pyradiomics refused the mask: {_one_line(exc)}") from exc
    return {PREFIX + name: float(value) for name, value in result.items() if not name.startswith("diagnostics_")}


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
