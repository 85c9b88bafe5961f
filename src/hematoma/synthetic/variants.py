"""Heads that make brain extraction hard on real CT, rendered with their truth.

A :class:`Variant` alters the synthetic head of :mod:`.phantom` the way real
scans differ from an intact, well-placed skull:

* ``skull_gap_mm``: a craniotomy, burr hole or fracture; the bone of a slab
  of the vault, ``skull_gap_mm`` wide (in every axial slice it crosses) and
  ``gap_height_mm`` high, is replaced by soft tissue (scalp / temporalis,
  +40 HU) as after a craniectomy;
* ``thin_bone_hu``: the temporal squama on both sides no denser than this:
  thin bone that partial volume averages with the soft tissue around it
  (e.g. 150 HU, inside the 100-300 HU band where CT-BET-style tools put the
  skull threshold, below the usual 200 HU: a chosen value that renders the
  failure, not a measured squama density);
* ``tilt_deg``: the head pitched (chin down > 0) by this much more than drawn,
  the scan range lengthened so the tilted brain stays in it;
* ``head_holder``: a carbon-fibre head holder (a trough around the occiput,
  on a foam pad) and the table top under it;
* ``below_base_mm``: the scan starts this much lower, so its lowest slices
  lie below the skull base and show no brain;
* ``fov_padding_hu``: voxels outside the circular field of view set to this
  value (RSNA-style DICOM pads with -3024 HU).

Skull-base and vertex slices, single 2D images, are picked out of a scan by
:func:`skull_base_slices`, :func:`vertex_slices` and :func:`axial_slice`.

Gap and thin bone are painted into the noise-free head in its own frame, so
baseline and follow-up of a patient show the same defect, and the
hematoma's placement (which depends on the brain's depth map, not on the
bone) is unchanged: its mask is the intact head's.  The holder and the
padding are scanner parts, added to the finished scan with noise of the
scan's level.  The truth of each scan: the hematoma mask, and the brain
mask, the intracranial space (inside the inner table of the skull, CSF
included, as skull stripping defines it) from the head's depth map.

HU values: scalp and muscle +40 (the phantom's scalp; soft tissue 20-60 HU); the carbon-fibre
holder 300 HU (makers' specification for CT headrests: "CT value <= 320",
e.g. https://www.cnfuturecomposites.com/News/why-is-carbon-fiber-ct-headrest-more-and-more-popular);
the polyurethane foam pad -850 HU (foams in use as CT references lie below
-700 HU: Levine et al., Med Phys 2009, "A low-cost density reference phantom
for computed tomography"); the table top, carbon-fibre skins over a foam
core, the same two values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from .clinical import LOCATIONS, draw_patient_variables, patient_stream
from .lesion import LesionDoesNotFit, draw_hematoma
from .patient import (
    SyntheticPatient,
    acquire,
    check_size,
    make_signs_plan,
    mask_volume_ml,
    patient_id,
    place_lesions,
)
from .phantom import HU_AIR, HU_SCALP, RenderedHead, draw_anatomy, render_head
from .scanner import Pose, draw_pose, follow_up_pose, scanner_reference
from .signs import draw_signs, signs_stream

HU_HOLDER = 300.0  # carbon-fibre composite (module docstring)
HU_FOAM = -850.0  # polyurethane foam pad and table core
HOLDER_MM = 4.0  # shell of the head holder
PAD_MM = 12.0  # foam between the back of the head and the holder
TABLE_SKIN_MM, TABLE_CORE_MM = 2.0, 20.0
#: Where the squama is thinned: head frame, mm, scaled with the head (z from the middle fossa floor up).
SQUAMA_Y_MM = (-40.0, 25.0)
SQUAMA_Z_MM = (-40.0, 30.0)


@dataclass(frozen=True)
class Variant:
    """How a synthetic head differs from the intact default (all defaults: the intact head)."""

    skull_gap_mm: float = 0.0
    gap_azimuth_deg: float = 90.0  # 0 anterior, 90 the patient's left, 180 posterior, 270 right
    gap_height_mm: float = 40.0  # extent of the gap along z
    gap_centre_z_mm: float = 20.0  # head frame: 0 is the centre of the cranial vault
    thin_bone_hu: float | None = None
    tilt_deg: float = 0.0
    head_holder: bool = False
    below_base_mm: float = 0.0
    fov_padding_hu: float | None = None

    def __post_init__(self):
        problems = []
        if not 0.0 <= self.skull_gap_mm <= 120.0:
            problems.append(f"skull gap {self.skull_gap_mm:g} mm (0 to 120)")
        if self.gap_height_mm <= 0:
            problems.append(f"gap height {self.gap_height_mm:g} mm (> 0)")
        if self.thin_bone_hu is not None and not HU_SCALP <= self.thin_bone_hu <= 1000.0:
            problems.append(f"thin bone {self.thin_bone_hu:g} HU ({HU_SCALP:g} to 1000)")
        if not -40.0 <= self.tilt_deg <= 40.0:
            problems.append(f"tilt {self.tilt_deg:g} degrees (-40 to 40)")
        if not 0.0 <= self.below_base_mm <= 20.0:
            problems.append(f"below-base extension {self.below_base_mm:g} mm (0 to 20: the rendered head ends there)")
        if self.fov_padding_hu is not None and self.fov_padding_hu > HU_AIR:
            problems.append(f"FOV padding {self.fov_padding_hu:g} HU (at most {HU_AIR:g})")
        if problems:
            raise InputError(None, "invalid synthetic variant: " + "; ".join(problems))

    @property
    def is_intact(self) -> bool:
        return self == Variant()

    def settings(self) -> dict:
        """The fields that differ from the intact head (empty for it): what a cohort records."""
        intact = asdict(Variant())
        return {k: v for k, v in asdict(self).items() if v != intact[k]}

    def label(self) -> str:
        parts = []
        if self.skull_gap_mm:
            parts.append(f"skull gap {self.skull_gap_mm:g} mm at {self.gap_azimuth_deg:g} deg")
        if self.thin_bone_hu is not None:
            parts.append(f"thin bone {self.thin_bone_hu:g} HU")
        if self.tilt_deg:
            parts.append(f"tilt {self.tilt_deg:+g} deg")
        if self.head_holder:
            parts.append("head holder")
        if self.below_base_mm:
            parts.append(f"{self.below_base_mm:g} mm below the skull base")
        if self.fov_padding_hu is not None:
            parts.append(f"FOV padding {self.fov_padding_hu:g} HU")
        return ", ".join(parts) or "intact"

    @classmethod
    def from_settings(cls, settings: dict) -> Variant:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise InputError(None, f"unknown synthetic variant setting(s): {', '.join(unknown)}")
        return cls(**settings)


@dataclass
class VariantScan:
    """A scan of a variant head and its truth (SimpleITK images: int16 HU, UInt8 masks)."""

    ct: sitk.Image
    hematoma: sitk.Image
    brain: sitk.Image
    variant: Variant


# -- the head (head frame, noise-free) ------------------------------------------------------


def _cavity(head: RenderedHead) -> np.ndarray:
    """Signed distance (mm, + outside) to the inner table: the render's depth map is this minus the CSF layer."""
    return -(sitk.GetArrayFromImage(head.depth) + np.float32(head.anatomy.csf_mm))


