"""DICOM SR of the volumes (`hematoma segment --out x.dcm --sr report.dcm`, write_volume_report): a TID 1500
measurement report referencing the SEG, read back with highdicom."""

from __future__ import annotations

import math

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from test_io import write_ct_series
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.io import read_mask, write_volume_report
from hematoma.volume import mask_volume_ml

runner = CliRunner()


def _groups(sr) -> list:
    """The measurement groups of a TID 1500 report: (template id, group content item)."""
    measurements = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    assert len(measurements) == 1  # DCM 126010 Imaging Measurements
    return [(str(group.ContentTemplateSequence[0].TemplateIdentifier), group)
            for group in measurements[0].ContentSequence]


def _items(group, code_value: str) -> list:
    return [item for item in group.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == code_value]


def _volume(group) -> tuple[float, str]:
    (volume,) = _items(group, codes.SCT.Volume.value)
    value = volume.MeasuredValueSequence[0]
    return float(value.NumericValue), str(value.MeasurementUnitsCodeSequence[0].CodeValue)


def test_report_holds_the_volumes_referencing_the_seg_segment(series, seg_file, tmp_path):
    folder, _, truth = series
    volume = mask_volume_ml(truth)
    out = write_volume_report(seg_file, folder, tmp_path / "report.dcm",
                              {"hematoma": volume, "ivh": 1.25, "oedema": math.nan},
                              prediction={"probability": 0.73, "class": "HE"})
    sr = hd.sr.srread(out)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert str(sr.ContentTemplateSequence[0].TemplateIdentifier) == "1500"
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    assert sr.StudyInstanceUID == seg.StudyInstanceUID and sr.PatientID == seg.PatientID
    groups = _groups(sr)
    assert [template for template, _ in groups] == ["1411", "1501"]  # oedema (NaN) left out; IVH has no segment
    hematoma, ivh = groups[0][1], groups[1][1]
    assert _volume(hematoma)[0] == pytest.approx(volume, abs=0.01) and _volume(hematoma)[1] == "ml"
    assert _volume(ivh) == (pytest.approx(1.25), "ml")
    assert not _items(ivh, "121191")
    (segment,) = _items(hematoma, "121191")  # DCM Referenced Segment
    assert segment.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert segment.ReferencedSOPSequence[0].ReferencedSegmentNumber == 1
    (probability,) = _items(hematoma, "HE-PROBABILITY")
    assert float(probability.MeasuredValueSequence[0].NumericValue) == pytest.approx(0.73)
    (predicted,) = _items(hematoma, "HE-PREDICTED")
    assert predicted.ConceptCodeSequence[0].CodeValue == codes.SCT.Yes.value
    # The SEG is recorded as evidence, so a viewer finds what the report measures.
    evidence = {str(ref.ReferencedSOPInstanceUID) for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series_ in study.ReferencedSeriesSequence for ref in series_.ReferencedSOPSequence}
    assert str(seg.SOPInstanceUID) in evidence


def test_highdicom_finds_the_volume_group_by_its_segment(series, seg_file, tmp_path):
    folder, _, truth = series
    out = write_volume_report(seg_file, folder, tmp_path / "report.dcm", {"hematoma": mask_volume_ml(truth)})
    sr = hd.sr.srread(out)
    seg_uid = pydicom.dcmread(seg_file, stop_before_pixels=True).SOPInstanceUID
    groups = sr.content.get_volumetric_roi_measurement_groups(referenced_sop_instance_uid=seg_uid)
    assert len(groups) == 1
    (measurement,) = groups[0].get_measurements(name=codes.SCT.Volume)
    assert measurement.value == pytest.approx(mask_volume_ml(truth), abs=0.01)
    assert measurement.unit.value == "ml"


def test_bad_input_is_refused_in_one_line(series, seg_file, tmp_path):
    folder, _, _ = series
    out = tmp_path / "report.dcm"
    for volumes, prediction, words in [
        ({"ivh": 1.0}, None, "hematoma volume"),
        ({"hematoma": -1.0}, None, "finite mL"),
        ({"hematoma": 1.0, "tumour": 2.0}, None, "unknown volumes"),
        ({"hematoma": 1.0}, {"probability": 1.5}, "[0, 1]"),
        ({"hematoma": 1.0}, {"class": "maybe"}, "HE / no HE"),
    ]:
        with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
            write_volume_report(seg_file, folder, out, volumes, prediction)
    with pytest.raises(InputError, match="SOP class"):  # a CT slice, not a SEG
        write_volume_report(next(folder.iterdir()), folder, out, {"hematoma": 1.0})
    other = tmp_path / "other"
    write_ct_series(other, np.zeros((3, 8, 8)), [(0, 0, k) for k in range(3)])
    with pytest.raises(InputError, match="does not segment this CT"):
        write_volume_report(seg_file, other, out, {"hematoma": 1.0})
    assert not out.exists()


