"""Other variable sets for the known-predictor model (issue 16), blended with the search's stored predictions.

Each variant is :func:`hematoma.known_predictors.known_predictor_model` with another
``columns`` list, fixed before seeing data from published HE predictors:

* ``known``: today's :data:`~hematoma.known_predictors.KNOWN_PREDICTORS`;
* ``+barras_density``: with the Barras density scale (Barras et al., Stroke 2009:
  density heterogeneity predicted growth independently of volume and time);
* ``+barras``: with both Barras scales (shape only trended in that study);
* ``+hu_cv+barras_density``: with the coefficient of variation of the hematoma's HU
  (Barras et al., AJNR 2013: the strongest quantitative predictor of growth),
  computed from the radiomics first-order variance and mean;
* ``no_sign_flags``: without the seven NCCT sign flags.

Same patients and halves as ``bench_prior.py`` (which must have run first with the
same ``--label``: its ``prior_predictions/<label>.csv.gz`` gives each half's test
patients and the search's predictions for them, so neither the halves nor the search
are made again); for each half each variant is fitted on the other patients and
scored on the test half alone and blended with the search at the ``--weights``.  Results: ``benchmarks/results/known_variants.json`` (per label:
mean test AUC and mean gap to the observable AUC of each variant and weight).

    python benchmarks/bench_known_variants.py --run /tmp/run300/out --label seed0-run300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "known_variants.json"
PREDICTIONS = Path(__file__).resolve().parent / "results" / "prior_predictions"
HU_CV = "hu_cv"  # derived here: sqrt(first-order variance) / first-order mean, in HU


def variants() -> dict[str, tuple[str, ...]]:
    from hematoma.known_predictors import KNOWN_PREDICTORS

    return {
        "known": KNOWN_PREDICTORS,
        "+barras_density": (*KNOWN_PREDICTORS, "sign_barras_density"),
        "+barras": (*KNOWN_PREDICTORS, "sign_barras_shape", "sign_barras_density"),
        "+hu_cv+barras_density": (*KNOWN_PREDICTORS, HU_CV, "sign_barras_density"),
        "no_sign_flags": tuple(c for c in KNOWN_PREDICTORS if not c.startswith("sign_")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--label", required=True, help="bench_prior.py's label for the same run.")
    parser.add_argument("--weights", default="0.75,0.9,1", help="Weights of the known model in the blend.")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from bench_selection import cohort2
    from hematoma.known_predictors import known_predictor_model

    table, _ = cohort2(args.run)
    table[HU_CV] = np.sqrt(table["rad_original_firstorder_Variance"]) / table["rad_original_firstorder_Mean"]
    y = table["he"].to_numpy(dtype=int)
    stored = pd.read_csv(PREDICTIONS / f"{args.label}.csv.gz", dtype={"patient_id": str})
    weights = [float(w) for w in args.weights.split(",")]
    aucs: dict[str, list[float]] = {}
    for half, search in stored.groupby("half"):  # bench_prior.py's halves, as it stored them
        is_test = table["patient_id"].isin(search["patient_id"]).to_numpy()
        train, test = table[~is_test], table[is_test]
        search = search.set_index("patient_id").loc[test["patient_id"]]
        y_test = y[is_test]
        aucs.setdefault("observable", []).append(roc_auc_score(y_test, search["observable_p"]))
        for name, columns in variants().items():
            model = known_predictor_model(seed=0).set_params(estimator__known__columns=columns)
            known = model.fit(train, y[~is_test]).predict_proba(test)[:, 1]
            for w in weights:
                score = (1 - w) * search["search"].to_numpy() + w * known
                aucs.setdefault(f"{name} {w:g}", []).append(float(roc_auc_score(y_test, score)))
        print(f"half {half}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in aucs.items()), flush=True)
    entry = {"run": str(args.run), "halves": len(aucs["observable"]),
             "test_auc": {k: round(statistics.mean(v), 4) for k, v in aucs.items()},
             "minus_observable": {k: round(statistics.mean(np.subtract(v, aucs["observable"])), 4)
                                  for k, v in aucs.items() if k != "observable"}}
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[args.label] = entry
    RESULTS.with_suffix(".tmp").write_text(json.dumps(results, indent=2) + "\n")
    os.replace(RESULTS.with_suffix(".tmp"), RESULTS)


if __name__ == "__main__":
    main()