def _replace_image(head: RenderedHead, array: np.ndarray) -> RenderedHead:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(head.image)
    return replace(head, image=image)


def _vault_bone(head: RenderedHead, region: np.ndarray, cavity: np.ndarray, above_hu: float) -> np.ndarray:
    """Voxels of ``region`` in the skull's shell (from just inside the inner table outwards) denser than ``above_hu``."""
    image = sitk.GetArrayViewFromImage(head.image)
    return region & (cavity > -2.0) & (cavity < 25.0) & (image > above_hu)


def skull_gap(head: RenderedHead, width_mm: float, azimuth_deg: float = 90.0, height_mm: float = 40.0,
              centre_z_mm: float = 20.0) -> RenderedHead:
    """The head with a slab of its vault's bone, ``width_mm`` wide, replaced by soft tissue (+40 HU)."""
    if width_mm <= 0:
        return head
    x, y, z = head.grid.axes()
    angle = math.radians(azimuth_deg)
    ux, uy = math.sin(angle), -math.cos(angle)  # outward direction in the axial plane (LPS: anterior is -y)
    along = x * ux + y * uy
    across = x * uy - y * ux
    region = (along > 0) & (np.abs(across) <= width_mm / 2.0) & (np.abs(z - centre_z_mm) <= height_mm / 2.0)
    cavity = _cavity(head)
    gap = _vault_bone(head, region, cavity, HU_SCALP)
    image = sitk.GetArrayFromImage(head.image)
    image[gap] = HU_SCALP  # bone (and its partial volume) -> soft tissue; lower values (CSF, fat) stay
    return _replace_image(head, image)


