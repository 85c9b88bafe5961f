"""What a path names before any reader opens it: the formats known by their names, a DICOM file by its
magic, and a path that is no readable file or folder refused."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Sequence

from ..errors import InputError

WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
READ_SUFFIXES = WRITE_SUFFIXES + DICOM_SUFFIXES
# Headers of detached formats name their data file; they must be written under their final name.
_DETACHED_SUFFIXES = (".nhdr", ".mhd")


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


def _format_name(path: Path) -> str:
    name = path.name.lower()
    return ("NIfTI" if name.endswith((".nii", ".nii.gz")) else "NRRD" if name.endswith((".nrrd", ".nhdr"))
            else "MetaImage" if name.endswith((".mha", ".mhd")) else "image")


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
