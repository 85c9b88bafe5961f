"""The volumes of a DICOM SEG, and the HE prediction, as a DICOM Structured Report (TID 1500 Measurement Report,
written with highdicom as a Comprehensive 3D SR).

Each volume whose structure has a segment in the SEG is a TID 1411 Volumetric ROI group referencing that segment;
a volume without one (IVH and oedema from BLAST-CT, when the SEG holds only the hematoma) is a TID 1501 group
with its finding type and site, referencing no segment. The HE probability and class go in the hematoma's group.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError
from ..storage import atomic_path, refuse_overwrite
from .dicom_seg import SEG_SOP_CLASS_UID, STRUCTURES, source_slices
from .paths import _check_path

#: Comprehensive 3D SR Storage (PS3.4 B.5, "1.2.840.10008.5.1.4.1.1.88.34").
COMPREHENSIVE_3D_SR_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.88.34"

# No standard code names the probability or the predicted class of hematoma expansion; DICOM PS3.16 section 8
# reserves coding scheme designators beginning "99" for private codes.
PRIVATE_SCHEME = "99HEMATOMA"
HE_PROBABILITY = ("HE-PROBABILITY", "Probability of hematoma expansion")
HE_CLASS = ("HE-PREDICTED", "Hematoma expansion predicted")
# The NCCT signs (hematoma.features.signs) have no standard codes either: private ones, named as Morotti et al.
# (Ann Neurol 2019) name them; each a qualitative evaluation Present / Absent of the hematoma.
SIGN_CODES = {
    "hypodensity": ("SIGN-HYPODENSITY", "Intrahematoma hypodensity"),
    "black_hole": ("SIGN-BLACK-HOLE", "Black hole sign"),
    "blend": ("SIGN-BLEND", "Blend sign"),
    "swirl": ("SIGN-SWIRL", "Swirl sign"),
    "fluid_level": ("SIGN-FLUID-LEVEL", "Fluid level"),
    "island": ("SIGN-ISLAND", "Island sign"),
    "satellite": ("SIGN-SATELLITE", "Satellite sign"),
}
SCORE_CODES = {  # graded or scored: numbers without unit
    "barras_shape": ("BARRAS-SHAPE", "Barras shape category"),
    "barras_density": ("BARRAS-DENSITY", "Barras density category"),
    "bat_score": ("BAT-SCORE", "BAT score"),
}


def write_volume_report(seg, source, out_path: str | Path, volumes_ml: Mapping[str, float],
                        prediction: Mapping | None = None, overwrite: bool = False,
                        signs: Mapping[str, float] | None = None) -> Path:
    """Write a TID 1500 measurement report of ``volumes_ml`` (structure name -> mL) referencing ``seg``.

    ``seg`` is the SEG's path or dataset; ``source`` the CT it segments (a series
    folder or file, or its slice headers). ``volumes_ml`` needs "hematoma";
    "ivh" and "oedema" are optional (NaN: left out). ``prediction`` may give
    "probability" (0 to 1) and "class" (1/True/"HE" or 0/False/"no HE").
    ``signs``: the NCCT signs (``sign_<name>`` flags of hematoma.features.signs, ``sign_barras_shape``,
    ``sign_barras_density``, and ``bat_score``), written in the hematoma's group; NaN ones are left out.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from .. import __version__

    out_path = Path(out_path)
    refuse_overwrite(out_path, overwrite)
    seg_path, seg = _read_seg(seg)
    volumes = _checked_volumes(out_path, volumes_ml)
    probability, predicted = _checked_prediction(out_path, prediction)
    headers = source if isinstance(source, list) else source_slices(Path(source))
    _check_same_study(seg_path, seg, headers)
    numbers = {str(item.get("SegmentLabel", "")).strip().lower(): int(item.SegmentNumber)
               for item in seg.get("SegmentSequence") or []}

    algorithm = hd.sr.AlgorithmIdentification(name="hematoma", version=__version__)
    ml = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
    groups = []
    for name, value in volumes.items():
        structure = STRUCTURES[name]
        measurements = [hd.sr.Measurement(name=codes.SCT.Volume, value=value, unit=ml, algorithm_id=algorithm)]
        evaluations = []
        if name == "hematoma" and probability is not None:
            measurements.append(hd.sr.Measurement(name=hd.sr.CodedConcept(HE_PROBABILITY[0], PRIVATE_SCHEME,
                                                                          HE_PROBABILITY[1]),
                                                  value=probability, unit=codes.UCUM.NoUnits, algorithm_id=algorithm))
        if name == "hematoma" and signs:
            sign_measurements, sign_evaluations = _sign_items(signs, algorithm)
            measurements += sign_measurements
            evaluations += sign_evaluations
        if name == "hematoma" and predicted is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(
                name=hd.sr.CodedConcept(HE_CLASS[0], PRIVATE_SCHEME, HE_CLASS[1]),
                value=codes.SCT.Yes if predicted else codes.SCT.No))
        common = {
            "tracking_identifier": hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=structure.label),
            "finding_type": getattr(codes.SCT, structure.property_type),
            "finding_sites": [hd.sr.FindingSite(getattr(codes.SCT, structure.region))],
            "measurements": measurements, "qualitative_evaluations": evaluations or None,
        }
        number = numbers.get(structure.label.lower())
        if number is not None:
            # The whole segment, on the CT series (highdicom's from_segmentation lists frames, and misses a
            # segment number kept in the shared functional groups, as highdicom's own one-segment SEGs keep it).
            referenced = hd.sr.ReferencedSegment(
                sop_class_uid=SEG_SOP_CLASS_UID, sop_instance_uid=str(seg.SOPInstanceUID), segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(str(headers[0].SeriesInstanceUID)))
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=referenced, **common))
        elif name == "hematoma":
            raise InputError(seg_path, f"DICOM SEG has no segment labelled {structure.label!r} for the hematoma "
                                       "volume")
        else:  # the structure was measured but has no segment to reference
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))

    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="hematoma", manufacturer_name="hematoma", model_name=f"hematoma {__version__}")))
    report = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=codes.LN.HeadCT,
                                     imaging_measurements=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's notes on optional attributes the evidence lacks
        sr = hd.sr.Comprehensive3DSR(
            evidence=[seg, *headers], content=report, series_instance_uid=generate_uid(),
            series_number=int(seg.get("SeriesNumber") or 0) + 1, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="hematoma", is_complete=True, series_description="hematoma volume report",
        )
    try:
        with atomic_path(out_path) as temporary:
            pydicom.dcmwrite(temporary, sr, enforce_file_format=True)
    except OSError as error:
        raise InputError(out_path, f"cannot be written ({error.strerror or error})") from None
    return out_path


