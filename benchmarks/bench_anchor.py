"""The model anchored to the BRAIN score (issue 16), scored on bench_prior.py's stored predictions.

:class:`hematoma.model_anchor.ScoreAnchor` averages the model's probability with
the BRAIN score's published risk; the score is not fitted, so its value for each
test patient needs no refit: this script takes each half's test predictions of
the search and the known-predictor model from ``bench_prior.py``'s
``prior_predictions/<label>.csv.gz`` (which must exist for the label), forms the
default blend (``DEFAULT_PRIOR_WEIGHT``), computes the BRAIN risk from the run's
feature table (the same :func:`~hematoma.brain_score.brain_score` and
:func:`~hematoma.model_anchor.anchored` that ``ScoreAnchor`` uses, on the items the
table has), and scores, on the same halves:

* ``blend``: the model without the anchor (today's ``--anchor none``);
* ``brain``: the BRAIN risk alone (the report's baseline);
* ``anchored w``: ``(1 - w) * blend + w * BRAIN risk`` for each ``--weights`` w;
* ``anchored 0.5 recalibrated``: that average shifted on the logit scale to the
  training half's HE rate, as ``ScoreAnchor(recalibrate=True)`` does.  The shift
  needs the training patients' predictions, which bench_prior does not store; the
  paired half's stored predictions stand in for them (2-fold: the training half of
  one is the test half of the other, predicted by a model fitted on the other
  patients, whereas ScoreAnchor uses its own in-sample predictions).  Its AUC
  equals the plain average's; its Brier score and calibration differ;

with each one's mean gap to the generator's observable AUC (a reference, never a
feature), and its mean Brier score and calibration-in-the-large (mean predicted
minus observed HE rate) on the test halves: the anchor's published risks are
INTERACT's, not this cohort's.  Results: ``benchmarks/results/anchor.json`` (per label).

Pre-registered (session 10, before seeds 7 and 8 were drawn): the weight 0.5 was
fixed from seeds 0-6 (only 0.25 and 0.5 looked at); it becomes the default of
``train`` and ``run`` only if, over seeds 7 and 8, its mean gap is smaller than
the blend's and it is not worse by more than 0.02 on either seed.

    python benchmarks/bench_anchor.py --run /tmp/run300/out --label seed0-run300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "anchor.json"
PREDICTIONS = Path(__file__).resolve().parent / "results" / "prior_predictions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--label", required=True, help="bench_prior.py's label for the same run.")
    parser.add_argument("--weights", default="0.25,0.5,0.75", help="Weights of the BRAIN risk in the average.")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from bench_selection import cohort2
    from hematoma.brain_score import BRAIN_OPTIONAL, brain_risk, brain_score
    from hematoma.model import DEFAULT_PRIOR_WEIGHT
    from hematoma.model_anchor import anchored, rate_offset, recalibrated

    table, patients = cohort2(args.run)
    score, notes = brain_score(table, optional=[c for c in BRAIN_OPTIONAL if c in table.columns])
    risk = pd.Series(np.where(score.notna(), brain_risk(score.fillna(0)), np.nan), index=table["patient_id"].to_numpy())
    stored = pd.read_csv(PREDICTIONS / f"{args.label}.csv.gz", dtype={"patient_id": str})
    weights = [float(w) for w in args.weights.split(",")]
    aucs: dict[str, list[float]] = {}
    briers: dict[str, list[float]] = {}
    offsets: dict[str, list[float]] = {}  # mean predicted - observed rate
    halves = dict(tuple(stored.groupby("half")))

    def parts(half):
        blend = (1 - DEFAULT_PRIOR_WEIGHT) * half["search"].to_numpy() + DEFAULT_PRIOR_WEIGHT * half["known"].to_numpy()
        return blend, risk.loc[half["patient_id"]].to_numpy()

    for number, half in halves.items():  # bench_prior.py's halves, as it stored them
        y = half["he"].to_numpy(dtype=int)
        blend, brain = parts(half)
        paired = halves[number ^ 1]  # 2-fold: the other half of the same repeat holds this half's training patients
        assert not set(paired["patient_id"]) & set(half["patient_id"]) and len(paired) + len(half) == len(table)
        paired_blend, paired_brain = parts(paired)
        offset = rate_offset(anchored(paired_blend, paired_brain, 0.5), paired["he"].mean(), ~np.isnan(paired_brain))
        scores = {"observable": half["observable_p"], "blend": blend, "brain": np.where(np.isnan(brain), blend, brain),
                  **{f"anchored {w:g}": anchored(blend, brain, w) for w in weights},
                  "anchored 0.5 recalibrated": recalibrated(blend, brain, 0.5, offset)}
        for name, value in scores.items():
            aucs.setdefault(name, []).append(float(roc_auc_score(y, value)))
            briers.setdefault(name, []).append(float(brier_score_loss(y, value)))
            offsets.setdefault(name, []).append(float(np.mean(value) - y.mean()))
    entry = {"run": str(args.run), "patients": patients, "n": len(table), "halves": len(aucs["blend"]),
             "prior_weight": DEFAULT_PRIOR_WEIGHT, "brain_notes": notes,
             "brain_missing": int(score.isna().sum()),
             "test_auc": {k: {"mean": round(statistics.mean(v), 4), "sd": round(statistics.stdev(v), 4)}
                          for k, v in aucs.items()},
             "brier": {k: round(statistics.mean(v), 4) for k, v in briers.items()},
             "calibration_in_the_large": {k: round(statistics.mean(v), 4) for k, v in offsets.items()},
             "minus_observable": {k: round(statistics.mean(np.subtract(v, aucs["observable"])), 4)
                                  for k, v in aucs.items() if k != "observable"},
             "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}
    print(args.label, json.dumps(entry["minus_observable"]))
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results[args.label] = entry
    tmp = args.results.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, args.results)


if __name__ == "__main__":
    main()
