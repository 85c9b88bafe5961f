"""The prediction model: one scikit-learn Pipeline searched by GridSearchCV.

Every learned step (imputation, scaling, feature selection, classifier) sits
inside one Pipeline, and the Pipeline inside ``GridSearchCV``: each
cross-validation fold fits all of them on its training part only, which is
what the authors' public code got wrong (scaling before the split).

Pipeline steps::

    groups  FeatureGroupSelector   keep rad_/clin_/cnn_/sign_/deep_ columns of the chosen groups;
                                   refuse meta columns (follow-up volume would leak the label)
    impute  SimpleImputer(median, add_indicator=True, keep_empty_features=True)
                                   missing values are common in clinical tables; an all-NaN
                                   column becomes a constant 0 instead of vanishing (so the
                                   column count does not depend on the fold)
    scale   StandardScaler (the paper's; default) or QuantileNormalizer (``scaling="quantile"``):
            each column mapped through its training quantiles to a standard normal,
            so skewed variables (volume, D-dimer, onset time: log-normal in ICH
            cohorts) enter a linear model on a log-like scale and an outlier cannot
            dominate.  Not the default: on the synthetic cohort it did not do better
            (repeated CV on 150 patients, rad+clin: 0.61 vs 0.65 AUC, within noise)
    select  CappedSelectKBest      SelectKBest whose k adapts to the data (see its docstring);
                                   with several feature groups, the search may also drop an
                                   *optional* group altogether (``optional_groups``; none by default)
    clf     SVM (the paper), penalised logistic regression or gradient boosting

``classifier="auto"`` searches all three families in one GridSearchCV (a list of
grids that swap the ``clf`` step) and keeps the best by inner cross-validated
ROC AUC: on small clinical tables a plain logistic regression often beats the SVM.
An elastic-net logistic regression (L1 + L2 penalty, ``saga``; ``elastic_net=True``
or ``classifier="elastic_net"``) may join that search: the L1 part drops columns
within the selected ones.  Not the default (no gain measured; see ``DEFAULT_ELASTIC_NET``).

The inner model choice (family, k, C) is scored by ``cv_repeats`` repetitions of
``cv``-fold stratified CV (``RepeatedStratifiedKFold``; ``cv_repeats=1`` is one
shuffled ``StratifiedKFold``): on ~75 patients the mean AUC over one 5-fold
split depends on how the patients fell into the folds, so the choice depends on
the shuffle.  Default 3 repetitions (``DEFAULT_CV_REPEATS``, measured: fewer bad choices).

SVM probabilities: scikit-learn 1.9 deprecates ``SVC(probability=True)``; the
winning SVM is wrapped in ``CalibratedClassifierCV(SVC(), method="sigmoid",
ensemble=False)`` as its deprecation message recommends (see :class:`ModelSearch`).

``prior="known"`` averages the search's probability with a small logistic
model of the published HE predictors (:mod:`hematoma.known_predictors`,
:mod:`hematoma.model_blend`): steadier on ~75 training patients.
``anchor="brain"`` then averages that with the BRAIN score's published risk
(:mod:`hematoma.model_anchor`): weights no small cohort has to estimate.

Fit with :func:`fit_model`: single-threaded BLAS/OpenMP (faster on ~100-patient
tables) and a :class:`FitCache` that fits each fold's imputation and scaling once
for all the grid's candidates instead of once per candidate.
"""

from __future__ import annotations

import hashlib
import numbers
import warnings
from collections import OrderedDict

import numpy as np
import pandas as pd
from scipy import special
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_selection import SelectorMixin, f_classif, mutual_info_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    ParameterGrid,
    RepeatedStratifiedKFold,
    StratifiedKFold,
    TunedThresholdClassifierCV,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import QuantileTransformer, StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from .brain_score import BRAIN_REQUIRED
from .errors import InputError
from .known_predictors import known_predictor_model
from .model_anchor import ANCHOR_SCORES, ScoreAnchor
from .model_blend import PriorBlend