def _sign_items(signs: Mapping[str, float], algorithm) -> tuple[list, list]:
    """Present / Absent for each sign flag, numbers for the grades and the BAT score (NaN: not measured, left out)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    measurements, evaluations = [], []
    for name, (code, meaning) in SIGN_CODES.items():
        value = signs.get(f"sign_{name}")
        if value is not None and value == value:
            evaluations.append(hd.sr.QualitativeEvaluation(
                name=hd.sr.CodedConcept(code, PRIVATE_SCHEME, meaning),
                value=codes.SCT.Present if float(value) >= 0.5 else codes.SCT.Absent))
    for name, (code, meaning) in SCORE_CODES.items():
        value = signs.get(name if name == "bat_score" else f"sign_{name}")
        if value is not None and value == value:
            measurements.append(hd.sr.Measurement(name=hd.sr.CodedConcept(code, PRIVATE_SCHEME, meaning),
                                                  value=float(value), unit=codes.UCUM.NoUnits, algorithm_id=algorithm))
    return measurements, evaluations


def _read_seg(seg) -> tuple[Path | None, object]:
    import pydicom

    if isinstance(seg, pydicom.Dataset):
        path = None
    else:
        path = Path(seg)
        _check_path(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seg = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as error:  # noqa: BLE001 - any failure to parse is the file's problem
            raise InputError(path, f"cannot be read as a DICOM SEG ({error})") from None
    if str(seg.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise InputError(path, f"a volume report references a DICOM SEG; this is SOP class {seg.get('SOPClassUID')}")
    return path, seg


def _checked_volumes(out_path: Path, volumes_ml: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(volumes_ml) - set(STRUCTURES))
    if unknown:
        raise InputError(out_path, f"unknown volumes {unknown} for the report; known: {list(STRUCTURES)}")
    volumes = {}
    for name in STRUCTURES:  # the SEG's order: hematoma, ivh, oedema
        value = volumes_ml.get(name, math.nan)
        value = math.nan if value is None else float(value)
        if math.isnan(value) and name != "hematoma":
            continue
        if not math.isfinite(value) or value < 0:
            raise InputError(out_path, f"the {name} volume for the report must be a finite mL >= 0, not {value}")
        volumes[name] = value
    return volumes


def _checked_prediction(out_path: Path, prediction: Mapping | None) -> tuple[float | None, bool | None]:
    if not prediction:
        return None, None
    probability = prediction.get("probability")
    if probability is not None:
        probability = float(probability)
        if not 0 <= probability <= 1:  # also refuses NaN
            raise InputError(out_path, f"the HE probability for the report must lie in [0, 1], not {probability}")
    predicted = prediction.get("class")
    if predicted is not None:
        named = {"he": True, "no he": False, "1": True, "0": False, "true": True, "false": False}
        key = str(int(predicted) if isinstance(predicted, (bool, int, float)) else predicted).strip().lower()
        if key not in named:
            raise InputError(out_path, f"the HE class for the report must be HE / no HE (1 / 0), not {predicted!r}")
        predicted = named[key]
    return probability, predicted


def _check_same_study(seg_path: Path | None, seg, headers: list) -> None:
    """The SEG must segment these CT slices: same study, and its referenced series among theirs."""
    if not headers:
        raise InputError(seg_path, "a volume report needs the CT slices the SEG segments; none given")
    studies = {str(h.get("StudyInstanceUID", "")) for h in headers}
    series = {str(h.get("SeriesInstanceUID", "")) for h in headers}
    referenced = {str(item.get("SeriesInstanceUID", "")) for item in seg.get("ReferencedSeriesSequence") or []}
    if str(seg.get("StudyInstanceUID", "")) not in studies or (referenced and not referenced & series):
        raise InputError(seg_path, "DICOM SEG does not segment this CT (another study or series)")
