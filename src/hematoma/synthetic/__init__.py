"""Synthetic head-CT cohort with known ground truth, shaped like the paper's data.

Each patient has an admission (baseline) and a follow-up non-contrast head CT
of the same head, ground-truth hematoma masks of both, the clinical variables
of the paper's Table 1 and the truth (HE probability and label).  See
:mod:`.clinical` for the distributions and the generative risk model,
:mod:`.phantom` for the anatomy and :mod:`.lesion` for the hematoma;
:mod:`.signs` draws the NCCT signs of expansion and :mod:`.sign_rendering`
paints them with their truth (``truth["signs"]``);
:mod:`.variants` renders the heads that defeat brain extraction on real CT
(skull gaps, thin bone, tilt, a head holder, skull-base and vertex slices)
with their truth.
"""

from .clinical import (
    CLINICAL_COLUMNS,
    LOCATION_FREQUENCIES,
    LOCATIONS,
    RISK_COEFFICIENTS,
    sample_clinical_and_risk,
)
from .cohort import GENERATOR_VERSION, generate_cohort
from .patient import (
    GeneratorError,
    SyntheticPatient,
    make_head_ct,
    place_lesions,
    synthesize_patient,
)
from .signs import GRADE_NAMES, SIGN_NAMES, SignPlan, sample_signs
from .variants import (
    Variant,
    VariantScan,
    axial_slice,
    make_variant_ct,
    skull_base_slices,
    slices_without_brain,
    synthesize_variant_patient,
    vertex_slices,
)

__all__ = [
    "CLINICAL_COLUMNS",
    "GENERATOR_VERSION",
    "GRADE_NAMES",
    "LOCATIONS",
    "LOCATION_FREQUENCIES",
    "RISK_COEFFICIENTS",
    "SIGN_NAMES",
    "GeneratorError",
    "SignPlan",
    "SyntheticPatient",
    "Variant",
    "VariantScan",
    "axial_slice",
    "generate_cohort",
    "make_head_ct",
    "make_variant_ct",
    "place_lesions",
    "sample_clinical_and_risk",
    "sample_signs",
    "skull_base_slices",
    "slices_without_brain",
    "synthesize_patient",
    "synthesize_variant_patient",
    "vertex_slices",
]
