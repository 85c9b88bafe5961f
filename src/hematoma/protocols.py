"""Training protocols: which patients each fit may see, and the model bundle they produce.

- ``paper`` (Bo, Xiong et al. 2023): the split file (:func:`hematoma.cohort.load_or_make_split`)
  puts half the patients in cohort 1, which only trains the CNN, and cohort 2 into
  train and test parts (104/100 in the paper).  The model is fitted on cohort 2's
  train part only; the test ids are stored in the bundle for ``hematoma evaluate``.
- ``nested-cv``: repeated stratified nested cross-validation over every labelled
  patient (:func:`hematoma.evaluation.nested_cv`) gives the estimate; the model
  saved is then fitted on all of them.  CNN features are left out: the CNN was
  trained once on cohort 1, and an honest estimate would need it retrained inside
  every outer fold.
- ``external``: fit on every labelled patient of one table, test on every labelled
  patient of another (another hospital's, say); no patient may be in both.

A feature table is ``features.parquet``/``.csv`` written by ``hematoma extract``
(``patient_id``, meta columns, ``rad_``/``clin_``/``cnn_`` feature columns), given
as the file or as its OUT folder; the folder's ``extract.json``,
``cnn_features.json`` and ``split.csv`` tell where the data came from.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .storage import sha1_file

ID = "patient_id"
LABEL = "he"
FEATURE_FILES = ("features.parquet", "features.csv")
PROTOCOLS = ("paper", "nested-cv", "external")
GROUPS = ("rad", "clin", "cnn", "sign", "deep")
PAPER_GROUPS = ("rad", "clin", "cnn")  # the paper's hybrid: `hematoma run`'s model; the signs go in its ablation
CLASSIFIER_NAMES = {"auto": "auto", "svm": "svm", "logistic": "logistic", "elastic_net": "elastic_net",
                    "gbm": "gradient_boosting", "gradient_boosting": "gradient_boosting"}
MAX_INNER_FOLDS = 5


# --------------------------------------------------------------------------- feature tables


@dataclass
class FeatureSource:
    """A feature table and the OUT folder it sits in (with that folder's records, where present)."""

    path: Path
    table: pd.DataFrame

    @property
    def folder(self) -> Path:
        return self.path.parent

    def record(self, name: str) -> dict | None:
        """A JSON record of the folder (``extract.json``, ``cnn_features.json``), or None."""
        try:
            return json.loads((self.folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @property
    def cnn_dir(self) -> Path | None:
        """The CNN whose embeddings are in the table (``cnn_features.json``), when known."""
        record = self.record("cnn_features.json")
        return Path(record["model"]) if record and record.get("model") else None

    def truth_path(self) -> Path | None:
        """``truth.csv`` beside the manifest the table was extracted from (synthetic cohorts only)."""
        record = self.record("extract.json")
        if not record or not record.get("manifest"):
            return None
        path = Path(record["manifest"]).parent / "truth.csv"
        return path if path.is_file() else None


def feature_table_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in FEATURE_FILES:
            if (path / name).is_file():
                return path / name
        raise InputError(path, "holds no features.parquet or features.csv (run `hematoma extract` first)")
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(path, "is not a feature table (.csv or .parquet) nor an output folder of `hematoma extract`")
    return path


def read_features(path: str | Path, label: str | None = None) -> FeatureSource:
    """Read a feature table (the file, or an OUT folder's, Parquet preferred), checked (:func:`check_feature_table`).

    With ``label``, the table must have that column; it is parsed by the manifest's
    label parser (:mod:`hematoma.labels`) into 1.0/0.0/NaN (blank: unlabelled).
    """
    path = feature_table_path(path)
    if path.suffix.lower() == ".csv":
        from .cohort import csv_format_problem

        problem = csv_format_problem(path)  # a workbook, UTF-16 or ;-separated export, named as such
        if problem:
            raise InputError(path, problem)
    try:
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype={ID: str})
    except Exception as error:  # noqa: BLE001 - any reader failure means an unreadable table
        raise InputError(path, f"cannot be read ({str(error).splitlines()[0]})") from None
    table = check_feature_table(table, path, label)
    return FeatureSource(path=path.resolve(), table=table)


MAX_SHOWN = 5  # rows or columns named in one message; a count says how many more


def _listed(items: list[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    more = f" and {total - MAX_SHOWN} more" if total > MAX_SHOWN else ""
    return ", ".join(items[:MAX_SHOWN]) + more


def check_feature_table(table: pd.DataFrame, path: Path, label: str | None = None) -> pd.DataFrame:
    """The table with ids as text, feature columns as floats and ``label`` parsed; else one line naming the rows.

    Refused: no ``patient_id`` column, no rows, blank or repeated ids, feature
    (``rad_``/``clin_``/``cnn_``) cells that are text or infinite (a blank cell is
    allowed: the model imputes it; an all-blank column too, but not a table whose
    every feature cell is blank), and labels that are not labels.  Rows are named
    as in a CSV file (header = row 1) and by patient id.
    """
    from .model import feature_columns

    if ID not in table.columns:
        raise InputError(path, f"has no {ID!r} column")
    if len(table) == 0:
        raise InputError(path, "has no patients (no rows)")
    csv = path.suffix.lower() == ".csv"
    raw_ids = table[ID]
    table = table.copy()
    table[ID] = raw_ids.astype(str).str.strip()
    ids = table[ID].tolist()

    def row(i: int) -> str:
        return f"row {i + 2} ({ID} {ids[i]!r})" if csv else f"{ID} {ids[i]!r}"

    blank = np.flatnonzero((raw_ids.isna() | table[ID].eq("")).to_numpy())
    if len(blank):
        raise InputError(path, f"empty {ID} in {_listed([f'row {i + 2}' if csv else f'row {i + 1}' for i in blank])}")
    repeated = np.flatnonzero(table[ID].duplicated(keep=False).to_numpy())
    if len(repeated):
        rows_of: dict[str, list[int]] = {}
        for i in repeated:
            rows_of.setdefault(ids[i], []).append(i)
        groups = [f"{value!r} ({'rows ' + ', '.join(str(i + 2) for i in rows) if csv else f'{len(rows)} times'})"
                  for value, rows in rows_of.items()]
        raise InputError(path, f"duplicate {ID} {_listed(groups)}")

    features = feature_columns(table)
    text = {}
    for column in features:
        values = table[column]
        if getattr(values.dtype, "kind", "O") in "biuf":
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        bad = np.flatnonzero((values.notna() & numbers.isna()).to_numpy())
        if len(bad):
            text[column] = bad
        else:  # all numbers or all blank (an empty column in Parquet comes back as object)
            table[column] = numbers.astype(float)
    if text:
        shown = [f"{column} ({_listed([f'{row(i)} {table[column].iloc[i]!r}' for i in rows[:2]], len(rows))})"
                 for column, rows in text.items()]
        raise InputError(path, f"feature column(s) hold text, not numbers: {_listed(shown, len(text))}")
    if features:
        values = table[features].to_numpy(dtype=float)
        infinite = np.isinf(values)
        if infinite.any():
            columns = [features[j] for j in np.flatnonzero(infinite.any(axis=0))]
            rows = np.flatnonzero(infinite.any(axis=1))
            raise InputError(path, f"infinite values (inf) in feature column(s) {_listed(columns)}, "
                                   f"in {_listed([row(i) for i in rows])}; blank them (a blank is imputed) or fix them")
        if np.isnan(values).all():
            raise InputError(path, "every feature cell is blank: nothing to learn or predict from")
    if label is not None:
        if label not in table.columns:
            raise InputError(path, f"has no label column {label!r} (the known 0/1 HE outcome)")
        from .labels import parse_labels

        table[label] = parse_labels(table[label], path, label, ids=ids, first_row=2 if csv else None)
    return table


@contextmanager
def naming(path):
    """Give an :class:`InputError` that names no file ``path``: a table's problem must say which table."""
    try:
        yield
    except InputError as error:
        if error.path is not None or path is None:
            raise
        raise InputError(path, error.problem) from None


def parse_groups(groups) -> tuple[str, ...] | None:
    """``"rad,clin"`` or a sequence -> ``("rad", "clin")``; None/empty -> None (every group present)."""
    if groups is None:
        return None
    items = groups.split(",") if isinstance(groups, str) else list(groups)
    items = [g.strip() for g in items if g and g.strip()]
    if not items:
        return None
    unknown = [g for g in items if g not in GROUPS]
    if unknown:
        raise InputError(None, f"--features: unknown feature group(s) {unknown}; choose from {', '.join(GROUPS)}")
    return tuple(dict.fromkeys(items))


def parse_optional_groups(groups) -> tuple[str, ...]:
    """``"cnn"``, ``"cnn,rad"`` or a sequence -> a tuple; ``"none"``, ``""`` or None -> ``()`` (every group kept)."""
    if groups is None or (isinstance(groups, str) and groups.strip().lower() in ("", "none")):
        return ()
    items = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups) if g and g.strip()]
    unknown = [g for g in items if g not in GROUPS]
    if unknown:
        raise InputError(None, f"--optional-groups: unknown feature group(s) {unknown}; choose from {', '.join(GROUPS)} or none")
    return tuple(dict.fromkeys(items))


def groups_in(table: pd.DataFrame, groups: tuple[str, ...] | None, where=None) -> tuple[str, ...]:
    """The groups to use: all present when ``groups`` is None, else those asked (each must be present)."""
    from .model import feature_columns

    present = tuple(g for g in GROUPS if feature_columns(table, (g,)))
    if groups is None:
        if not present:
            raise InputError(where, "has no rad_, clin_, cnn_, sign_ or deep_ feature columns")
        return present
    absent = [g for g in groups if g not in present]
    if absent:
        hint = " (train and embed the CNN first: `hematoma cnn train` / `cnn embed`)" if "cnn" in absent else ""
        raise InputError(where, f"has no {', '.join(g + '_' for g in absent)} feature columns{hint}")
    return groups


def labelled(table: pd.DataFrame, label: str = LABEL, where=None) -> pd.DataFrame:
    """The rows with a label (1/0, yes/no...: :mod:`hematoma.labels`), the label as 1.0/0.0; invalid ones refused."""
    from .labels import parse_labels

    if label not in table.columns:
        raise InputError(where, f"has no label column {label!r}" if where else f"the feature table has no label column {label!r}")
    ids = table[ID].tolist() if ID in table.columns else None
    values = parse_labels(table[label], where, label, ids=ids, first_row=None)
    return table.assign(**{label: values})[values.notna()].reset_index(drop=True)


def inner_folds(y, outer_fraction: float = 1.0, classifier: str = "auto", where=None) -> int:
    """Inner CV folds: 5, fewer when the minority class is small (every fold needs a patient of each class).

    The SVM calibrates its probabilities by a 3-fold CV on the training patients
    (``hematoma.model.SVM_CALIBRATION_FOLDS``), so it needs 3 of each class.
    """
    counts = np.bincount(np.asarray(y, dtype=int), minlength=2)
    minority = int(np.floor(counts.min() * outer_fraction))
    needed = 3 if classifier in ("auto", "svm") else 2
    if minority < needed:
        hint = " (or --classifier logistic / gbm, which need 2)" if needed == 3 else ""
        raise InputError(where, f"too few patients of one class to fit a model: {counts[0]} without HE and {counts[1]} "
                               f"with HE; the {classifier} classifier needs at least {needed} of each{hint}")
    return int(min(MAX_INNER_FOLDS, minority))


def training_hash(table: pd.DataFrame, groups, label: str = LABEL) -> str:
    """Hash of what a fit saw: ids, labels and the feature columns of ``groups``.

    Columns by name and rows by id, so that the same values in another column or row order (a table
    re-saved by a spreadsheet) are not taken for re-extracted features.
    """
    from .model import feature_columns
    from .model_bundle import table_hash

    columns = [ID, label, *sorted(feature_columns(table, groups))]
    return table_hash(table[columns].sort_values(ID, kind="stable").reset_index(drop=True))


# --------------------------------------------------------------------------- settings and results


@dataclass
class TrainSettings:
    """How to fit: protocol, label, feature groups, classifier family and search size, seed."""

    protocol: str = "paper"
    label: str = LABEL
    groups: tuple[str, ...] | None = None  # None: every group the table has
    classifier: str = "auto"
    grid: str = "default"
    scaling: str = "standard"
    selection_scope: str = "group"
    optional_groups: tuple[str, ...] = ()  # groups the search may drop (see build_model)
    threshold: str = "fixed"
    seed: int = 0
    outer_splits: int = 5  # nested-cv
    repeats: int = 3  # nested-cv
    inner_repeats: int | None = None  # repetitions of the inner model-choice CV; None: build_model's default
    # "known": average with the known-predictor model (build_model's prior); "none": the search alone; "auto" (None):
    # known where the training table holds one of its predictors, else none.
    prior: str | None = None
    prior_weight: float | None = None  # the known model's weight in the average; None: build_model's default
    # "brain": average with the BRAIN score's published risk (build_model's anchor); "none"; "auto" (None): brain where
    # the training table holds the score's required columns, else none.
    anchor: str | None = None
    anchor_weight: float | None = None  # the score's weight; None: build_model's default

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise InputError(None, f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        if self.classifier not in CLASSIFIER_NAMES:
            raise InputError(None, f"unknown classifier {self.classifier!r}; choose from auto, svm, logistic, elastic_net, gbm")
        from .model import (ANCHORS, DEFAULT_ANCHOR_WEIGHT, DEFAULT_CV_REPEATS, DEFAULT_PRIOR_WEIGHT, GRIDS, PRIORS,
                            SCALERS, SELECTION_SCOPES, checked_prior_weight)

        self.prior = DEFAULT_TRAINING_PRIOR if self.prior is None else self.prior
        if self.prior not in (*PRIORS, "auto"):
            raise InputError(None, f"unknown prior {self.prior!r}; choose from auto, {', '.join(PRIORS)}")
        # The weight itself, not None, so that a run's fingerprint changes when the default does.
        weight = DEFAULT_PRIOR_WEIGHT if self.prior_weight is None else self.prior_weight
        self.prior_weight = checked_prior_weight(weight, "--prior-weight")
        self.anchor = DEFAULT_TRAINING_ANCHOR if self.anchor is None else self.anchor
        if self.anchor not in (*ANCHORS, "auto"):
            raise InputError(None, f"unknown anchor {self.anchor!r}; choose from auto, {', '.join(ANCHORS)}")
        weight = DEFAULT_ANCHOR_WEIGHT if self.anchor_weight is None else self.anchor_weight
        self.anchor_weight = checked_prior_weight(weight, "--anchor-weight")

        self.inner_repeats = DEFAULT_CV_REPEATS if self.inner_repeats is None else self.inner_repeats
        if isinstance(self.inner_repeats, bool) or not isinstance(self.inner_repeats, int) or self.inner_repeats < 1:
            raise InputError(None, f"inner repeats must be a whole number >= 1; got {self.inner_repeats!r}")

        if self.grid not in GRIDS:
            raise InputError(None, f"unknown grid {self.grid!r}; choose from {', '.join(GRIDS)}")
        if self.selection_scope not in SELECTION_SCOPES:
            raise InputError(None, f"unknown selection scope {self.selection_scope!r}; choose from {', '.join(SELECTION_SCOPES)}")
        if self.scaling not in SCALERS:
            raise InputError(None, f"unknown scaling {self.scaling!r}; choose from {', '.join(SCALERS)}")
        self.groups = parse_groups(self.groups)
        self.optional_groups = parse_optional_groups(self.optional_groups)

    def model_kwargs(self, groups, cv: int) -> dict:
        return {"classifier": CLASSIFIER_NAMES[self.classifier], "groups": tuple(groups), "grid": self.grid,
                "scaling": self.scaling, "selection_scope": self.selection_scope,
                "optional_groups": self.optional_groups, "threshold": self.threshold, "seed": self.seed, "cv": cv,
                "cv_repeats": self.inner_repeats, "prior": "none" if self.prior == "auto" else self.prior,
                "prior_weight": self.prior_weight, "anchor": "none" if self.anchor == "auto" else self.anchor,
                "anchor_weight": self.anchor_weight}


# train/run's --prior when not given (see TrainSettings.prior); measured by benchmarks/bench_prior.py.
DEFAULT_TRAINING_PRIOR = "auto"
# train/run's --anchor when not given (see TrainSettings.anchor); measured by benchmarks/bench_anchor.py.
DEFAULT_TRAINING_ANCHOR = "auto"


@dataclass
class TrainResult:
    bundle: Path
    protocol: str
    groups: tuple[str, ...]
    train_ids: list[str]
    test_ids: list[str]
    summary: dict
    evaluation: dict | None
    notes: list[str] = field(default_factory=list)


def fit_on(train_table: pd.DataFrame, settings: TrainSettings, groups, where=None):
    """Fit ``build_model`` on the labelled ``train_table`` (:func:`hematoma.model.fit_model`: one thread, cached steps)."""
    from .model import build_model, fit_model, model_inputs

    X, y = model_inputs(train_table, label=settings.label, groups=groups)
    kwargs = model_kwargs_for(train_table, settings, groups, inner_folds(y, classifier=settings.classifier, where=where))
    return fit_model(build_model(**kwargs), X, y)


def model_kwargs_for(train_table: pd.DataFrame, settings: TrainSettings, groups, cv: int) -> dict:
    """``build_model``'s arguments for this table: ``auto`` prior and anchor resolved from the columns the groups hold,
    and a prior or anchor asked for that the table cannot give refused in one line (before any fit)."""
    from .brain_score import BRAIN_REQUIRED
    from .known_predictors import KNOWN_PREDICTORS
    from .model import model_inputs

    X, _ = model_inputs(train_table, label=settings.label, groups=groups)
    has_known = any(c in X.columns for c in KNOWN_PREDICTORS)
    if settings.prior == "known" and not has_known:
        raise InputError(None, f"--prior known needs at least one known predictor ({', '.join(KNOWN_PREDICTORS[:3])}, "
                         f"...) among the feature groups {', '.join(groups)}; add clin or sign, or use --prior none")
    kwargs = settings.model_kwargs(groups, cv)
    if settings.prior == "auto" and has_known:
        kwargs["prior"] = "known"
    lacking = [c for c in BRAIN_REQUIRED if c not in X.columns]
    if settings.anchor == "brain" and lacking:
        raise InputError(None, f"--anchor brain needs the column(s) {', '.join(lacking)} among the feature groups "
                         f"{', '.join(groups)}; add clin, or use --anchor none")
    if settings.anchor == "auto" and not lacking:
        kwargs["anchor"] = "brain"
    return kwargs


def held_out_summary(estimator, test_table: pd.DataFrame, label: str = LABEL) -> dict:
    """AUC (DeLong 95 % CI), AP and counts of a fitted model on held-out patients."""
    from sklearn.metrics import average_precision_score

    from .evaluation.metrics import auc_ci
    from .model import model_inputs

    X, y = model_inputs(test_table, label=label)
    if y.nunique() < 2:
        return {"n": int(len(y)), "n_he": int(y.sum()), "note": "the held-out patients have one class only: no AUC"}
    probability = estimator.predict_proba(X)[:, 1]
    interval = auc_ci(y, probability)
    return {"n": int(len(y)), "n_he": int(y.sum()), "auc": interval["auc"], "auc_lower": interval["lower"],
            "auc_upper": interval["upper"], "ci": "DeLong 95%", "average_precision": float(average_precision_score(y, probability))}


def cnn_patients(source: FeatureSource) -> set[str]:
    """Patients the table's CNN was trained or validated on (its ``ids.csv``), when known."""
    cnn_dir = source.cnn_dir
    if cnn_dir is None or not (cnn_dir / "ids.csv").is_file():
        return set()
    return set(pd.read_csv(cnn_dir / "ids.csv", dtype={ID: str})[ID].astype(str))


def _provenance(source: FeatureSource, groups) -> dict:
    extract = source.record("extract.json") or {}
    info = {"features": str(source.path), "features_sha1": sha1_file(source.path),
            "extract": extract.get("settings"), "extract_versions": extract.get("versions"), "cnn_model": None}
    if "cnn" in groups and source.cnn_dir is not None:
        cnn_dir = source.cnn_dir
        info["cnn_model"] = str(cnn_dir)
        settings_path = cnn_dir / "settings.json"
        if settings_path.is_file():
            cnn = json.loads(settings_path.read_text(encoding="utf-8"))
            info["cnn"] = {k: cnn.get(k) for k in ("preset", "weights_requested", "weights_source", "seed", "epochs_run",
                                                    "best_epoch", "best_validation_accuracy", "model_sha1", "data_sha1",
                                                    "n_train_patients", "n_validation_patients", "versions")}
    return info


# --------------------------------------------------------------------------- the protocols


def train(
    features: str | Path,
    out: str | Path,
    settings: TrainSettings | None = None,
    *,
    split: str | Path | None = None,
    test: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    extra_settings: dict | None = None,
) -> TrainResult:
    """Fit a model on ``features`` by ``settings.protocol`` and save it as a bundle at ``out``.

    ``split``: the split file of the ``paper`` protocol (default: ``split.csv``
    beside the feature table, made there when absent).  ``test``: the other
    table of the ``external`` protocol.  ``extra_settings`` are stored in the
    bundle's settings as they are (``hematoma run`` records its fingerprint there).
    """
    from .model_bundle import save_model
    from .storage import refuse_overwrite

    settings = settings or TrainSettings()
    if test is not None and settings.protocol != "external":
        raise InputError(None, f"--test is for the external protocol, not {settings.protocol!r}")
    if settings.protocol == "external" and test is None:
        raise InputError(None, "the external protocol needs the other table: --test FEATURES")
    refuse_overwrite(out, overwrite)  # before minutes of fitting
    source = read_features(features, label=settings.label)
    run = {"paper": _paper, "nested-cv": _nested_cv, "external": _external}[settings.protocol]
    with naming(source.path):
        fitted = run(source, settings, split=split, test=test, progress=progress)
    record = {
        **asdict(settings), "groups": list(fitted["groups"]), "protocol": settings.protocol,
        "inner_cv": fitted["cv"], **_provenance(source, fitted["groups"]),
        "split": fitted.get("split"), "split_sha1": sha1_file(fitted["split"]) if fitted.get("split") else None,
        "train_ids": fitted["train_ids"], "test_ids": fitted["test_ids"],
        "test_features": fitted.get("test_features"), "notes": fitted["notes"], **(extra_settings or {}),
    }
    save_model(fitted["estimator"], out, settings=record, train_table_hash=fitted["hash"],
               evaluation=fitted["evaluation"], overwrite=overwrite)
    from .model import model_summary

    return TrainResult(bundle=Path(out), protocol=settings.protocol, groups=tuple(fitted["groups"]),
                       train_ids=fitted["train_ids"], test_ids=fitted["test_ids"],
                       summary=model_summary(fitted["estimator"]), evaluation=fitted["evaluation"], notes=fitted["notes"])


def paper_parts(source: FeatureSource, split_path: Path, seed: int, label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split of the table's patients (made and written on first use), and the table with a ``part`` column."""
    from .cohort import load_or_make_split

    split = load_or_make_split(split_path, source.table, seed=seed, label=label)
    parts = source.table.merge(split[[ID, "part"]].astype({ID: str}), on=ID, how="left", validate="one_to_one")
    return split, parts


def _paper(source: FeatureSource, settings: TrainSettings, split=None, progress=True, **_) -> dict:
    split_path = Path(split) if split is not None else source.folder / "split.csv"
    groups = groups_in(source.table, settings.groups, source.path)
    _, parts = paper_parts(source, split_path, settings.seed, settings.label)
    notes = []
    train_all, test_all = parts[parts["part"] == "train"], parts[parts["part"] == "test"]
    train_table, test_table = labelled(train_all, settings.label), labelled(test_all, settings.label)
    for name, everyone, kept in (("train", train_all, train_table), ("test", test_all, test_table)):
        if len(kept) < len(everyone):
            notes.append(f"{len(everyone) - len(kept)} {name} patient(s) without an HE label left out")
    if "cnn" in groups:
        overlap = cnn_patients(source) & (set(train_table[ID]) | set(test_table[ID]))
        if overlap:
            raise InputError(split_path, f"{len(overlap)} patient(s) of cohort 2 (e.g. {sorted(overlap)[0]!r}) were used "
                                         "to train the CNN: use the split the CNN was trained with")
    estimator = fit_on(train_table, settings, groups, where=source.path)
    evaluation = {"protocol": "paper", "test": held_out_summary(estimator, test_table, settings.label)}
    return {"estimator": estimator, "groups": groups, "cv": estimator_cv(estimator), "split": str(split_path.resolve()),
            "train_ids": train_table[ID].tolist(), "test_ids": test_table[ID].tolist(),
            "hash": training_hash(train_table, groups, settings.label), "evaluation": evaluation, "notes": notes}


def _nested_cv(source: FeatureSource, settings: TrainSettings, progress=True, **_) -> dict:
    from .evaluation import nested_cv
    from .evaluation.validation import CNN_NOTE

    groups = groups_in(source.table, settings.groups, source.path)
    notes = []
    if "cnn" in groups:
        notes.append(CNN_NOTE)
        groups = tuple(g for g in groups if g != "cnn")
        if not groups:
            raise InputError(source.path, "nested cross-validation cannot use CNN features alone (" + CNN_NOTE + ")")
    table = labelled(source.table, settings.label)
    if len(table) < len(source.table):
        notes.append(f"{len(source.table) - len(table)} patient(s) without an HE label left out")
    table = table.drop(columns=[c for c in table.columns if c.startswith("cnn_")])
    y = table[settings.label].astype(int)
    outer = int(min(settings.outer_splits, np.bincount(y, minlength=2).min()))
    if outer < 2:
        raise InputError(source.path, "nested cross-validation needs at least 2 patients of each class")
    # The model the bundle will hold, prior and anchor resolved as for the final fit: the estimate is of that model.
    kwargs = model_kwargs_for(table, settings, groups, inner_folds(y, (outer - 1) / outer, settings.classifier,
                                                                   source.path))
    estimate = nested_cv(table, kwargs, outer_splits=outer, repeats=settings.repeats, seed=settings.seed,
                         label=settings.label, progress=progress)
    notes.extend(n for n in estimate.get("notes", []) if n not in notes)
    estimator = fit_on(table, settings, groups, where=source.path)
    return {"estimator": estimator, "groups": groups, "cv": estimator_cv(estimator), "train_ids": table[ID].tolist(),
            "test_ids": [], "hash": training_hash(table, groups, settings.label),
            "evaluation": {"protocol": "nested-cv", "nested_cv": estimate}, "notes": notes}


def _external(source: FeatureSource, settings: TrainSettings, test=None, progress=True, **_) -> dict:
    from .model_bundle import check_columns

    other = read_features(test, label=settings.label)
    groups = groups_in(source.table, settings.groups, source.path)
    notes = []
    train_table = labelled(source.table, settings.label)
    if "cnn" in groups:
        # Patients the CNN learnt from have features fitted to their labels: keep them out of the model's fit too.
        trained = cnn_patients(source)
        if trained & set(train_table[ID]):
            notes.append(f"{len(trained & set(train_table[ID]))} patient(s) the CNN was trained on left out of the fit")
            train_table = train_table[~train_table[ID].isin(trained)].reset_index(drop=True)
    test_table = labelled(other.table, settings.label)
    shared = set(train_table[ID]) & set(test_table[ID])
    if shared:
        raise InputError(other.path, f"{len(shared)} patient id(s) (e.g. {sorted(shared)[0]!r}) are in both tables: "
                                     "an external test needs other patients")
    from .model import feature_columns

    check_columns(feature_columns(train_table, groups), test_table.columns, other.path)
    estimator = fit_on(train_table, settings, groups, where=source.path)
    with naming(other.path):
        summary = held_out_summary(estimator, test_table, settings.label)
    evaluation = {"protocol": "external", "test": summary,
                  "test_features": str(other.path)}
    return {"estimator": estimator, "groups": groups, "cv": estimator_cv(estimator), "train_ids": train_table[ID].tolist(),
            "test_ids": test_table[ID].tolist(), "test_features": str(other.path),
            "hash": training_hash(train_table, groups, settings.label), "evaluation": evaluation, "notes": notes}


def estimator_cv(estimator) -> int | None:
    """The inner CV folds (per repetition) the fitted search used."""
    from .model import cv_layout, unblended

    search = unblended(getattr(estimator, "estimator_", estimator))  # TunedThresholdClassifierCV wraps the search
    cv = getattr(search, "cv", None)
    return cv_layout(cv)[0] if cv is not None else None
