"""One synthetic patient: baseline and follow-up CT of the same head, masks, clinical data, truth.

Patient ``i`` of a cohort depends only on ``(seed, i)``: its random streams
are children of ``numpy.random.SeedSequence(seed)`` (see
:func:`~hematoma.synthetic.clinical.patient_stream`), so patients can be made
in any order, in parallel, and again after an interruption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .clinical import LOCATIONS, draw_patient_variables, patient_stream
from .lesion import LesionDoesNotFit, draw_growth, draw_hematoma, render_hematoma, smallest_growth_ratio
from .phantom import SIZES, RenderedHead, draw_anatomy, render_head
from .scanner import Pose, draw_pose, follow_up_pose, scan, scanner_reference


@dataclass
class SyntheticPatient:
    """A synthetic patient: images as SimpleITK images (int16 HU, UInt8 masks) and two dicts."""

    patient_id: str
    baseline_ct: sitk.Image
    followup_ct: sitk.Image
    baseline_mask: sitk.Image
    followup_mask: sitk.Image
    clinical: dict
    truth: dict


def patient_id(index: int) -> str:
    return f"P{index + 1:04d}"


def check_size(size: str) -> str:
    if size not in SIZES:
        raise InputError(None, f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    return size


def _acquire_followup(head, pose, grown, volume_ml: float, ratio: float, expands: bool, size: str, seed: int,
                      index: int, noise_sd: float):
    """The follow-up scan; growth that does not fit (a large posterior-fossa bleed) shrinks towards the least
    growth that keeps the drawn HE label, rather than aborting the whole cohort."""
    least = smallest_growth_ratio(expands, volume_ml)
    for step in range(4):
        tried = ratio - (ratio - least) * step / 3
        try:
            return acquire(head, pose, grown, volume_ml * tried, size, patient_stream(seed, index, "noise_followup"),
                           noise_sd)
        except LesionDoesNotFit:
            if step == 3:
                raise


def synthesize_patient(index: int, seed: int = 0, size: str = "full") -> SyntheticPatient:
    """Make patient ``index`` (0-based) of the cohort with this ``seed``."""
    check_size(size)
    draw = draw_patient_variables(patient_stream(seed, index, "risk"))
    traits = draw["traits"]
    anatomy = draw_anatomy(patient_stream(seed, index, "anatomy"), age=draw["clinical"]["age"])
    head = render_head(anatomy, size)
    lesion_rng = patient_stream(seed, index, "lesion")
    hematoma = draw_hematoma(lesion_rng, anatomy, traits["location"], traits["nominal_volume_ml"],
                             traits["irregularity"], traits["heterogeneity"])
    grown, ratio = draw_growth(lesion_rng, hematoma, expands=bool(draw["he"]), volume_ml=traits["nominal_volume_ml"])
    pose_rng = patient_stream(seed, index, "pose")
    pose = draw_pose(pose_rng, anatomy)
    later_pose = follow_up_pose(pose_rng, pose)
    noise_sd = float(pose_rng.uniform(4.0, 6.0))  # scanner dose: same protocol for both scans
    baseline_ct, baseline_mask = acquire(head, pose, hematoma, traits["nominal_volume_ml"], size,
                                         patient_stream(seed, index, "noise_baseline"), noise_sd)
    followup_ct, followup_mask = _acquire_followup(head, later_pose, grown, traits["nominal_volume_ml"], ratio,
                                                   bool(draw["he"]), size, seed, index, noise_sd)
    pid = patient_id(index)
    truth = {
        "patient_id": pid,
        "true_p": draw["true_p"],
        "observable_p": draw["observable_p"],
        "he": draw["he"],
        "baseline_volume_ml": mask_volume_ml(baseline_mask),
        "followup_volume_ml": mask_volume_ml(followup_mask),
        "location": traits["location"],
        "irregularity": traits["irregularity"],
        "heterogeneity": traits["heterogeneity"],
    }
    return SyntheticPatient(pid, baseline_ct, followup_ct, baseline_mask, followup_mask, dict(draw["clinical"]), truth)


def acquire(head: RenderedHead, pose: Pose, hematoma, volume_ml: float, size: str,
            noise_rng: np.random.Generator, noise_sd: float) -> tuple[sitk.Image, sitk.Image]:
    """Scan the head in ``pose`` with the hematoma (None: none); return (CT int16 HU, mask UInt8)."""
    reference = scanner_reference(head.anatomy, pose, size)
    image = scan(head, reference, pose)
    if hematoma is not None and volume_ml > 0:
        mask = render_hematoma(image, reference, pose, head, hematoma, volume_ml)
    else:
        mask = np.zeros(image.shape, dtype=np.uint8)
    noise = noise_rng.standard_normal(image.shape, dtype=np.float32)
    noise *= noise_sd
    image += noise
    np.rint(image, out=image)
    np.clip(image, -1024.0, 3071.0, out=image)
    ct = sitk.GetImageFromArray(image.astype(np.int16))
    ct.CopyInformation(reference)
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(reference)
    return ct, mask_image


def mask_volume_ml(mask: sitk.Image) -> float:
    """Voxel count x voxel volume, in mL."""
    count = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return count * float(np.prod(mask.GetSpacing())) / 1000.0


def make_head_ct(size: str = "small", seed: int = 0, hematoma_ml: float = 20.0, location: str = "basal_ganglia",
                 irregularity: float = 0.3, heterogeneity: float = 0.3) -> tuple[sitk.Image, sitk.Image]:
    """A head CT (int16 HU) and its hematoma mask (UInt8), for tests and examples.

    ``hematoma_ml=0`` gives a head without hemorrhage (an all-zero mask).
    The mask holds ``hematoma_ml`` to one voxel.
    """
    check_size(size)
    if location not in LOCATIONS:
        raise InputError(None, f"unknown location {location!r}; choose one of {', '.join(LOCATIONS)}")
    if hematoma_ml < 0:
        raise InputError(None, f"hematoma_ml must be >= 0, got {hematoma_ml}")
    anatomy = draw_anatomy(patient_stream(seed, 0, "anatomy"))
    head = render_head(anatomy, size)
    pose = draw_pose(patient_stream(seed, 0, "pose"), anatomy)
    hematoma = None
    if hematoma_ml > 0:
        hematoma = draw_hematoma(patient_stream(seed, 0, "lesion"), anatomy, location, hematoma_ml, irregularity, heterogeneity)
    return acquire(head, pose, hematoma, hematoma_ml, size, patient_stream(seed, 0, "noise_baseline"), 5.0)
