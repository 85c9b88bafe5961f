"""Read and write images: NIfTI, NRRD, MetaImage, DICOM series and files.

Everything returns a :class:`SimpleITK.Image` that keeps the scan's geometry
(spacing, origin, direction) and, for DICOM, its values in HU (GDCM applies
RescaleSlope/Intercept).  Every user-input problem is an :class:`InputError`
naming the file.

DICOM folders are grouped and checked with pydicom headers (SimpleITK gives
no slice positions before reading the pixels): the series with the most
slices is taken unless ``series_uid`` names another, slices are sorted along
the slice normal, and a series whose slices are not evenly spaced (a missing
slice, variable spacing) or not stacked along the normal (gantry tilt) is
resampled onto a regular grid with a warning.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .image_integrity import check_image_file_complete
from .storage import atomic_path, refuse_overwrite

if TYPE_CHECKING:  # pydicom is imported where DICOM is read: ~0.15 s that NIfTI cases never need
    import pydicom

__all__ = [
    "ImageWarning",
    "read_image",
    "read_mask",
    "check_geometry",
    "write_image",
    "as_3d",
    "image_to_array",
    "array_to_image",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
]

WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
READ_SUFFIXES = WRITE_SUFFIXES + DICOM_SUFFIXES
# Headers of detached formats name their data file; they must be written under their final name.
_DETACHED_SUFFIXES = (".nhdr", ".mhd")

AIR_HU = -1024.0
# Slice gaps that differ by more than this fraction of the slice spacing are "non-uniform";
# an in-plane drift of more than this fraction of the stack's height is "gantry tilt".
SPACING_TOLERANCE = 0.01

_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "InstanceNumber", "Rows", "Columns",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices",
]


class ImageWarning(UserWarning):
    """An image was read, but not as stored (another series chosen, slices resampled)."""


# ---------------------------------------------------------------------------------------- reading


def read_image(path: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Read a 3D (or 2D) grey-level image from a file or a DICOM series folder.

    Parameters
    ----------
    path:
        NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), a DICOM file
        (a 1-slice volume) or a folder holding a DICOM series.
    series_uid:
        For a folder with several series: the SeriesInstanceUID to read (default: the
        series with the most slices).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        return _read_dicom_folder(path, series_uid)
    if _is_dicom_file(path):
        return _read_dicom_file(path, series_uid)
    if not _name_ends_with(path, WRITE_SUFFIXES):
        raise InputError(path, f"unsupported image format (expected one of {', '.join(READ_SUFFIXES)} "
                               "or a DICOM series folder)")
    if series_uid is not None:
        raise InputError(path, "a series UID can only be chosen for DICOM input")
    check_image_file_complete(path)  # ITK would zero-fill a truncated file's missing voxels
    return _check_grey_level(_sitk_read(path, lambda: sitk.ReadImage(str(path))), path)


def _sitk_read(path: Path, read):
    try:
        with _quiet_itk():
            return read()
    except RuntimeError as error:
        raise InputError(path, f"cannot be read as an image ({_itk_reason(error)})") from None


def _itk_reason(error: Exception) -> str:
    # ITK messages start with the C++ source location; the last line says what went wrong.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(error).__name__
    for prefix in ("sitk::ERROR:", "itk::ERROR:"):
        reason = reason.split(prefix, 1)[-1].strip()
    return reason[:300]


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    # ITK prints its own warnings (e.g. "non uniform sampling") to stderr; we raise
    # Python warnings with the file name instead.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _check_grey_level(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"has {image.GetNumberOfComponentsPerPixel()} values per voxel; "
                               "expected a grey-level image")
    if image.GetDimension() == 4:
        if image.GetSize()[3] != 1:
            raise InputError(path, f"is a 4D image with {image.GetSize()[3]} volumes; expected one 3D image")
        image = image[:, :, :, 0]
    if image.GetDimension() not in (2, 3):
        raise InputError(path, f"is a {image.GetDimension()}D image; expected a 2D or 3D image")
    return image


def _name_ends_with(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def _is_dicom_file(path: Path) -> bool:
    if _name_ends_with(path, DICOM_SUFFIXES):
        return True
    if _name_ends_with(path, WRITE_SUFFIXES):
        return False
    # DICOM files often have no extension: recognise the "DICM" magic after the 128-byte preamble.
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM *image* file, or None for anything else."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError):
        return None
    # RTSTRUCT, SR, DICOMDIR and the like have no Rows: they are not images.
    return header if "Rows" in header and "Columns" in header else None


def _read_dicom_file(path: Path, series_uid: str | None) -> sitk.Image:
    header = _read_header(path)
    if header is None:
        raise InputError(path, "cannot be read as an image (not a DICOM image file)")
    if series_uid is not None and header.get("SeriesInstanceUID") != series_uid:
        raise InputError(path, f"belongs to series {header.get('SeriesInstanceUID')}, not {series_uid}")
    image = _check_grey_level(_sitk_read(path, lambda: sitk.ReadImage(str(path), imageIO="GDCMImageIO")), path)
    if image.GetDimension() == 3 and image.GetSize()[2] > 1:
        return image  # a multi-frame file is a whole volume
    # GDCM gives a lone slice a z spacing of 1 mm; the slice's own thickness is the truer one
    # (it matters for volumes in mL).
    thickness = header.get("SpacingBetweenSlices") or header.get("SliceThickness")
    image = as_3d(image)
    if thickness:
        image.SetSpacing(image.GetSpacing()[:2] + (float(thickness),))
    return image


def _read_dicom_folder(folder: Path, series_uid: str | None) -> sitk.Image:
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        header = _read_header(file)
        if header is not None:
            series[str(header.get("SeriesInstanceUID", ""))].append((file, header))
    if not series:
        subfolders = sum(p.is_dir() for p in folder.iterdir())
        hint = f" (it has {subfolders} subfolder(s); give the folder of one series)" if subfolders else ""
        raise InputError(folder, f"no DICOM images in folder{hint}")
    uid = _choose_series(folder, series, series_uid)
    files, positions, normal = _sort_slices(folder, uid, series[uid])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    image = _check_grey_level(_sitk_read(folder, reader.Execute), folder)
    if positions is None or len(files) < 2:
        return image
    return _regularise(image, positions, normal, folder)


def _describe(series: dict[str, list], uids: Sequence[str]) -> str:
    def one(uid: str) -> str:
        description = str(series[uid][0][1].get("SeriesDescription") or "").strip()
        return f"{uid} ({f'{description!r}, ' if description else ''}{len(series[uid])} slices)"

    return "; ".join(one(uid) for uid in uids)


def _choose_series(folder: Path, series: dict[str, list], series_uid: str | None) -> str:
    by_size = sorted(series, key=lambda uid: -len(series[uid]))
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(folder, f"no series {series_uid} in folder; available: {_describe(series, by_size)}")
        return series_uid
    largest = [uid for uid in by_size if len(series[uid]) == len(series[by_size[0]])]
    if len(largest) > 1:
        raise InputError(folder, f"{len(largest)} series tie for the most slices: {_describe(series, largest)}; "
                                 "choose one with --series UID")
    if len(series) > 1:
        warnings.warn(f"{folder}: {len(series)} series in folder; took the largest, {_describe(series, by_size[:1])} "
                      f"(choose another with --series UID; others: {_describe(series, by_size[1:])})",
                      ImageWarning, stacklevel=4)
    return by_size[0]


def _sort_slices(folder: Path, uid: str, members: list[tuple[Path, pydicom.Dataset]]):
    """Files sorted along the slice normal, their positions (n, 3) and the normal.

    Positions are None when the headers lack them (then the instance number orders the files).
    """
    headers = [header for _, header in members]
    if any(len({str(h.get(tag)) for h in headers}) > 1 for tag in ("Rows", "Columns")):
        raise InputError(folder, f"series {uid}: slices differ in size (Rows/Columns)")
    if not all("ImagePositionPatient" in h and "ImageOrientationPatient" in h for h in headers):
        order = sorted(range(len(members)), key=lambda i: int(headers[i].get("InstanceNumber") or 0))
        return [members[i][0] for i in order], None, None
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise InputError(folder, f"series {uid}: slices have different orientations (ImageOrientationPatient)")
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    heights = positions @ normal
    if len(heights) > 1 and np.min(np.diff(heights)) <= 1e-3:
        raise InputError(folder, f"series {uid}: several slices at the same position "
                                 "(more than one acquisition in the series?)")
    return [members[i][0] for i in order], positions, normal


def _regularise(image: sitk.Image, positions: np.ndarray, normal: np.ndarray, folder: Path) -> sitk.Image:
    """Resample a series with uneven slice gaps or gantry tilt onto a regular grid (else return it)."""
    heights = (positions - positions[0]) @ normal
    gaps = np.diff(heights)
    spacing_z = float(np.median(gaps))
    uneven = bool(np.any(np.abs(gaps - spacing_z) > SPACING_TOLERANCE * spacing_z))
    # In-plane drift of the last slice from the line through the first along the normal.
    drift = (positions[-1] - positions[0]) - heights[-1] * normal
    tilted = bool(np.linalg.norm(drift) > SPACING_TOLERANCE * heights[-1])
    if not (uneven or tilted):
        return image

    problems = []
    if uneven:
        problems.append(f"slice spacing is not uniform (gaps of {_format_values(np.unique(np.round(gaps, 3)))} mm)")
    if tilted:
        angle = np.degrees(np.arctan2(np.linalg.norm(drift), heights[-1]))
        problems.append(f"gantry tilt of {angle:.1f} degrees (slice positions not along the slice normal)")

    array = sitk.GetArrayViewFromImage(image)
    if uneven:
        # SimpleITK cannot sample from unevenly spaced slices, so interpolate along the stack first.
        from scipy.interpolate import interp1d  # here: ~0.2 s to import, and most scans never need it
        count = int(np.floor(heights[-1] / spacing_z + 1e-3)) + 1
        targets = np.minimum(np.arange(count) * spacing_z, heights[-1])
        array = interp1d(heights, array, axis=0, assume_sorted=True)(targets)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    row, column = direction[:, 0], direction[:, 1]
    stack = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    # The stack as if its slices were along the normal; the tilt is undone by the transform below.
    stack.SetOrigin(tuple(positions[0]))
    stack.SetSpacing((image.GetSpacing()[0], image.GetSpacing()[1], spacing_z))
    stack.SetDirection(tuple(np.column_stack([row, column, normal]).ravel()))
    result = stack
    if tilted:
        result = _untilt(stack, drift, heights[-1], row, column)
    stored_type = sitk.GetArrayViewFromImage(image).dtype
    if np.issubdtype(stored_type, np.signedinteger):  # keep HU integers (air, -1024, fits)
        result = array_to_image(np.rint(sitk.GetArrayViewFromImage(result)).astype(stored_type), result)
    spacing = tuple(round(s, 4) for s in result.GetSpacing())
    warnings.warn(f"{folder}: {'; '.join(problems)}; resampled onto a regular grid of spacing {spacing} mm "
                  f"({image.GetSize()[2]} slices -> {result.GetSize()[2]})", ImageWarning, stacklevel=4)
    return result


def _untilt(stack: sitk.Image, drift: np.ndarray, height: float, row: np.ndarray, column: np.ndarray) -> sitk.Image:
    """Resample a sheared stack (slice k shifted in-plane by drift * z_k / height) onto an orthogonal grid.

    The grid grows in-plane so that no slice's content is cut off.
    """
    origin = np.array(stack.GetOrigin())
    normal = np.cross(row, column)
    # A point x of the scanner maps to where the unsheared stack stores it: x - drift * height_of(x) / height.
    shear = sitk.AffineTransform(3)
    shear.SetMatrix(tuple((np.eye(3) - np.outer(drift, normal) / height).ravel()))
    shear.SetCenter(tuple(origin))
    spacing = np.array(stack.GetSpacing())
    size = list(stack.GetSize())
    for axis, (unit, step) in enumerate(((row, spacing[0]), (column, spacing[1]))):
        along = float(drift @ unit)
        extra = int(np.ceil(abs(along) / step - 1e-6))
        size[axis] += extra
        if along < 0:
            origin = origin - extra * step * unit
    return sitk.Resample(stack, size, shear, sitk.sitkLinear, tuple(origin), tuple(spacing),
                         stack.GetDirection(), AIR_HU, sitk.sitkFloat32)


# ------------------------------------------------------------------------------------------ masks


def read_mask(path: str | Path, reference: sitk.Image | None = None, reference_path: str | Path | None = None,
              tolerance: float = 1e-4) -> sitk.Image:
    """Read a binary mask as UInt8 0/1; a single label value k (0/k) becomes 1.

    With ``reference`` (the image the mask belongs to), its geometry must match
    (see :func:`check_geometry`).
    """
    path = Path(path)
    mask = read_image(path)
    array = sitk.GetArrayViewFromImage(mask)
    values = _distinct_values(array)
    if values.size > 2 or (values.size == 2 and values[0] != 0) or np.isnan(values).any():
        shown = _format_values(values[:10]) + (f", ... ({values.size} distinct values)" if values.size > 10 else "")
        raise InputError(path, f"mask is not binary: found values {shown} (expected 0 and one label value)")
    binary = array_to_image((array != 0).astype(np.uint8), mask)
    if reference is not None:
        check_geometry(reference, binary, reference_path, path, tolerance=tolerance)
    return binary


def _distinct_values(array: np.ndarray) -> np.ndarray:
    """``np.unique(array)``, without its sort/hash of every voxel for the usual 0/1 integer mask."""
    if array.dtype.kind in "iub" and array.size:
        low, high = array.min(), array.max()
        if low == high:
            return np.asarray([low])
        if low == 0 and high == 1:  # two values only, both present: min and max say it (~100x faster)
            return np.asarray([0, 1], dtype=array.dtype)
    return np.unique(array)


def read_geometry(path: str | Path) -> sitk.ImageFileReader | sitk.Image:
    """What :func:`check_geometry` needs of an image, reading only the header where the format allows.

    A DICOM file or folder is read whole (:func:`read_image` chooses the series and
    may resample it); other formats give an ``ImageFileReader`` after
    ``ReadImageInformation``: a follow-up CT whose mask is given is checked
    without ITK decoding its voxels (a gzip stream is still inflated once and
    discarded, to refuse a truncated file: see :mod:`hematoma.image_integrity`).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir() or _is_dicom_file(path) or not _name_ends_with(path, WRITE_SUFFIXES):
        return read_image(path)
    check_image_file_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _sitk_read(path, reader.ReadImageInformation)
    if reader.GetDimension() != 3:  # 2D or 4D: read_image's own handling decides what the grid is
        return read_image(path)
    return reader


