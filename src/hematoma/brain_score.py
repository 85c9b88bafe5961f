"""The BRAIN score of hematoma growth, and its published risk per score.

Wang X, Arima H, Al-Shahi Salman R, et al. "Clinical prediction algorithm
(BRAIN) to determine risk of hematoma growth in acute intracerebral
hemorrhage." Stroke 2015;46(2):376-381, doi:10.1161/STROKEAHA.114.006910
(INTERACT1/2; growth >= 6 mL at 24 h).  24 points, from the abstract:
baseline ICH volume <= 10 mL 0, 10-20 mL 5, > 20 mL 7; recurrent ICH 4;
anticoagulation with warfarin at onset 6; intraventricular extension 2; hours
from onset to baseline CT <= 1: 5, 1-2: 4, 2-3: 3, 3-4: 2, 4-5: 1, > 5: 0.
Predicted growth risk per total score: :data:`BRAIN_RISK` (3.4% at 0 to 85.8% at
24 points).  Our inputs: ``clin_baseline_volume_ml``, ``clin_anticoagulation``
(any oral anticoagulant in our schema, where BRAIN says warfarin),
``clin_onset_to_ct_hours`` are required; ``clin_recurrent_ich`` and ``clin_ivh``
are optional and count 0 when absent (noted).  The published risks are for that
HE definition and population, so judge BRAIN on another cohort by its AUC first.

Nothing here is fitted: the points and the risk table are the paper's, which
is why the model may lean on them where a cohort is too small to estimate
its own weights (:mod:`hematoma.model_anchor`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VOLUME = "clin_baseline_volume_ml"
BRAIN_REQUIRED = (VOLUME, "clin_anticoagulation", "clin_onset_to_ct_hours")
BRAIN_OPTIONAL = ("clin_recurrent_ich", "clin_ivh")
BRAIN_POINTS = {"recurrent_ich": 4, "anticoagulation": 6, "ivh": 2}
# Published predicted probability of hematoma growth by total BRAIN score (0..24).
BRAIN_RISK = (
    0.034, 0.042, 0.051, 0.063, 0.077, 0.094, 0.113, 0.137, 0.164, 0.195, 0.231, 0.272, 0.316,
    0.364, 0.415, 0.467, 0.521, 0.574, 0.625, 0.674, 0.719, 0.760, 0.797, 0.830, 0.858,
)  # fmt: skip


# A value no patient can have (a negative volume or time, a flag other than 0 / 1: a sentinel such as -1 or 9, a
# typo) makes the item unknown, not the most points: a table read by `train` has not been through the clinical
# schema's range checks.
def _volume_points(volume_ml: pd.Series) -> pd.Series:
    points = np.select([volume_ml <= 10, volume_ml <= 20], [0, 5], default=7).astype(float)
    return pd.Series(np.where(volume_ml.isna() | (volume_ml < 0), np.nan, points), index=volume_ml.index)


def _time_points(hours: pd.Series) -> pd.Series:
    # <= 1 h: 5, (1, 2]: 4, (2, 3]: 3, (3, 4]: 2, (4, 5]: 1, > 5 h: 0
    points = 5 - np.clip(np.ceil(hours.to_numpy(dtype=float)) - 1, 0, 5)
    return pd.Series(np.where(hours.isna() | (hours < 0), np.nan, points), index=hours.index)


def _flag(values: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.where(numbers.isin([0, 1])).astype(float)


def brain_score(table: pd.DataFrame, optional=None) -> tuple[pd.Series, list[str]]:
    """The BRAIN score of every row (NaN where a required variable is missing) and notes.

    ``optional``: the optional columns (:data:`BRAIN_OPTIONAL`) to count; None: those the
    table has.  A model passes the ones its training table had, so that a new
    patient's score adds up the same items.  Raises ``KeyError`` naming the
    required columns the table lacks.
    """
    absent = [c for c in BRAIN_REQUIRED if c not in table.columns]
    if absent:
        raise KeyError(f"BRAIN score needs columns {absent}")
    optional = [c for c in BRAIN_OPTIONAL if c in table.columns] if optional is None else list(optional)
    notes = []
    score = (
        _volume_points(pd.to_numeric(table[VOLUME], errors="coerce"))
        + BRAIN_POINTS["anticoagulation"] * _flag(table["clin_anticoagulation"])
        + _time_points(pd.to_numeric(table["clin_onset_to_ct_hours"], errors="coerce"))
    )
    for column, key in zip(BRAIN_OPTIONAL, ("recurrent_ich", "ivh")):
        if column in optional and column in table.columns:
            flag = _flag(table[column])
            if flag.isna().any():
                notes.append(f"{column} missing for {int(flag.isna().sum())} patient(s): counted as 0")
            score = score + BRAIN_POINTS[key] * flag.fillna(0.0)
        else:
            notes.append(f"no {column} column: its {BRAIN_POINTS[key]} points count as 0 for everyone")
    return score, notes


def brain_risk(score) -> np.ndarray:
    """Published probability of growth for BRAIN scores (integers 0..24)."""
    return np.asarray(BRAIN_RISK)[np.clip(np.asarray(score, dtype=int), 0, 24)]
