"""Masks as DICOM Segmentation objects (SEG), written with highdicom onto a DICOM CT's slices and read back onto
a CT's voxel grid.

A SEG frame is one segment on one plane; frames are placed by their plane
position (ImagePositionPatient in the per-frame functional groups), so a SEG
made by another tool, with empty frames left out or in another order, is read
as well as ours.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..storage import atomic_path, refuse_overwrite
from .formatting import _format_pair, _format_values
from .paths import _check_path

if TYPE_CHECKING:  # pydicom/highdicom are imported where a SEG is made or read
    import pydicom

#: Segmentation Storage (PS3.4 B.5, "1.2.840.10008.5.1.4.1.1.66.4").
SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"

# Where a frame may lie off the CT's grid, in voxels: DICOM decimal strings carry 16 characters, and GDCM derives
# the z spacing from the positions; a frame a thousandth of a voxel off is on its slice.
POSITION_TOLERANCE_VOXELS = 1e-3


@dataclass(frozen=True)
class Structure:
    """What a segment is, in SNOMED CT (codes as pydicom's ``codes.SCT`` gives them, from DICOM PS3.16 CID 7150
    Segmentation Property Categories, CID 7151 Segmentation Property Types and CID 4 Anatomic Regions)."""

    label: str
    property_type: str  # codes.SCT keyword: Hemorrhage = SCT 50960005, Edema = SCT 79654002
    region: str  # codes.SCT keyword: Brain = SCT 12738006, BrainVentricle = SCT 35764002
    colour: tuple[int, int, int]  # display colour (RGB), converted to CIELab by highdicom


#: The structures a segmenter may give, by the name the command uses. The category of each is "Morphologically
#: Abnormal Structure" (SCT 49755003, CID 7150).
STRUCTURES = {
    "hematoma": Structure("hematoma", "Hemorrhage", "Brain", (255, 0, 0)),
    "ivh": Structure("intraventricular blood", "Hemorrhage", "BrainVentricle", (255, 160, 0)),
    "oedema": Structure("perihematomal oedema", "Edema", "Brain", (0, 160, 255)),
}


def is_dicom_seg(path: str | Path) -> bool:
    """True when ``path`` is a DICOM file of the Segmentation Storage SOP class."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - no DICOM file: the image readers say what it is
        return False
    sop_class = header.get("SOPClassUID") or getattr(header.get("file_meta"), "MediaStorageSOPClassUID", None)
    return str(sop_class or "") == SEG_SOP_CLASS_UID


# ----------------------------------------------------------------------------------------------------------- out