def check_geometry(image: sitk.Image, mask: sitk.Image, image_path: str | Path | None,
                   mask_path: str | Path | None, tolerance: float = 1e-4) -> None:
    """Raise InputError unless ``mask`` lies on ``image``'s voxel grid.

    Spacing is compared relative to the image's spacing, origin in units of the
    image's spacing, direction cosines absolutely; sizes must be equal.
    """
    def mismatch(field: str, mask_value, image_value) -> InputError:
        mask_text, image_text = _format_pair(mask_value, image_value)
        image_name = "image" if image_path is None else f"image {image_path}"
        return InputError(mask_path if mask_path is not None else "mask",
                          f"does not match {image_name}: {field} {mask_text} vs {image_text}")

    if mask.GetDimension() != image.GetDimension():
        raise mismatch("dimension", mask.GetDimension(), image.GetDimension())
    if mask.GetSize() != image.GetSize():
        raise mismatch("size", mask.GetSize(), image.GetSize())
    spacing = np.array(image.GetSpacing())
    if np.any(np.abs(np.array(mask.GetSpacing()) - spacing) > tolerance * spacing):
        raise mismatch("spacing", mask.GetSpacing(), image.GetSpacing())
    if np.any(np.abs(np.array(mask.GetOrigin()) - np.array(image.GetOrigin())) > tolerance * spacing):
        raise mismatch("origin", mask.GetOrigin(), image.GetOrigin())
    if np.any(np.abs(np.array(mask.GetDirection()) - np.array(image.GetDirection())) > tolerance):
        raise mismatch("direction", mask.GetDirection(), image.GetDirection())


