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
import re
import stat
import struct
import sys
import tempfile
import threading
import warnings
from collections import defaultdict
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .image_integrity import check_image_file_complete, dicom_pixel_data_problem
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
    "SpacingBetweenSlices", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "SOPClassUID", "Modality",
    "DirectoryRecordSequence",
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
    _check_path(path)
    if path.is_dir():
        return _read_dicom_folder(path, series_uid)
    if _is_dicom_file(path):
        return _read_dicom_file(path, series_uid)
    if series_uid is not None and _name_ends_with(path, WRITE_SUFFIXES):
        raise InputError(path, "a series UID can only be chosen for DICOM input")
    with _image_file(path) as reader:
        return _check_grey_level(_sitk_read(path, reader.Execute), path)


def _check_path(path: Path) -> None:
    """Refuse, before any reader opens it, a path that is no readable file or folder."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(path, "is a symbolic link to a missing file" if path.is_symlink()
                         else "no such file or folder") from None
    except OSError as error:  # a symbolic link loop, a name too long, a parent folder not searchable
        raise InputError(path, f"cannot be opened ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        return
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the reader forever; a device is no image
        raise InputError(path, "is not a regular file (a FIFO, socket or device); give an image file")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise InputError(path, f"cannot be opened ({error.strerror or error})") from None
    if info.st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")


@contextlib.contextmanager
def _image_file(path: Path, voxels: bool = True) -> Iterator[sitk.ImageFileReader]:
    """An ITK reader of a NIfTI/NRRD/MetaImage file whose header was read and checked, and whose
    voxel data are all there (its voxels are read by ``Execute`` inside the block).

    ``voxels=False``: only the header will be used (a gzip NIfTI whose trailer
    records the promised length is then not inflated; see
    :func:`~hematoma.image_integrity.check_image_file_complete`).
    """
    if not _name_ends_with(path, WRITE_SUFFIXES):
        raise InputError(path, f"unsupported image format (expected one of {', '.join(READ_SUFFIXES)} "
                               "or a DICOM series folder)")
    with _unambiguous_name(path) as name:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            _sitk_read(path, reader.ReadImageInformation)
        except InputError as error:
            check_image_file_complete(path)  # a truncated or corrupt stream is better named by the integrity check
            if "Unable to determine ImageIO reader" in error.problem:
                raise InputError(path, f"cannot be read as an image (not a valid {_format_name(path)} file: its "
                                       "header is not recognised; damaged, or another format under this name?)") from None
            raise
        _check_size(path, reader.GetSize(), reader.GetNumberOfComponents(), _bytes_per_value(reader.GetPixelID()))
        gzip_nifti = voxels and path.name.lower().endswith(".nii.gz")
        with tempfile.TemporaryDirectory(prefix="hematoma-read-") if gzip_nifti else contextlib.nullcontext() as folder:
            # ITK would zero-fill a truncated file's missing voxels, and replace a NIfTI's zero voxel size or NaN
            # voxels.  The check inflates a gzip NIfTI anyway: ITK then reads that plain copy rather than
            # inflating the stream a second time (a 512 x 512 x 30 scan: ~0.07 s instead of ~0.13 s).
            plain = Path(folder) / "image.nii" if folder else None
            if check_image_file_complete(path, inflate_to=plain, header_only=not voxels):
                reader.SetFileName(str(plain))
            _check_header_geometry(path, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
            yield reader


@contextlib.contextmanager
def _unambiguous_name(path: Path) -> Iterator[Path]:
    """A name ITK reads ``path`` by: itself, or a link in a private folder where ``path`` would be confused.

    niftilib, asked for x.nii.gz, reads x.nii instead when both lie side by side (ITK 5.4): another
    image, silently.  A link named x.nii.gz alone in a temporary folder leaves it no choice.
    """
    if not (path.name.lower().endswith(".nii.gz") and path.with_name(path.name[:-3]).exists()):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="hematoma-read-") as folder:
        link = Path(folder) / path.name
        try:
            link.symlink_to(path.resolve())
        except OSError:  # no symbolic links here (some Windows set-ups): refuse rather than read the other file
            raise InputError(path, f"{path.name[:-3]} lies beside it and ITK would read that file instead; "
                                   "move or rename one of them") from None
        yield link


def _format_name(path: Path) -> str:
    name = path.name.lower()
    return ("NIfTI" if name.endswith((".nii", ".nii.gz")) else "NRRD" if name.endswith((".nrrd", ".nhdr"))
            else "MetaImage" if name.endswith((".mha", ".mhd")) else "image")


# A head CT is at most ~1024 x 1024 in-plane and ~2000 thin slices (2^31 voxels; 16 GB as float64); a
# header that promises more is damaged or not a head scan, and is refused before anything is allocated.
MAX_VOXELS = 2**31
MAX_BYTES = 16 * 2**30


def _check_size(path: Path, size: Sequence[int], components: int = 1, value_bytes: int = 8) -> None:
    voxels = prod(int(s) for s in size) * max(int(components), 1)
    if voxels > MAX_VOXELS or voxels * value_bytes > MAX_BYTES:
        shape = " x ".join(str(int(s)) for s in size) + (f" x {components} values" if components > 1 else "")
        raise InputError(path, f"header describes {shape} = {voxels:.3g} voxels ({voxels * value_bytes / 2**30:.3g} "
                               f"GiB): more than {MAX_VOXELS:.3g} voxels or {MAX_BYTES // 2**30} GiB is not a head CT "
                               "(a damaged header?)")
    if any(int(s) <= 0 for s in size):
        raise InputError(path, f"header describes an empty image (size {tuple(int(s) for s in size)})")


def _bytes_per_value(pixel_id: int) -> int:
    try:
        return int(sitk.GetArrayViewFromImage(sitk.Image(1, 1, pixel_id)).itemsize)
    except (TypeError, ValueError, RuntimeError):
        return 8  # the largest: the limit errs on the side of refusing


def _check_header_geometry(path: Path, spacing: Sequence[float], origin: Sequence[float],
                           direction: Sequence[float]) -> None:
    """Refuse the geometry no scanner writes: spacing <= 0 or not finite, origin not finite, or
    direction cosines that are not orthonormal (a volume in mL, and every resampling, depend on them)."""
    spacing, origin = np.asarray(spacing, float), np.asarray(origin, float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(path, f"voxel spacing {_format_values(spacing)} is not positive and finite (a damaged header?)")
    if not np.all(np.isfinite(origin)):
        raise InputError(path, f"origin {_format_values(origin)} is not finite (a damaged header?)")
    matrix = np.asarray(direction, float).reshape(len(spacing), len(spacing))
    if not np.all(np.isfinite(matrix)) or np.abs(matrix.T @ matrix - np.eye(len(spacing))).max() > 1e-3:
        raise InputError(path, f"direction cosines {_format_values(np.round(matrix.ravel(), 4))} are not "
                               "orthonormal (a damaged or sheared header?)")


def _sitk_read(path: Path, read):
    """``read()`` (an ITK call on the user's file at ``path``), its failure as one InputError line.

    What ITK printed while reading successfully (a reader's warning) becomes one ImageWarning.
    """
    failure = None
    with _itk_output() as printed:
        try:
            result = read()
        except RuntimeError as error:
            failure = error
    if failure is not None:
        raise InputError(path, f"cannot be read as an image ({_itk_reason(failure, printed)})") from None
    useful = [line for line in printed if not _GENERIC_ITK_LINE.search(line)]
    if useful:
        warnings.warn(f"{path}: the image reader warned: {' '.join(useful[-1].split())[:300]}", ImageWarning,
                      stacklevel=3)
    return result


# Lines ITK's readers print after the one that says what is wrong (MetaIO's "MET_Read Failed",
# "Cannot parse file"...): they add nothing for a user.
_GENERIC_ITK_LINE = re.compile(r"read(ing)? failed|cannot parse file|error parsing file|failed to read|"
                               r"could not read|unable to read|^\*\* ERROR: nifti_image_read|^\*+$", re.IGNORECASE)


_ITK_PREFIX = re.compile(r"^(ITK ERROR: )?(\w+\(0x[0-9a-fA-F]+\): )?")


def _itk_reason(error: Exception, printed: Sequence[str] = ()) -> str:
    # ITK messages start with the C++ source location; the last line says what went wrong.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(error).__name__
    for prefix in ("sitk::ERROR:", "itk::ERROR:"):
        reason = reason.split(prefix, 1)[-1].strip()
    reason = _ITK_PREFIX.sub("", reason)  # "ITK ERROR: GDCMImageIO(0x55d9...): " says nothing to a user
    # MetaIO ends a header it cannot parse with "Reason: <errno text>" ("No such file or directory"
    # for a file that is there): the line it printed before says what is wrong.
    useful = [line for line in printed if not _GENERIC_ITK_LINE.search(line)]
    if useful and (reason.startswith("Reason:") or "Unable to determine ImageIO reader" in reason):
        reason = useful[-1]
    return " ".join(reason.split())[:300]


# ITK's readers (MetaIO, NIfTI, NRRD, GDCM) print their complaints with std::cerr or fprintf(stderr), outside
# SimpleITK's warning display, so a damaged file used to give raw lines before our one-line error.  File
# descriptor 2 is pointed at a temporary file around each ITK call instead, and what was printed is
# used in the message.  fd 2 belongs to the whole process: the lock keeps threads from redirecting it
# at once (their ITK calls take turns; a thread's own stderr lines in that window end up in the capture).
_STDERR_LOCK = threading.RLock()
_CAPTURE_LIMIT = 1 << 16  # bytes of printed text kept (the end of it)


@contextlib.contextmanager
def _itk_output() -> Iterator[list[str]]:
    """Run the body with fd 2 captured and ITK's warning display off; yields the printed lines (filled on exit)."""
    printed: list[str] = []
    with _STDERR_LOCK, _quiet_itk(), tempfile.TemporaryFile() as capture:
        _flush_python_stderr()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a detached daemon): nothing can be shown anyway
            yield printed
            return
        try:
            os.dup2(capture.fileno(), 2)
            yield printed
        finally:
            _flush_python_stderr()  # Python's own buffered lines belong in the capture, not after it
            os.dup2(saved, 2)
            os.close(saved)
            size = capture.seek(0, os.SEEK_END)
            capture.seek(max(size - _CAPTURE_LIMIT, 0))
            text = capture.read().decode("utf-8", errors="replace")
            printed.extend(line.strip() for line in text.splitlines() if line.strip())


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    # ITK's own warnings (e.g. "non uniform sampling") are raised as Python warnings naming the file instead.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _flush_python_stderr() -> None:
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()


def _check_grey_level(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(path, "holds complex values per voxel; expected a grey-level image")
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
    header = _read_any_header(path)
    # RTSTRUCT, SR, DICOMDIR and the like have no Rows: they are not images.
    return header if header is not None and "Rows" in header and "Columns" in header else None


def _read_any_header(path: Path) -> pydicom.Dataset | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():  # pydicom's complaints about odd values: ITK or our checks decide
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except PermissionError as error:  # a slice we cannot read must not vanish from its series
        raise InputError(path, f"cannot be opened ({error.strerror})") from None
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError,
            IndexError, struct.error, OverflowError):
        return None


def _not_an_image(path: Path) -> str:
    """Why a DICOM file is no image, in words: what kind of DICOM object it is."""
    header = _read_any_header(path)
    if header is None:
        return "not a DICOM image file (no DICOM header could be read)"
    if "DirectoryRecordSequence" in header:
        return "is a DICOMDIR (an index of DICOM media), not an image; give the folder of one series"
    sop_class = header.get("SOPClassUID") or getattr(header.get("file_meta"), "MediaStorageSOPClassUID", None)
    kind = getattr(sop_class, "name", None) or str(sop_class or "unknown SOP class")
    modality = f" (modality {header.Modality})" if header.get("Modality") else ""
    return f"is a DICOM {kind} object{modality} with no pixel rows/columns, not an image"


def _dicom_voxels(header: pydicom.Dataset) -> tuple[int, ...]:
    """Columns, rows, frames of a DICOM image header (0 where the header says 0 or nonsense)."""
    def number(tag: str, default: int) -> int:
        try:
            return int(header.get(tag, default) if header.get(tag) is not None else default)
        except (TypeError, ValueError):
            return 0
    return number("Columns", 0), number("Rows", 0), number("NumberOfFrames", 1) * number("SamplesPerPixel", 1)


def _check_pixel_spacing(path: Path, headers: Sequence[pydicom.Dataset]) -> None:
    """Refuse slices whose PixelSpacing is absent, not two positive numbers, or not the same in all of them:
    GDCM would use 1 mm, or the first slice's, without a word (and every volume in mL would be wrong)."""
    found = set()
    for header in headers:
        value = header.get("PixelSpacing")
        try:
            spacing = tuple(round(float(v), 6) for v in value) if value is not None else ()
        except (TypeError, ValueError):
            spacing = ()
        if len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
            shown = "absent" if value is None else f"{value}"
            raise InputError(path, f"PixelSpacing is {shown}: expected two positive numbers (mm); the voxel size, "
                                   "and any volume in mL, would be unknown")
        found.add(spacing)
    if len(found) > 1:
        raise InputError(path, f"slices differ in PixelSpacing ({'; '.join(map(str, sorted(found)))})")


def _read_dicom_file(path: Path, series_uid: str | None) -> sitk.Image:
    header = _read_header(path)
    if header is None:
        raise InputError(path, _not_an_image(path))
    if series_uid is not None and header.get("SeriesInstanceUID") != series_uid:
        raise InputError(path, f"belongs to series {header.get('SeriesInstanceUID')}, not {series_uid}")
    _check_size(path, _dicom_voxels(header))
    _check_pixel_spacing(path, [header])
    image = _check_grey_level(_read_dicom_pixels(path, [path], lambda: sitk.ReadImage(str(path), imageIO="GDCMImageIO")), path)
    _check_header_geometry(path, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    if image.GetDimension() == 3 and image.GetSize()[2] > 1:
        return image  # a multi-frame file is a whole volume
    # GDCM gives a lone slice a z spacing of 1 mm; the slice's own thickness is the truer one
    # (it matters for volumes in mL).
    thickness = next((header.get(tag) for tag in ("SpacingBetweenSlices", "SliceThickness")
                      if header.get(tag) not in (None, "")), None)
    image = as_3d(image)
    if thickness is not None:
        try:
            spacing_z = float(thickness)
        except (TypeError, ValueError):
            spacing_z = float("nan")
        if not (np.isfinite(spacing_z) and spacing_z > 0):
            raise InputError(path, f"slice thickness {thickness} is not a positive number")
        image.SetSpacing(image.GetSpacing()[:2] + (spacing_z,))
    return image


def _read_dicom_folder(folder: Path, series_uid: str | None) -> sitk.Image:
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        header = _read_header(file)
        if header is not None:
            series[str(header.get("SeriesInstanceUID", ""))].append((file, header))
    if not series:
        raise InputError(folder, _no_dicom_images(folder))
    uid = _choose_series(folder, series, series_uid)
    files, positions, normal = _sort_slices(folder, uid, series[uid])
    columns, rows, frames = _dicom_voxels(series[uid][0][1])
    _check_size(folder, (columns, rows, frames * len(files)))
    _check_pixel_spacing(folder, [header for _, header in series[uid]])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    image = _check_grey_level(_read_dicom_pixels(folder, files, reader.Execute), folder)
    _check_header_geometry(folder, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    if positions is None or len(files) < 2:
        return image
    return _regularise(image, positions, normal, folder)


def _read_dicom_pixels(path: Path, files: Sequence[Path], read) -> sitk.Image:
    """``read()`` with GDCM; where it fails, the file whose pixel data are missing or cut short is named."""
    try:
        return _sitk_read(path, read)
    except InputError:
        for file in files:  # GDCM only says "Cannot read requested file": find which, and why
            problem = dicom_pixel_data_problem(file)
            if problem is not None:
                raise InputError(file, problem) from None
        raise


def _no_dicom_images(folder: Path) -> str:
    entries = list(folder.iterdir())
    if _name_ends_with(folder, WRITE_SUFFIXES):  # x.nii.gz/ : a folder where a file was meant
        return "is a folder, not an image file (and it holds no DICOM images)"
    subfolders = sum(p.is_dir() for p in entries)
    dicomdir = any(p.name.upper() == "DICOMDIR" for p in entries)
    hint = " (it holds a DICOMDIR, an index of DICOM media" if dicomdir else ""
    if subfolders:
        hint += f"{'; ' if hint else ' ('}it has {subfolders} subfolder(s); give the folder of one series"
    return f"no DICOM images in folder{hint}{')' if hint else ''}"


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

    Positions are None for a lone slice; a series whose slices lack them is refused.
    """
    headers = [header for _, header in members]
    if any(len({str(h.get(tag)) for h in headers}) > 1 for tag in ("Rows", "Columns")):
        raise InputError(folder, f"series {uid}: slices differ in size (Rows/Columns)")
    if len(headers) == 1:
        return [members[0][0]], None, None
    missing = [path.name for (path, h) in members
               if "ImagePositionPatient" not in h or "ImageOrientationPatient" not in h]
    if missing:  # without positions neither the slice order nor the slice spacing (the volume) is known
        raise InputError(folder, f"series {uid}: {len(missing)} of {len(headers)} slices have no "
                                 f"ImagePositionPatient/ImageOrientationPatient (e.g. {missing[0]}); "
                                 "their order and spacing cannot be known")
    try:
        orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    except (TypeError, ValueError):
        orientations = positions = np.zeros((0, 0))
    if orientations.shape != (len(headers), 6) or positions.shape != (len(headers), 3) \
            or not np.all(np.isfinite(orientations)) or not np.all(np.isfinite(positions)):
        raise InputError(folder, f"series {uid}: ImagePositionPatient/ImageOrientationPatient are not 3/6 numbers "
                                 "in every slice")
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise InputError(folder, f"series {uid}: slices have different orientations (ImageOrientationPatient)")
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    if not 0.99 < np.linalg.norm(normal) < 1.01:
        raise InputError(folder, f"series {uid}: ImageOrientationPatient {_format_values(orientations[0])} "
                                 "is not two orthogonal unit vectors")
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
    if mask.GetDimension() != 3:  # a 2D file has no slice thickness: no volume in mL can come from it
        raise InputError(path, f"mask is a {mask.GetDimension()}D image; expected a 3D mask (a volume needs the "
                               "slice thickness)")
    array = sitk.GetArrayViewFromImage(mask)
    values = _distinct_values(array)
    if values.size > 2 or (values.size == 2 and 0 not in values) or np.isnan(values).any():  # a label may be < 0
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
    without decoding its voxels (a gzip NIfTI's trailer must record the length
    its header promises, else it is inflated once and discarded to refuse a
    truncated file: see :mod:`hematoma.image_integrity`).
    """
    path = Path(path)
    _check_path(path)
    if path.is_dir() or _is_dicom_file(path) or not _name_ends_with(path, WRITE_SUFFIXES):
        return read_image(path)
    with _image_file(path, voxels=False) as reader:
        if reader.GetDimension() == 3 and reader.GetNumberOfComponents() == 1:
            return reader  # its header information stays with it
    return read_image(path)  # 2D, 4D, vector: read_image's own handling decides what the grid is or refuses


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
    if path.is_dir():
        raise InputError(path, "is a folder; give the name of the image file to write")
    refuse_overwrite(path, overwrite)
    compress = path.name.lower().endswith(".gz")
    with _itk_output() as printed:
        try:
            if _name_ends_with(path, _DETACHED_SUFFIXES):
                _write_detached(image, path, compress, overwrite)
            else:
                with atomic_path(path) as temporary:
                    sitk.WriteImage(image, str(temporary), useCompression=compress)
            return path
        except RuntimeError as error:
            reason = _itk_reason(error, printed)
        except OSError as error:  # the folder cannot be made (a file in the way), a full disk, no permission
            reason = error.strerror or str(error)
    raise InputError(path, f"cannot be written ({reason})")


def _write_detached(image: sitk.Image, path: Path, compress: bool, overwrite: bool) -> None:
    # A .mhd/.nhdr header names its data file, so both are written under their final names in
    # a temporary folder and moved into place, data first, header last.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
        sitk.WriteImage(image, str(Path(folder) / path.name), useCompression=compress)
        written = sorted(Path(folder).iterdir(), key=lambda p: p.name == path.name)
        for data in written[:-1]:  # x.raw may be another image's data (x.nhdr and x.mhd share it)
            target = path.parent / data.name
            if target.is_dir() or (target.exists() and not overwrite):
                raise InputError(path, f"its data file {target} is already there (another image's?); "
                                       "choose another name" + ("" if overwrite else " or allow overwriting"))
        for file in written:
            os.replace(file, path.parent / file.name)


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