def write_dicom_seg(masks: sitk.Image | Mapping[str, sitk.Image], source: str | Path | list, out_path: str | Path,
                    series_uid: str | None = None, algorithm: str = "rules", overwrite: bool = False) -> Path:
    """Write ``masks`` as a BINARY DICOM SEG referencing the CT slices of ``source`` (a series folder or file).

    ``algorithm``: what drew the masks ("rules", "deep", "both: ..."), or "manual" for a mask a user gave.

    ``source`` may also be the slice headers :func:`seg_source` gave.
    ``masks`` is the hematoma mask, or a mapping of :data:`STRUCTURES` names to
    masks (one segment each, in that order). Each mask must lie on the CT's
    slices: a series that was resampled on reading (uneven or tilted slices)
    has no slice per mask plane, and is refused.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from .. import __version__

    out_path = Path(out_path)
    refuse_overwrite(out_path, overwrite)
    masks = {"hematoma": masks} if isinstance(masks, sitk.Image) else dict(masks)
    unknown = sorted(set(masks) - set(STRUCTURES))
    if unknown:
        raise ValueError(f"unknown structures {unknown}; known: {list(STRUCTURES)}")
    first = next(iter(masks.values()))
    headers = source if isinstance(source, list) else seg_source(first, Path(source), series_uid)
    planes = _Grid.of(first).slices(np.array([[float(v) for v in h.ImagePositionPatient] for h in headers]))[0]
    stacked = np.stack([sitk.GetArrayViewFromImage(masks[name])[planes] != 0 for name in masks], axis=-1)
    family = codes.cid7162.ArtificialIntelligence if algorithm.startswith(("deep", "both: deep")) \
        else codes.cid7162.HistogramAnalysis  # the rules: HU windows of the blood, then morphology
    identification = hd.AlgorithmIdentificationSequence(name=f"hematoma {algorithm}", family=family,
                                                        version=__version__)
    # "manual": a mask the user gave (a manifest's mask column), re-encoded: no algorithm of ours drew it.
    manual = algorithm == "manual"
    algorithm_type = hd.seg.SegmentAlgorithmTypeValues.MANUAL if manual else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=STRUCTURES[name].label,
            segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
            segmented_property_type=getattr(codes.SCT, STRUCTURES[name].property_type),
            anatomic_regions=[getattr(codes.SCT, STRUCTURES[name].region)],
            algorithm_type=algorithm_type, algorithm_identification=None if manual else identification,
            display_color=hd.color.CIELabColor.from_rgb(*STRUCTURES[name].colour),
        )
        for number, name in enumerate(masks, start=1)
    ]
    for name, mask in masks.items():
        if mask.GetSize() != first.GetSize():
            raise ValueError(f"mask {name!r} is not on the hematoma mask's grid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's notes on optional attributes the source lacks
        seg = hd.seg.Segmentation(
            source_images=headers, pixel_array=stacked.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=generate_uid(), series_number=int(headers[0].get("SeriesNumber") or 0) + 1000,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="hematoma",
            manufacturer_model_name=f"hematoma {algorithm}", software_versions=__version__, device_serial_number="0",
            series_description=f"hematoma {algorithm} segmentation", content_label="HEMATOMA",
            omit_empty_frames=False,  # every CT slice has its frame: a reader can check the whole geometry
        )
    try:
        with atomic_path(out_path) as temporary:
            seg.save_as(temporary)
    except OSError as error:
        raise InputError(out_path, f"cannot be written ({error.strerror or error})") from None
    return out_path


def seg_source(image: sitk.Image, source: str | Path, series_uid: str | None = None) -> list[pydicom.Dataset]:
    """The slice headers a SEG of masks on ``image``'s grid (the CT read from ``source``) refers to; refused, in
    one line, where ``source`` is no DICOM CT or ``image``'s planes are not its slices (a resampled series)."""
    source = Path(source)
    headers = source_slices(source, series_uid)
    _mask_planes(image, headers, source)
    return headers