def _format_values(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in np.asarray(values).tolist())


def _format_pair(first, second) -> tuple[str, str]:
    """Two values (or tuples) printed with just enough digits to tell them apart."""
    if not isinstance(first, tuple):
        return str(first), str(second)
    for digits in range(6, 18):
        texts = tuple("(" + ", ".join(_number(v, digits) for v in value) + ")" for value in (first, second))
        if texts[0] != texts[1]:
            return texts
    return texts


def _number(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    return text + ".0" if isinstance(value, float) and text.lstrip("-").isdigit() else text


# ---------------------------------------------------------------------------------------- writing


def write_image(image: sitk.Image, path: str | Path, overwrite: bool = True) -> Path:
    """Write ``image`` atomically (a killed run leaves no partial file); .gz is compressed."""
    path = Path(path)
    if not _name_ends_with(path, WRITE_SUFFIXES):
        raise InputError(path, f"unsupported image format for writing (expected one of {', '.join(WRITE_SUFFIXES)})")
    refuse_overwrite(path, overwrite)
    compress = path.name.lower().endswith(".gz")
    try:
        if _name_ends_with(path, _DETACHED_SUFFIXES):
            _write_detached(image, path, compress)
        else:
            with atomic_path(path) as temporary:
                sitk.WriteImage(image, str(temporary), useCompression=compress)
    except RuntimeError as error:
        raise InputError(path, f"cannot be written ({_itk_reason(error)})") from None
    return path


def _write_detached(image: sitk.Image, path: Path, compress: bool) -> None:
    # A .mhd/.nhdr header names its data file, so both are written under their final names in
    # a temporary folder and moved into place, data first, header last.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
        sitk.WriteImage(image, str(Path(folder) / path.name), useCompression=compress)
        for written in sorted(Path(folder).iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)


# ---------------------------------------------------------------------------------------- helpers


def as_3d(image: sitk.Image, spacing_z: float = 1.0) -> sitk.Image:
    """A 2D image as a 1-slice 3D image (z spacing ``spacing_z``); 3D images are returned as they are."""
    if image.GetDimension() == 3:
        return image
    if image.GetDimension() != 2:
        raise ValueError(f"expected a 2D or 3D image, got {image.GetDimension()}D")
    return sitk.JoinSeries([image], 0.0, float(spacing_z))


def image_to_array(image: sitk.Image) -> np.ndarray:
    """The voxel values as a numpy array indexed (z, y, x) (a copy)."""
    return sitk.GetArrayFromImage(image)


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image of ``array`` (z, y, x) on ``reference``'s grid (spacing, origin, direction)."""
    image = sitk.GetImageFromArray(np.asarray(array))
    image.CopyInformation(reference)
    return image
