"""Store DICOM files (a SEG, an SR) on a DICOMweb server with STOW-RS, and check that the server kept them."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .connection import PacsError, PacsServer, pacs_errors


def push_files(server: PacsServer, paths: list[str | Path]) -> list[str]:
    """Store ``paths`` in one STOW-RS request; return their SOPInstanceUIDs.

    Raises :class:`PacsError` when the server refuses any of them (the response's Failed SOP Sequence,
    with the DICOM failure reason), so a result is never believed stored when it is not.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for path in map(Path, paths):
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, InvalidDicomError) as error:
            raise InputError(path, f"cannot be read as DICOM to push ({error.__class__.__name__})") from None
    names = ", ".join(Path(p).name for p in paths)
    with pacs_errors(server, f"storing {names}"):
        response = server.client().store_instances(datasets)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = ", ".join(f"{item.get('ReferencedSOPInstanceUID', '?')} (failure reason "
                            f"{item.get('FailureReason', '?')})" for item in failed)
        raise PacsError(f"{server.url}: refused to store {reasons}")
    return [str(d.SOPInstanceUID) for d in datasets]