def source_slices(source: Path, series_uid: str | None = None) -> list[pydicom.Dataset]:
    """Headers (no pixels) of the CT slices a SEG of ``source`` refers to, sorted along the slice normal, as
    :func:`hematoma.io.read_image` chooses and sorts them."""
    import pydicom

    from .dicom_series import _choose_series, _read_header, _sort_slices

    _check_path(source)
    if source.is_dir():
        series: dict[str, list] = {}
        for file in sorted(p for p in source.iterdir() if p.is_file()):
            header = _read_header(file)
            if header is not None:
                series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((file, header))
        if not series:
            raise InputError(source, "a DICOM SEG refers to a DICOM CT series; no DICOM images in this folder")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reading the CT said it already
            uid = _choose_series(source, series, series_uid)
        files = _sort_slices(source, uid, series[uid])[0]
    else:
        if _read_header(source) is None:
            raise InputError(source, "a DICOM SEG refers to a DICOM CT series; this is no DICOM image")
        files = [source]
    headers = [pydicom.dcmread(file, stop_before_pixels=True) for file in files]
    if len(headers) == 1 and int(headers[0].get("NumberOfFrames") or 1) > 1:
        raise InputError(source, "a DICOM SEG of a multi-frame (enhanced) CT is not supported yet; "
                                 "write the mask as .nii.gz")
    if any(str(h.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID for h in headers):
        raise InputError(source, "is a DICOM SEG, not the CT it segments")
    for header in headers:  # Type 2 (present, may be empty) in a SEG, which copies them; anonymised CTs drop some
        for keyword in _PATIENT_STUDY_TYPE_2:
            if keyword not in header:
                setattr(header, keyword, "")
    return headers


# The Patient and General Study modules' Type 2 attributes (DICOM PS3.3 C.7.1.1, C.7.2.1).
_PATIENT_STUDY_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                         "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _mask_planes(mask: sitk.Image, headers: list, source: Path) -> np.ndarray:
    """The mask's slice index of each CT slice (refused where a slice is not one of the mask's planes)."""
    grid = _Grid.of(mask)
    orientation = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    rows, columns = int(headers[0].Rows), int(headers[0].Columns)
    spacing = [float(v) for v in headers[0].PixelSpacing]
    problem = grid.plane_problem(rows, columns, spacing, orientation)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    planes, off = grid.slices(positions)
    if problem is None and off is not None:
        problem = f"slice at {_format_values(positions[off])} is not one of the mask's planes"
    if problem is None and len(set(planes.tolist())) != grid.size[2]:
        problem = f"its {len(headers)} slices do not cover the mask's {grid.size[2]} planes one to one"
    if problem is not None:
        raise InputError(source, f"the mask is not on this series' slices ({problem}); a series resampled on "
                                 "reading (uneven or tilted slices) cannot hold a SEG: write the mask as .nii.gz")
    return planes


# ------------------------------------------------------------------------------------------------------------ in


def read_dicom_seg(path: str | Path, reference, segment: int | str | None = None,
                   reference_path: str | Path | None = None, tolerance: float = 1e-4) -> sitk.Image:
    """One segment of the DICOM SEG ``path`` as a UInt8 0/1 mask on ``reference``'s grid.

    ``reference`` is the CT (a SimpleITK image, or an ``ImageFileReader`` whose
    header was read); ``segment`` a segment number or label (case-insensitive),
    needed when the SEG holds several.  Rows, columns, pixel spacing and
    orientation must match the CT's (spacing relative to it within
    ``tolerance``), and every frame must lie on one of its slices.
    """
    import pydicom

    path = Path(path)
    _check_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = pydicom.dcmread(path)
    except Exception as error:  # noqa: BLE001 - any failure to parse is the file's problem
        raise InputError(path, f"cannot be read as a DICOM SEG ({error})") from None
    if str(seg.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise InputError(path, f"is not a DICOM SEG (SOP class {seg.get('SOPClassUID')})")
    number = _segment_number(path, seg, segment)
    grid = _Grid.of(reference)

    def mismatch(problem: str) -> InputError:
        image_name = "image" if reference_path is None else f"image {reference_path}"
        return InputError(path, f"does not match {image_name}: {problem}")

    frames = list(seg.get("PerFrameFunctionalGroupsSequence") or [])
    shared = (seg.get("SharedFunctionalGroupsSequence") or [None])[0]
    n_frames = int(seg.get("NumberOfFrames") or 1)
    if len(frames) != n_frames:
        raise InputError(path, f"has {n_frames} frames but {len(frames)} per-frame functional groups")
    kind = str(seg.get("SegmentationType", "BINARY")).upper()
    rows, columns = int(seg.Rows), int(seg.Columns)
    positions, numbers = np.zeros((n_frames, 3)), np.zeros(n_frames, dtype=int)
    for index, frame in enumerate(frames):
        try:
            positions[index] = [float(v) for v in _group(frame, shared, "PlanePositionSequence").ImagePositionPatient]
            orientation = np.array([float(v) for v in
                                    _group(frame, shared, "PlaneOrientationSequence").ImageOrientationPatient])
            spacing = [float(v) for v in _group(frame, shared, "PixelMeasuresSequence").PixelSpacing]
            numbers[index] = (0 if kind == "LABELMAP" else
                              int(_group(frame, shared, "SegmentIdentificationSequence").ReferencedSegmentNumber))
        except (AttributeError, TypeError, ValueError, IndexError):
            raise InputError(path, f"frame {index + 1} lacks its plane position, orientation, pixel spacing or "
                                   "segment number") from None
        problem = grid.plane_problem(rows, columns, spacing, orientation, tolerance)
        if problem is not None:
            raise mismatch(problem)
    chosen = np.flatnonzero(numbers == number) if kind != "LABELMAP" else np.arange(n_frames)
    planes, off = grid.slices(positions[chosen])
    if off is not None:
        raise mismatch(f"frame {chosen[off] + 1} at {_format_values(positions[chosen[off]])} mm lies on none of "
                       f"its {grid.size[2]} slices")
    pixels = _pixels(path, seg).reshape(n_frames, rows, columns)
    if kind == "FRACTIONAL":
        on = pixels[chosen] >= int(seg.get("MaximumFractionalValue") or 255) / 2  # the segment where it is > 50 %
    elif kind == "LABELMAP":
        on = pixels[chosen] == number
    else:
        on = pixels[chosen] != 0
    array = np.zeros(grid.size[::-1], dtype=np.uint8)
    for plane, frame in zip(planes, on):  # several frames of one segment may share a plane
        array[plane] |= frame
    mask = sitk.GetImageFromArray(array.astype(np.uint8))
    mask.SetSpacing(grid.spacing)
    mask.SetOrigin(grid.origin)
    mask.SetDirection(grid.direction)
    return mask


def _segment_number(path: Path, seg, segment: int | str | None) -> int:
    segments = {int(item.SegmentNumber): str(item.get("SegmentLabel", "")) for item in seg.get("SegmentSequence") or []}
    listed = "; ".join(f"{n} {label!r}" for n, label in sorted(segments.items()))
    if not segments:
        raise InputError(path, "DICOM SEG has no segments (empty SegmentSequence)")
    if segment is None:
        if len(segments) > 1:
            raise InputError(path, f"DICOM SEG holds {len(segments)} segments ({listed}); name the one to read")
        return next(iter(segments))
    if isinstance(segment, (int, np.integer)) or str(segment).strip().isdigit():
        if int(segment) in segments:
            return int(segment)
    else:
        found = [n for n, label in segments.items() if label.strip().lower() == str(segment).strip().lower()]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InputError(path, f"DICOM SEG has {len(found)} segments labelled {segment!r}; name one by number "
                                   f"({listed})")
    raise InputError(path, f"DICOM SEG has no segment {segment!r}; it holds {listed}")


def _group(frame, shared, sequence: str):
    """A functional group's one item: the frame's own, else the shared one."""
    for groups in (frame, shared):
        if groups is not None and len(groups.get(sequence) or []):
            return groups.get(sequence)[0]
    raise AttributeError(sequence)


def _pixels(path: Path, seg) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(seg.pixel_array)
    except Exception as error:  # noqa: BLE001 - missing, truncated or undecodable pixel data
        raise InputError(path, f"DICOM SEG pixel data cannot be read ({error})") from None


@dataclass(frozen=True)
class _Grid:
    """A CT's voxel grid: size (x, y, z), spacing, origin and direction as SimpleITK gives them."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> _Grid:  # an Image or an ImageFileReader after ReadImageInformation
        if len(image.GetSize()) != 3:
            raise ValueError("a DICOM SEG is read onto a 3D image")
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    def plane_problem(self, rows: int, columns: int, spacing, orientation, tolerance: float = 1e-4) -> str | None:
        """What differs between a DICOM plane (PixelSpacing is row, column spacing) and this grid's planes."""
        direction = np.array(self.direction).reshape(3, 3)
        if (columns, rows) != self.size[:2]:
            return "size " + " vs ".join(_format_pair((columns, rows), self.size[:2]))
        if np.any(np.abs(np.array(spacing[::-1]) - self.spacing[:2]) > tolerance * np.array(self.spacing[:2])):
            return "pixel spacing " + " vs ".join(_format_pair(tuple(spacing[::-1]), self.spacing[:2]))
        grid_orientation = np.concatenate([direction[:, 0], direction[:, 1]])
        if orientation.shape != (6,) or np.any(np.abs(orientation - grid_orientation) > max(tolerance, 1e-4)):
            return "orientation " + " vs ".join(_format_pair(tuple(orientation), tuple(grid_orientation)))
        return None

    def slices(self, positions: np.ndarray) -> tuple[np.ndarray, int | None]:
        """The slice index of each plane position, and the first position (its row) lying on no slice, or None."""
        axes = np.array(self.direction).reshape(3, 3) * np.array(self.spacing)
        index = np.linalg.solve(axes, (np.asarray(positions, dtype=float) - self.origin).T).T.reshape(-1, 3)
        planes = np.rint(index[:, 2]).astype(int)
        off = (np.abs(index[:, :2]).max(axis=1) > POSITION_TOLERANCE_VOXELS) \
            | (np.abs(index[:, 2] - planes) > POSITION_TOLERANCE_VOXELS) | (planes < 0) | (planes >= self.size[2])
        return planes, (int(np.flatnonzero(off)[0]) if off.any() else None)
