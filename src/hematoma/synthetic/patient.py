"""One synthetic patient: baseline and follow-up CT of the same head, masks, clinical data, truth.

Patient ``i`` of a cohort depends only on ``(seed, i)``: its random streams
are children of ``numpy.random.SeedSequence(seed)`` (see
:func:`~hematoma.synthetic.clinical.patient_stream`), so patients can be made
in any order, in parallel, and again after an interruption.

A drawn hematoma that does not fit the brain never aborts the cohort.  In
order, each step only when the one before failed (so every patient that
fitted at first is unchanged to the bit): the follow-up's growth shrinks
towards the least that keeps the drawn label; the placement search tests the
whole box instead of the voxels nearest the lesion's core; the placement and
shape are re-drawn from derived seeds at the same location, volume and label
(rejection sampling: real bleeds fit their skull); last, re-drawn at a smaller
volume.  Each step is written in the patient's truth (``redraws``,
``redraw_reasons``, ``placement_notes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import HematomaError, InputError
from .clinical import LOCATIONS, draw_patient_variables, patient_stream, redraw_stream
from .lesion import (
    LesionDoesNotFit,
    draw_growth,
    draw_hematoma,
    render_hematoma,
    smallest_growth_ratio,
)
from .phantom import SIZES, RenderedHead, draw_anatomy, render_head
from .scanner import Pose, draw_pose, follow_up_pose, scan, scanner_reference
from .signs import SignPlan, draw_signs, requested_plan, signs_stream

REDRAWS = 3  # placement-and-shape re-draws at the drawn volume
SHRINKS = 8  # then re-draws at SHRINK_FACTOR times the volume each, down to MIN_VOLUME_ML
SHRINK_FACTOR = 0.85
MIN_VOLUME_ML = 1.5  # the smallest volume the risk model draws (clinical.draw_patient_variables)


class GeneratorError(HematomaError):
    """The generator could not make or write a patient, not for a fault in the user's input (a bug, a dead worker):
    one line naming the patient and seed, exit 1."""

    exit_code = 1

    def __init__(self, message: str):  # one argument: survives pickling out of a worker process
        super().__init__(message)


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


def _acquire_baseline(head, pose, hematoma, volume_ml: float, size: str, seed: int, index: int, noise_sd: float,
                      notes: list[str], signs: SignPlan | None = None, sign_truth: dict | None = None):
    """The baseline scan (with the signs of ``signs``, their truth into ``sign_truth``): the fast placement
    search, then (noted) the whole-box one."""
    extra = {} if signs is None else {"signs": signs, "sign_truth": sign_truth}
    try:
        return acquire(head, pose, hematoma, volume_ml, size, patient_stream(seed, index, "noise_baseline"), noise_sd,
                       **extra)
    except LesionDoesNotFit:
        scans = acquire(head, pose, hematoma, volume_ml, size, patient_stream(seed, index, "noise_baseline"), noise_sd,
                        wide=True, **extra)
        notes.append(f"baseline: the {volume_ml:.1f} mL hematoma was placed by the whole-box search "
                     "(the fast search found too few brain voxels near its core)")
        return scans


def _acquire_followup(head, pose, grown, volume_ml: float, ratio: float, expands: bool, size: str, seed: int,
                      index: int, noise_sd: float, notes: list[str]):
    """The follow-up scan; growth that does not fit (a large posterior-fossa bleed) shrinks towards the least
    growth that keeps the drawn HE label, rather than aborting the whole cohort; then the same with the
    whole-box search."""
    least = smallest_growth_ratio(expands, volume_ml)
    for wide in (False, True):
        for step in range(4):
            tried = ratio - (ratio - least) * step / 3
            try:
                scans = acquire(head, pose, grown, volume_ml * tried, size,
                                patient_stream(seed, index, "noise_followup"), noise_sd, wide=wide)
            except LesionDoesNotFit:
                continue
            if wide:
                notes.append(f"follow-up: the {volume_ml * tried:.1f} mL hematoma was placed by the whole-box search "
                             "(the fast search found too few brain voxels near its core)")
            if step:
                notes.append(f"follow-up: growth x{ratio:.2f} did not fit; reduced to x{tried:.2f} "
                             f"(x{least:.2f} is the least that keeps the drawn HE label)")
            return scans
    raise LesionDoesNotFit(f"the follow-up hematoma does not fit in the brain, even at the least growth "
                           f"(x{least:.2f}, {volume_ml * least:.1f} mL)")


def _lesion_tries(seed: int, index: int, anatomy, traits: dict, expands: bool):
    """The hematomas to try, in order: (attempt, baseline hematoma, follow-up hematoma, growth ratio, volume)."""
    volume = traits["nominal_volume_ml"]
    for attempt in range(1 + REDRAWS + SHRINKS):
        if attempt > REDRAWS:
            volume = max(volume * SHRINK_FACTOR, MIN_VOLUME_ML)
        rng = patient_stream(seed, index, "lesion") if attempt == 0 else redraw_stream(seed, index, "lesion", attempt)
        hematoma = draw_hematoma(rng, anatomy, traits["location"], volume, traits["irregularity"],
                                 traits["heterogeneity"])
        grown, ratio = draw_growth(rng, hematoma, expands=expands, volume_ml=volume)
        yield attempt, hematoma, grown, ratio, volume


def place_lesions(head: RenderedHead, pose: Pose, later_pose: Pose, traits: dict, expands: bool, size: str,
                  seed: int, index: int, noise_sd: float = 5.0,
                  signs: SignPlan | None = None) -> tuple[tuple[sitk.Image, ...], dict]:
    """Baseline and follow-up scans with the patient's hematoma, re-drawn until it fits (module docstring).

    Returns ((baseline CT, baseline mask, follow-up CT, follow-up mask), log) where ``log`` holds
    ``redraws`` (how many times the lesion was re-drawn), ``redraw_reasons`` (why, and what changed,
    one line each) and ``placement_notes`` (smaller steps taken for the lesion that was kept).
    ``signs``: the NCCT signs the baseline shows (None: a homogeneous clot); when given, ``log``
    also holds ``signs``, the truth of what was rendered.  The follow-up clot is homogeneous.
    Raises :class:`GeneratorError` if nothing fits.
    """
    reasons: list[str] = []
    error = None
    for attempt, hematoma, grown, ratio, volume in _lesion_tries(seed, index, head.anatomy, traits, expands):
        if error is not None:
            change = ("re-drew its placement and shape (same location, volume and HE label; derived seed)"
                      if attempt <= REDRAWS else
                      f"re-drew it at {volume:.1f} mL (same location and HE label; true_p keeps the drawn "
                      f"{traits['nominal_volume_ml']:.1f} mL)")
            reasons.append(f"{error}; {change}")
        notes: list[str] = []
        sign_truth: dict = {}
        try:
            scans = _acquire_baseline(head, pose, hematoma, volume, size, seed, index, noise_sd, notes, signs,
                                      sign_truth)
            scans += _acquire_followup(head, later_pose, grown, volume, ratio, expands, size, seed, index, noise_sd,
                                       notes)
        except LesionDoesNotFit as failure:
            error = failure
            continue
        log = {"redraws": attempt, "redraw_reasons": reasons, "placement_notes": notes}
        return scans, log if signs is None else {**log, "signs": sign_truth}
    raise GeneratorError(f"{patient_id(index)} of seed {seed} ({size}): the {traits['location']} hematoma did not fit "
                         f"in the brain in {1 + REDRAWS + SHRINKS} tries (last: {error}); please report this seed")


def synthesize_patient(index: int, seed: int = 0, size: str = "full") -> SyntheticPatient:
    """Make patient ``index`` (0-based) of the cohort with this ``seed``."""
    check_size(size)
    draw = draw_patient_variables(patient_stream(seed, index, "risk"))
    traits = draw["traits"]
    anatomy = draw_anatomy(patient_stream(seed, index, "anatomy"), age=draw["clinical"]["age"])
    head = render_head(anatomy, size)
    pose_rng = patient_stream(seed, index, "pose")
    pose = draw_pose(pose_rng, anatomy)
    later_pose = follow_up_pose(pose_rng, pose)
    noise_sd = float(pose_rng.uniform(4.0, 6.0))  # scanner dose: same protocol for both scans
    signs = draw_signs(signs_stream(seed, index), traits, draw["clinical"])
    (baseline_ct, baseline_mask, followup_ct, followup_mask), log = place_lesions(
        head, pose, later_pose, traits, bool(draw["he"]), size, seed, index, noise_sd, signs=signs)
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
        **log,
    }
    return SyntheticPatient(pid, baseline_ct, followup_ct, baseline_mask, followup_mask, dict(draw["clinical"]), truth)


def acquire(head: RenderedHead, pose: Pose, hematoma, volume_ml: float, size: str,
            noise_rng: np.random.Generator, noise_sd: float, wide: bool = False, signs: SignPlan | None = None,
            sign_truth: dict | None = None) -> tuple[sitk.Image, sitk.Image]:
    """Scan the head in ``pose`` with the hematoma (None: none); return (CT int16 HU, mask UInt8).

    ``wide``: the whole-box placement search (:func:`~hematoma.synthetic.lesion.fit_hematoma`).
    ``signs``: the NCCT signs to paint (None: a homogeneous clot); their truth goes into ``sign_truth``.
    """
    reference = scanner_reference(head.anatomy, pose, size)
    image = scan(head, reference, pose)
    if hematoma is not None and volume_ml > 0:
        mask = render_hematoma(image, reference, pose, head, hematoma, volume_ml, wide, signs, sign_truth)
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
                 irregularity: float = 0.3, heterogeneity: float = 0.3, signs=None,
                 sign_truth: dict | None = None) -> tuple[sitk.Image, sitk.Image]:
    """A head CT (int16 HU) and its hematoma mask (UInt8), for tests and examples.

    ``hematoma_ml=0`` gives a head without hemorrhage (an all-zero mask).
    The mask holds ``hematoma_ml`` to one voxel.  ``signs``: None draws the NCCT signs a cohort
    patient with these traits could have (:func:`make_signs_plan`); an iterable of sign names
    (:data:`~hematoma.synthetic.signs.SIGN_NAMES`, empty: a homogeneous clot) renders those;
    a :class:`~hematoma.synthetic.signs.SignPlan` renders itself.  The truth of what was rendered
    goes into ``sign_truth`` when given.
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
    plan = make_signs_plan(signs, seed, hematoma_ml, location, irregularity, heterogeneity)
    for wide in (False, True):
        try:
            return acquire(head, pose, hematoma, hematoma_ml, size, patient_stream(seed, 0, "noise_baseline"), 5.0,
                           wide=wide, signs=plan, sign_truth=sign_truth)
        except LesionDoesNotFit:
            continue
    raise InputError(None, f"a {hematoma_ml:g} mL {location} hematoma does not fit in the brain of head {seed}; "
                           "choose a smaller hematoma_ml")


def make_signs_plan(signs, seed: int, hematoma_ml: float, location: str, irregularity: float,
                    heterogeneity: float) -> SignPlan:
    """The :class:`SignPlan` of :func:`make_head_ct`: drawn (``signs=None``) as for a cohort patient with these
    traits (no anticoagulation, CT at 3 h), named signs, or the plan given."""
    if isinstance(signs, SignPlan):
        return signs
    if signs is None:
        traits = {"nominal_volume_ml": max(hematoma_ml, 0.1), "location": location, "irregularity": irregularity,
                  "heterogeneity": heterogeneity}
        clinical = {"anticoagulation": 0, "inr": 1.0, "onset_to_ct_hours": 3.0}
        return draw_signs(signs_stream(seed, 0), traits, clinical)
    if isinstance(signs, str):
        signs = (signs,)
    return requested_plan(signs, seed)
