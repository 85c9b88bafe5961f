"""Read and write image files: NIfTI, NRRD, MetaImage; a DICOM file or series folder is handed to
:mod:`.dicom_series`.  Writes are atomic."""

from __future__ import annotations

import contextlib
import os
import tempfile
from math import prod
from pathlib import Path
from typing import Iterator

import SimpleITK as sitk

from ..errors import InputError
from ..storage import atomic_path, refuse_overwrite
from .dicom_series import _read_dicom_file, _read_dicom_folder
from .image_checks import (
    _bytes_per_value,
    _check_grey_level,
    _check_header_geometry,
    _check_size,
)
from .integrity import check_image_file_complete
from .itk_capture import _itk_output, _itk_reason, _sitk_read
from .paths import (
    _DETACHED_SUFFIXES,
    READ_SUFFIXES,
    WRITE_SUFFIXES,
    _check_path,
    _format_name,
    _is_dicom_file,
    _name_ends_with,
)

# Largest voxel data read through a plain temporary copy (a 512 x 512 x 600 int16 scan is 315 MB; a worker
# per core each holding one in a tmpfs /tmp doubles memory): larger scans are checked, then ITK inflates them.
PLAIN_COPY_MAX_BYTES = 256 * 2**20


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


@contextlib.contextmanager
def _image_file(path: Path, voxels: bool = True) -> Iterator[sitk.ImageFileReader]:
    """An ITK reader of a NIfTI/NRRD/MetaImage file whose header was read and checked, and whose
    voxel data are all there (its voxels are read by ``Execute`` inside the block).

    ``voxels=False``: only the header will be used (a gzip NIfTI whose trailer
    records the promised length is then not inflated; see
    :func:`~hematoma.io.integrity.check_image_file_complete`).
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
        # A plain copy only where it is small: a temporary folder in memory (tmpfs) or a full disk must not
        # fail a read that needs no copy.
        gzip_nifti = (voxels and path.name.lower().endswith(".nii.gz")
                      and prod(reader.GetSize()) * _bytes_per_value(reader.GetPixelID()) <= PLAIN_COPY_MAX_BYTES)
        with tempfile.TemporaryDirectory(prefix="hematoma-read-") if gzip_nifti else contextlib.nullcontext() as folder:
            # ITK would zero-fill a truncated file's missing voxels, and replace a NIfTI's zero voxel size or NaN
            # voxels.  The check inflates a gzip NIfTI anyway: ITK then reads that plain copy rather than
            # inflating the stream a second time (a 512 x 512 x 30 scan: ~0.07 s instead of ~0.13 s).
            plain = Path(folder) / "image.nii" if folder else None
            try:
                copied = check_image_file_complete(path, inflate_to=plain, header_only=not voxels)
            except OSError:  # no room for the copy: check without it, and ITK inflates the original
                copied = check_image_file_complete(path, header_only=not voxels)
            if copied:
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
