"""A hostile sweep of the image readers through the CLI (issue 15, group 2 and "go further than this list").

Each case builds one damaged or odd input a user could be handed (a NIfTI header
with impossible fields, a DICOM series that cannot be stacked, a FIFO, a symbolic
link loop...) and runs ``hematoma volume`` or ``hematoma segment`` on it.  The
contract: either exit 2 with ONE line on stderr that names the file and says what
is wrong (no traceback, nothing else printed by ITK or pydicom on the process's
file descriptor 2), or, for inputs that are odd but valid, the right answer.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    generate_uid,
)
from typer.testing import CliRunner

from hematoma.cli import app

runner = CliRunner()

# ------------------------------------------------------------------------------------- builders

SPACING = (0.5, 0.5, 5.0)


def blob_mask(shape=(6, 24, 24), dtype=np.uint8, value=1) -> np.ndarray:
    """A 0/``value`` mask (z, y, x) with a 2 x 4 x 4 block inside, away from the border: 32 voxels."""
    array = np.zeros(shape, dtype)
    array[2:4, 10:14, 10:14] = value
    return array


BLOB_ML = 32 * np.prod(SPACING) / 1000.0


def write_sitk(array: np.ndarray, path: Path, spacing=SPACING, vector: bool = False) -> Path:
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing[: image.GetDimension()])
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith(".gz"))
    return path


# NIfTI-1 header fields: (byte offset, struct format), from nifti1.h.
NIFTI = {
    "dim": (40, "8h"), "datatype": (70, "h"), "bitpix": (72, "h"), "pixdim": (76, "8f"),
    "vox_offset": (108, "f"), "scl_slope": (112, "f"), "scl_inter": (116, "f"),
    "qform_code": (252, "h"), "sform_code": (254, "h"), "quatern": (256, "6f"),
    "srow_x": (280, "4f"), "srow_y": (296, "4f"), "srow_z": (312, "4f"), "magic": (344, "4s"),
}


def nifti(path: Path, array: np.ndarray | None = None, **fields) -> Path:
    """A NIfTI-1 file of ``array`` (default: the blob mask) with header ``fields`` overwritten.

    A field is a whole value tuple, or {index: value} to change single entries.
    """
    plain = write_sitk(blob_mask() if array is None else array, path.with_name("plain.nii"))
    content = bytearray(plain.read_bytes())
    plain.unlink()
    for name, value in fields.items():
        offset, layout = NIFTI[name]
        current = list(struct.unpack_from("<" + layout, content, offset))
        if isinstance(value, dict):
            for index, entry in value.items():
                current[index] = entry
        else:
            current = list(value) if isinstance(value, (tuple, list)) else [value]
        struct.pack_into("<" + layout, content, offset, *current)
    path.write_bytes(gzip.compress(bytes(content)) if path.name.endswith(".gz") else bytes(content))
    return path


def text_header(path: Path, replace: dict[str, str], array: np.ndarray | None = None) -> Path:
    """An .mha/.nrrd of ``array`` whose header lines have ``replace`` applied (old text -> new text)."""
    write_sitk(blob_mask() if array is None else array, path)
    content = path.read_bytes()
    for old, new in replace.items():
        assert old.encode() in content, old
        content = content.replace(old.encode(), new.encode(), 1)
    path.write_bytes(content)
    return path


def dicom_slice(path: Path, plane: np.ndarray, z: float = 0.0, series: str = "1.2.3", **tags) -> Path:
    """One CT slice (stored unsigned + RescaleIntercept -1024); ``tags`` set, or removed when None."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3.0", series, "1.2.3.9"
    ds.SeriesNumber, ds.InstanceNumber = 1, int(z) + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 5.0
    ds.Rows, ds.Columns = plane.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (plane.astype(np.int32) + 1024).astype(np.uint16).tobytes()
    for tag, value in tags.items():
        if tag == "TransferSyntaxUID":
            meta.TransferSyntaxUID = value
        elif value is None:
            delattr(ds, tag)
        else:
            setattr(ds, tag, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_plane(shape=(16, 16)) -> np.ndarray:
    return np.full(shape, 40, np.int16)


def dicom_series(folder: Path, count: int = 4, tweak: Callable[[int], dict] = lambda k: {}) -> Path:
    folder.mkdir()
    for k in range(count):
        extra = tweak(k)
        plane = extra.pop("plane", ct_plane())
        dicom_slice(folder / f"slice{k:02d}.dcm", plane, z=5.0 * k, **extra)
    return folder


def truncate(path: Path, drop: int) -> Path:
    path.write_bytes(path.read_bytes()[:-drop])
    return path


# -------------------------------------------------------------------------------- hostile cases
# Each builder returns (arguments of `hematoma`, the path the error must name); `expected` is a
# pattern the one-line message must contain.

def _volume(path: Path) -> tuple[list[str], Path]:
    return ["volume", str(path)], path


def _segment(path: Path) -> tuple[list[str], Path]:
    return ["segment", str(path), "--out", str(path.parent / "out_mask.nii.gz")], path


def _fifo(tmp: Path) -> Path:
    path = tmp / "pipe.nii.gz"
    os.mkfifo(path)
    return path


def _symlink_loop(tmp: Path) -> Path:
    (tmp / "a.nii.gz").symlink_to(tmp / "b.nii.gz")
    (tmp / "b.nii.gz").symlink_to(tmp / "a.nii.gz")
    return tmp / "a.nii.gz"


def _dicomdir(tmp: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MediaStorageDirectoryStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "HOSTILE"
    ds.DirectoryRecordSequence = []
    (tmp / "media").mkdir()
    ds.save_as(tmp / "media" / "DICOMDIR", enforce_file_format=True)
    return tmp / "media" / "DICOMDIR"


def _structured_report(tmp: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = BasicTextSRStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = BasicTextSRStorage, meta.MediaStorageSOPInstanceUID, "SR"
    ds.SeriesInstanceUID = "1.2.3"
    path = tmp / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _four_d(tmp: Path) -> Path:
    volume = sitk.GetImageFromArray(blob_mask())
    path = tmp / "two_volumes.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path))
    return path


HOSTILE = {
    # --- NIfTI headers no scanner writes
    "nifti dim[0]=0": (lambda t: _volume(nifti(t / "m.nii.gz", dim={0: 0})), "dim[0] = 0"),
    "nifti dim[0]=8": (lambda t: _volume(nifti(t / "m.nii.gz", dim={0: 8})), "dim[0] = 8"),
    "nifti negative dim": (lambda t: _volume(nifti(t / "m.nii.gz", dim={1: -24})), "size below 1"),
    "nifti negative pixdim": (lambda t: _volume(nifti(t / "m.nii.gz", pixdim={1: -0.5})), "pixdim"),
    "nifti zero pixdim": (lambda t: _volume(nifti(t / "m.nii.gz", pixdim={3: 0.0})), "pixdim"),
    "nifti NaN pixdim": (lambda t: _volume(nifti(t / "m.nii.gz", pixdim={2: float("nan")})), "pixdim"),
    "nifti 10^9 voxels": (lambda t: _volume(nifti(t / "m.nii.gz", dim={1: 1000, 2: 1000, 3: 1000})),
                          "file is incomplete"),
    "nifti 10^13 voxels": (lambda t: _volume(nifti(t / "m.nii", dim={1: 30000, 2: 30000, 3: 10000})),
                           "is not a head CT"),
    "nifti NaN quaternion": (lambda t: _volume(nifti(t / "m.nii.gz", qform_code=1, sform_code=0,
                                                     quatern={0: float("nan")})), ""),
    "nifti zero sform": (lambda t: _volume(nifti(t / "m.nii.gz", qform_code=0, sform_code=1,
                                                 srow_x=(0, 0, 0, 0), srow_y=(0, 0, 0, 0), srow_z=(0, 0, 0, 0))), ""),
    "nifti NaN sform": (lambda t: _volume(nifti(t / "m.nii.gz", qform_code=0, sform_code=1,
                                                srow_x={0: float("nan")})), ""),
    "nifti sheared sform": (lambda t: _volume(nifti(t / "m.nii.gz", qform_code=0, sform_code=1,
                                                    srow_x=(0.5, 0.3, 0, 0), srow_y=(0, 0.5, 0, 0),
                                                    srow_z=(0, 0, 5, 0))), ""),
    "nifti unknown datatype": (lambda t: _volume(nifti(t / "m.nii.gz", datatype=1234)), ""),
    "nifti datatype wider than bitpix": (lambda t: _volume(nifti(t / "m.nii", datatype=16)), ""),
    "nifti vox_offset past the end": (lambda t: _volume(nifti(t / "m.nii", vox_offset=1e6)), "incomplete"),
    "nifti complex data": (lambda t: _volume(nifti(t / "m.nii.gz", np.zeros((6, 24, 24), np.complex64))),
                           "expected a grey-level image"),
    "nifti RGB data": (lambda t: _volume(write_sitk(np.zeros((6, 24, 24, 3), np.uint8), t / "m.nii.gz",
                                                     vector=True)), "values per voxel"),
    "nifti 4D with 2 volumes": (lambda t: _volume(_four_d(t)), "4D image with 2 volumes"),
    "nifti 2D mask": (lambda t: _volume(write_sitk(blob_mask()[2], t / "m.nii.gz")), "2D"),
    "nifti two-file header under .nii": (lambda t: _volume(nifti(t / "m.nii", magic=b"ni1\0")), ""),
    "mask with NaN": (lambda t: _volume(write_sitk(np.where(blob_mask() > 0, np.nan, 0).astype(np.float32),
                                                    t / "m.nii.gz")), "NaN or infinite"),
    "mha mask with NaN": (lambda t: _volume(write_sitk(np.where(blob_mask() > 0, np.nan, 0).astype(np.float32),
                                                        t / "m.mha")), "mask is not binary"),
    "mask of 0, 0.5 and 1": (lambda t: _volume(write_sitk(blob_mask(dtype=np.float32) * np.float32(0.5)
                                                          + (np.arange(6 * 24 * 24).reshape(6, 24, 24) == 0),
                                                          t / "m.nii.gz")), "mask is not binary"),
    # --- MetaImage and NRRD
    "mha garbled header": (lambda t: _volume(text_header(t / "m.mha", {"NDims = 3": "NDims = x\x01\x02"})),
                           "DimSize required"),
    "mha huge DimSize": (lambda t: _volume(text_header(t / "m.mha", {"DimSize = 24 24 6": "DimSize = 90000 90000 900"})),
                         "is not a head CT"),
    "mha zero spacing": (lambda t: _volume(text_header(t / "m.mha", {"ElementSpacing = 0.5 0.5 5":
                                                                     "ElementSpacing = 0.5 0 5"})), "spacing"),
    "mha unknown element type": (lambda t: _volume(text_header(t / "m.mha", {"MET_UCHAR": "MET_BOGUS"})), ""),
    "mhd data file is a device": (lambda t: _volume(text_header(t / "m.mhd", {"ElementDataFile = m.raw":
                                                                              "ElementDataFile = /dev/zero"})),
                                  "data file"),
    "nrrd bad type field": (lambda t: _volume(text_header(t / "m.nrrd", {"type: unsigned char": "type: bogus"})),
                            "couldn't parse type"),
    "nrrd huge sizes": (lambda t: _volume(text_header(t / "m.nrrd", {"sizes: 24 24 6": "sizes: 90000 90000 900"})),
                        "is not a head CT"),
    "nrrd sheared space directions": (lambda t: _volume(text_header(
        t / "m.nrrd", {"space directions: (0.5,0,0) (0,0.5,0)": "space directions: (0.5,0,0) (0.5,0.5,0)"})), ""),
    # --- not an image file at all
    "random bytes .nii.gz": (lambda t: _volume(_write_bytes(t / "m.nii.gz", os.urandom(2048))), ""),
    "gzip of text .nii.gz": (lambda t: _volume(_write_bytes(t / "m.nii.gz", gzip.compress(b"hello\n" * 100))), ""),
    "zero-length .nii": (lambda t: _volume(_write_bytes(t / "m.nii", b"")), "empty"),
    "folder named x.nii.gz": (lambda t: _volume(_mkdir(t / "x.nii.gz")), "is a folder"),
    "FIFO named .nii.gz": (lambda t: _volume(_fifo(t)), "not a regular file"),
    "symbolic link loop": (lambda t: _volume(_symlink_loop(t)), "symbolic links"),
    "dangling symbolic link": (lambda t: _volume(_dangling(t)), "symbolic link to a missing file"),
    "unsupported suffix": (lambda t: _volume(write_sitk(blob_mask()[2], t / "m.png")), "unsupported image format"),
    # --- DICOM
    "dicom file, pixel data truncated": (lambda t: _segment(truncate(dicom_slice(t / "s.dcm", ct_plane()), 100)), ""),
    "dicom series, one slice truncated": (lambda t: _segment(_truncated_slice(t)), ""),
    "dicom file without pixel data": (lambda t: _segment(dicom_slice(t / "s.dcm", ct_plane(), PixelData=None)), ""),
    "dicom series of mixed Rows": (lambda t: _segment(dicom_series(
        t / "series", tweak=lambda k: {"plane": ct_plane((16, 16) if k else (20, 16))})), "differ in size"),
    "dicom series, duplicate positions": (lambda t: _segment(dicom_series(
        t / "series", tweak=lambda k: {"ImagePositionPatient": [0.0, 0.0, 0.0]})), "same position"),
    "dicom series without ImagePositionPatient": (lambda t: _segment(dicom_series(
        t / "series", tweak=lambda k: {"ImagePositionPatient": None})), "no ImagePositionPatient"),
    "dicom series, orientation all zero": (lambda t: _segment(dicom_series(
        t / "series", tweak=lambda k: {"ImageOrientationPatient": [0.0] * 6})), "ImageOrientationPatient"),
    "dicom zero pixel spacing": (lambda t: _segment(dicom_series(
        t / "series", tweak=lambda k: {"PixelSpacing": [0.0, 0.5]})), "PixelSpacing"),
    "dicom file, zero slice thickness": (lambda t: _segment(dicom_slice(t / "s.dcm", ct_plane(), SliceThickness=0)),
                                         "slice thickness"),
    "dicom 65535 x 65535 x 1000 frames": (lambda t: _segment(dicom_slice(
        t / "s.dcm", ct_plane(), Rows=65535, Columns=65535, NumberOfFrames=1000)), "is not a head CT"),
    "dicom Rows=0": (lambda t: _segment(dicom_slice(t / "s.dcm", ct_plane(), Rows=0)), ""),
    "dicom structured report": (lambda t: _segment(_structured_report(t)), "Basic Text SR"),
    "DICOMDIR file": (lambda t: _segment(_dicomdir(t)), "DICOMDIR"),
    "folder holding only a DICOMDIR": (lambda t: _segment(_dicomdir(t).parent), "DICOMDIR"),
}


def _write_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("not an image")
    return path


def _dangling(tmp: Path) -> Path:
    (tmp / "gone.nii.gz").symlink_to(tmp / "never_written.nii.gz")
    return tmp / "gone.nii.gz"


def _truncated_slice(tmp: Path) -> Path:
    folder = dicom_series(tmp / "series")
    truncate(folder / "slice02.dcm", 100)
    return folder


def _one_error_line(result, capfd, named: Path) -> str:
    """The exit is 2 and stderr (Python's and the process's fd 2) is one line naming ``named``."""
    printed = capfd.readouterr()
    assert printed.err == "" and printed.out == "", f"raw output on the process's stdout/stderr: {printed}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(named) in lines[0] or named.name in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""  # no volume, no "mask written"
    return lines[0]


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_input_is_refused_in_one_line_naming_it(case, tmp_path, capfd):
    build, expected = HOSTILE[case]
    arguments, named = build(tmp_path)
    capfd.readouterr()
    result = runner.invoke(app, arguments)
    line = _one_error_line(result, capfd, named)
    assert expected in line, line
    assert not (tmp_path / "out_mask.nii.gz").exists()


# ------------------------------------------------------------------------------ odd but valid


@pytest.mark.parametrize("slope", [0.0, float("nan")])
def test_scl_slope_zero_or_nan_means_unscaled(tmp_path, capfd, slope):
    # nifti1.h: "If the scl_slope field is nonzero, then each voxel value in the dataset should be scaled";
    # niftilib and nibabel alike take a non-finite slope as no scaling.
    path = nifti(tmp_path / "m.nii.gz", scl_slope=slope, scl_inter=0.0)
    result = runner.invoke(app, ["volume", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{BLOB_ML:.2f} mL"
    assert capfd.readouterr().err == ""


def test_a_mask_of_0_and_one_fractional_label_is_that_label(tmp_path):
    # One label value besides 0, whatever it is (0.5 from a resampled or rescaled 0/1 mask): counted whole.
    path = write_sitk(blob_mask(dtype=np.float32) * np.float32(0.5), tmp_path / "m.nii.gz")
    result = runner.invoke(app, ["volume", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{BLOB_ML:.2f} mL"


def test_a_1x1x1_mask_reads_as_its_one_voxel(tmp_path):
    path = write_sitk(np.ones((1, 1, 1), np.uint8), tmp_path / "m.nii.gz", spacing=(10.0, 10.0, 10.0))
    result = runner.invoke(app, ["volume", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "1.00 mL"


def test_a_path_with_spaces_and_unicode_reads(tmp_path):
    folder = tmp_path / "Patiënt 李 01 (copy)"
    folder.mkdir()
    path = write_sitk(blob_mask(), folder / "mask ü 1.nii.gz")
    result = runner.invoke(app, ["volume", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{BLOB_ML:.2f} mL"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission_is_refused(tmp_path, capfd):
    path = write_sitk(blob_mask(), tmp_path / "m.nii.gz")
    path.chmod(0)
    try:
        result = runner.invoke(app, ["volume", str(path)])
        assert "Permission denied" in _one_error_line(result, capfd, path)
    finally:
        path.chmod(0o600)


def test_a_1x1x1_ct_is_refused_by_segment(tmp_path, capfd):
    path = write_sitk(np.full((1, 1, 1), 40, np.int16), tmp_path / "ct.nii.gz")
    result = runner.invoke(app, ["segment", str(path), "--out", str(tmp_path / "out_mask.nii.gz")])
    _one_error_line(result, capfd, path)
    assert not (tmp_path / "out_mask.nii.gz").exists()


# --------------------------------------------------------------------- the real process, end to end


# Files on which ITK used to print raw lines (MetaIO, NRRD, NIfTI, GDCM) before the error.
ITK_PRINTED = ["mha garbled header", "random bytes .nii.gz", "nrrd bad type field", "zero-length .nii",
               "folder named x.nii.gz", "dicom file, pixel data truncated", "dicom series, one slice truncated",
               "dicom file without pixel data"]


@pytest.mark.parametrize("case", ITK_PRINTED)
def test_real_process_prints_one_line_and_exits_2(case, tmp_path):
    _, named = HOSTILE[case][0](tmp_path)
    # `volume` reads with the same reader as `segment`, and starts in a second rather than four.
    done = subprocess.run([sys.executable, "-m", "hematoma", "volume", str(named)], capture_output=True, text=True,
                          check=False, timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named.name in lines[0], done.stderr
