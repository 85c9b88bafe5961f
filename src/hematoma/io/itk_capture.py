"""ITK calls on a user's file: what ITK's C++ readers and writers print is captured, not shown, and
becomes the reason of one InputError line (a failure) or one ImageWarning (a success)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import SimpleITK as sitk

from ..errors import InputError


class ImageWarning(UserWarning):
    """An image was read, but not as stored (another series chosen, slices resampled)."""


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
# at once (their ITK calls take turns); another thread's lines in that window are passed on afterwards.
_STDERR_LOCK = threading.RLock()
# What ITK's readers print: their names, the header fields they complain about, and the words of a complaint.
_ITK_TEXT = re.compile(r"itk|gdcm|nifti|znz|nrrd|\bmet_|metaimage|metaio|metaobject|dimsize|elementtype|"
                       r"elementdatafile|headersize|error|warning|fail|unable|cannot|could not|not defined|"
                       r"invalid|unknown|unsupported|unexpected|reason:|^\*+$|"
                       r"^\s*\w+ = \[|^[\s\d.eE+\-nNaAiIfF\[\]]+$", re.IGNORECASE)  # and the matrices niftilib prints
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
            # Another thread's lines in the window (a progress bar, a log line) are not ITK's: they go on to
            # the real stderr instead of becoming a warning or a reason.
            others = []
            for line in text.splitlines(keepends=True):
                if _ITK_TEXT.search(line):
                    printed.append(line.strip())
                elif line.strip():
                    others.append(line)
            if others:
                with contextlib.suppress(OSError):
                    os.write(2, "".join(others).encode("utf-8", errors="replace"))


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