def thin_temporal_bone(head: RenderedHead, hu: float) -> RenderedHead:
    """The head with its temporal squamae (both sides) no denser than ``hu``: thin bone under partial volume."""
    a = head.anatomy.half_axes[0]
    s = a / 66.0
    x, y, z = head.grid.axes()
    region = ((np.abs(x) >= 0.55 * a) & (y >= SQUAMA_Y_MM[0] * s) & (y <= SQUAMA_Y_MM[1] * s)
              & (z >= SQUAMA_Z_MM[0] * s) & (z <= SQUAMA_Z_MM[1] * s))
    thin = _vault_bone(head, region, _cavity(head), hu)
    image = sitk.GetArrayFromImage(head.image)
    image[thin] = hu
    return _replace_image(head, image)


def alter_head(head: RenderedHead, variant: Variant) -> RenderedHead:
    """The head with the variant's bone defects (gap, thin bone); the same object when it has none."""
    if variant.skull_gap_mm:
        head = skull_gap(head, variant.skull_gap_mm, variant.gap_azimuth_deg, variant.gap_height_mm,
                         variant.gap_centre_z_mm)
    if variant.thin_bone_hu is not None:
        head = thin_temporal_bone(head, variant.thin_bone_hu)
    return head


# -- the pose and the scan range ----------------------------------------------------------------


def alter_pose(pose: Pose, head: RenderedHead, variant: Variant) -> Pose:
    """The pose pitched by ``tilt_deg`` more, its first slice low enough for the tilted brain, and
    ``below_base_mm`` lower still; the same pose when the variant has neither."""
    if not variant.tilt_deg and not variant.below_base_mm:
        return pose
    z_start = pose.z_start_mm
    if variant.tilt_deg:
        angles = (pose.angles_deg[0] + variant.tilt_deg, pose.angles_deg[1], pose.angles_deg[2])
        tilted = replace(pose, angles_deg=angles)
        z_start = min(z_start, _lowest_brain_z(head, tilted) - 2.0)
        pose = tilted
    return replace(pose, z_start_mm=z_start - variant.below_base_mm)


def _lowest_brain_z(head: RenderedHead, pose: Pose) -> float:
    """Scanner z of the lowest intracranial point of ``head`` in ``pose``."""
    cavity = _cavity(head)
    inside = np.argwhere(cavity[:, ::4, ::4] < 0)
    if not len(inside):
        return pose.z_start_mm
    grid = head.grid
    points = np.column_stack([grid.origin[0] + grid.spacing[0] * 4 * inside[:, 2],
                              grid.origin[1] + grid.spacing[1] * 4 * inside[:, 1],
                              grid.origin[2] + grid.spacing[2] * inside[:, 0]])
    scanner = points @ pose.rotation().T + np.asarray(pose.translation_mm)
    return float(scanner[:, 2].min())