def test_writing_refuses_to_overwrite_unless_asked(series, seg_file, tmp_path):
    folder, _, _ = series
    out = tmp_path / "report.dcm"
    out.write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists"):
        write_volume_report(seg_file, folder, out, {"hematoma": 1.0})
    assert out.read_bytes() == b"keep"
    write_volume_report(seg_file, folder, out, {"hematoma": 1.0}, overwrite=True)
    assert hd.sr.srread(out).SOPInstanceUID
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.dcm"]  # no temporary file left


def test_cli_segment_writes_seg_and_sr_of_its_volume(series, tmp_path):
    folder, ct, _ = series
    seg, report = tmp_path / "mask.dcm", tmp_path / "report.dcm"
    result = runner.invoke(app, ["segment", str(folder), "--out", str(seg), "--sr", str(report)])
    assert result.exit_code == 0, result.output
    mask = read_mask(seg, reference=ct)
    sr = hd.sr.srread(report)
    seg_uid = pydicom.dcmread(seg, stop_before_pixels=True).SOPInstanceUID
    (group,) = sr.content.get_volumetric_roi_measurement_groups(referenced_sop_instance_uid=seg_uid)
    (measurement,) = group.get_measurements(name=codes.SCT.Volume)
    assert measurement.value == pytest.approx(mask_volume_ml(mask), abs=0.01) and mask_volume_ml(mask) > 1
    assert [template for template, _ in _groups(sr)] == ["1411"]  # the rules give no IVH or oedema volume
    # Asked again without --overwrite: refused before any work, both files kept.
    before = report.read_bytes()
    result = runner.invoke(app, ["segment", str(folder), "--out", str(tmp_path / "mask2.dcm"), "--sr", str(report)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert report.read_bytes() == before and not (tmp_path / "mask2.dcm").exists()


def test_cli_refuses_sr_without_a_seg_or_not_named_dcm(series, tmp_path):
    folder, _, _ = series
    nifti, seg = tmp_path / "mask.nii.gz", tmp_path / "mask.dcm"
    result = runner.invoke(app, ["segment", str(folder), "--out", str(nifti), "--sr", str(tmp_path / "r.dcm")])
    assert result.exit_code == 2 and "references the DICOM SEG" in result.output
    assert "Traceback" not in result.output and not nifti.exists()
    result = runner.invoke(app, ["segment", str(folder), "--out", str(seg), "--sr", str(tmp_path / "r.txt")])
    assert result.exit_code == 2 and "name it .dcm" in result.output and not seg.exists()
    result = runner.invoke(app, ["segment", str(folder), "--out", str(seg), "--sr", str(seg)])
    assert result.exit_code == 2 and "same file" in result.output


def test_report_holds_the_signs_present_absent_and_the_scores(series, seg_file, tmp_path):
    folder, _, truth = series
    signs = {"sign_blend": 1.0, "sign_hypodensity": 0.0, "sign_island": math.nan, "sign_barras_shape": 4.0,
             "sign_barras_density": 2.0, "bat_score": 3.0}
    out = write_volume_report(seg_file, folder, tmp_path / "signs.dcm", {"hematoma": mask_volume_ml(truth)},
                              signs=signs)
    (_, hematoma), = _groups(hd.sr.srread(out))
    (blend,) = _items(hematoma, "SIGN-BLEND")
    (hypodensity,) = _items(hematoma, "SIGN-HYPODENSITY")
    assert blend.ConceptCodeSequence[0].CodeValue == codes.SCT.Present.value
    assert hypodensity.ConceptCodeSequence[0].CodeValue == codes.SCT.Absent.value
    assert not _items(hematoma, "SIGN-ISLAND")  # NaN: not measured, left out
    scores = {code: float(_items(hematoma, code)[0].MeasuredValueSequence[0].NumericValue)
              for code in ("BARRAS-SHAPE", "BARRAS-DENSITY", "BAT-SCORE")}
    assert scores == {"BARRAS-SHAPE": 4.0, "BARRAS-DENSITY": 2.0, "BAT-SCORE": 3.0}
