"""Read a DICOM file (a 1-slice volume, or a multi-frame one) or a folder holding a DICOM series.

Folders are grouped and checked with pydicom headers (SimpleITK gives
no slice positions before reading the pixels): the series with the most
slices is taken unless ``series_uid`` names another, slices are sorted along
the slice normal, and a series whose slices are not evenly spaced or not
stacked along the normal is regularised (:mod:`.dicom_resample`).  GDCM
applies RescaleSlope/Intercept, so values are in HU.
"""

from __future__ import annotations

import struct
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .arrays import as_3d
from .dicom_resample import _regularise
from .formatting import _format_values
from .image_checks import _check_grey_level, _check_header_geometry, _check_size
from .integrity import dicom_pixel_data_problem
from .itk_capture import ImageWarning, _sitk_read
from .paths import WRITE_SUFFIXES, _name_ends_with

if TYPE_CHECKING:  # pydicom is imported where DICOM is read: ~0.15 s that NIfTI cases never need
    import pydicom


_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "InstanceNumber", "Rows", "Columns",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "SOPClassUID", "Modality",
    "DirectoryRecordSequence",
]


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


def _with_functional_group_spacing(path: Path, header: pydicom.Dataset) -> pydicom.Dataset:
    """``header``, or for a multi-frame (Enhanced CT) file without a top-level PixelSpacing, a header holding
    the one its shared (else first per-frame) functional groups give: where such files keep it, and GDCM reads it."""
    if "PixelSpacing" in header or int(header.get("NumberOfFrames") or 1) <= 1:
        return header
    import pydicom

    try:
        full = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - unreadable: the spacing check below refuses the header as it is
        return header
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in full.get(sequence) or []:
            for measures in group.get("PixelMeasuresSequence") or []:
                if "PixelSpacing" in measures:
                    found = pydicom.Dataset()
                    found.PixelSpacing = measures.PixelSpacing
                    return found
    return header


def _read_dicom_file(path: Path, series_uid: str | None) -> sitk.Image:
    header = _read_header(path)
    if header is None:
        raise InputError(path, _not_an_image(path))
    if series_uid is not None and header.get("SeriesInstanceUID") != series_uid:
        raise InputError(path, f"belongs to series {header.get('SeriesInstanceUID')}, not {series_uid}")
    _check_size(path, _dicom_voxels(header))
    _check_pixel_spacing(path, [_with_functional_group_spacing(path, header)])
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
                                 "choose one with --series UID (in a manifest: the baseline_series or "
                                 "followup_series column)")
    if len(series) > 1:
        warnings.warn(f"{folder}: {len(series)} series in folder; took the largest, {_describe(series, by_size[:1])} "
                      f"(choose another with --series UID or the manifest's baseline_series/followup_series column; "
                      f"others: {_describe(series, by_size[1:])})",
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