# -- scanner parts, added to a finished scan -----------------------------------------------------


def add_head_holder(ct: sitk.Image, rng: np.random.Generator, noise_sd: float) -> sitk.Image:
    """The scan with a head holder (a trough around the back of the head on a foam pad) and the table top.

    The trough follows the head's largest axial section, ``PAD_MM`` of foam behind it, on all slices; the
    table lies behind the trough across the field of view.  Noise of ``noise_sd`` is added to what is drawn.
    """
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    spacing_yx = (ct.GetSpacing()[1], ct.GetSpacing()[0])
    head = hu > -500.0
    widest = int(np.argmax(head.sum(axis=(1, 2))))
    section = ndimage.binary_fill_holes(head[widest])
    outside = ndimage.distance_transform_edt(~section, sampling=spacing_yx)
    rows = np.nonzero(section.any(axis=1))[0]
    centre_row = 0.5 * (rows.min() + rows.max())
    posterior = (np.arange(hu.shape[1]) >= centre_row)[:, None]  # LPS: rows increase towards posterior
    trough = posterior & (outside >= PAD_MM) & (outside < PAD_MM + HOLDER_MM)
    pad = posterior & (outside > 0) & (outside < PAD_MM)
    table, core = np.zeros_like(trough), np.zeros_like(trough)
    back = np.nonzero(trough.any(axis=1))[0]
    if len(back):  # the table top: carbon-fibre skins on a foam core, 3 mm behind the trough
        first = back.max() + 1 + round(3.0 / spacing_yx[0])
        skin, thick = (max(round(mm / spacing_yx[0]), 1) for mm in (TABLE_SKIN_MM, TABLE_CORE_MM))
        table[first:first + skin] = True
        core[first + skin:first + skin + thick] = True
        table[first + skin + thick:first + 2 * skin + thick] = True
    for plane_mask, value in ((pad, HU_FOAM), (core, HU_FOAM), (trough, HU_HOLDER), (table, HU_HOLDER)):
        target = plane_mask[None] & ~head  # never over the head itself
        hu[target] = value + noise_sd * rng.standard_normal(int(target.sum()), dtype=np.float32)
    return _like(ct, hu)


def pad_field_of_view(ct: sitk.Image, value: float) -> sitk.Image:
    """The scan with every voxel outside the circular reconstruction field set to ``value``."""
    hu = sitk.GetArrayFromImage(ct)
    ny, nx = hu.shape[-2:]
    y = (np.arange(ny) - (ny - 1) / 2.0)[:, None]
    x = (np.arange(nx) - (nx - 1) / 2.0)[None, :]
    outside = x * x + y * y > (min(nx, ny) / 2.0) ** 2
    hu[..., outside] = value
    return _like(ct, hu)


def _like(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.clip(np.rint(array), -32768, 32767).astype(np.int16))
    image.CopyInformation(reference)
    return image


def alter_scan(ct: sitk.Image, variant: Variant, rng: np.random.Generator, noise_sd: float) -> sitk.Image:
    """The finished scan with the variant's scanner parts (holder, padding); the same image when it has none."""
    if variant.head_holder:
        ct = add_head_holder(ct, rng, noise_sd)
    if variant.fov_padding_hu is not None:
        ct = pad_field_of_view(ct, variant.fov_padding_hu)
    return ct


def brain_truth(head: RenderedHead, reference: sitk.Image, pose: Pose) -> sitk.Image:
    """True brain mask of a scan (UInt8): the intracranial space, inside the inner table, at each voxel's centre."""
    depth = sitk.Resample(head.depth, reference, pose.scanner_to_head_transform(), sitk.sitkLinear, -100.0,
                          sitk.sitkFloat32)
    inside = sitk.GetArrayFromImage(depth) > -head.anatomy.csf_mm
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


