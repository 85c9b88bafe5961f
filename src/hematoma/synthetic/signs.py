"""Which NCCT signs of expansion a synthetic patient's baseline hematoma shows, and how strongly.

The signs are drawn from a random stream of their own (:func:`signs_stream`), so every other draw
of every patient is unchanged, and CONDITIONAL ON THE TRAITS THE RISK LOGIT ALREADY USES
(:mod:`.clinical`), never on the HE label: ``true_p`` stays the oracle and the cohort's calibration
(HE rate, oracle AUC, volume medians) is untouched, while the signs associate with HE through the
traits, as they do in patients:

* heterogeneity, volume and an early scan (the "activity" score) -> encapsulated hypodensity, black hole,
  blend, swirl;
* irregularity and volume (the "shape" score) -> island and satellite bleeds (and, through the
  rendered shape, Barras shape);
* anticoagulation / INR above 1.2 -> fluid level (sedimentation of unclotted blood).

What is drawn here is a :class:`SignPlan` (what to render, with its HU contrast and size);
:mod:`.sign_rendering` paints it into the scan and writes the truth of what was rendered (a
drawn sign that the clot cannot hold, e.g. an encapsulated region in a 2 mL bleed, is left out and
its truth is 0).  Definitions (Morotti et al., Ann Neurol 2019, and the originals) and the Barras
grade mapping: :mod:`.sign_rendering`.

Published prevalence and association with HE (crude odds ratios computed from the published
counts or sensitivity/specificity where the paper gives them; "recalled" = from the original
abstract as remembered, not found in the stored copies searched):

============  =====================================================  =============  =================
sign          source                                                 prevalence     OR for HE
============  =====================================================  =============  =================
hypodensity   Boulouis et al., JAMA Neurol 2016 (784 + 245 pts)      31.2 %         ~4.0 (86/163 HE vs
                                                                                    136/621 no-HE)
black hole    Li et al., Stroke 2016 (206 pts; recalled)             14.6 %         ~7.5 (sens 31.9 %,
                                                                                    spec 94.1 %)
blend         Li et al., Stroke 2015 (172 pts; recalled)             16.9 %         ~13.7 (sens 39.3 %,
                                                                                    spec 95.5 %)
island        Li et al., Stroke 2017 (252 pts)                       16.3 %         ~44 crude (38/85 HE
              (meta-analysis Wei et al., Front Neurol 2020: 21.6 %)                 vs 3/167); 3.51 adj.
satellite     Shimoda et al., Cerebrovasc Dis 2017 (241 pts)         40.7 %         not given (outcome
                                                                                    OR 13.5)
swirl         Selariu et al., BMC Neurol 2012 (203 pts)              30 %           not given (death OR
                                                                                    2.6)
fluid level   no figure found (Barras 2009 density category 5)       --             --
============  =====================================================  =============  =================

The published ORs are crude, from cohorts where the sign is read by eye and HE depends on little
else that was measured; here HE is drawn from a logit in which heterogeneity and irregularity
weigh 1.6 each beside volume, onset, anticoagulation, blood pressure and a latent term, so a sign
that follows a trait can reach only part of those ORs.  Each sign is present when its trait score plus logistic noise (scale 1/4) passes a threshold
set for the published prevalence; with the traits alone no sign can pass an OR of ~3-4 here (a
deterministic cut of the activity score at the 69th centile gives 3.1).  Measured by
:func:`sample_signs` over 20 000 patients of seed 0 (intended signs, HE rate 0.240):

    hypodensity 0.308 (OR 2.6), black hole 0.143 (OR 3.2), blend 0.169 (OR 3.0), swirl 0.272 (OR 2.7),
    fluid level 0.027 (OR 4.2), island 0.161 (OR 2.7), satellite 0.397 (OR 2.6).

Rendered (truth of 80 small-size patients of seed 0, 0.58 s each): hypodensity 25 of the 29
intended (4 clots too small to hold an encapsulated region with its margin), black hole 7 of 8,
blend 13/13, island 11/11, satellite 34/34; swirl 16 (intended 23: a 12-22 HU hypodensity in a
clot denser than ~63 HU cannot reach parenchyma density, so rendered swirls are ~20 %, below the
published 30 %).  Fluid level: chosen ~6-27 % of anticoagulated patients (rising with INR),
~0.7 % of the others; no published prevalence was found.

HU contrasts (generator margins around the published thresholds, so partial volume and noise keep
each region on its side): encapsulated hypodensity without black hole 12-22 HU below the clot,
black hole 32-45 HU (threshold 28 HU, Li 2016), blend 22-40 HU (threshold 18 HU, Li 2015), fluid
level 18-30 HU; a swirl region lies at brain-parenchyma density (<= 41 HU, grey matter 35-45 HU),
a region that is not a swirl at >= 49 HU where the contrast range allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .clinical import draw_patient_variables, patient_stream

SIGN_NAMES: tuple[str, ...] = ("hypodensity", "black_hole", "blend", "swirl", "fluid_level", "island", "satellite")
GRADE_NAMES: tuple[str, ...] = ("barras_shape", "barras_density")

# HU contrast ranges below the clot (module docstring).
HYPODENSITY_HU = (12.0, 22.0)
BLACK_HOLE_HU = (32.0, 45.0)
BLEND_HU = (22.0, 40.0)
FLUID_LEVEL_HU = (18.0, 30.0)
SWIRL_MAX_HU = 41.0  # a swirl region's own density: at most this (brain parenchyma, grey matter 35-45 HU)
NOT_SWIRL_MIN_HU = 49.0  # a region that is not a swirl: at least this, where its contrast range allows


@dataclass(frozen=True)
class SignPlan:
    """What the baseline hematoma should show (all empty: a homogeneous clot).

    Contrasts are HU below the clot's density; ``None`` means the sign is absent.
    """

    encapsulated_hu: float | None = None  # hypodensity (and black hole when >= 28 HU)
    encapsulated_radius_mm: float = 4.0
    blend_hu: float | None = None
    blend_fraction: float = 0.25  # share of the clot the open hypodense part takes
    swirl: bool = False  # put the hypodense regions at parenchyma density (<= SWIRL_MAX_HU)
    fluid_level_hu: float | None = None
    fluid_anterior_fraction: float = 0.45  # share of the clot above (anterior to) the level
    separate_radii_mm: tuple[float, ...] = ()  # small separate bleeds: >= 3 islands, else satellites
    separate_gaps_mm: tuple[float, ...] = ()  # their edge-to-edge distance to the main clot
    geometry_seed: int = 0  # where in the clot the regions go (drawn at render time from this seed)
    requested: tuple[str, ...] = field(default=())  # the signs a caller asked for (make_head_ct), if any

    @property
    def is_empty(self) -> bool:
        return (self.encapsulated_hu is None and self.blend_hu is None and self.fluid_level_hu is None
                and not self.separate_radii_mm)


NO_SIGNS = SignPlan()


def signs_stream(seed: int, index: int) -> np.random.Generator:
    """Patient ``index``'s stream for the signs (``"signs"``, the last of :data:`.clinical.STREAMS`: appended, so
    no other stream's key, and no other draw of any patient, changed)."""
    return patient_stream(seed, index, "signs")