FEATURE_PREFIXES = {"rad": "rad_", "clin": "clin_", "cnn": "cnn_", "sign": "sign_", "deep": "deep_"}
# Feature sets for the ablation table: "radiomics+clinical" is the paper's
# Model 2, "hybrid" (all three sources) its final model; the NCCT signs
# (hematoma.features.signs) alone, with the clinical variables, and added to Model 2;
# the CT-pretrained network's features (deep_) alone and added to Model 2, beside the paper's Inception (cnn_).
# A set whose groups a table lacks is left out of the table.
FEATURE_SETS = {
    "radiomics": ("rad",),
    "clinical": ("clin",),
    "cnn": ("cnn",),
    "signs": ("sign",),
    "radiomics+clinical": ("rad", "clin"),
    "signs+clinical": ("sign", "clin"),
    "radiomics+clinical+signs": ("rad", "clin", "sign"),
    "hybrid": ("rad", "clin", "cnn"),
    "ct-network": ("deep",),  # BLAST-CT's activations (hematoma.features.ct_network), a CT-pretrained deep branch
    "radiomics+clinical+ct-network": ("rad", "clin", "deep"),
}
CLASSIFIERS = ("auto", "svm", "logistic", "elastic_net", "gradient_boosting")
SVM_CALIBRATION_FOLDS = 3
# k values beyond the column count are capped at fit time, so one grid serves
# a 15-column clinical table and a 6000-column CNN table alike.
DEFAULT_K_GRID = (5, 10, 20, 50, "all")
# Hyper-parameter grids by size.  "default" keeps a 100-200 patient fit to
# seconds; "small" is for tests and quick looks; "wide" for a patient user.
# gamma="scale" is 1 / (n_selected * variance) = 1 / k after scaling.
# The elastic net's C starts higher than the L2 logistic's: at C = 0.01 its L1
# part sets every coefficient to 0 on ~75 patients (a constant score, AUC 0.5).
GRIDS = {
    "small": {"svm_C": (1.0,), "svm_gamma": ("scale",), "logistic_C": (1.0,),
              "elastic_net_C": (1.0,), "elastic_net_l1_ratio": (0.5,)},
    "default": {"svm_C": (0.1, 1.0, 10.0), "svm_gamma": ("scale",), "logistic_C": (0.01, 0.1, 1.0),
                "elastic_net_C": (0.1, 1.0), "elastic_net_l1_ratio": (0.5, 0.9)},
    "wide": {
        "svm_C": (0.01, 0.1, 1.0, 10.0, 100.0),
        "svm_gamma": ("scale", 0.001, 0.01, 0.1),
        "logistic_C": (0.001, 0.01, 0.1, 1.0, 10.0),
        "elastic_net_C": (0.05, 0.1, 0.5, 1.0, 5.0),
        "elastic_net_l1_ratio": (0.2, 0.5, 0.9),
    },
}
# Measured by benchmarks/bench_selection.py (10 stratified halves of 150 synthetic
# patients, 75 train / 75 test, generator seeds 0 and 1; results/selection.json):
# 3 repetitions of the inner 5-fold CV vs 1, test AUC change +0.023 and +0.034
# (radiomics + clinical), -0.003 and +0.001 (with the NCCT signs); the SD over
# the halves fell in all four (worst half 0.38 -> 0.56 on seed 0) at ~3x the
# fit time.  The elastic net changed the AUC by +0.021 and +0.002 and is
# rarely chosen, at ~1.7x the fit time: an option, not the default.
DEFAULT_CV_REPEATS = 3  # see build_model's cv_repeats
DEFAULT_ELASTIC_NET = False  # see build_model's elastic_net
PRIORS = ("none", "known")
DEFAULT_PRIOR = "none"  # see build_model's prior; train and run default to it where the table allows (protocols)
# Measured by benchmarks/bench_prior.py (results/prior.json and prior_predictions/; 10 stratified halves of 150
# patients, 75 / 75, radiomics + clinical + signs): the blend's mean gap to the observable AUC over generator seeds
# 0-4 for weights 0 / 0.5 / 0.75 / 0.9 / 1 (1: the known-predictor model alone) was 0.094 / 0.066 / 0.053 / 0.047 /
# 0.044, the worst seed's 0.163 / 0.119 / 0.094 / 0.080 / 0.070.  0.9 replaced 0.75 (chosen on seeds 0-1) by a
# rule written before seeds 5-6 were scored (switch only if both the mean and the worst gap are smaller); seeds 5-6
# confirmed it (gap 0.055 -> 0.045 and 0.088 -> 0.080).  The search still moves the ranking at 0.9: its
# probabilities spread 1.5-3x wider than the shrunken known model's.  Not 1: the search would have no say, and the
# known model's scales are the generator's own logit terms, so synthetic halves favour it by construction.
DEFAULT_PRIOR_WEIGHT = 0.9
ANCHORS = ("none", *ANCHOR_SCORES)
DEFAULT_ANCHOR = "none"  # see build_model's anchor; train and run's default: protocols.DEFAULT_TRAINING_ANCHOR
# The published score's weight: 0.5 (equal say), fixed from seeds 0-6 (only 0.25 and 0.5 looked at) before generator
# seeds 7-8 were drawn, and made train/run's default by a rule written down first (benchmarks/bench_anchor.py: a
# smaller mean gap to the observable AUC over seeds 7-8 than the blend alone, and no seed worse by > 0.02).  Measured
# (results/anchor.json, 10 halves of 150 patients, 75 / 75): gap 0.053 -> 0.061 (seed 7), 0.051 -> 0.026 (seed 8);
# over seeds 0-8 mean 0.052 -> 0.042, within 0.05 on 4 -> 7 of 9.  BRAIN alone: mean gap 0.076.
DEFAULT_ANCHOR_WEIGHT = 0.5


# --------------------------------------------------------------------------- columns


def _names(table: pd.DataFrame) -> list[str]:
    # One conversion to a list: iterating a pandas 3 (Arrow) string Index name by
    # name is slow on a 6000-column CNN table.
    return [str(c) for c in table.columns.tolist()]


def feature_columns(table: pd.DataFrame, groups=tuple(FEATURE_PREFIXES)) -> list[str]:
    """The table's feature columns of ``groups`` (in table order); meta columns never."""
    prefixes = tuple(FEATURE_PREFIXES[g] for g in _check_groups(groups))
    return [c for c in _names(table) if c.startswith(prefixes)]


def model_inputs(table: pd.DataFrame, label: str | None = "he", groups=tuple(FEATURE_PREFIXES)):
    """``(X, y)`` from a feature table: X = feature columns indexed by patient_id; y = label (None without one).

    X keeps the patient ids as its index so that tests (and users) can check which
    patients reached which fit.
    """
    X = table[feature_columns(table, groups)]
    if "patient_id" in table.columns:
        X = X.set_axis(pd.Index(table["patient_id"].astype(str), name="patient_id"), axis=0)
    if label is None or label not in table.columns:
        return X, None
    from .labels import parse_labels

    # The manifest's label parser (yes/no too); every patient a fit or a test sees needs a label.
    y = parse_labels(table[label], column=label, ids=X.index, allow_missing=False, first_row=None)
    return X, y.astype(int).set_axis(X.index)


def _check_groups(groups) -> tuple[str, ...]:
    groups = (groups,) if isinstance(groups, str) else tuple(groups)
    unknown = [g for g in groups if g not in FEATURE_PREFIXES]
    if unknown or not groups:
        raise InputError(None, f"unknown feature groups {unknown or groups}; choose from {sorted(FEATURE_PREFIXES)}")
    return groups