# -- whole scans and patients ---------------------------------------------------------------------


def _variant_stream(seed: int, index: int, scan: int) -> np.random.Generator:
    # A stream of its own (spawn keys beyond clinical.STREAMS'), so the patient's other draws stay as they are.
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index), 1000 + int(scan))))


def make_variant_ct(variant: Variant | None = None, size: str = "small", seed: int = 0, hematoma_ml: float = 20.0,
                    location: str = "basal_ganglia", irregularity: float = 0.3,
                    heterogeneity: float = 0.3, signs=None) -> VariantScan:
    """:func:`~hematoma.synthetic.make_head_ct`'s head with ``variant`` applied, and its truth.

    The intact variant (the default) gives make_head_ct's CT and mask, voxel for voxel (``signs``: as there).
    """
    variant = variant or Variant()
    check_size(size)
    if location not in LOCATIONS:
        raise InputError(None, f"unknown location {location!r}; choose one of {', '.join(LOCATIONS)}")
    if hematoma_ml < 0:
        raise InputError(None, f"hematoma_ml must be >= 0, got {hematoma_ml}")
    anatomy = draw_anatomy(patient_stream(seed, 0, "anatomy"))
    intact = render_head(anatomy, size)
    head = alter_head(intact, variant)
    pose = alter_pose(draw_pose(patient_stream(seed, 0, "pose"), anatomy), intact, variant)
    hematoma = None
    if hematoma_ml > 0:
        hematoma = draw_hematoma(patient_stream(seed, 0, "lesion"), anatomy, location, hematoma_ml, irregularity,
                                 heterogeneity)
    plan = make_signs_plan(signs, seed, hematoma_ml, location, irregularity, heterogeneity)
    for wide in (False, True):
        try:
            ct, mask = acquire(head, pose, hematoma, hematoma_ml, size, patient_stream(seed, 0, "noise_baseline"),
                               5.0, wide=wide, signs=plan)
            break
        except LesionDoesNotFit:
            continue
    else:
        raise InputError(None, f"a {hematoma_ml:g} mL {location} hematoma does not fit in the brain of head {seed} "
                               f"({variant.label()}); choose a smaller hematoma_ml")
    ct = alter_scan(ct, variant, _variant_stream(seed, 0, 0), 5.0)
    return VariantScan(ct, mask, brain_truth(head, scanner_reference(anatomy, pose, size), pose), variant)


def synthesize_variant_patient(index: int, seed: int = 0, size: str = "full",
                               variant: Variant | None = None) -> SyntheticPatient:
    """Patient ``index`` of the cohort with this ``seed``, its head altered by ``variant``.

    The same draws, in the same order, as :func:`~hematoma.synthetic.synthesize_patient` (the intact variant
    gives its patient, bit for bit); the truth records the variant's settings; the defects are in the head, so
    both scans show them.
    """
    variant = variant or Variant()
    check_size(size)
    draw = draw_patient_variables(patient_stream(seed, index, "risk"))
    traits = draw["traits"]
    anatomy = draw_anatomy(patient_stream(seed, index, "anatomy"), age=draw["clinical"]["age"])
    intact = render_head(anatomy, size)
    head = alter_head(intact, variant)
    pose_rng = patient_stream(seed, index, "pose")
    pose = alter_pose(draw_pose(pose_rng, anatomy), intact, variant)
    later_pose = follow_up_pose(pose_rng, pose)
    noise_sd = float(pose_rng.uniform(4.0, 6.0))
    signs = draw_signs(signs_stream(seed, index), traits, draw["clinical"])
    (baseline_ct, baseline_mask, followup_ct, followup_mask), log = place_lesions(
        head, pose, later_pose, traits, bool(draw["he"]), size, seed, index, noise_sd, signs=signs)
    baseline_ct = alter_scan(baseline_ct, variant, _variant_stream(seed, index, 0), noise_sd)
    followup_ct = alter_scan(followup_ct, variant, _variant_stream(seed, index, 1), noise_sd)
    truth = {
        "patient_id": patient_id(index),
        "true_p": draw["true_p"],
        "observable_p": draw["observable_p"],
        "he": draw["he"],
        "baseline_volume_ml": mask_volume_ml(baseline_mask),
        "followup_volume_ml": mask_volume_ml(followup_mask),
        "location": traits["location"],
        "irregularity": traits["irregularity"],
        "heterogeneity": traits["heterogeneity"],
        **log,
        **({} if variant.is_intact else {"variant": variant.settings()}),
    }
    return SyntheticPatient(patient_id(index), baseline_ct, followup_ct, baseline_mask, followup_mask,
                            dict(draw["clinical"]), truth)