# Signs follow standardised scores of the traits (the risk logit's own variables) plus logistic noise of
# scale 1 / STEEPNESS, present above a threshold set for the published prevalence (module docstring).
STEEPNESS = 4.0
THRESHOLDS = {"hypodensity": 0.55, "black_hole": 1.20, "blend": 1.08, "island": 1.20, "satellite": 0.38}
SWIRL_SHARE = 0.7  # of the hypodense regions that are not black holes


def _scores(traits: dict, clinical: dict) -> tuple[float, float]:
    """(activity, shape): heterogeneity + volume + early scan, and irregularity + volume, each of unit SD.

    Units: the traits' SDs in the cohort (heterogeneity and irregularity ~0.2, log volume ~0.85, log
    onset ~0.7); the sums' SDs (1.74 and 1.73) measured over 40 000 patients of seed 5.
    """
    log_v = math.log(traits["nominal_volume_ml"] / 12.0)
    early = math.log(3.0 / clinical["onset_to_ct_hours"])
    activity = ((traits["heterogeneity"] - 0.4) / 0.2 + log_v / 0.85 + 0.5 * early / 0.7) / 1.74
    shape = ((traits["irregularity"] - 0.4) / 0.2 + log_v / 0.85) / 1.73
    return activity, shape


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def draw_signs(rng: np.random.Generator, traits: dict, clinical: dict) -> SignPlan:
    """The patient's :class:`SignPlan`, from its traits and complete clinical values (module docstring).

    All draws happen whatever is drawn before them, so the stream stays aligned.  The clot's
    density is not known here (it is drawn with the lesion): the contrasts are moved within their
    ranges at render time so that a region is clearly a swirl or not (:mod:`.sign_rendering`).
    """
    activity, shape = _scores(traits, clinical)
    anticoagulated = clinical["anticoagulation"] + max((clinical["inr"] or 1.0) - 1.2, 0.0)
    e = rng.logistic(size=4) / STEEPNESS  # one noise for hypodensity and black hole: a black hole is a hypodensity
    u = rng.random(2)
    hypodensity = activity + e[0] > THRESHOLDS["hypodensity"]
    black_hole = activity + e[0] > THRESHOLDS["black_hole"]
    blend = activity + e[1] > THRESHOLDS["blend"]
    swirl = black_hole or ((hypodensity or blend) and u[0] < SWIRL_SHARE)
    fluid_level = u[1] < _expit(-5.0 + 2.0 * anticoagulated)
    island = shape + e[2] > THRESHOLDS["island"]
    satellite = island or shape + e[3] > THRESHOLDS["satellite"]
    encapsulated_hu = float(rng.uniform(*(BLACK_HOLE_HU if black_hole else HYPODENSITY_HU)))
    radius_mm = float(rng.uniform(3.5, 7.0))
    blend_hu = float(rng.uniform(*BLEND_HU))
    blend_fraction = float(rng.uniform(0.15, 0.35))
    fluid_hu = float(rng.uniform(*FLUID_LEVEL_HU))
    anterior = float(rng.uniform(0.35, 0.6))
    n_separate = int(rng.integers(3, 6)) if island else int(rng.integers(1, 3))
    radii = tuple(float(r) for r in rng.uniform(2.6, 4.5, size=5))[:n_separate]
    gaps = tuple(float(g) for g in rng.uniform(3.0, 10.0, size=5))[:n_separate]
    geometry_seed = int(rng.integers(2**31))
    if fluid_level:  # sedimentation: the clot is unclotted blood; no other density sign is drawn into it
        hypodensity = black_hole = blend = swirl = False
    return SignPlan(
        encapsulated_hu=encapsulated_hu if hypodensity else None, encapsulated_radius_mm=radius_mm,
        blend_hu=blend_hu if blend else None, blend_fraction=blend_fraction, swirl=bool(swirl),
        fluid_level_hu=fluid_hu if fluid_level else None, fluid_anterior_fraction=anterior,
        separate_radii_mm=radii if satellite else (), separate_gaps_mm=gaps if satellite else (),
        geometry_seed=geometry_seed,
    )