class FeatureGroupSelector(TransformerMixin, BaseEstimator):
    """Keep the prefixed columns of the chosen feature groups; refuse meta columns.

    Input must be a DataFrame (the prefixes are the only way to tell a feature from
    meta data), so scikit-learn's generic ``check_estimator`` (numpy input) does not
    apply; tests cover the contract directly.  Groups absent from the table are
    allowed (``groups_present_`` says which were found) but at least one column
    must remain.  At transform time the columns seen in fit must all be present;
    extra feature columns are ignored.
    """

    def __init__(self, groups=("rad", "clin", "cnn")):
        self.groups = groups

    def fit(self, X, y=None):
        X = self._check_frame(X)
        groups = _check_groups(self.groups)
        names = _names(X)
        meta = [c for c in names if not c.startswith(tuple(FEATURE_PREFIXES.values()))]
        if meta:
            raise InputError(
                None,
                f"the model takes only rad_/clin_/cnn_/sign_/deep_ feature columns; got meta columns {meta[:10]}"
                + (" ..." if len(meta) > 10 else ""),
            )
        chosen = tuple(FEATURE_PREFIXES[g] for g in groups)
        self.columns_ = [c for c in names if c.startswith(chosen)]
        if not self.columns_:
            raise InputError(None, f"no feature columns of groups {list(groups)} in the table")
        found = {c.split("_", 1)[0] for c in self.columns_}
        self.groups_present_ = tuple(g for g in groups if g in found)
        self._numeric(self._select(X, names))
        self.n_features_in_ = len(names)
        return self

    def transform(self, X):
        check_is_fitted(self, "columns_")
        X = self._check_frame(X)
        names = _names(X)
        available = set(names)
        missing = [c for c in self.columns_ if c not in available]
        if missing:
            raise InputError(None, f"the table lacks {len(missing)} feature column(s) the model needs: {missing[:20]}")
        return self._numeric(self._select(X, names))

    def _select(self, X: pd.DataFrame, names: list[str]) -> pd.DataFrame:
        return X if names == self.columns_ else X[self.columns_]

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "columns_")
        return np.asarray(self.columns_, dtype=object)

    @staticmethod
    def _check_frame(X) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise InputError(None, "the model needs a pandas DataFrame with rad_/clin_/cnn_/sign_/deep_ column names")
        return X

    @staticmethod
    def _numeric(X: pd.DataFrame) -> np.ndarray:
        kinds = [getattr(dtype, "kind", "O") for dtype in X.dtypes.tolist()]
        bad = [name for name, kind in zip(_names(X), kinds) if kind not in "biuf"]
        if bad:
            raise InputError(None, f"feature columns must be numeric; not numeric: {bad[:10]}")
        return X.to_numpy(dtype=float)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


# --------------------------------------------------------------------------- scaling


class QuantileNormalizer(QuantileTransformer):
    """``QuantileTransformer(output_distribution="normal")``, faster on wide tables, quieter on small ones.

    - ``transform`` gives the same numbers as scikit-learn's (tested) but calls
      the normal quantile function once for the whole matrix: scikit-learn calls
      ``scipy.stats.norm.ppf`` once per column, ~0.3 s per transform of a
      6000-column CNN table, paid by every candidate of a grid search on every fold.
    - ``n_quantiles`` is capped at the sample count without scikit-learn's
      warning on every fold of a ~100-patient fit.
    """

    def __init__(self, n_quantiles=200, subsample=100_000, random_state=0):
        super().__init__(n_quantiles=n_quantiles, output_distribution="normal", subsample=subsample,
                         random_state=random_state)

    def fit(self, X, y=None):
        requested = self.n_quantiles
        self.n_quantiles = max(2, min(requested, len(X)))
        try:
            return super().fit(X, y)
        finally:
            self.n_quantiles = requested

    def transform(self, X):
        check_is_fitted(self, "quantiles_")
        X = validate_data(self, X, reset=False, dtype=np.float64, copy=True, ensure_all_finite="allow-nan")
        quantiles, references = self.quantiles_, self.references_
        uniform = np.empty_like(X)
        for j in range(X.shape[1]):
            # Both directions, averaged, as scikit-learn does for repeated quantiles.
            column, q = X[:, j], quantiles[:, j]
            uniform[:, j] = 0.5 * (np.interp(column, q, references) - np.interp(-column, -q[::-1], -references[::-1]))
        with np.errstate(invalid="ignore"):
            uniform[X + _BOUNDS > quantiles[-1]] = 1.0
            uniform[X - _BOUNDS < quantiles[0]] = 0.0
            normal = special.ndtri(uniform)
        normal[np.isnan(X)] = np.nan
        return np.clip(normal, _NORMAL_CLIP[0], _NORMAL_CLIP[1])


# scikit-learn's bounds for its normal output (sklearn.preprocessing._data.BOUNDS_THRESHOLD).
_BOUNDS = 1e-7
_NORMAL_CLIP = (special.ndtri(_BOUNDS - np.spacing(1)), special.ndtri(1 - (_BOUNDS - np.spacing(1))))


SCALERS = {"quantile": QuantileNormalizer, "standard": StandardScaler}
SELECTION_SCOPES = ("group", "all")  # SelectKBest's k: within each feature group, or over every column


# --------------------------------------------------------------------------- selection


