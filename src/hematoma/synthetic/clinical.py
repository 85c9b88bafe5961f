r"""Patient-level variables of the synthetic cohort and the generative risk model.

Everything that decides whether a patient's hematoma expands is drawn here,
without any image, so that the cohort's calibration (HE rate, oracle AUC,
volumes by HE status) can be checked over many seeds in milliseconds
(:func:`sample_clinical_and_risk`).

Distributions
-------------
The paper (Bo, Xiong et al., Int J Gen Med 2023, 408 patients, 98 with HE)
was found, but the numbers of its Table 1 could not be read from the stored
copy, so the clinical variables follow clinically plausible distributions of
Chinese single-centre ICH cohorts (e.g. the Table 1 of comparable HE studies):
male 62 %, age 60 +- 12 y, admission SBP 165 +- 27 / DBP ~95 mm Hg,
hypertension ~70 % (more in deep than lobar bleeds), heart disease 12 %,
diabetes 15 %, platelets 205 +- 60 x10^9/L, neutrophils ~6.5 x10^9/L and
~75 %, D-dimer lognormal with median ~0.7 mg/L, fibrinogen 3.0 +- 0.7 g/L,
prothrombin time ~11.8 s, onset-to-CT lognormal with median ~3.5 h,
anticoagulation 6 %, GCS and the ADL (Barthel) index falling with volume.
Only the hematoma volume is calibrated against the paper: baseline volume
medians of about 11 mL without and 18 mL with expansion, HE rate 24 %.
About 2 % of the laboratory values are left blank, as in real tables.

Locations follow the usual spontaneous-ICH mix: basal ganglia 50 %,
thalamus 15 %, lobar 25 %, infratentorial 10 %.

Risk model
----------
HE is drawn as Bernoulli(P) with

.. math::

    \operatorname{logit} P = b_0
        + b_1 \log(V / 12\,\mathrm{mL})
        + b_2 (\mathrm{irregularity} - 0.4)
        + b_3 (\mathrm{heterogeneity} - 0.4)
        + b_4 \log(3\,\mathrm{h} / \mathrm{onset\_to\_ct})
        + b_5 \,(\mathrm{anticoagulation} + \max(\mathrm{INR} - 1.2, 0))
        + b_6 (\mathrm{SBP} - 160) / 20
        + b_7 \max(150 - \mathrm{platelets}, 0) / 50
        + b_8 \log(\mathrm{D\text{-}dimer} / 0.7)
        + \sigma_u\, u, \qquad u \sim N(0, 1)

with the coefficients of :data:`RISK_COEFFICIENTS`: b0 = -1.86,
b1 = 0.60 (log volume), b2 = 1.6 (irregularity), b3 = 1.6 (heterogeneity),
b4 = 0.75 (onset), b5 = 1.2 (anticoagulation / INR), b6 = 0.25 (SBP per
20 mm Hg), b7 = 0.5 (low platelets per 50 x10^9/L), b8 = 0.35 (log D-dimer),
sigma_u = 0.9.  ``u`` stands for what
no admission variable shows (spot sign, blood-pressure course, treatment): it
is part of the true probability ``true_p`` but of nothing a model can see;
``observable_p`` leaves it out (its AUC, ~0.785, is about the best a model
of the observed variables can reach).
``b0``, ``b1``, ``sigma_u`` and the volume distribution were tuned
numerically so that, over seeds and for N = 200-400, the HE rate is about
0.24, the oracle AUC (``roc_auc_score(he, true_p)``) lies between 0.80 and
0.90 and the baseline volume medians are about 11 mL (no HE) and 18 mL (HE);
measured over 20 seeds of N = 400: HE rate 0.241 +- 0.019, oracle AUC
0.839 +- 0.020, medians 11.0 and 18.4 mL (checked in tests/test_synthetic.py).
The volume is drawn lognormal (median 13.2 mL, sigma 0.85; 0.65x in the
posterior fossa) before P, which then shifts the HE group to larger volumes.
Irregularity and heterogeneity (0..1, per patient) also set the rendered
hematoma's shape and density, so image features carry the same signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LOCATIONS: tuple[str, ...] = ("basal_ganglia", "thalamus", "lobar", "infratentorial")
LOCATION_FREQUENCIES: tuple[float, ...] = (0.50, 0.15, 0.25, 0.10)

CLINICAL_COLUMNS: tuple[str, ...] = (
    "sex", "age", "sbp", "dbp", "adl_index", "hypertension", "heart_disease", "diabetes",
    "platelet_count", "neutrophil_count", "neutrophil_percent", "d_dimer", "fibrinogen",
    "prothrombin_time", "onset_to_ct_hours", "anticoagulation", "inr", "gcs",
)
# Lab columns that real tables leave blank now and then.
MISSING_COLUMNS: tuple[str, ...] = (
    "platelet_count", "neutrophil_count", "neutrophil_percent", "d_dimer", "fibrinogen", "prothrombin_time",
)
MISSING_RATE = 0.02


@dataclass(frozen=True)
class RiskCoefficients:
    """Coefficients of the generative logit (see the module docstring)."""

    b0: float = -1.86
    log_volume: float = 0.60
    irregularity: float = 1.6
    heterogeneity: float = 1.6
    onset: float = 0.75
    anticoagulation: float = 1.2
    sbp: float = 0.25
    low_platelets: float = 0.5
    log_d_dimer: float = 0.35
    latent_sd: float = 0.9


RISK_COEFFICIENTS = RiskCoefficients()


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def draw_patient_variables(rng: np.random.Generator) -> dict:
    """Draw one patient's location, nominal volume, lesion traits and clinical values.

    Scalar draws in a fixed order, so that patient ``i`` depends on its own
    random stream only (the cohort can be generated in parallel and resumed).
    """
    location = LOCATIONS[int(rng.choice(len(LOCATIONS), p=LOCATION_FREQUENCIES))]
    # Posterior-fossa bleeds are smaller (and the posterior fossa has little room).
    median_ml = 13.2 * (0.65 if location == "infratentorial" else 1.0)
    volume_ml = _clip(math.exp(rng.normal(math.log(median_ml), 0.85)), 1.5, 110.0 if location != "infratentorial" else 40.0)
    log_v = math.log(volume_ml / 12.0)
    # Larger bleeds tend to be more irregular and heterogeneous (as in the literature).
    irregularity = _expit(-0.45 + 0.5 * log_v + rng.normal(0.0, 1.0))
    heterogeneity = _expit(-0.45 + 0.4 * log_v + rng.normal(0.0, 1.0))

    sex = "M" if rng.random() < 0.62 else "F"
    age = int(round(_clip(rng.normal(60.0, 12.0), 28.0, 95.0)))
    sbp = _clip(rng.normal(165.0, 27.0), 95.0, 250.0)
    dbp = _clip(95.0 + 0.45 * (sbp - 165.0) + rng.normal(0.0, 11.0), 50.0, 150.0)
    deep = location in ("basal_ganglia", "thalamus")
    hypertension = int(rng.random() < (0.80 if deep else 0.55 if location == "lobar" else 0.70))
    heart_disease = int(rng.random() < 0.08 + 0.002 * max(age - 50, 0))
    diabetes = int(rng.random() < 0.15)
    anticoagulation = int(rng.random() < 0.06)
    inr = rng.uniform(1.3, 3.2) if anticoagulation else _clip(rng.normal(1.0, 0.07), 0.82, 1.3)
    prothrombin_time = _clip(11.6 * inr ** 0.9 + rng.normal(0.0, 0.5), 9.0, 40.0)
    platelet_count = _clip(rng.normal(205.0, 60.0), 30.0, 480.0)
    neutrophil_count = _clip(math.exp(rng.normal(math.log(6.5) + 0.12 * log_v, 0.35)), 1.5, 25.0)
    neutrophil_percent = _clip(75.0 + 18.0 * math.log(neutrophil_count / 6.5) + rng.normal(0.0, 6.0), 40.0, 97.0)
    d_dimer = _clip(math.exp(rng.normal(math.log(0.7) + 0.25 * log_v + 0.3 * anticoagulation, 0.9)), 0.05, 20.0)
    fibrinogen = _clip(rng.normal(3.0, 0.7), 1.2, 6.5)
    onset_to_ct_hours = _clip(math.exp(rng.normal(math.log(3.5), 0.7)), 0.5, 24.0)
    # Severity scales with volume (and is worse in the posterior fossa).
    severity = log_v + (0.6 if location == "infratentorial" else 0.0)
    gcs = int(_clip(round(14.0 - 1.8 * severity + rng.normal(0.0, 1.8)), 3, 15))
    adl_index = int(_clip(5 * round((55.0 - 14.0 * severity + rng.normal(0.0, 20.0)) / 5.0), 0, 100))

    clinical = {
        "sex": sex, "age": age, "sbp": round(sbp), "dbp": round(dbp), "adl_index": adl_index,
        "hypertension": hypertension, "heart_disease": heart_disease, "diabetes": diabetes,
        "platelet_count": round(platelet_count), "neutrophil_count": round(neutrophil_count, 2),
        "neutrophil_percent": round(neutrophil_percent, 1), "d_dimer": round(d_dimer, 2),
        "fibrinogen": round(fibrinogen, 2), "prothrombin_time": round(prothrombin_time, 1),
        "onset_to_ct_hours": round(onset_to_ct_hours, 1), "anticoagulation": anticoagulation,
        "inr": round(inr, 2), "gcs": gcs,
    }
    traits = {
        "location": location, "nominal_volume_ml": volume_ml,
        "irregularity": irregularity, "heterogeneity": heterogeneity,
    }
    latent = rng.normal()
    true_p = _expit(risk_logit(traits, clinical, latent))
    # What a perfect model of every generative variable could know: P without the latent term.
    observable_p = _expit(risk_logit(traits, clinical, 0.0))
    he = int(rng.random() < true_p)
    # Blank cells are drawn after the label, from the values, so they change nothing above.
    for column in MISSING_COLUMNS:
        if rng.random() < MISSING_RATE:
            clinical[column] = None
    return {"clinical": clinical, "traits": traits, "latent": latent, "true_p": true_p,
            "observable_p": observable_p, "he": he}


def risk_logit(traits: dict, clinical: dict, latent: float, coefficients: RiskCoefficients = RISK_COEFFICIENTS) -> float:
    """The generative logit of HE (module docstring); ``clinical`` holds complete values."""
    c = coefficients
    return (
        c.b0
        + c.log_volume * math.log(traits["nominal_volume_ml"] / 12.0)
        + c.irregularity * (traits["irregularity"] - 0.4)
        + c.heterogeneity * (traits["heterogeneity"] - 0.4)
        + c.onset * math.log(3.0 / clinical["onset_to_ct_hours"])
        + c.anticoagulation * (clinical["anticoagulation"] + max(clinical["inr"] - 1.2, 0.0))
        + c.sbp * (clinical["sbp"] - 160.0) / 20.0
        + c.low_platelets * max(150.0 - clinical["platelet_count"], 0.0) / 50.0
        + c.log_d_dimer * math.log(clinical["d_dimer"] / 0.7)
        + c.latent_sd * latent
    )


STREAMS: tuple[str, ...] = ("risk", "anatomy", "lesion", "pose", "noise_baseline", "noise_followup", "signs")


def patient_stream(seed: int, index: int, name: str) -> np.random.Generator:
    """One of patient ``index``'s independent random streams (see :data:`STREAMS`).

    Stream ``k`` is ``SeedSequence(seed).spawn(index + 1)[index].spawn(k + 1)[k]``,
    built directly from its spawn key, so patient ``index`` depends only on
    ``(seed, index)``.
    Separate streams keep the clinical draw identical whether or not images
    are rendered, and let the anatomy stay fixed when the lesion changes.
    """
    child = np.random.SeedSequence(int(seed), spawn_key=(int(index), STREAMS.index(name)))
    return np.random.default_rng(child)


def redraw_stream(seed: int, index: int, name: str, attempt: int) -> np.random.Generator:
    """Stream ``name`` of patient ``index`` for re-draw ``attempt`` (1, 2, ...): a child of that stream.

    Spawn key ``(index, k, attempt)`` never equals a first draw's ``(index, k)``, so a re-draw is as
    reproducible as the first draw and depends only on ``(seed, index, attempt)``.
    """
    if attempt < 1:
        raise ValueError(f"re-draw attempts count from 1, got {attempt}")
    child = np.random.SeedSequence(int(seed), spawn_key=(int(index), STREAMS.index(name), int(attempt)))
    return np.random.default_rng(child)


def sample_clinical_and_risk(n_patients: int, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """Patient-level variables and true HE probability of patients ``start .. start+n-1``, no images.

    Columns: patient index, the clinical columns (with the blank cells), the
    lesion traits (location, nominal_volume_ml, irregularity, heterogeneity),
    ``true_p``, ``observable_p`` (P without the latent term) and the realised
    ``he``.  Row ``i`` equals what
    :func:`~hematoma.synthetic.synthesize_patient` draws for patient ``i``.
    """
    rows = []
    for index in range(start, start + n_patients):
        draw = draw_patient_variables(patient_stream(seed, index, "risk"))
        rows.append({"index": index, **draw["clinical"], **draw["traits"], "true_p": draw["true_p"],
                     "observable_p": draw["observable_p"], "he": draw["he"]})
    return pd.DataFrame(rows)