def intended_signs(plan: SignPlan) -> dict:
    """The sign flags a plan asks for (before rendering, which may drop what the clot cannot hold)."""
    n = len(plan.separate_radii_mm)
    swirl = plan.swirl and (plan.encapsulated_hu is not None or plan.blend_hu is not None)
    return {
        "hypodensity": int(plan.encapsulated_hu is not None),
        "black_hole": int(plan.encapsulated_hu is not None and plan.encapsulated_hu >= 28.0),
        "blend": int(plan.blend_hu is not None),
        "swirl": int(swirl),
        "fluid_level": int(plan.fluid_level_hu is not None),
        "island": int(n >= 3),
        "satellite": int(n >= 1),
    }


def requested_plan(signs, seed: int = 0) -> SignPlan:
    """A plan that renders exactly the named signs (for tests and examples), mid-range values.

    ``signs``: an iterable of :data:`SIGN_NAMES`.  ``black_hole`` and ``swirl`` imply an
    encapsulated hypodensity; ``island`` implies satellites (the definitions overlap).
    """
    names = tuple(sorted(set(signs)))
    unknown = [n for n in names if n not in SIGN_NAMES]
    if unknown:
        from ..errors import InputError

        raise InputError(None, f"unknown sign(s) {', '.join(unknown)}; choose from {', '.join(SIGN_NAMES)}")
    plan = replace(NO_SIGNS, geometry_seed=int(seed), requested=names, encapsulated_radius_mm=5.0)
    if "black_hole" in names or "swirl" in names:  # parenchyma density inside a 58-82 HU clot: a black hole too
        plan = replace(plan, encapsulated_hu=38.0)
    elif "hypodensity" in names:
        plan = replace(plan, encapsulated_hu=17.0)
    if "blend" in names:
        plan = replace(plan, blend_hu=30.0, blend_fraction=0.25)
    if "swirl" in names:
        plan = replace(plan, swirl=True)
    if "fluid_level" in names:
        plan = replace(plan, fluid_level_hu=24.0, fluid_anterior_fraction=0.45)
    if "island" in names:
        plan = replace(plan, separate_radii_mm=(3.5, 3.2, 3.8, 3.4), separate_gaps_mm=(5.0, 6.0, 4.5, 7.0))
    elif "satellite" in names:
        plan = replace(plan, separate_radii_mm=(3.8,), separate_gaps_mm=(6.0,))
    return plan


def sample_signs(n_patients: int, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """The intended sign flags of patients ``start .. start+n-1`` beside ``he`` and the traits, no images."""
    rows = []
    for index in range(start, start + n_patients):
        draw = draw_patient_variables(patient_stream(seed, index, "risk"))
        clinical = dict(draw["clinical"])
        plan = draw_signs(signs_stream(seed, index), draw["traits"], clinical)
        rows.append({"index": index, "he": draw["he"], **draw["traits"], **intended_signs(plan)})
    return pd.DataFrame(rows)


def odds_ratio(flag: np.ndarray, he: np.ndarray) -> float:
    """Crude odds ratio of HE for a 0/1 flag (0.5 added to each cell)."""
    flag, he = np.asarray(flag, bool), np.asarray(he, bool)
    a, b = (flag & he).sum() + 0.5, (flag & ~he).sum() + 0.5
    c, d = (~flag & he).sum() + 0.5, (~flag & ~he).sum() + 0.5
    return float(a * d / (b * c))
