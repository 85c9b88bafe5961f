"""Shared pieces of the property-based suites (Hypothesis): settings, scratch folders, the error contract.

The contract every property checks: for any input a user could hand us, the
public API either succeeds with a correct result or raises
:class:`~hematoma.errors.InputError` whose message names the file; any other
exception type is a bug and is left to propagate so that Hypothesis shows its
traceback with the minimal falsifying example.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from hematoma.errors import InputError


def fuzz(max_examples: int) -> settings:
    """Per-test settings: reproducible in CI (derandomize), no deadline (ITK and pandas warm up on first use),
    no example database in the repository, and the reproduce blob printed on failure."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is shared by all examples of one test)."""
    with tempfile.TemporaryDirectory(prefix="hematoma-prop-") as folder:
        yield Path(folder)


def attempt(call: Callable, *args, **kwargs):
    """``(result, None)`` on success, ``(None, error)`` for an InputError; anything else propagates."""
    try:
        return call(*args, **kwargs), None
    except InputError as error:
        return None, error


def assert_names_file(error: BaseException, *paths: str | Path) -> None:
    """The error is an InputError and its one-line message names one of ``paths`` (by name at least)."""
    assert isinstance(error, InputError), f"{type(error).__name__} instead of InputError: {error}"
    message = str(error)
    assert any(Path(p).name in message for p in paths), f"the error names none of {[str(p) for p in paths]}: {message}"
    assert "\n" not in message.strip(), f"not one line: {message!r}"


# --------------------------------------------------------------------------- images

IMAGE_DTYPES = (np.int16, np.uint8, np.float32)


@st.composite
def directions(draw) -> tuple[float, ...]:
    """A 3x3 orthonormal direction matrix (row-major), rotations and reflections alike."""
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    if np.linalg.norm(q) < 0.1:
        q = np.array([1.0, 0, 0, 0])
    w, x, y, z = q / np.linalg.norm(q)
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    if draw(st.booleans()):
        rotation = rotation @ np.diag([1.0, 1.0, -1.0])
    return tuple(float(v) for v in rotation.ravel())


@st.composite
def geometries(draw) -> dict:
    return {
        "spacing": tuple(draw(st.lists(st.floats(0.05, 10), min_size=3, max_size=3))),
        "origin": tuple(draw(st.lists(st.floats(-1000, 1000), min_size=3, max_size=3))),
        "direction": draw(directions()),
    }


def values_of(dtype) -> st.SearchStrategy:
    if np.dtype(dtype).kind == "f":
        return st.floats(-5000, 5000, width=32)
    info = np.iinfo(dtype)
    return st.integers(int(info.min), int(info.max))


@st.composite
def volumes(draw, dtypes=IMAGE_DTYPES, min_side: int = 1, max_side: int = 6) -> np.ndarray:
    """A small 3D array indexed (z, y, x)."""
    from hypothesis.extra.numpy import arrays

    dtype = draw(st.sampled_from(dtypes))
    shape = tuple(draw(st.lists(st.integers(min_side, max_side), min_size=3, max_size=3)))
    return draw(arrays(dtype, shape, elements=values_of(dtype)))


def make_image(array: np.ndarray, geometry: dict):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    return image


def assert_same_geometry(read, written) -> None:
    """Same grid, to the precision the formats store (NIfTI keeps float32)."""
    assert read.GetSize() == written.GetSize()
    spacing, expected = np.array(read.GetSpacing()), np.array(written.GetSpacing())
    np.testing.assert_allclose(spacing, expected, rtol=1e-5)
    np.testing.assert_allclose(read.GetOrigin(), written.GetOrigin(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(read.GetDirection(), written.GetDirection(), atol=1e-4)


def assert_same_image(read, written) -> None:
    import SimpleITK as sitk

    assert_same_geometry(read, written)
    got, expected = sitk.GetArrayViewFromImage(read), sitk.GetArrayViewFromImage(written)
    assert got.dtype == expected.dtype, f"voxel type changed: {got.dtype} vs {expected.dtype}"
    np.testing.assert_array_equal(got, expected)


def assert_sane_geometry(image) -> None:
    """What any image we return must have: positive finite spacing, finite origin, an invertible direction."""
    spacing = np.array(image.GetSpacing())
    assert np.all(np.isfinite(spacing)) and np.all(spacing > 0), f"spacing {tuple(spacing)} returned without complaint"
    assert np.all(np.isfinite(image.GetOrigin())), f"origin {image.GetOrigin()} returned without complaint"
    dimension = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(dimension, dimension)
    assert np.all(np.isfinite(direction)) and abs(abs(np.linalg.det(direction)) - 1) < 1e-3, \
        f"direction {image.GetDirection()} is not a rotation"


def write_dicom_series(folder: Path, hu: np.ndarray, spacing_z: float = 2.0) -> list[Path]:
    """``hu`` (z, y, x) as an axial CT series, one file per slice (stored + RescaleIntercept -1024)."""
    import pydicom  # noqa: F401  (pydicom.dataset below)
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k, plane in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [0.0, 0.0, spacing_z * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], spacing_z
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (plane.astype(np.int32) + 1024).astype(np.uint16).tobytes()
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
