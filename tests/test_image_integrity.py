"""Truncated or damaged image files are refused before ITK zero-fills them (issue 15, group 2)."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.io.integrity import check_image_file_complete
from hematoma.io import read_geometry, read_image, read_mask, write_image

runner = CliRunner()

# (file name, compressed, the file that holds the voxels)
FORMATS = [
    ("ct.nii.gz", True, "ct.nii.gz"),
    ("ct.nii", False, "ct.nii"),
    ("ct.nrrd", False, "ct.nrrd"),
    ("ct.nrrd", True, "ct.nrrd"),
    ("ct.nhdr", False, "ct.raw"),
    ("ct.nhdr", True, "ct.raw.gz"),
    ("ct.mha", False, "ct.mha"),
    ("ct.mha", True, "ct.mha"),
    ("ct.mhd", False, "ct.raw"),
    ("ct.mhd", True, "ct.zraw"),
]


def noisy_ct(shape=(12, 40, 48), seed=0) -> sitk.Image:
    values = np.random.default_rng(seed).integers(-1000, 1500, shape).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.5, 0.5, 5.0))
    return image


def write(image: sitk.Image, path: Path, compressed: bool) -> Path:
    # SimpleITK directly: io.write_image always compresses .gz and never the others.
    sitk.WriteImage(image, str(path), useCompression=compressed)
    return path


def cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("name, compressed, data_file", FORMATS)
def test_intact_files_of_every_format_read(tmp_path, name, compressed, data_file):
    image = noisy_ct()
    path = write(image, tmp_path / name, compressed)
    assert (tmp_path / data_file).exists()
    check_image_file_complete(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(image))
    assert read_geometry(path).GetSize() == image.GetSize()


@pytest.mark.parametrize("name, compressed, data_file", FORMATS)
def test_truncated_files_of_every_format_are_refused(tmp_path, name, compressed, data_file, capfd):
    path = write(noisy_ct(), tmp_path / name, compressed)
    cut(tmp_path / data_file)
    for reader in (read_image, read_geometry):
        with pytest.raises(InputError, match="file is incomplete") as error:
            reader(path)
        message = str(error.value)
        assert "\n" not in message and message.startswith(str(tmp_path / data_file))
        if not compressed:
            assert "of voxel data, the header promises" in message
        elif name.endswith((".mha", ".mhd")):  # MetaImage states its compressed size: that is compared first
            assert "of compressed data, the header promises" in message
        else:
            assert "gzip stream ends early: truncated or still being copied" in message
    assert capfd.readouterr().err == ""  # no raw ITK lines (a truncated .mha used to print some)


def test_truncated_mha_says_what_is_wrong_not_no_such_file(tmp_path, capfd):
    path = write(noisy_ct(), tmp_path / "ct.mha", compressed=False)
    cut(path)
    with pytest.raises(InputError) as error:
        read_image(path)
    assert "No such file" not in str(error.value)
    # 12 x 40 x 48 int16 = 46,080 bytes promised; half the file (header included) left.
    assert re.search(r"ct.mha: file is incomplete: holds 2\d\.\d kB of voxel data, the header promises 46\.1 kB",
                     str(error.value))
    assert capfd.readouterr().err == ""


def test_a_few_missing_bytes_are_shown_exactly(tmp_path):
    path = write(noisy_ct(), tmp_path / "ct.nii", compressed=False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(InputError, match=r"holds 46077 bytes of voxel data, the header promises 46080 bytes"):
        read_image(path)


def test_gzip_with_a_wrong_crc_is_refused(tmp_path):
    path = write(noisy_ct(), tmp_path / "ct.nii.gz", compressed=True)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="gzip data is corrupt .*incorrect data check"):
        read_image(path)


def test_complete_gzip_of_a_truncated_nifti_is_refused(tmp_path):
    # The stream ends properly (someone gzipped half a .nii): only the header's byte count tells.
    plain = write(noisy_ct(), tmp_path / "ct.nii", compressed=False)
    path = tmp_path / "half.nii.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()[:20000]))
    with pytest.raises(InputError, match=r"half.nii.gz: file is incomplete: holds 19.6 kB of voxel data, "
                                         r"the header promises 46.1 kB"):
        read_image(path)


def test_concatenated_gzip_members_are_read_whole(tmp_path):
    plain = write(noisy_ct(), tmp_path / "ct.nii", compressed=False).read_bytes()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(plain[:10000]) + gzip.compress(plain[10000:]))
    check_image_file_complete(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(noisy_ct()))


@pytest.mark.parametrize("name, data_file", [("ct.mhd", "ct.raw"), ("ct.nhdr", "ct.raw")])
def test_a_missing_detached_data_file_is_named(tmp_path, name, data_file):
    path = write(noisy_ct(), tmp_path / name, compressed=False)
    (tmp_path / data_file).unlink()
    with pytest.raises(InputError, match=f"{name}: data file {data_file} named by the header is missing"):
        read_image(path)


def nifti_bytes(version: int, order: str, values: np.ndarray) -> bytes:
    """A single-file NIfTI-1 or NIfTI-2 of ``values`` (int16, z y x) in byte order ``order``, by hand."""
    dims = (3, *values.shape[::-1], 1, 1, 1, 1)
    if version == 1:
        header = bytearray(348)
        struct.pack_into(order + "i", header, 0, 348)
        struct.pack_into(order + "8h", header, 40, *dims)
        struct.pack_into(order + "hh", header, 70, 4, 16)  # datatype int16, bitpix
        struct.pack_into(order + "8f", header, 76, *[1.0] * 8)
        struct.pack_into(order + "f", header, 108, 352.0)
        header[344:348] = b"n+1\0"
    else:
        header = bytearray(540)
        struct.pack_into(order + "i", header, 0, 540)
        header[4:12] = b"n+2\0\r\n\x1a\n"
        struct.pack_into(order + "hh", header, 12, 4, 16)
        struct.pack_into(order + "8q", header, 16, *dims)
        struct.pack_into(order + "8d", header, 104, *[1.0] * 8)
        struct.pack_into(order + "q", header, 168, 544)
    return bytes(header) + b"\0" * 4 + values.astype(values.dtype.newbyteorder(order)).tobytes()


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("order", ["<", ">"])
def test_nifti_headers_of_both_versions_and_byte_orders(tmp_path, version, order):
    values = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    data = nifti_bytes(version, order, values)
    for name, content in (("ct.nii", data), ("ct.nii.gz", gzip.compress(data))):
        path = tmp_path / name
        path.write_bytes(content)
        check_image_file_complete(path)
        if version == 1:  # this ITK reads NIfTI-1 only
            np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), values)
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(data[:-40]))
    with pytest.raises(InputError, match="holds 200 bytes of voxel data, the header promises 240 bytes"):
        check_image_file_complete(short)


def test_files_the_check_does_not_understand_are_left_to_itk(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    check_image_file_complete(path)  # not gzip, not a NIfTI header: no claim made
    with pytest.raises(InputError, match="cannot be read as an image"):
        read_image(path)


# ------------------------------------------------------------------------- the CLI cases


def sphere_mask(radius_voxels=6, shape=(20, 40, 40)) -> sitk.Image:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = [s / 2 for s in shape]
    inside = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius_voxels**2
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.SetSpacing((1.0, 1.0, 1.0))
    return mask


def test_volume_of_half_a_nii_gz_is_refused_in_one_line(tmp_path):
    path = write_image(sphere_mask(), tmp_path / "mask.nii.gz")
    expected_ml = sitk.GetArrayFromImage(sphere_mask()).sum() / 1000.0  # 1 mm voxels
    whole = runner.invoke(app, ["volume", str(path)])
    assert whole.exit_code == 0 and f"{expected_ml:.2f} mL" in whole.output
    cut(path)
    # ITK alone inflates what is there and zero-fills the rest: a smaller volume, silently.
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).sum() / 1000.0 < expected_ml
    result = runner.invoke(app, ["volume", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "mask.nii.gz: file is incomplete (gzip stream ends early" in lines[0]
    assert "mL" not in result.output


@pytest.mark.parametrize("truncated", ["baseline", "followup"])
def test_label_with_a_truncated_mask_is_refused(tmp_path, truncated):
    paths = {which: write_image(sphere_mask(6), tmp_path / f"{which}.nii") for which in ("baseline", "followup")}
    command = ["label", "--baseline", str(paths["baseline"]), "--followup", str(paths["followup"])]
    result = runner.invoke(app, command)
    assert result.exit_code == 0 and "HE=no" in result.output  # same volume twice: no growth
    cut(paths[truncated], keep=0.6)
    # ITK alone reads the cut file with zeros in place of the lost voxels (the silent flip).
    zero_filled = sitk.GetArrayFromImage(sitk.ReadImage(str(paths[truncated])))
    assert 0 < zero_filled.sum() < sitk.GetArrayFromImage(sphere_mask(6)).sum()
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{truncated}.nii: file is incomplete" in lines[0] and "HE=" not in result.output


def test_read_mask_refuses_a_truncated_mask(tmp_path):
    path = write_image(sphere_mask(), tmp_path / "mask.nrrd")
    cut(path, keep=0.9)
    with pytest.raises(InputError, match="mask.nrrd: file is incomplete"):
        read_mask(path)


def test_inflating_in_small_chunks_reads_intact_files_whole(tmp_path, monkeypatch):
    # Bounded output per call leaves output held back when the input is used up: it must still be counted.
    import hematoma.io.integrity_streams as integrity

    monkeypatch.setattr(integrity, "_READ_CHUNK", 97)
    monkeypatch.setattr(integrity, "_OUTPUT_CHUNK", 1000)
    zeros = sitk.GetImageFromArray(np.zeros((12, 40, 48), np.int16))  # compresses ~500x
    for name, image in (("zeros.nii.gz", zeros), ("noisy.nii.gz", noisy_ct())):
        path = write(image, tmp_path / name, compressed=True)
        check_image_file_complete(path)
        cut(path, keep=0.9)
        with pytest.raises(InputError, match="ends early"):
            check_image_file_complete(path)


# ------------------------------------------------------- NIfTI fields niftilib would replace silently


def float_ct(nan_at=(), shape=(12, 40, 48)) -> sitk.Image:
    values = sitk.GetArrayFromImage(noisy_ct(shape)).astype(np.float32)
    for index in nan_at:
        values.flat[index] = np.nan
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.5, 0.5, 5.0))
    return image


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_nan_voxels_are_refused_not_read_as_zero(tmp_path, name, monkeypatch):
    import hematoma.io.integrity_streams as integrity

    path = write(float_ct(nan_at=(0, 1001, 23039)), tmp_path / name, compressed=name.endswith(".gz"))
    # ITK alone reads NaN as 0: a NaN mask voxel or CT voxel changes without a word.
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).any()
    monkeypatch.setattr(integrity, "_OUTPUT_CHUNK", 1001)  # chunks cutting through float values
    monkeypatch.setattr(integrity, "_READ_CHUNK", 97)
    with pytest.raises(InputError, match=f"{name}: 3 voxel value\\(s\\) are NaN or infinite"):
        read_image(path)
    check_image_file_complete(write(float_ct(), tmp_path / f"clean_{name}", compressed=name.endswith(".gz")))


def patched_nifti(path: Path, offset: int, layout: str, *values) -> Path:
    content = bytearray((tmp := write(noisy_ct(), path.with_name("plain.nii"), compressed=False)).read_bytes())
    tmp.unlink()
    struct.pack_into("<" + layout, content, offset, *values)
    path.write_bytes(gzip.compress(bytes(content)) if path.name.endswith(".gz") else bytes(content))
    return path


@pytest.mark.parametrize("offset, layout, values, problem", [
    (80, "f", (0.0,), r"pixdim \(voxel size\) 0, 0.5, 5 is not positive and finite"),  # ITK would make it 1 mm
    (84, "f", (float("nan"),), r"pixdim \(voxel size\) 0.5, nan, 5 is not positive and finite"),
    (0, "i", (349,), "sizeof_hdr = 349, not 348"),  # niftilib reads it anyway, dims and all
    (72, "h", (8,), "datatype 4 has 16 bits per voxel, but bitpix says 8"),
    (70, "h", (3,), "datatype 3 is not a NIfTI datatype code"),
    (252, "hhf", (1, 0, float("inf")), r"qform \(quatern_b/c/d, qoffset_x/y/z\) holds NaN or infinite values"),
    (40, "h", (9,), r"dim\[0\] = 9, the number of dimensions, must be 1 to 7"),
])
def test_nifti_header_fields_itk_would_replace_are_refused(tmp_path, offset, layout, values, problem):
    path = patched_nifti(tmp_path / "ct.nii.gz", offset, layout, *values)
    with pytest.raises(InputError, match=f"ct.nii.gz: NIfTI header: {problem} \\(a damaged header\\?\\)"):
        check_image_file_complete(path)
    with pytest.raises(InputError, match="NIfTI header"):
        read_image(path)


def test_dicom_pixel_data_problem_says_missing_or_short(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from hematoma.io.integrity import dicom_pixel_data_problem

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 4, 5, 16, 1
    ds.PixelData = bytes(40)
    path = tmp_path / "slice.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dicom_pixel_data_problem(path) is None
    path.write_bytes(path.read_bytes()[:-6])
    assert dicom_pixel_data_problem(path) == ("file is incomplete: holds 34 bytes of pixel data, the header promises "
                                              "40 bytes (truncated or still being copied)")
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    assert "has no pixel data" in dicom_pixel_data_problem(path)
    assert pydicom.dcmread(path).Rows == 4
