"""Tests for hematoma.io: image reading (files, DICOM series), masks, geometry checks, writing."""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from hematoma.errors import InputError
from hematoma.io import (
    ImageWarning,
    array_to_image,
    as_3d,
    check_geometry,
    image_to_array,
    read_geometry,
    read_image,
    read_mask,
    write_image,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CT_PHANTOM = DATA / "ibsi1_ct_phantom"


# ------------------------------------------------------------------------------------- helpers


def write_ct_series(folder: Path, hu: np.ndarray, positions, pixel_spacing=(0.5, 0.5), series_uid=None,
                    names=None, thickness=5.0, study_uid=None, patient_id="test") -> str:
    """Write ``hu`` (z, y, x) as a CT series, slice k at ``positions[k]``; returns the SeriesInstanceUID.

    Stored values are unsigned 12-bit with RescaleSlope 1 / RescaleIntercept -1024, like most scanners.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = study_uid or generate_uid(), generate_uid()
    names = names or [f"slice{k:03d}.dcm" for k in range(len(hu))]
    for k, (plane, position, name) in enumerate(zip(hu, positions, names)):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, sop_uid, "CT"
        ds.PatientID, ds.PatientName = patient_id, "Test^Patient"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = thickness
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.PixelData = (plane.astype(np.int32) + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / name, enforce_file_format=True)
    return series_uid


def random_hu(shape=(8, 16, 16), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 2000, shape).astype(np.int16)


def axial_positions(count, spacing_z=5.0, start=(-4.0, -4.0, 10.0)):
    return [(start[0], start[1], start[2] + spacing_z * k) for k in range(count)]


def make_image(size=(16, 16, 8), spacing=(0.5, 0.5, 5.0), origin=(0.0, 0.0, 0.0), direction=None, values=None):
    array = np.zeros(size[::-1], np.int16) if values is None else values
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def read_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning expected
        return read_image(path, **kwargs)


# ---------------------------------------------------------------------------- real DICOM data


@pytest.fixture
def ct_phantom() -> Path:
    if not CT_PHANTOM.is_dir():
        pytest.skip(f"reference data absent: {CT_PHANTOM}")
    return CT_PHANTOM


def test_real_dicom_series_equals_its_nifti(ct_phantom):
    from_dicom = sitk.DICOMOrient(read_quietly(ct_phantom / "dicom" / "image"), "LPS")
    from_nifti = sitk.DICOMOrient(sitk.ReadImage(str(ct_phantom / "nifti" / "image.nii.gz")), "LPS")
    assert from_dicom.GetSize() == from_nifti.GetSize() == (204, 201, 60)
    np.testing.assert_allclose(from_dicom.GetSpacing(), from_nifti.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(from_dicom.GetOrigin(), from_nifti.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(from_dicom.GetDirection(), from_nifti.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(image_to_array(from_dicom), image_to_array(from_nifti))


def test_real_dicom_values_are_hu_from_rescale(ct_phantom):
    folder = ct_phantom / "dicom" / "image"
    image = read_quietly(folder)
    file = sorted(folder.glob("*.dcm"))[7]
    ds = pydicom.dcmread(file)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    index = image.TransformPhysicalPointToIndex(tuple(float(v) for v in ds.ImagePositionPatient))
    assert index[:2] == (0, 0)
    np.testing.assert_array_equal(image_to_array(image)[index[2]], expected)
    assert image_to_array(image).min() >= -1024


# ------------------------------------------------------------------------ synthetic DICOM series


def test_dicom_series_values_and_geometry(tmp_path):
    hu = random_hu()
    # DICOM PixelSpacing is (between rows, between columns) = (y, x).
    write_ct_series(tmp_path / "ct", hu, axial_positions(8), pixel_spacing=(0.4, 0.5))
    image = read_quietly(tmp_path / "ct")
    assert image.GetSize() == (16, 16, 8)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.4, 5.0))
    np.testing.assert_allclose(image.GetOrigin(), (-4.0, -4.0, 10.0))
    np.testing.assert_array_equal(image_to_array(image), hu)


def test_dicom_slices_sorted_by_position_not_file_order(tmp_path):
    hu = random_hu()
    names = [f"img{k:03d}.dcm" for k in range(8)]
    random.Random(1).shuffle(names)
    write_ct_series(tmp_path / "ct", hu, axial_positions(8), names=names)
    np.testing.assert_array_equal(image_to_array(read_quietly(tmp_path / "ct")), hu)


def test_dicom_folder_with_two_series_takes_the_largest(tmp_path):
    big = write_ct_series(tmp_path / "ct", random_hu((8, 16, 16)), axial_positions(8),
                          names=[f"a{k}" for k in range(8)])
    small = write_ct_series(tmp_path / "ct", random_hu((5, 16, 16), seed=2), axial_positions(5),
                            names=[f"b{k}" for k in range(5)])
    with pytest.warns(ImageWarning, match=f"2 series.*{big}"):
        assert read_image(tmp_path / "ct").GetSize()[2] == 8
    chosen = read_quietly(tmp_path / "ct", series_uid=small)
    np.testing.assert_array_equal(image_to_array(chosen), random_hu((5, 16, 16), seed=2))
    with pytest.raises(InputError, match=f"no series 1.2.3.*{big}.*{small}") as error:
        read_image(tmp_path / "ct", series_uid="1.2.3")
    assert error.value.path == tmp_path / "ct"


def test_dicom_series_tie_asks_to_choose(tmp_path):
    first = write_ct_series(tmp_path / "ct", random_hu((4, 16, 16)), axial_positions(4),
                            names=[f"a{k}" for k in range(4)])
    second = write_ct_series(tmp_path / "ct", random_hu((4, 16, 16)), axial_positions(4),
                             names=[f"b{k}" for k in range(4)])
    with pytest.raises(InputError, match="--series") as error:
        read_image(tmp_path / "ct")
    assert first in str(error.value) and second in str(error.value) and str(tmp_path / "ct") in str(error.value)


def test_dicom_missing_slice_is_resampled_onto_a_regular_grid(tmp_path):
    hu = random_hu((7, 16, 16))
    heights = [0, 1, 2, 4, 5, 6, 7]  # slice 3 missing
    positions = [(-4.0, -4.0, 10.0 + 5.0 * k) for k in heights]
    write_ct_series(tmp_path / "ct", hu, positions)
    with pytest.warns(ImageWarning, match=r"ct: slice spacing is not uniform \(gaps of 5, 10 mm\).*regular grid"):
        image = read_image(tmp_path / "ct")
    assert image.GetSize() == (16, 16, 8)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.5, 5.0))
    np.testing.assert_allclose(image.GetOrigin(), positions[0])
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((0, 0, 7)), positions[-1])
    array = image_to_array(image)
    np.testing.assert_array_equal(array[[0, 1, 2, 4, 5, 6, 7]], hu)
    np.testing.assert_allclose(array[3], (hu[2].astype(float) + hu[3]) / 2, atol=0.51)


def test_dicom_gantry_tilt_is_resampled(tmp_path):
    count, shift = 6, 1.0  # each slice 1 mm further in y (2 pixels): a tilt of atan(1 / 5) = 11.3 degrees
    hu = np.full((count, 16, 16), -1000, np.int16)
    for k in range(count):
        hu[k, 3, 5] = 100 + k  # a marker per slice, at a known physical point
    positions = [(0.0, shift * k, 5.0 * k) for k in range(count)]
    write_ct_series(tmp_path / "ct", hu, positions)
    with pytest.warns(ImageWarning, match=r"ct: gantry tilt of 11\.3 degrees.*regular grid"):
        image = read_image(tmp_path / "ct")
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-9)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.5, 5.0))
    assert image.GetSize() == (16, 16 + 10, count)  # grown in y so that the last slice is not cut off
    array = image_to_array(image)
    for k in range(count):
        marker = np.array(positions[k]) + (5 * 0.5, 3 * 0.5, 0.0)
        x, y, z = image.TransformPhysicalPointToIndex(tuple(marker))
        assert array[z, y, x] == 100 + k
    assert array[0, -1, 0] == -1024  # outside every slice: air


def test_dicom_gantry_tilt_with_a_missing_slice(tmp_path):
    heights = [0, 1, 2, 4, 5]
    hu = np.full((len(heights), 16, 16), -1000, np.int16)
    hu[:, 6, 4] = 500
    positions = [(0.0, -0.5 * k, 5.0 * k) for k in heights]  # drifting towards -y: the grid grows on that side
    write_ct_series(tmp_path / "ct", hu, positions, pixel_spacing=(0.5, 0.4))
    with pytest.warns(ImageWarning, match=r"not uniform \(gaps of 5, 10 mm\); gantry tilt of 5\.7 degrees"):
        image = read_image(tmp_path / "ct")
    assert image.GetSize() == (16, 16 + 5, 6)
    np.testing.assert_allclose(image.GetOrigin(), (0.0, -2.5, 0.0))
    array = image_to_array(image)
    for k, position in zip(heights, positions):
        x, y, z = image.TransformPhysicalPointToIndex(tuple(np.array(position) + (4 * 0.4, 6 * 0.5, 0.0)))
        assert z == k and array[z, y, x] == 500


def test_single_dicom_file_is_a_one_slice_volume(tmp_path):
    hu = random_hu((3, 16, 16))
    write_ct_series(tmp_path / "ct", hu, axial_positions(3), thickness=2.5)
    image = read_quietly(tmp_path / "ct" / "slice001.dcm")
    assert image.GetDimension() == 3 and image.GetSize() == (16, 16, 1)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.5, 2.5))
    np.testing.assert_allclose(image.GetOrigin(), axial_positions(3)[1])
    np.testing.assert_array_equal(image_to_array(image)[0], hu[1])


def test_folders_without_dicom_images_are_input_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not an image")
    sitk.WriteImage(make_image(), str(other / "ct.nii.gz"))
    for folder in (empty, other):
        with pytest.raises(InputError, match="no DICOM images in folder") as error:
            read_image(folder)
        assert error.value.path == folder and str(folder) in str(error.value)


# ------------------------------------------------------------------------------- image files


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_file_round_trip_keeps_geometry_and_values(tmp_path, suffix):
    angle = np.radians(10)
    rotation = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    values = random_hu()
    image = make_image(spacing=(0.45, 0.5, 5.0), origin=(-100.5, 20.25, -30.0), direction=rotation, values=values)
    path = write_image(image, tmp_path / f"ct{suffix}")
    back = read_quietly(path)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(image_to_array(back), values)


def test_corrupt_file_is_an_input_error_naming_it(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(InputError, match="cannot be read as an image") as error:
        read_image(path)
    assert error.value.path == path and str(error.value).startswith(str(path))


def test_missing_path_and_unsupported_format_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_image(tmp_path / "absent.nii.gz")
    other = tmp_path / "ct.png"
    other.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="unsupported image format"):
        read_image(other)
    with pytest.raises(InputError, match="unsupported image format"):
        write_image(make_image(), tmp_path / "ct.png")


def test_as_3d_and_array_helpers():
    plane = make_image(size=(16, 16), spacing=(0.5, 0.5), origin=(1.0, 2.0),
                       values=np.arange(256, dtype=np.int16).reshape(16, 16))
    volume = as_3d(plane, spacing_z=5.0)
    assert volume.GetSize() == (16, 16, 1)
    np.testing.assert_allclose(volume.GetSpacing(), (0.5, 0.5, 5.0))
    np.testing.assert_allclose(volume.GetOrigin()[:2], (1.0, 2.0))
    assert as_3d(volume) is volume
    array = image_to_array(volume)
    assert array.shape == (1, 16, 16)
    again = array_to_image(array * 2, volume)
    assert again.GetSpacing() == volume.GetSpacing() and again.GetOrigin() == volume.GetOrigin()


# ------------------------------------------------------------------------------------- masks


def test_read_mask_rejects_non_binary_masks(tmp_path):
    values = np.zeros((8, 16, 16), np.uint8)
    values[2, 3, 4], values[3, 3, 4] = 1, 2
    path = write_image(make_image(values=values), tmp_path / "mask.nii.gz")
    with pytest.raises(InputError, match=r"mask is not binary: found values 0, 1, 2") as error:
        read_mask(path)
    assert error.value.path == path


def test_read_mask_turns_a_single_label_into_0_1(tmp_path):
    values = np.zeros((8, 16, 16), np.uint8)
    values[2:4, 5:9, 5:9] = 255
    path = write_image(make_image(values=values), tmp_path / "mask.nii.gz")
    mask = read_mask(path)
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(image_to_array(mask), values // 255)


@pytest.mark.parametrize("field, change, shown", [
    ("spacing", dict(spacing=(0.45, 0.45, 5.0)), "spacing (0.45, 0.45, 5.0) vs (0.5, 0.5, 5.0)"),
    ("origin", dict(origin=(0.0, 1.0, 0.0)), "origin (0.0, 1.0, 0.0) vs (0.0, 0.0, 0.0)"),
    ("size", dict(size=(16, 16, 9)), "size (16, 16, 9) vs (16, 16, 8)"),
    ("direction", dict(direction=(1, 0, 0, 0, -1, 0, 0, 0, 1)), "direction (1.0, 0.0, 0.0, 0.0, -1.0"),
])
def test_read_mask_checks_geometry_against_the_image(tmp_path, field, change, shown):
    image = make_image()
    image_path = write_image(image, tmp_path / "ct.nii.gz")
    mask_path = write_image(make_image(**change), tmp_path / "mask.nii.gz")
    with pytest.raises(InputError) as error:
        read_mask(mask_path, reference=image, reference_path=image_path)
    message = str(error.value)
    assert message.startswith(f"{mask_path}: does not match image {image_path}: {field} ")
    assert shown in message
    assert error.value.path == mask_path


@pytest.mark.parametrize("values", [
    np.zeros(6, np.uint8), np.ones(6, np.uint8), np.array([0, 1, 1], np.uint8), np.array([0, 3, 3], np.int16),
    np.array([0, 1, 2], np.uint8), np.array([1, 2], np.int8), np.array([-1, 0, 1], np.int16),
    np.array([0.0, 0.5, 1.0]), np.array([0.0, np.nan]),
])
def test_mask_values_shortcut_agrees_with_unique(values):
    from hematoma.io.masks import _distinct_values

    np.testing.assert_array_equal(_distinct_values(values), np.unique(values))


def test_read_geometry_reads_the_header_only_and_checks_like_the_image(tmp_path):
    image = make_image()
    image_path = write_image(image, tmp_path / "ct.nii.gz")
    header = read_geometry(image_path)
    assert isinstance(header, sitk.ImageFileReader)  # no voxels decompressed
    mask_path = write_image(make_image(), tmp_path / "mask.nii.gz")
    read_mask(mask_path, reference=header, reference_path=image_path)  # same grid: accepted
    shifted = write_image(make_image(origin=(0.0, 1.0, 0.0)), tmp_path / "shifted.nii.gz")
    with pytest.raises(InputError, match=r"does not match image .*ct.nii.gz: origin"):
        read_mask(shifted, reference=header, reference_path=image_path)
    with pytest.raises(InputError, match="no such file"):
        read_geometry(tmp_path / "absent.nii.gz")


def test_check_geometry_tolerates_rounding_and_catches_dimension(tmp_path):
    image = make_image()
    check_geometry(image, make_image(origin=(1e-6, 0.0, -1e-6)), "ct.nii.gz", "mask.nii.gz")
    with pytest.raises(InputError, match="mask.nii.gz: does not match image ct.nii.gz: dimension 2 vs 3"):
        check_geometry(image, make_image(size=(16, 16), spacing=(0.5, 0.5), origin=(0.0, 0.0)),
                       "ct.nii.gz", "mask.nii.gz")


# ----------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd"])
def test_write_image_is_atomic_and_refuses_overwrite_when_asked(tmp_path, suffix):
    path = tmp_path / f"ct{suffix}"
    write_image(make_image(values=random_hu()), path)
    expected = {path.name} | ({"ct.raw"} if suffix == ".mhd" else set())
    assert {p.name for p in tmp_path.iterdir()} == expected  # no temporary files left
    with pytest.raises(InputError, match="already exists"):
        write_image(make_image(), path, overwrite=False)
    np.testing.assert_array_equal(image_to_array(read_image(path)), random_hu())
    write_image(make_image(), path)  # overwrite=True by default
    assert image_to_array(read_image(path)).max() == 0
    assert {p.name for p in tmp_path.iterdir()} == expected


def test_write_image_compresses_nii_gz(tmp_path):
    image = make_image(size=(64, 64, 8))
    write_image(image, tmp_path / "ct.nii.gz")
    write_image(image, tmp_path / "ct.nii")
    assert (tmp_path / "ct.nii.gz").stat().st_size < (tmp_path / "ct.nii").stat().st_size / 10


# ------------------------------------------------------------ what ITK prints, and odd neighbours


def _garbled_mha(folder: Path) -> Path:
    path = folder / "garbled.mha"
    sitk.WriteImage(make_image(), str(path))
    path.write_bytes(path.read_bytes().replace(b"NDims = 3", b"NDims = x\x01\x02", 1))
    return path


def test_itk_lines_become_the_reason_and_stderr_works_after(tmp_path, capfd):
    # MetaIO prints "DimSize required and not defined." with std::cerr, then fails with an errno text.
    path = _garbled_mha(tmp_path)
    with pytest.raises(InputError) as error:
        read_image(path)
    assert str(error.value) == f"{path}: cannot be read as an image (DimSize required and not defined.)"
    assert capfd.readouterr().err == ""
    # File descriptor 2 and Python's sys.stderr are back where they were.
    import sys
    print("python line", file=sys.stderr)
    os.write(2, b"fd line\n")
    assert capfd.readouterr().err == "python line\nfd line\n"


def test_reads_in_threads_take_turns_on_stderr(tmp_path, capfd):
    from concurrent.futures import ThreadPoolExecutor

    good = write_image(make_image(values=random_hu()), tmp_path / "ct.nii.gz")
    bad = _garbled_mha(tmp_path)

    def attempt(path):
        try:
            return image_to_array(read_image(path)).sum()
        except InputError as error:
            return str(error)

    before = os.fstat(2)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, [good, bad] * 8))
    assert results[0::2] == [random_hu().sum()] * 8
    assert all("DimSize required" in r for r in results[1::2])
    assert capfd.readouterr().err == ""
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_nii_gz_is_read_not_the_nii_beside_it(tmp_path):
    # niftilib, asked for x.nii.gz, reads x.nii when both exist: another image, silently.
    write_image(make_image(values=random_hu(seed=1)), tmp_path / "ct.nii")
    path = write_image(make_image(values=random_hu(seed=2)), tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(image_to_array(read_image(path)), random_hu(seed=2))
    assert read_geometry(path).GetSize() == (16, 16, 8)
    np.testing.assert_array_equal(image_to_array(read_image(tmp_path / "ct.nii")), random_hu(seed=1))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_header_promising_more_than_a_head_ct_is_refused_before_reading(tmp_path, suffix, monkeypatch):
    from hematoma.io import image_checks as io

    path = write_image(make_image(size=(16, 16, 8)), tmp_path / f"ct{suffix}")
    monkeypatch.setattr(io, "MAX_VOXELS", 16 * 16 * 8 - 1)  # the real bound, 2^31 voxels, is too big to write
    with pytest.raises(InputError, match=r"header describes 16 x 16 x 8 = 2\.05e\+03 voxels .* is not a head CT"):
        read_image(path)


def test_geometry_no_scanner_writes_is_refused(tmp_path):
    path = write_image(make_image(), tmp_path / "ct.mha")
    text = path.read_bytes()
    path.write_bytes(text.replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 1 1 0 0 0 1", 1))
    with pytest.raises(InputError, match="direction cosines .* are not orthonormal"):
        read_image(path)
    path.write_bytes(text.replace(b"ElementSpacing = 0.5 0.5 5", b"ElementSpacing = 0.5 -0.5 5", 1))
    with pytest.raises(InputError, match="voxel spacing 0.5, -0.5, 5 is not positive and finite"):
        read_geometry(path)


def test_read_mask_takes_a_negative_label_and_refuses_a_2d_mask(tmp_path):
    values = np.zeros((8, 16, 16), np.int16)
    values[3:5, 6:9, 6:9] = -1
    mask = read_mask(write_image(make_image(values=values), tmp_path / "negative.nii.gz"))
    assert image_to_array(mask).sum() == 18
    plane = make_image(size=(16, 16), spacing=(0.5, 0.5), origin=(0.0, 0.0), values=values[3])
    with pytest.raises(InputError, match="mask is a 2D image; expected a 3D mask"):
        read_mask(write_image(plane, tmp_path / "plane.nii.gz"))


def test_dicom_series_without_positions_is_refused(tmp_path):
    write_ct_series(tmp_path / "series", random_hu((3, 8, 8)), axial_positions(3))
    for file in (tmp_path / "series").iterdir():
        ds = pydicom.dcmread(file)
        del ds.ImagePositionPatient
        ds.save_as(file)
    with pytest.raises(InputError, match="3 of 3 slices have no ImagePositionPatient"):
        read_image(tmp_path / "series")


def test_dicom_truncated_slice_is_named(tmp_path):
    write_ct_series(tmp_path / "series", random_hu((3, 8, 8)), axial_positions(3))
    victim = tmp_path / "series" / "slice001.dcm"
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(InputError) as error:
        read_image(tmp_path / "series")
    assert str(error.value) == (f"{victim}: file is incomplete: holds 118 bytes of pixel data, the header promises "
                                "128 bytes (truncated or still being copied)")


def test_writing_a_detached_image_never_replaces_another_images_data_file(tmp_path):
    write_image(make_image(values=random_hu()), tmp_path / "ct.nhdr")  # writes ct.raw
    with pytest.raises(InputError, match=r"ct.mhd: its data file .*ct.raw is already there"):
        write_image(make_image(), tmp_path / "ct.mhd", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nhdr", "ct.raw"]
    np.testing.assert_array_equal(image_to_array(read_image(tmp_path / "ct.nhdr")), random_hu())


def test_writing_where_a_folder_or_a_file_is_in_the_way_is_one_line(tmp_path):
    (tmp_path / "taken.nii.gz").mkdir()
    with pytest.raises(InputError, match="taken.nii.gz: is a folder"):
        write_image(make_image(), tmp_path / "taken.nii.gz")
    (tmp_path / "a_file").write_text("keep me")
    with pytest.raises(InputError, match=r"a_file/ct.nii.gz: cannot be written"):
        write_image(make_image(), tmp_path / "a_file" / "ct.nii.gz")
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_what_a_reader_prints_on_success_becomes_one_warning(tmp_path, capfd):
    from hematoma.io.itk_capture import _sitk_read

    def noisy_read():
        os.write(2, b"GDCM says: odd value in tag (0028,0030)\nMET_Read Failed\n")  # as C++ std::cerr would
        return 5

    with pytest.warns(ImageWarning, match=r"ct.dcm: the image reader warned: GDCM says: odd value in tag"):
        assert _sitk_read(tmp_path / "ct.dcm", noisy_read) == 5
    assert capfd.readouterr().err == ""


def test_an_enhanced_ct_file_keeps_its_spacing_in_functional_groups(tmp_path):
    """A multi-frame (Enhanced CT) file keeps PixelSpacing in its functional groups, not at the top level."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", generate_uid(), generate_uid()
    ds.Rows = ds.Columns = 32
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.PhotometricInterpretation = 10, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures, orientation, shared = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 5.0
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in range(10):
        frame, position = Dataset(), Dataset()
        position.ImagePositionPatient = [0, 0, 5.0 * k]
        frame.PlanePositionSequence = [position]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.zeros((10, 32, 32), np.int16).tobytes()
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).get("PixelSpacing") is None
    assert read_image(path).GetSpacing() == pytest.approx((0.5, 0.5, 5.0))
    del shared.PixelMeasuresSequence[0].PixelSpacing  # and without it anywhere: refused, not 1 mm
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match="PixelSpacing is absent"):
        read_image(path)


@pytest.mark.parametrize("obstacle", ["large scan", "no room for the copy"])
def test_a_gzip_nifti_reads_the_same_without_the_plain_copy(tmp_path, monkeypatch, obstacle):
    """The plain temporary copy is a speed-up only: a large scan, or a full/tmpfs temp folder, reads the same."""
    from hematoma.io import images

    array = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8)
    path = tmp_path / "ct.nii.gz"
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.5, 5.0))
    sitk.WriteImage(image, str(path), useCompression=True)
    if obstacle == "large scan":
        monkeypatch.setattr(images, "PLAIN_COPY_MAX_BYTES", 0)
    else:
        real = images.check_image_file_complete

        def no_room(file, inflate_to=None, header_only=False):
            if inflate_to is not None:
                raise OSError(28, "No space left on device")
            return real(file, header_only=header_only)

        monkeypatch.setattr(images, "check_image_file_complete", no_room)
    read = read_image(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), array)
    assert read.GetSpacing() == pytest.approx((0.5, 0.5, 5.0))
