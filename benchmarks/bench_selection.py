"""Inner model choice on ~75 patients: repeated inner CV and an elastic-net candidate vs today's search.

The question (issue 16, part 2): does the model chosen by ``build_model``'s inner
grid search on 75 training patients get closer to the observable ceiling when
the choice is scored by a repeated inner CV (``cv_repeats``) and when an
elastic-net logistic regression joins the ``auto`` search (``elastic_net``)?

Data: the feature table of a ``hematoma run`` (``--run``: its ``features.parquet``
and ``split.csv``) and its synthetic cohort (``--cohort``: ``records/<id>.json``
holds the generator's ``true_p`` and ``observable_p``).  The patients of cohort 2
(the split's ``train`` and ``test`` parts; every patient when there is no split
file) are cut into stratified halves ``--halves`` times (2-fold x repeats, seed
0); for each half and each setting a model is fitted on one half (features only:
no truth column reaches a fit) and its test AUC measured on the other, next to
the observable AUC (``observable_p``: the generator's risk without its hidden
term, the best any model of the admission data can do) and the oracle AUC
(``true_p``) *of the same test half*, both only as references.

Results: ``benchmarks/results/selection.json`` (rewritten after each half, so
a stopped run keeps what it measured), with the fit seconds of each model and
the machine's load average (the machine is shared: times are upper bounds).

    python benchmarks/bench_selection.py --run /tmp/run300/out --cohort /tmp/run300/cohort
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "selection.json"

# build_model keyword arguments of each setting; "today" is the search before issue 16.
SETTINGS = {
    "today": {"cv_repeats": 1, "elastic_net": False},
    "repeats3": {"cv_repeats": 3, "elastic_net": False},
    "elastic_net": {"cv_repeats": 1, "elastic_net": True},
    "repeats3+elastic_net": {"cv_repeats": 3, "elastic_net": True},
    "logistic_repeats3": {"classifier": "logistic", "cv_repeats": 3},
}
GROUP_SETS = {"rad+clin": ("rad", "clin"), "rad+clin+sign": ("rad", "clin", "sign"), "sign": ("sign",),
              "sign+clin": ("sign", "clin"), "deep": ("deep",),
              "rad+clin+deep": ("rad", "clin", "deep"), "rad+clin+sign+deep": ("rad", "clin", "sign", "deep")}


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def cohort2(run: Path):
    import pandas as pd

    table = pd.read_parquet(run / "features.parquet")
    table["patient_id"] = table["patient_id"].astype(str)
    split_file = run / "split.csv"
    if not split_file.is_file():
        return table.reset_index(drop=True), "every patient (no split file)"
    split = pd.read_csv(split_file, dtype={"patient_id": str}).set_index("patient_id")["part"]
    kept = table[table["patient_id"].map(split).isin(["train", "test"])].reset_index(drop=True)
    return kept, "cohort 2 (the split's train + test parts)"


def join_deep(table, files: list[Path], seed: int):
    """Add the deep_ columns of generator seed ``seed`` (bench_ct_network_gpu.py's tables; a later file's row wins).

    Those tables come from the same scans (their SHA-256 checked against this run's CTs); joined to the rules'
    feature table they are what ``extract --method both`` gives: the rules' mask, the network's features.
    """
    import pandas as pd

    deep = pd.concat([pd.read_csv(f, dtype={"patient_id": str}) for f in files])
    deep = deep[deep["seed"] == seed].drop_duplicates("patient_id", keep="last").set_index("patient_id")
    columns = [c for c in deep.columns if c.startswith("deep_")]
    missing = sorted(set(table["patient_id"]) - set(deep.index))
    if missing:
        raise SystemExit(f"deep tables lack {len(missing)} patients of seed {seed}, e.g. {missing[:3]}")
    return table.join(deep[columns], on="patient_id")


def summarise(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "n": len(values), "values": [round(v, 4) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="hematoma run output (features.parquet, split.csv).")
    parser.add_argument("--cohort", type=Path, required=True, help="Its synthetic cohort (records/<id>.json).")
    parser.add_argument("--repeats", type=int, default=5, help="2-fold repeats: 2 x this many halves.")
    parser.add_argument("--settings", default="today,repeats3,elastic_net,repeats3+elastic_net",
                        help=f"Comma-separated, from {', '.join(SETTINGS)}.")
    parser.add_argument("--groups", default="rad+clin,rad+clin+sign", help=f"Comma-separated, from {', '.join(GROUP_SETS)}.")
    parser.add_argument("--only", default="", help="setting@groups pairs to run (comma-separated); default: all pairs.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to update (default: %(default)s).")
    parser.add_argument("--deep-table", type=Path, action="append", default=[],
                        help="deep_ columns (bench_ct_network_gpu.py); repeat: a later file's rows win.")
    parser.add_argument("--deep-seed", type=int, default=0, help="Generator seed of this run's cohort in the deep tables.")
    parser.add_argument("--label", default="", help="Name of this measurement in the results file (default: the run folder).")
    args = parser.parse_args()

    import numpy as np
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    from hematoma.model import build_model, fit_model, model_inputs, model_summary

    table, patients = cohort2(args.run)
    if args.deep_table:
        table = join_deep(table, args.deep_table, args.deep_seed)
    truth = {}
    for pid in table["patient_id"]:
        record = json.loads((args.cohort / "records" / f"{pid}.json").read_text())["truth"]
        truth[pid] = (record["true_p"], record["observable_p"])
    y = table["he"].to_numpy(dtype=int)
    pairs = [(s, g) for g in args.groups.split(",") for s in args.settings.split(",")]
    if args.only:
        pairs = [tuple(p.split("@")) for p in args.only.split(",")]
    label = args.label or str(args.run)
    entry = {"run": str(args.run), "cohort": str(args.cohort), "patients": patients, "n": len(table), "n_he": int(y.sum()),
             "halves": f"2-fold x {args.repeats} (RepeatedStratifiedKFold, random_state 0)",
             "train_size": len(table) // 2, "settings": {s: SETTINGS[s] for s, _ in pairs}, "machine_before": machine()}
    aucs: dict[str, list[float]] = {"observable": [], "oracle": []}
    seconds: dict[str, list[float]] = {}
    chosen: dict[str, list[str]] = {}
    folds = RepeatedStratifiedKFold(n_splits=2, n_repeats=args.repeats, random_state=0)
    for half, (train_index, test_index) in enumerate(folds.split(table, y)):
        train, test = table.iloc[train_index], table.iloc[test_index]
        ids = test["patient_id"].tolist()
        aucs["oracle"].append(roc_auc_score(test["he"], [truth[i][0] for i in ids]))
        aucs["observable"].append(roc_auc_score(test["he"], [truth[i][1] for i in ids]))
        for setting, group_set in pairs:
            name = f"{setting}@{group_set}"
            groups = GROUP_SETS[group_set]
            X_train, y_train = model_inputs(train, groups=groups)  # feature columns only: never truth
            X_test, y_test = model_inputs(test, groups=groups)
            started = time.perf_counter()
            model = fit_model(build_model(groups=groups, seed=0, **SETTINGS[setting]), X_train, y_train)
            seconds.setdefault(name, []).append(time.perf_counter() - started)
            aucs.setdefault(name, []).append(float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])))
            summary = model_summary(model)
            chosen.setdefault(name, []).append(f"{summary['classifier']} k={summary['k']} {summary['params'].get('C', '')}"
                                               + (f" l1={summary['params']['l1_ratio']}" if "l1_ratio" in summary["params"] else ""))
            print(f"half {half}: {name} {aucs[name][-1]:.3f} ({seconds[name][-1]:.1f} s, {chosen[name][-1]}); "
                  f"observable {aucs['observable'][-1]:.3f}", flush=True)
        entry["test_auc"] = {name: summarise(values) for name, values in aucs.items()}
        entry["minus_observable"] = {name: round(statistics.mean(np.subtract(values, aucs["observable"][: len(values)])), 4)
                                     for name, values in aucs.items() if name not in ("observable", "oracle")}
        entry["fit_seconds"] = {name: {"median": round(statistics.median(v), 1), "max": round(max(v), 1)}
                                for name, v in seconds.items()}
        entry["chosen"] = chosen
        entry["halves_done"] = half + 1
        entry["machine_after"] = machine()
        # Read again before each write: other measurements may share the file.
        results = json.loads(args.results.read_text()) if args.results.is_file() else {}
        results[label] = entry
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
