"""The known-predictor prior (issue 16): the feature search, the known-predictor logistic, and their blends.

Data as ``bench_selection.py``: the feature table of a ``hematoma run`` (``--run``)
and its synthetic cohort (``--cohort``, for the generator's ``observable_p`` and
``true_p``: references only, never features).  The split's cohort-2 patients are
cut into stratified halves (2-fold x ``--repeats``, random_state 0).  On each
half, fitted on the training half only:

* ``search``: ``build_model(groups=rad,clin,sign)`` as ``train --prior none`` fits it;
* ``known``: :func:`hematoma.known_predictors.known_predictor_model`;
* ``blend w``: ``(1 - w) * search + w * known`` for each ``--weights`` w
  (what ``build_model(prior="known", prior_weight=w)`` predicts: the same two fits);

and the test AUC of each on the other half, next to the observable and oracle AUCs
of the same test half.  Results: ``benchmarks/results/prior.json`` (rewritten after
each half; ``--label`` names the entry), and each half's test predictions of the
search and the known model in ``benchmarks/results/prior_predictions/<label>.csv.gz``
(so that another blend weight can be scored without refitting).

    python benchmarks/bench_prior.py --run /tmp/run300/out --cohort /tmp/run300/cohort --label seed0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "prior.json"
PREDICTIONS = "prior_predictions"  # folder beside the results file
GROUPS = ("rad", "clin", "sign")


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5, help="2-fold repeats: 2 x this many halves.")
    parser.add_argument("--weights", default="0.25,0.5,0.75,0.9", help="Blend weights of the known model.")
    parser.add_argument("--label", required=True)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    from bench_selection import cohort2
    from hematoma.known_predictors import known_predictor_model
    from hematoma.model import build_model, fit_model, model_inputs

    table, patients = cohort2(args.run)
    truth = {pid: json.loads((args.cohort / "records" / f"{pid}.json").read_text())["truth"] for pid in table["patient_id"]}
    y = table["he"].to_numpy(dtype=int)
    weights = [float(w) for w in args.weights.split(",")]
    entry = {"run": str(args.run), "cohort": str(args.cohort), "patients": patients, "n": len(table), "n_he": int(y.sum()),
             "halves": f"2-fold x {args.repeats} (RepeatedStratifiedKFold, random_state 0)", "groups": list(GROUPS),
             "machine_before": machine()}
    aucs: dict[str, list[float]] = {}
    predictions = []
    folds = RepeatedStratifiedKFold(n_splits=2, n_repeats=args.repeats, random_state=0)
    for half, (train_index, test_index) in enumerate(folds.split(table, y)):
        train, test = table.iloc[train_index], table.iloc[test_index]
        ids = test["patient_id"].tolist()
        X_train, y_train = model_inputs(train, groups=GROUPS)  # feature columns only: never truth
        X_test, y_test = model_inputs(test, groups=GROUPS)
        started = time.perf_counter()
        search = fit_model(build_model(groups=GROUPS, seed=0), X_train, y_train).predict_proba(X_test)[:, 1]
        known = fit_model(known_predictor_model(seed=0), X_train, y_train).predict_proba(X_test)[:, 1]
        scores = {"search": search, "known": known, **{f"blend {w:g}": (1 - w) * search + w * known for w in weights},
                  "observable": [truth[i]["observable_p"] for i in ids], "oracle": [truth[i]["true_p"] for i in ids]}
        for name, score in scores.items():
            aucs.setdefault(name, []).append(float(roc_auc_score(y_test, score)))
        predictions += [{"half": half, "patient_id": i, "he": int(label), "search": round(float(p), 6),
                         "known": round(float(k), 6), "observable_p": truth[i]["observable_p"], "true_p": truth[i]["true_p"]}
                        for i, label, p, k in zip(ids, y_test, search, known)]
        print(f"half {half} ({time.perf_counter() - started:.0f} s): "
              + ", ".join(f"{name} {values[-1]:.3f}" for name, values in aucs.items()), flush=True)
        entry["test_auc"] = {name: {"mean": round(statistics.mean(v), 4),
                                    "sd": round(statistics.stdev(v), 4) if len(v) > 1 else None,
                                    "values": [round(a, 4) for a in v]} for name, v in aucs.items()}
        entry["minus_observable"] = {name: round(statistics.mean(np.subtract(v, aucs["observable"])), 4)
                                     for name, v in aucs.items() if name not in ("observable", "oracle")}
        entry["halves_done"] = half + 1
        entry["machine_after"] = machine()
        results = json.loads(args.results.read_text()) if args.results.is_file() else {}
        results[args.label] = entry
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2) + "\n")
        folder = args.results.parent / PREDICTIONS
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(predictions).to_csv(folder / f"{args.label}.csv.gz.tmp", index=False, compression="gzip")
        os.replace(folder / f"{args.label}.csv.gz.tmp", folder / f"{args.label}.csv.gz")


if __name__ == "__main__":
    main()