# -- single slices ------------------------------------------------------------------------------


#: Density of brain tissue and CSF as a slice shows them: CT-BET's brain range 0-100 HU, widened to -20 HU
#: for noisy CSF.  Where partial volume with bone lifts a slab above it, the slice does not show the brain.
BRAIN_DENSITY_HU = (-20.0, 100.0)


def brain_areas_cm2(scan: VariantScan, visible: bool = True) -> np.ndarray:
    """True brain area of each axial slice (cm^2), bottom to top; ``visible``: only where the slice shows
    brain density (:data:`BRAIN_DENSITY_HU`), not where the slab averages brain with bone."""
    spacing = scan.brain.GetSpacing()
    brain = sitk.GetArrayViewFromImage(scan.brain) > 0
    if visible:
        hu = sitk.GetArrayViewFromImage(scan.ct)
        brain = brain & (hu >= BRAIN_DENSITY_HU[0]) & (hu <= BRAIN_DENSITY_HU[1])
    return brain.sum(axis=(-2, -1)) * spacing[0] * spacing[1] / 100.0


def skull_base_slices(scan: VariantScan, count: int = 4, min_area_cm2: float = 10.0) -> list[int]:
    """The ``count`` lowest slices that show at least ``min_area_cm2`` of brain: posterior fossa,
    temporal lobes in the middle fossae, orbits and sinuses around them."""
    shown = np.nonzero(brain_areas_cm2(scan) >= min_area_cm2)[0]
    return [int(k) for k in shown[:count]]


def vertex_slices(scan: VariantScan, count: int = 3, min_area_cm2: float = 10.0) -> list[int]:
    """The ``count`` highest slices that show at least ``min_area_cm2`` of brain: a small brain in a
    tangentially cut skull cap."""
    shown = np.nonzero(brain_areas_cm2(scan) >= min_area_cm2)[0]
    return [int(k) for k in shown[-count:]]


def slices_without_brain(scan: VariantScan) -> list[int]:
    """Slices whose truth holds no brain at all (below the skull base, above the vertex)."""
    return [int(k) for k in np.nonzero(brain_areas_cm2(scan, visible=False) == 0)[0]]


def axial_slice(scan: VariantScan, index: int) -> VariantScan:
    """Slice ``index`` (z, bottom = 0) of the scan as a 2D scan with its 2D truth."""
    if not 0 <= index < scan.ct.GetSize()[2]:
        raise InputError(None, f"slice {index} is outside the scan's {scan.ct.GetSize()[2]} slices")
    return VariantScan(scan.ct[:, :, index], scan.hematoma[:, :, index], scan.brain[:, :, index], scan.variant)


__all__ = [
    "Variant",
    "VariantScan",
    "add_head_holder",
    "alter_head",
    "alter_pose",
    "alter_scan",
    "axial_slice",
    "brain_areas_cm2",
    "brain_truth",
    "make_variant_ct",
    "pad_field_of_view",
    "skull_base_slices",
    "skull_gap",
    "slices_without_brain",
    "synthesize_variant_patient",
    "thin_temporal_bone",
    "vertex_slices",
]