def f_classif_scores(X, y):
    """``f_classif`` with constant columns scored 0 instead of NaN plus a warning.

    Constant columns are normal here (an all-missing column imputed to 0, a
    missing-value indicator that never fires in a fold); they carry no signal.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=(UserWarning, RuntimeWarning))
        scores, pvalues = f_classif(X, y)
    return np.nan_to_num(scores, nan=0.0, posinf=np.finfo(float).max), np.nan_to_num(pvalues, nan=1.0)


def mutual_info_scores(X, y):
    """Mutual information (seeded: scikit-learn's estimator adds random noise)."""
    return mutual_info_classif(X, y, random_state=0)


SCORE_FUNCTIONS = {"f_classif": f_classif_scores, "mutual_info": mutual_info_scores}
INDICATOR_PREFIX = "missingindicator_"  # SimpleImputer's name for an added missing-value indicator


def _group_of(name) -> str:
    name = str(name)
    name = name[len(INDICATOR_PREFIX):] if name.startswith(INDICATOR_PREFIX) else name
    return name.split("_", 1)[0]


class CappedSelectKBest(SelectorMixin, BaseEstimator):
    """SelectKBest whose ``k`` adapts to the number of columns seen in fit, overall or per feature group.

    ``k`` is ``"all"``, an int (capped at the column count, so ``k=50`` on a
    15-column table keeps all 15 instead of failing as ``SelectKBest`` does), or a
    float in (0, 1] (that fraction of the columns, at least one).

    ``scope="group"`` applies ``k`` within each feature group (``rad_``, ``clin_``,
    ``cnn_``, read from ``column_groups`` (the groups of the columns, comma-separated,
    set by :class:`GroupAwarePipeline`) or else the column names of a DataFrame input;
    a missing-value indicator belongs to its variable's group): the best ``k`` radiomics, the best
    ``k`` clinical and the best ``k`` CNN columns.  With one global ranking (``"all"``,
    the paper's) the 6144 CNN columns take every place by chance alone on a
    ~100-patient table (the largest of 6144 noisy F statistics beats the real
    signal of a few clinical ones); measured on the demo cohort: hybrid test AUC
    0.43 with the global ranking.  Without column names, or with one group, both
    scopes are the same.

    ``group_k`` (``{group: k}``, group scope only) overrides ``k`` for the named
    groups; ``{"cnn": 0}`` drops the CNN columns.

    ``k_`` is the number of columns kept in all.  Written rather than subclassing
    ``SelectKBest`` because its parameter validation rejects the cap and fractions.
    """

    def __init__(self, score_func=f_classif_scores, k=10, scope="all", column_groups=None, group_k=None):
        self.score_func = score_func
        self.k = k
        self.scope = scope
        self.column_groups = column_groups
        self.group_k = group_k

    def fit(self, X, y):
        if self.scope not in SELECTION_SCOPES:
            raise ValueError(f"scope must be one of {SELECTION_SCOPES}; got {self.scope!r}")
        X, y = validate_data(self, X, y)
        scores = self.score_func(X, y)
        scores, pvalues = scores if isinstance(scores, tuple) else (scores, None)
        self.scores_ = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
        self.pvalues_ = None if pvalues is None else np.asarray(pvalues, dtype=float)
        if self.scope != "group":
            groups = None
        elif self.column_groups is not None:
            groups = np.asarray(self.column_groups.split(","))
        elif hasattr(self, "feature_names_in_"):
            groups = np.asarray([_group_of(n) for n in self.feature_names_in_])
        else:
            groups = None
        if groups is not None and groups.size != X.shape[1]:
            raise ValueError(f"column_groups names {groups.size} columns; X has {X.shape[1]}")
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        for group in (np.unique(groups) if groups is not None else [None]):
            columns = np.arange(X.shape[1]) if group is None else np.flatnonzero(groups == group)
            k = self.k if group is None or not self.group_k else self.group_k.get(str(group), self.k)
            keep = self._resolve_k(columns.size, k)
            if keep:
                # Stable sort: ties keep column order, as SelectKBest does.
                self.support_[columns[np.argsort(self.scores_[columns], kind="mergesort")[-keep:]]] = True
        self.k_ = int(self.support_.sum())
        return self

    def _resolve_k(self, n_columns: int, k=None) -> int:
        k = self.k if k is None else k
        if isinstance(k, str):
            if k != "all":
                raise ValueError(f"k must be 'all', an int or a fraction in (0, 1]; got {k!r}")
            return n_columns
        if isinstance(k, numbers.Integral) and not isinstance(k, bool):
            if k < 0:
                raise ValueError(f"k must be >= 0; got {k}")
            return min(int(k), n_columns)
        if isinstance(k, numbers.Real) and 0 < k <= 1:
            return max(1, int(round(k * n_columns)))
        raise ValueError(f"k must be 'all', an int or a fraction in (0, 1]; got {k!r}")

    def _get_support_mask(self):
        check_is_fitted(self, "support_")
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


# --------------------------------------------------------------------------- the model


class GroupAwarePipeline(Pipeline):
    """The model's Pipeline; tells its ``select`` step which feature group each of its input columns is.

    The columns reach SelectKBest as a numpy array (after imputation and
    scaling), so their names are gone; passing DataFrames between the steps
    instead (``set_output``) made a 6000-column fit ~10x slower (scikit-learn
    checks a DataFrame's dtypes column by column on every call).  The columns
    reaching ``select`` are known from the training table: the group step's
    columns, then one missing-value indicator for each of those with a missing
    value (SimpleImputer's ``features="missing-only"``).
    """

    def fit(self, X, y=None, **params):
        select = self.named_steps.get("select")
        if isinstance(select, CappedSelectKBest) and select.scope == "group" and isinstance(X, pd.DataFrame):
            columns = feature_columns(X, self.named_steps["groups"].groups)  # what the groups step keeps
            try:
                missing = np.isnan(X[columns].to_numpy(dtype=float)).any(axis=0).tolist()
            except (TypeError, ValueError):  # text columns: the groups step raises the clear error
                missing = [False] * len(columns)
            imputer = self.named_steps.get("impute")
            indicators = [c for c, m in zip(columns, missing) if m] if getattr(imputer, "add_indicator", False) else []
            # One string, not a tuple of thousands: scikit-learn's clone copies a tuple item by item.
            select.set_params(column_groups=",".join(_group_of(c) for c in [*columns, *indicators]))
        return super().fit(X, y, **params)


class ModelSearch(GridSearchCV):
    """GridSearchCV that gives the winning SVM calibrated probabilities.

    scikit-learn 1.9 deprecates ``SVC(probability=True)`` for
    ``CalibratedClassifierCV(SVC(), ensemble=False)``: Platt scaling on
    out-of-fold decision values, one SVC refitted on all the data (so ``coef_``
    stays readable).  Candidates are ranked by the ROC AUC of the SVC's decision
    function, which a monotone calibration does not change, so only the refitted
    winner is calibrated; calibrating every candidate (three extra SVC fits
    each) was 60% of a search's time.  ``best_estimator_`` then ends in a
    ``CalibratedClassifierCV``; ``cv_results_`` describe the plain SVCs.
    """

    def fit(self, X, y=None, **params):
        self.param_grid_ = self._grid_for(X)
        super().fit(X, y, **params)
        if self.refit and isinstance(self.best_estimator_.steps[-1][1], SVC):
            pipeline = self.best_estimator_
            Xt = pipeline[:-1].transform(X)
            svm = CalibratedClassifierCV(pipeline.steps[-1][1], method="sigmoid", cv=SVM_CALIBRATION_FOLDS, ensemble=False)
            pipeline.steps[-1] = (pipeline.steps[-1][0], svm.fit(Xt, y))
        return self

    def _run_search(self, evaluate_candidates):
        evaluate_candidates(ParameterGrid(self.param_grid_))

    def _grid_for(self, X) -> list[dict]:
        """``param_grid`` less the candidates that drop a feature group ``X`` does not have.

        Without them a table with no CNN columns would fit every candidate twice
        (``group_k={"cnn": 0}`` changes nothing there); with one group left,
        dropping it is no choice.
        """
        grids = [self.param_grid] if isinstance(self.param_grid, dict) else list(self.param_grid)
        if not isinstance(X, pd.DataFrame):
            return grids
        present = [g for g in _check_groups(self.estimator.named_steps["groups"].groups) if feature_columns(X, (g,))]
        pruned = []
        for grid in grids:
            options = grid.get("select__group_k")
            if options is not None:
                kept = [o for o in options if o is None or (len(present) > 1 and set(o) <= set(present))]
                grid = {**grid, "select__group_k": kept}
            pruned.append(grid)
        return pruned


def _param_grids(classifier, k_values, class_weight, seed, grid, group_k_options=(None,), elastic_net=False):
    select = {"select__k": k_values}
    if len(group_k_options) > 1:
        select["select__group_k"] = list(group_k_options)
    sizes = GRIDS[grid]
    grids = []
    if classifier in ("svm", "auto"):
        svm, C, gamma = [SVC(class_weight=class_weight, random_state=seed)], list(sizes["svm_C"]), list(sizes["svm_gamma"])
        grids.append({**select, "clf": svm, "clf__kernel": ["linear"], "clf__C": C})
        grids.append({**select, "clf": svm, "clf__kernel": ["rbf"], "clf__C": C, "clf__gamma": gamma})
    if classifier in ("logistic", "auto"):
        logistic = LogisticRegression(class_weight=class_weight, max_iter=5000, random_state=seed)
        grids.append({**select, "clf": [logistic], "clf__C": list(sizes["logistic_C"])})
    if classifier == "elastic_net" or (classifier == "auto" and elastic_net):
        # saga: the solver of scikit-learn's for an L1 + L2 penalty; on standardised
        # columns of ~100 patients it converges within a few hundred passes.
        net = LogisticRegression(solver="saga", class_weight=class_weight, max_iter=5000, random_state=seed)
        grids.append({**select, "clf": [net], "clf__C": list(sizes["elastic_net_C"]),
                      "clf__l1_ratio": list(sizes["elastic_net_l1_ratio"])})
    if classifier in ("gradient_boosting", "auto"):
        # Fixed, conservative settings: a boosting grid would dominate the fit time
        # and overfit the inner folds of a ~100-patient table.
        boosting = HistGradientBoostingClassifier(
            learning_rate=0.1,
            max_iter=50,
            max_depth=3,
            min_samples_leaf=10,
            l2_regularization=1.0,
            class_weight=class_weight,
            random_state=seed,
        )
        # Integer k only (when the grid has any): binning thousands of CNN columns
        # costs ~10 s a fit, and shallow trees on ~100 patients cannot use them.
        integer_k = [k for k in k_values if isinstance(k, numbers.Integral) and not isinstance(k, bool)]
        grids.append({**select, "select__k": integer_k or k_values, "clf": [boosting]})
    return grids


def build_model(
    classifier: str = "auto",
    groups=("rad", "clin", "cnn"),
    k_grid=DEFAULT_K_GRID,
    selection: str = "f_classif",
    class_weight=None,
    cv: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    threshold: str = "fixed",
    threshold_cv: int = 5,
    grid: str = "default",
    scaling: str = "standard",
    selection_scope: str = "group",
    optional_groups=(),
    cv_repeats: int = DEFAULT_CV_REPEATS,
    elastic_net: bool = DEFAULT_ELASTIC_NET,
    prior: str = DEFAULT_PRIOR,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    anchor: str = DEFAULT_ANCHOR,
    anchor_weight: float = DEFAULT_ANCHOR_WEIGHT,
):
    """An unfitted estimator: a grid search (:class:`ModelSearch`) over the Pipeline of the module doc.

    Parameters
    ----------
    classifier: ``"auto"`` (SVM, logistic regression, gradient boosting and, with
        ``elastic_net``, an elastic-net logistic regression, best by inner CV AUC),
        ``"svm"`` (the paper's model), ``"logistic"`` (L2), ``"elastic_net"`` or
        ``"gradient_boosting"``.
    elastic_net: whether ``"auto"`` also searches the elastic-net logistic
        regression (``GRIDS``' ``elastic_net_C`` x ``elastic_net_l1_ratio``).
    groups: feature groups the model uses (keys of ``FEATURE_PREFIXES``; see ``FEATURE_SETS``).
    k_grid: values for SelectKBest's k, capped to the column count at fit time.
    grid: size of the classifiers' hyper-parameter grids (``GRIDS``): "small",
        "default" or "wide".
    selection: ``"f_classif"`` (the paper) or ``"mutual_info"``.
    selection_scope: ``"group"`` (SelectKBest's ``k`` within each feature group;
        see :class:`CappedSelectKBest`) or ``"all"`` (one ranking of every column,
        the paper's).
    optional_groups: feature groups the search may leave out altogether
        (``k = 0`` for that group: one more candidate per group; with
        ``selection_scope="group"`` and at least one other group only), e.g.
        ``("cnn",)``: the inner CV then decides whether the CNN columns help.
        Default ``()``: every group stays in (the paper's fusion).  Not the
        default because on the synthetic cohort the inner CV of ~75 patients
        dropped useful CNN columns more often than not: in an exploratory
        repeated 2-fold CV (5 x) on 150 patients, hybrid AUC 0.71 +- 0.06 with
        the CNN forced in, 0.66 +- 0.07 with it optional, radiomics + clinical
        0.66 +- 0.07 (within the split-to-split noise of ``bench_pipeline.py
        --part splits``).
    scaling: ``"standard"`` (z-scores, the paper's) or ``"quantile"`` (each
        column to a normal through its training quantiles; robust to the skewed,
        outlying values of real clinical tables).
    class_weight: ``None`` or ``"balanced"``.
    cv, seed: inner stratified, shuffled, seeded folds; scored by ROC AUC.
    cv_repeats: the inner ``cv``-fold CV is repeated this many times with
        different shuffles (``RepeatedStratifiedKFold(n_splits=cv,
        n_repeats=cv_repeats, random_state=seed)``) and each candidate scored
        by its mean AUC over all ``cv * cv_repeats`` folds; 1 is one shuffled
        ``StratifiedKFold`` (the search before repetitions).  It multiplies the
        fit time by ``cv_repeats``.
    prior: ``"none"`` (the search alone) or ``"known"``: the search's probability
        averaged with that of the known-predictor logistic regression
        (:mod:`hematoma.known_predictors`, same inner CV), weight ``prior_weight``
        (:class:`hematoma.model_blend.PriorBlend`).
    anchor: ``"none"`` or ``"brain"``: the probability above averaged with the
        BRAIN score's published risk, weight ``anchor_weight``
        (:class:`hematoma.model_anchor.ScoreAnchor`; the table needs the
        volume, anticoagulation and onset-to-CT columns).
    threshold: ``"fixed"`` (class = probability >= 0.5) or ``"youden"``: the
        decision threshold is tuned on the training data only, by
        ``TunedThresholdClassifierCV`` maximising balanced accuracy, which is
        Youden's J (sensitivity + specificity - 1) up to a factor 2 and an offset;
        it costs ``threshold_cv`` extra grid searches.  ``predict_proba`` is the same
        either way, so AUC does not depend on it.

    The result takes a DataFrame of feature columns (any, NaN allowed) and 0/1
    labels; fit it with :func:`fit_model` (single-threaded BLAS/OpenMP, faster
    on small tables) or its own ``fit``.
    """
    if classifier not in CLASSIFIERS:
        raise InputError(None, f"unknown classifier {classifier!r}; choose from {list(CLASSIFIERS)}")
    if selection not in SCORE_FUNCTIONS:
        raise InputError(None, f"unknown selection {selection!r}; choose from {sorted(SCORE_FUNCTIONS)}")
    if class_weight not in (None, "balanced"):
        raise InputError(None, f"class_weight must be None or 'balanced'; got {class_weight!r}")
    if grid not in GRIDS:
        raise InputError(None, f"unknown grid {grid!r}; choose from {sorted(GRIDS)}")
    if selection_scope not in SELECTION_SCOPES:
        raise InputError(None, f"unknown selection scope {selection_scope!r}; choose from {', '.join(SELECTION_SCOPES)}")
    if scaling not in SCALERS:
        raise InputError(None, f"unknown scaling {scaling!r}; choose from {sorted(SCALERS)}")
    if threshold not in ("fixed", "youden"):
        raise InputError(None, f"threshold must be 'fixed' or 'youden'; got {threshold!r}")
    if prior not in PRIORS:
        raise InputError(None, f"unknown prior {prior!r}; choose from {', '.join(PRIORS)}")
    prior_weight = checked_prior_weight(prior_weight)
    if anchor not in ANCHORS:
        raise InputError(None, f"unknown anchor {anchor!r}; choose from {', '.join(ANCHORS)}")
    anchor_weight = checked_prior_weight(anchor_weight, "anchor_weight")
    if not isinstance(cv_repeats, numbers.Integral) or isinstance(cv_repeats, bool) or cv_repeats < 1:
        raise InputError(None, f"cv_repeats must be a whole number >= 1; got {cv_repeats!r}")
    optional_groups = (optional_groups,) if isinstance(optional_groups, str) else tuple(optional_groups)
    unknown = sorted(set(optional_groups) - set(FEATURE_PREFIXES))
    if unknown:
        raise InputError(None, f"unknown optional group(s) {', '.join(unknown)}; choose from {', '.join(FEATURE_PREFIXES)}")
    groups = _check_groups(groups)
    if anchor != "none" and "clin" not in groups:  # the score reads clinical columns: never those of other groups
        raise InputError(None, f"anchor {anchor!r} needs the clin feature group; the groups are {', '.join(groups)}")
    droppable = [g for g in groups if g in optional_groups] if selection_scope == "group" and len(groups) > 1 else []
    group_k_options = [None, *({g: 0} for g in droppable)]
    k_values = []  # drop duplicates, keep order (1 and 1.0 differ: one column vs all)
    for k in k_grid:
        if not any(k == seen and type(k) is type(seen) for seen in k_values):
            k_values.append(k)
    for k in k_values:
        try:  # fail now on a bad k, not after minutes of fitting
            CappedSelectKBest(k=k)._resolve_k(1)
        except ValueError as error:
            raise InputError(None, str(error)) from None
    pipeline = GroupAwarePipeline(
        [
            ("groups", FeatureGroupSelector(groups=groups)),
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            ("scale", SCALERS[scaling]()),
            ("select", CappedSelectKBest(score_func=SCORE_FUNCTIONS[selection], k=k_values[0], scope=selection_scope)),
            ("clf", LogisticRegression()),  # placeholder: every grid sets 'clf'
        ]
    )
    search = ModelSearch(
        pipeline,
        _param_grids(classifier, k_values, class_weight, seed, grid, group_k_options, elastic_net),
        scoring="roc_auc",
        cv=inner_splitter(cv, cv_repeats, seed),
        n_jobs=n_jobs,
        refit=True,
        error_score="raise",
    )
    model = search
    if prior == "known":
        model = PriorBlend(search, known_predictor_model(seed=seed, cv=cv, cv_repeats=cv_repeats), prior_weight)
    if anchor != "none":
        model = ScoreAnchor(model, anchor, anchor_weight)
    if threshold == "youden":
        return TunedThresholdClassifierCV(
            model,
            scoring="balanced_accuracy",
            cv=StratifiedKFold(n_splits=threshold_cv, shuffle=True, random_state=seed + 1),
            refit=True,
            random_state=seed,
        )
    return model


def inner_splitter(cv: int, repeats: int, seed: int):
    """The search's inner folds: shuffled stratified ``cv``-fold, repeated ``repeats`` times."""
    if repeats == 1:
        return StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    return RepeatedStratifiedKFold(n_splits=cv, n_repeats=repeats, random_state=seed)


def cv_layout(cv) -> tuple[int | None, int]:
    """``(folds per repetition, repetitions)`` of a splitter; an int is that many folds once."""
    if isinstance(cv, numbers.Integral):
        return int(cv), 1
    if isinstance(cv, RepeatedStratifiedKFold):
        return int(cv.cvargs["n_splits"]), int(cv.n_repeats)
    folds = getattr(cv, "n_splits", None)
    return (int(folds) if folds is not None else None), 1


class FitCache:
    """In-memory cache of fitted Pipeline steps, shared by a grid search's candidates.

    GridSearchCV refits the whole Pipeline for every candidate and fold, so the
    same imputation and scaling of the same fold's patients is recomputed for
    every (k, C, kernel) combination: most of a search on a 6000-column CNN
    table.  :func:`fit_model` sets it as the Pipelines' ``memory`` (scikit-learn
    accepts any object with joblib.Memory's ``cache``) for one fit on one table
    and removes it afterwards.  Unlike joblib.Memory it keeps results in memory
    (no pickles on disk) and does not hash megabytes of data per step: the first
    step's input is identified by its patient ids and column names (enough within
    one fit on one table; a table with repeated ids is not cached), every later
    step's input by the cache key of the step that produced it.  Least
    recently used results go first beyond ``max_bytes``.  Clones of the Pipeline
    share it on purpose (``__deepcopy__`` returns itself); a copy sent to a
    worker process (``n_jobs > 1``) starts empty.
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = max_bytes
        self._store: OrderedDict = OrderedDict()  # key -> (Xt, fitted step)
        self._produced: dict = {}  # id(Xt) -> key of the step that produced it
        self._bytes = 0
        self.hits = self.misses = 0

    def __deepcopy__(self, memo):
        return self

    def __getstate__(self):
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["max_bytes"])

    def cache(self, func, ignore=None, **_):
        def cached(transformer, X, y, *args, **kwargs):
            key = self._key(transformer, X, y, kwargs.get("params"))
            if key is None:
                return func(transformer, X, y, *args, **kwargs)
            if key in self._store:
                self._store.move_to_end(key)
                self.hits += 1
                return self._store[key]
            self.misses += 1
            Xt, _ = result = func(transformer, X, y, *args, **kwargs)
            if isinstance(Xt, np.ndarray):
                Xt.setflags(write=False)  # shared by candidates: an in-place change must fail loudly
            self._store[key] = result
            self._produced[id(Xt)] = key
            self._bytes += getattr(Xt, "nbytes", 0)
            while self._bytes > self.max_bytes and len(self._store) > 1:
                _, (old, _) = self._store.popitem(last=False)
                self._produced.pop(id(old), None)
                self._bytes -= getattr(old, "nbytes", 0)
            return result

        return cached

    def _key(self, transformer, X, y, params):
        if params and any(bool(value) for value in params.values()):
            return None  # routed fit parameters: not worth keying
        digest = hashlib.sha1(f"{type(transformer).__qualname__}{transformer.get_params(deep=True)!r}".encode())
        produced = self._produced.get(id(X))
        if produced is not None and self._store.get(produced, (None,))[0] is X:
            digest.update(produced.encode())
        elif isinstance(X, pd.DataFrame) and X.index.is_unique:
            digest.update("\0".join(map(str, [*X.columns.tolist(), "|", *X.index.tolist()])).encode())
        else:
            return None
        labels = np.zeros(0) if y is None else np.ascontiguousarray(np.asarray(y))
        if labels.dtype == object:
            return None
        digest.update(f"{labels.dtype}{labels.shape}".encode() + labels.tobytes())
        return digest.hexdigest()


def _pipelines(estimator):
    """Every Pipeline inside what build_model made (templates and fitted ones)."""
    found = []
    for attribute in ("estimator", "estimator_", "best_estimator_", "model", "model_", "prior", "prior_"):
        inner = getattr(estimator, attribute, None)
        if inner is not None:
            found += _pipelines(inner)
    return [estimator] if isinstance(estimator, Pipeline) else found


def _check_class_counts(estimator, y) -> None:
    """One clear line instead of scikit-learn's error deep inside the search."""
    counts = pd.Series(np.asarray(y)).value_counts()
    folds, repeats = cv_layout(getattr(unblended(estimator), "cv", None))
    if isinstance(estimator, TunedThresholdClassifierCV):
        inner, inner_repeats = cv_layout(getattr(unblended(estimator.estimator), "cv", None))
        if (inner or 0) >= (folds or 0):
            folds, repeats = inner, inner_repeats
    if len(counts) < 2:
        raise InputError(None, f"training needs patients with and without HE; all {len(y)} have label {counts.index[0]}")
    if folds and counts.min() < folds:
        repeated = f" (repeated {repeats} times)" if repeats > 1 else ""
        raise InputError(
            None,
            f"{folds}-fold cross-validation{repeated} needs at least {folds} patients of each class; "
            f"the training data has {counts.to_dict()} (use fewer folds)",
        )


def fit_model(estimator, X, y):
    """Fit what :func:`build_model` made, faster; returns the fitted estimator.

    - BLAS and OpenMP run on one thread each: on ~100-patient tables threads cost
      more than the work they share (on a busy 2-core machine a logistic
      regression fit took 6x and a gradient boosting fit 8x longer with two).
      Parallelism belongs to the grid search (``n_jobs``), over candidates.
    - A :class:`FitCache` shares fitted imputation/scaling/selection between the
      grid's candidates on the same fold; it is removed once fitted, so the
      fitted model holds no cache and saves as usual.
    """
    _check_class_counts(estimator, y)
    cache = FitCache()
    for pipeline in _pipelines(estimator):
        pipeline.set_params(memory=cache)
    try:
        with threadpool_limits(limits=1):
            estimator.fit(X, y)
    finally:
        for pipeline in _pipelines(estimator):
            pipeline.set_params(memory=None)
    return estimator


def fitted_pipeline(estimator) -> Pipeline:
    """The fitted Pipeline inside what ``build_model`` returned (or a Pipeline itself)."""
    if isinstance(estimator, TunedThresholdClassifierCV):
        check_is_fitted(estimator, "estimator_")
        estimator = estimator.estimator_
    if isinstance(estimator, ScoreAnchor):
        check_is_fitted(estimator, "model_")
        estimator = estimator.model_
    if isinstance(estimator, PriorBlend):
        check_is_fitted(estimator, "model_")
        estimator = estimator.model_
    if isinstance(estimator, GridSearchCV):
        check_is_fitted(estimator, "best_estimator_")
        estimator = estimator.best_estimator_
    if not isinstance(estimator, Pipeline):
        raise TypeError(f"expected a fitted Pipeline or a search over one; got {type(estimator).__name__}")
    return estimator


def checked_prior_weight(weight, name: str = "prior_weight") -> float:
    """``weight`` as a float from 0 to 1, or one line naming ``name`` (NaN, a bool or a string are refused)."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0.0 <= float(weight) <= 1.0:
        raise InputError(None, f"{name} must be a number from 0 to 1; got {weight!r}")
    return float(weight)


def unanchored(estimator):
    """The model inside a :class:`ScoreAnchor` (fitted if it is), else ``estimator`` itself."""
    if isinstance(estimator, ScoreAnchor):
        return getattr(estimator, "model_", estimator.model)
    return estimator


def anchor_of(estimator) -> ScoreAnchor | None:
    """The :class:`ScoreAnchor` of what ``build_model`` made, or None."""
    inner = getattr(estimator, "estimator_", getattr(estimator, "estimator", None)) \
        if isinstance(estimator, TunedThresholdClassifierCV) else estimator
    return inner if isinstance(inner, ScoreAnchor) else None


def unblended(estimator):
    """The feature search inside a :class:`ScoreAnchor` or :class:`PriorBlend` (fitted if it is), else ``estimator``."""
    estimator = unanchored(estimator)
    if isinstance(estimator, PriorBlend):
        return getattr(estimator, "model_", estimator.model)
    return estimator


def prior_text(summary: dict) -> str:
    """``"; averaged with the known-predictor model (weight 0.9)"`` from a model_summary, or ``""``."""
    prior = summary.get("prior_model")
    anchor = summary.get("anchor_model")
    text = f"; averaged with the known-predictor model (weight {prior['weight']:g})" if prior else ""
    return text + (f"; anchored to the BRAIN score (weight {anchor['weight']:g})" if anchor else "")


def blend_of(estimator) -> PriorBlend | None:
    """The :class:`PriorBlend` of what ``build_model`` made, or None."""
    inner = getattr(estimator, "estimator_", getattr(estimator, "estimator", None)) \
        if isinstance(estimator, TunedThresholdClassifierCV) else estimator
    inner = unanchored(inner)
    return inner if isinstance(inner, PriorBlend) else None


def decision_threshold(estimator) -> float:
    """The probability threshold for the HE class: tuned (Youden) if the model has one, else 0.5."""
    return float(getattr(estimator, "best_threshold_", 0.5))


def model_summary(estimator) -> dict:
    """What was chosen: classifier family, its parameters, k, the inner CV AUC (JSON-ready)."""
    pipeline = fitted_pipeline(estimator)
    search = unblended(estimator.estimator_ if isinstance(estimator, TunedThresholdClassifierCV) else estimator)
    clf = pipeline.named_steps["clf"]
    inner = clf.estimator if isinstance(clf, CalibratedClassifierCV) else clf
    family = {SVC: "svm", LogisticRegression: "logistic", HistGradientBoostingClassifier: "gradient_boosting"}.get(
        type(inner), type(inner).__name__
    )
    if family == "logistic" and (inner.l1_ratio or 0) > 0:
        family = "elastic_net"
    shown = ("C", "kernel", "gamma", "learning_rate", "max_depth", *(("l1_ratio",) if family == "elastic_net" else ()))
    params = {k: v for k, v in inner.get_params().items() if k in shown}
    summary = {
        "classifier": family,
        "params": {k: (v if isinstance(v, (str, int, float)) or v is None else str(v)) for k, v in params.items()},
        "k": int(pipeline.named_steps["select"].k_),
        "n_input_columns": len(pipeline.named_steps["groups"].columns_),
        "groups_present": list(pipeline.named_steps["groups"].groups_present_),
        "groups_used": groups_used(pipeline),
        "threshold": decision_threshold(estimator),
    }
    if isinstance(search, GridSearchCV):
        summary["inner_cv_auc"] = float(search.best_score_)
        summary["inner_cv_folds"], summary["inner_cv_repeats"] = cv_layout(search.cv)
    blend = blend_of(estimator)
    summary["prior"] = "none" if blend is None else "known"
    if blend is not None and hasattr(blend, "prior_"):
        known = blend.prior_.best_estimator_
        summary["prior_model"] = {"weight": float(blend.prior_weight), "C": float(known.named_steps["clf"].C),
                                  "columns": list(known.named_steps["known"].columns_),
                                  "inner_cv_auc": float(blend.prior_.best_score_)}
    anchor = anchor_of(estimator)
    summary["anchor"] = "none" if anchor is None else anchor.score
    if anchor is not None and hasattr(anchor, "model_"):
        summary["anchor_model"] = {"score": anchor.score, "weight": float(anchor.weight),
                                   "columns": [*BRAIN_REQUIRED, *anchor.optional_columns_],
                                   "notes": list(getattr(anchor, "notes_", [])),
                                   "logit_offset": float(getattr(anchor, "offset_", 0.0))}
    return summary


def groups_used(pipeline: Pipeline) -> list[str]:
    """The feature groups with at least one column reaching the classifier (in the groups step's order)."""
    select = pipeline.named_steps["select"]
    present = list(pipeline.named_steps["groups"].groups_present_)
    if not select.column_groups:
        names = pipeline[: list(pipeline.named_steps).index("select")].get_feature_names_out()
        column_groups = [_group_of(n) for n in names]
    else:
        column_groups = select.column_groups.split(",")
    kept = {g for g, keep in zip(column_groups, select.support_) if keep}
    return [g for g in present if g in kept]


def selected_features(estimator) -> list[str]:
    """Names of the columns reaching the classifier (``missingindicator_<col>`` for indicators)."""
    pipeline = fitted_pipeline(estimator)
    start = list(pipeline.named_steps).index("groups")
    return [str(name) for name in pipeline[start:-1].get_feature_names_out()]
