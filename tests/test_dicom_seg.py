"""DICOM SEG out (`hematoma segment --out x.dcm`, write_dicom_seg) and in (read_dicom_seg, read_mask, a manifest)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from test_io import write_ct_series
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.io import (
    SEG_SOP_CLASS_UID,
    read_dicom_seg,
    read_image,
    read_mask,
    write_dicom_seg,
    write_image,
)
from hematoma.volume import mask_volume_ml

runner = CliRunner()


def _positions(ct: sitk.Image, count: int | None = None, step: float | None = None):
    x, y, z = ct.GetOrigin()
    step = ct.GetSpacing()[2] if step is None else step
    return [(x, y, z + step * k) for k in range(count or ct.GetSize()[2])]


def test_seg_read_back_equals_the_mask_voxel_for_voxel(series, seg_file):
    _, ct, truth = series
    mask = read_dicom_seg(seg_file, reference=ct)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(truth))
    assert sitk.GetArrayViewFromImage(truth).any()
    for get in (sitk.Image.GetSize, sitk.Image.GetSpacing, sitk.Image.GetOrigin, sitk.Image.GetDirection):
        assert get(mask) == get(ct)


def test_seg_passes_highdicom_reader_and_has_the_required_attributes(series, seg_file):
    import highdicom as hd

    folder, ct, truth = series
    seg = hd.seg.segread(seg_file)
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert seg.get_segment_numbers() == [1]
    description = seg.get_segment_description(1)
    assert description.segment_label == "hematoma"
    assert description.segmented_property_type.value == "50960005"  # SCT Hemorrhage
    assert description.segmented_property_category.value == "49755003"  # SCT Morphologically abnormal structure
    assert description.algorithm_identification[0].AlgorithmName.startswith("hematoma")
    from hematoma import __version__

    assert description.algorithm_identification[0].AlgorithmVersion == __version__
    # Every CT slice is referenced, so a viewer finds the slices it overlays.
    source_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in folder.iterdir()}
    assert {uid for _, _, uid in seg.get_source_image_uids()} == source_uids
    # highdicom's own reading by source instance gives the mask too.
    by_instance = seg.get_pixels_by_source_instance(
        [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sorted(folder.iterdir())],
        segment_numbers=[1], combine_segments=True)
    assert by_instance.sum() == sitk.GetArrayViewFromImage(truth).sum()
    ds = pydicom.dcmread(seg_file)
    assert ds.SOPClassUID == SEG_SOP_CLASS_UID and ds.Modality == "SEG"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "PatientID",
                    "ReferencedSeriesSequence", "SegmentSequence", "SharedFunctionalGroupsSequence",
                    "PerFrameFunctionalGroupsSequence", "DimensionIndexSequence", "ContentLabel"):
        assert keyword in ds, keyword
    assert ds.StudyInstanceUID == pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID
    assert int(ds.NumberOfFrames) == ct.GetSize()[2] and ds.BitsAllocated == 1


def test_writing_refuses_to_overwrite_unless_asked(series, seg_file):
    folder, _, truth = series
    with pytest.raises(InputError, match="already exists"):
        write_dicom_seg(truth, folder, seg_file)
    write_dicom_seg(truth, folder, seg_file, overwrite=True)


def test_read_mask_reads_a_seg_onto_its_ct(series, seg_file):
    folder, ct, truth = series
    mask = read_mask(seg_file, reference=ct, reference_path=folder)
    assert np.array_equal(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(truth))
    with pytest.raises(InputError, match="DICOM SEG.*no CT"):
        read_mask(seg_file)


def test_several_segments_need_a_name(series, tmp_path):
    folder, ct, truth = series
    oedema = sitk.BinaryDilate(truth, [2, 2, 1]) - truth
    path = write_dicom_seg({"hematoma": truth, "oedema": oedema}, folder, tmp_path / "two.dcm")
    with pytest.raises(InputError, match=r"2 segments \(1 'hematoma'; 2 'perihematomal oedema'\); name") as error:
        read_mask(path, reference=ct)
    assert "\n" not in str(error.value)
    for choice, expected in ((1, truth), ("perihematomal oedema", oedema), ("2", oedema), ("HEMATOMA", truth)):
        got = read_dicom_seg(path, reference=ct, segment=choice)
        assert np.array_equal(sitk.GetArrayViewFromImage(got), sitk.GetArrayViewFromImage(expected)), choice
    with pytest.raises(InputError, match="no segment 'ivh'; it holds 1 'hematoma'"):
        read_dicom_seg(path, reference=ct, segment="ivh")
    with pytest.raises(InputError, match="no segment 3"):
        read_dicom_seg(path, reference=ct, segment=3)


def test_a_seg_of_another_series_is_refused(series, seg_file, tmp_path):
    _, ct, _ = series
    hu = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.int16)
    other = tmp_path / "other"
    write_ct_series(other, hu, _positions(ct, step=ct.GetSpacing()[2] * 1.5), pixel_spacing=ct.GetSpacing()[1::-1])
    other_ct = read_image(other)
    with pytest.raises(InputError, match=r"does not match image .*other.*lies on none of its") as error:
        read_mask(seg_file, reference=other_ct, reference_path=other)
    assert str(error.value).startswith(str(seg_file))
    smaller = ct[:, :-2, :]
    with pytest.raises(InputError, match="does not match image: size"):
        read_dicom_seg(seg_file, reference=smaller)


def test_cli_segment_writes_a_seg_equal_to_its_nifti(series, tmp_path):
    folder, ct, _ = series
    nifti, seg = tmp_path / "mask.nii.gz", tmp_path / "mask.dcm"
    result = runner.invoke(app, ["segment", str(folder), "--out", str(nifti)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["segment", str(folder), "--out", str(seg)])
    assert result.exit_code == 0, result.output
    assert str(seg) in result.output.replace("\n", "")
    expected = read_mask(nifti, reference=ct)
    assert mask_volume_ml(expected) > 1
    assert np.array_equal(sitk.GetArrayViewFromImage(read_mask(seg, reference=ct)),
                          sitk.GetArrayViewFromImage(expected))
    assert "rules" in pydicom.dcmread(seg, stop_before_pixels=True).SegmentSequence[0] \
        .SegmentationAlgorithmIdentificationSequence[0].AlgorithmName
    # --format seg chooses a SEG whatever the name; an image format's name with it is refused.
    named = tmp_path / "mask_seg"
    result = runner.invoke(app, ["segment", str(folder), "--out", str(named), "--format", "seg"])
    assert result.exit_code == 0, result.output
    assert pydicom.dcmread(named, stop_before_pixels=True).SOPClassUID == SEG_SOP_CLASS_UID
    result = runner.invoke(app, ["segment", str(folder), "--out", str(tmp_path / "x.nii.gz"), "--format", "seg"])
    assert result.exit_code == 2 and "name it .dcm" in result.output


def test_cli_refuses_a_seg_of_a_nifti_ct_in_one_line(series, tmp_path):
    _, ct, _ = series
    nifti_ct = write_image(ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "mask.dcm"
    result = runner.invoke(app, ["segment", str(nifti_ct), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "is not DICOM" in result.output and "Traceback" not in result.output


def test_cli_refuses_a_seg_of_a_resampled_series(series, tmp_path):
    _, ct, _ = series
    hu = np.clip(sitk.GetArrayFromImage(ct), -1024, 3071)
    positions = _positions(ct)
    gap = tmp_path / "gap"  # a missing slice: read_image resamples onto an even grid, no longer the files' planes
    write_ct_series(gap, np.delete(hu, 5, axis=0), positions[:5] + positions[6:], pixel_spacing=ct.GetSpacing()[1::-1])
    out = tmp_path / "mask.dcm"
    result = runner.invoke(app, ["segment", str(gap), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists(), result.output
    assert "cannot hold a SEG" in result.output


def test_a_manifest_mask_column_may_name_a_seg(series, seg_file, tmp_path):
    folder, _, truth = series
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame([{"patient_id": "p1", "baseline_ct": str(folder), "baseline_mask": str(seg_file), "he": 1}]) \
        .to_csv(manifest, index=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(manifest), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    features = pd.read_csv(out / "features.csv")
    assert features["baseline_volume_ml"].iloc[0] == pytest.approx(mask_volume_ml(truth), rel=1e-9)


def test_extract_seg_writes_each_dicom_cases_mask_as_a_seg(series, tmp_path):
    """`extract --seg`: a SEG per DICOM case, equal to the case's mask; MANUAL for a given mask; a rerun keeps them."""
    from hematoma.extraction import SEG_NAME

    folder, ct, truth = series
    given = tmp_path / "given.nii.gz"
    sitk.WriteImage(truth, str(given))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"patient_id,baseline_ct,baseline_mask,he\nsegmented,{folder},,0\ngiven,{folder},{given},1\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(manifest), "--out", str(out), "--workers", "1", "--seg"])
    assert result.exit_code == 0, result.output
    for case, algorithm_type in (("segmented", "AUTOMATIC"), ("given", "MANUAL")):
        seg = out / "cases" / case / SEG_NAME
        back = sitk.GetArrayFromImage(read_dicom_seg(seg, reference=ct))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "cases" / case / "baseline_mask.nii.gz")))
        assert np.array_equal(back > 0, mask > 0) and mask.sum() > 100
        assert pydicom.dcmread(seg).SegmentSequence[0].SegmentAlgorithmType == algorithm_type
    before = (out / "cases" / "given" / SEG_NAME).stat().st_mtime_ns
    rerun = runner.invoke(app, ["extract", str(manifest), "--out", str(out), "--workers", "1", "--seg"])
    assert rerun.exit_code == 0 and "0 computed, 2 unchanged" in rerun.output
    assert (out / "cases" / "given" / SEG_NAME).stat().st_mtime_ns == before
