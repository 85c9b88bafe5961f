"""The model Pipeline, its custom steps and the model bundle (synthetic tables)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from hematoma.errors import InputError
from hematoma.model import _pipelines  # noqa: PLC2701  (checks fit_model cleans up)
from hematoma.model import (
    FEATURE_SETS,
    CappedSelectKBest,
    FeatureGroupSelector,
    FitCache,
    build_model,
    decision_threshold,
    feature_columns,
    fit_model,
    fitted_pipeline,
    model_inputs,
    model_summary,
    selected_features,
)
from hematoma.model_bundle import TRUSTED_TYPES, load_model, save_model, table_hash

@pytest.fixture(autouse=True)
def single_threaded():
    # as fit_model does: BLAS/OpenMP threads only slow ~100-patient fits down
    with threadpool_limits(limits=1):
        yield


SMALL = dict(k_grid=(3, 50), cv=3, grid="small")  # small grids keep the tests fast


def synthetic_table(n=80, n_rad=12, n_clin=5, n_cnn=0, informative=4, missing=0.1, seed=0) -> pd.DataFrame:
    """A feature table as `hematoma extract` writes it: patient_id, meta, then rad_/clin_/cnn_ columns."""
    X, y = make_classification(
        n_samples=n,
        n_features=n_rad + n_clin + n_cnn,
        n_informative=informative,
        n_redundant=0,
        class_sep=1.5,
        shuffle=False,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # shuffle=False keeps the signal in the first columns but sorts rows by class
    X, y = X[order], y[order]
    X[rng.random(X.shape) < missing] = np.nan
    columns = [f"rad_f{i}" for i in range(n_rad)] + [f"clin_v{i}" for i in range(n_clin)]
    columns += [f"cnn_{i:04d}" for i in range(n_cnn)]
    table = pd.DataFrame(X, columns=columns)
    table.insert(0, "patient_id", [f"P{i:03d}" for i in range(n)])
    table.insert(1, "he", y)
    table.insert(2, "followup_volume_ml", 10.0 + 20 * y)  # meta: would leak the label
    return table


@pytest.fixture(scope="module")
def table():
    return synthetic_table()


@pytest.fixture(scope="module")
def fitted(table):
    X, y = model_inputs(table.iloc[:60])
    with threadpool_limits(limits=1):
        return fit_model(build_model(classifier="svm", groups=("rad", "clin"), **SMALL), X, y)


# --------------------------------------------------------------------------- columns


def test_model_inputs_keep_features_only_indexed_by_patient(table):
    X, y = model_inputs(table)
    assert list(X.columns) == feature_columns(table)
    assert "followup_volume_ml" not in X.columns and "he" not in X.columns
    assert X.index.name == "patient_id" and X.index[0] == "P000"
    assert y.tolist() == table["he"].tolist()


def test_feature_sets_cover_the_paper_models():
    assert FEATURE_SETS["radiomics+clinical"] == ("rad", "clin")
    assert FEATURE_SETS["hybrid"] == ("rad", "clin", "cnn")


def test_group_selector_keeps_chosen_groups(table):
    X, _ = model_inputs(table)
    selector = FeatureGroupSelector(groups=("clin",)).fit(X)
    assert selector.columns_ == [c for c in X.columns if c.startswith("clin_")]
    assert selector.transform(X).shape == (len(X), 5)
    assert selector.groups_present_ == ("clin",)
    # extra columns at predict time are ignored
    assert selector.transform(X.assign(rad_extra=1.0)).shape == (len(X), 5)


def test_group_selector_refuses_meta_columns(table):
    with pytest.raises(InputError, match="meta columns.*followup_volume_ml"):
        FeatureGroupSelector().fit(table.drop(columns=["patient_id", "he"]))


def test_group_selector_refuses_non_frames_missing_columns_and_text(table):
    X, _ = model_inputs(table)
    with pytest.raises(InputError, match="DataFrame"):
        FeatureGroupSelector().fit(X.to_numpy())
    selector = FeatureGroupSelector().fit(X)
    with pytest.raises(InputError, match=r"lacks 2 feature column.*clin_v0.*clin_v3"):
        selector.transform(X.drop(columns=["clin_v0", "clin_v3"]))
    with pytest.raises(InputError, match="not numeric.*clin_v1"):
        FeatureGroupSelector().fit(X.assign(clin_v1="yes"))
    with pytest.raises(InputError, match="no feature columns of groups"):
        FeatureGroupSelector(groups=("cnn",)).fit(X)
    with pytest.raises(InputError, match="unknown feature groups"):
        FeatureGroupSelector(groups=("radiomic",)).fit(X)


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("k", "n_columns", "expected"),
    [(50, 7, 7), (3, 7, 3), ("all", 7, 7), (0.5, 10, 5), (0.01, 10, 1), (1.0, 10, 10), (0, 7, 0)],
)
def test_k_is_capped_to_the_columns(k, n_columns, expected):
    X, y = make_classification(n_samples=40, n_features=n_columns, n_informative=2, n_redundant=0, random_state=0)
    selector = CappedSelectKBest(k=k).fit(X, y)
    assert selector.k_ == expected
    assert selector.get_support().sum() == expected


def test_constant_columns_score_zero_without_warnings():
    X, y = make_classification(n_samples=40, n_features=4, n_informative=2, n_redundant=0, random_state=0)
    X[:, 1] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selector = CappedSelectKBest(k=3).fit(X, y)
    assert selector.scores_[1] == 0 and not selector.get_support()[1]


def test_bad_k_fails_before_fitting():
    with pytest.raises(InputError, match="k must be"):
        build_model(k_grid=(10, "most"))
    with pytest.raises(InputError, match="unknown classifier"):
        build_model(classifier="forest")


# scikit-learn's own estimator checks on our generic step.  FeatureGroupSelector
# is left out: it takes only DataFrames with prefixed column names by design,
# which the generic (numpy) checks cannot provide; the tests above cover it.
@parametrize_with_checks([CappedSelectKBest(k=2)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


# --------------------------------------------------------------------------- the model


def test_model_fits_any_columns_with_missing_values():
    table = synthetic_table(n=60, n_rad=4, n_clin=3, n_cnn=6, seed=1)
    table["rad_all_missing"] = np.nan  # an all-NaN column must not break imputation
    X, y = model_inputs(table)
    model = fit_model(build_model(classifier="svm", **SMALL), X.iloc[:45], y.iloc[:45])
    test = X.iloc[45:].copy()
    test["clin_v0"] = np.nan  # missing only at prediction time
    probability = model.predict_proba(test)[:, 1]
    assert probability.shape == (15,) and np.isfinite(probability).all()
    assert ((probability >= 0) & (probability <= 1)).all()
    assert model_summary(model)["groups_present"] == ["rad", "clin", "cnn"]


def test_k_grid_adapts_to_a_narrow_table():
    table = synthetic_table(n=60, n_rad=0, n_clin=4, missing=0.0, seed=2)
    X, y = model_inputs(table)
    model = build_model(classifier="logistic", k_grid=(2, 100, "all"), cv=3).fit(X, y)
    assert model_summary(model)["k"] <= 4
    assert len(model.cv_results_["params"]) == 3 * 3  # 3 k values x 3 C values, none failed


def test_too_few_patients_of_a_class_is_one_clear_error(table):
    X, y = model_inputs(table)
    few = y.copy()
    few[few == 1] = 0
    few.iloc[:2] = 1
    with pytest.raises(InputError, match="3-fold cross-validation needs at least 3 patients of each class"):
        fit_model(build_model("logistic", cv_repeats=1, **SMALL), X, few)  # repeated: see test_class_count_check_names_the_repeated_cv
    with pytest.raises(InputError, match="with and without HE"):
        fit_model(build_model("logistic", **SMALL), X, y * 0)


def test_standard_scaling_is_the_default_and_quantile_an_option():
    from sklearn.preprocessing import StandardScaler

    from hematoma.model import QuantileNormalizer

    assert isinstance(build_model().estimator.named_steps["scale"], StandardScaler)
    assert isinstance(build_model(scaling="quantile").estimator.named_steps["scale"], QuantileNormalizer)
    with pytest.raises(InputError, match="unknown scaling"):
        build_model(scaling="minmax")


def test_quantile_normalizer_maps_skewed_columns_to_normal_scores_without_warnings():
    from hematoma.model import QuantileNormalizer

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.lognormal(2.5, 0.9, 80), rng.normal(160, 25, 80)])  # volume-like, SBP-like
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 80 rows < 200 quantiles: capped silently
        normalizer = QuantileNormalizer().fit(X)
    Z = normalizer.transform(X)
    assert normalizer.n_quantiles == 200 and normalizer.n_quantiles_ == 80
    assert abs(Z.mean()) < 0.05 and 0.9 < Z.std() < 1.3  # the sample minimum and maximum land at +-5.2
    # monotone per column, and a far outlier at prediction time stays bounded
    assert (np.diff(Z[np.argsort(X[:, 0]), 0]) >= 0).all()
    assert np.isfinite(normalizer.transform([[1e6, 1e6]])).all() and normalizer.transform([[1e6, 1e6]]).max() < 6


def test_quantile_normalizer_transform_equals_scikit_learns():
    from sklearn.preprocessing import QuantileTransformer

    from hematoma.model import QuantileNormalizer

    rng = np.random.default_rng(1)
    X = np.column_stack([rng.lognormal(2.5, 0.9, 90), rng.integers(0, 3, 90), rng.normal(0, 1, 90), np.ones(90)])
    new = np.vstack([X[:30] * 1.01, [[1e9, -5, 1e9, 1.0]], [[-1e9, 7, -1e9, 0.0]], [[np.nan, 1, 0.0, 1.0]]])
    ours = QuantileNormalizer(n_quantiles=90).fit(X)
    theirs = QuantileTransformer(n_quantiles=90, output_distribution="normal", random_state=0).fit(X)
    np.testing.assert_allclose(ours.transform(new), theirs.transform(new), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=0, atol=1e-9)


def test_svm_model_is_the_papers_pipeline(fitted):
    pipeline = fitted_pipeline(fitted)
    assert list(pipeline.named_steps) == ["groups", "impute", "scale", "select", "clf"]
    svm = pipeline.named_steps["clf"]  # the winner, calibrated as scikit-learn 1.9 recommends
    assert isinstance(svm, CalibratedClassifierCV) and isinstance(svm.estimator, SVC) and not svm.ensemble
    assert {type(p["clf"]) for p in fitted.cv_results_["params"]} == {SVC}  # ranked uncalibrated
    assert fitted.scoring == "roc_auc"
    assert len(selected_features(fitted)) == model_summary(fitted)["k"]


def test_auto_searches_three_families_and_keeps_a_good_one(table):
    X, y = model_inputs(table)
    model = build_model(classifier="auto", **SMALL).fit(X, y)
    families = {type(p["clf"]).__name__ for p in model.cv_results_["params"]}
    assert families == {"SVC", "LogisticRegression", "HistGradientBoostingClassifier"}
    summary = model_summary(model)
    assert summary["classifier"] in ("svm", "logistic", "gradient_boosting")
    assert summary["inner_cv_auc"] > 0.5
    assert summary["inner_cv_auc"] == pytest.approx(np.nanmax(model.cv_results_["mean_test_score"]))


def test_inner_folds_are_seeded(table):
    X, y = model_inputs(table)
    a = build_model(classifier="logistic", seed=3, **SMALL).fit(X, y)
    b = build_model(classifier="logistic", seed=3, **SMALL).fit(X, y)
    np.testing.assert_allclose(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"])


@pytest.mark.parametrize("threshold", ["fixed", "youden"])
def test_fit_model_cache_changes_nothing_but_time(table, threshold):
    X, y = model_inputs(table)
    kwargs = dict(cv=3, grid="small", threshold=threshold, threshold_cv=2)
    kwargs.update(classifier="auto", k_grid=(3, 8)) if threshold == "fixed" else kwargs.update(classifier="svm", k_grid=(3,))
    plain = build_model(**kwargs).fit(X, y)
    cached = fit_model(build_model(**kwargs), X, y)
    np.testing.assert_array_equal(plain.predict_proba(X), cached.predict_proba(X))
    scores = [getattr(m, "estimator_", m).cv_results_["mean_test_score"] for m in (plain, cached)]
    np.testing.assert_array_equal(*scores)
    assert all(pipeline.memory is None for pipeline in _pipelines(cached))  # nothing left to save


@pytest.mark.parametrize("repeats", [1, 2])
def test_fit_cache_shares_fitted_steps_between_candidates(table, repeats):
    X, y = model_inputs(table)
    cache = FitCache()
    model = build_model(classifier="svm", k_grid=(3, 8), cv=3, grid="small", cv_repeats=repeats)
    model.estimator.set_params(memory=cache)
    model.fit(X, y)
    # 4 candidates (2 k x 2 kernels) x 3 folds x repeats, then the refit: 4 cached steps each time.
    # Per fold, groups/impute/scale are fitted once and select once per k (3 + 2); the
    # refit fits its 4 steps on new data.
    assert cache.misses == 3 * repeats * (3 + 2) + 4
    assert cache.hits == (4 * 3 * repeats + 1) * 4 - cache.misses
    assert all(not Xt.flags.writeable for Xt, _ in cache._store.values() if isinstance(Xt, np.ndarray))


def test_youden_threshold_is_tuned_on_training_data(table):
    X, y = model_inputs(table)
    model = build_model(classifier="logistic", threshold="youden", threshold_cv=3, **SMALL).fit(X.iloc[:60], y.iloc[:60])
    threshold = decision_threshold(model)
    assert 0 < threshold < 1
    probability = model.predict_proba(X.iloc[60:])[:, 1]
    np.testing.assert_array_equal(model.predict(X.iloc[60:]), (probability >= threshold).astype(int))


def test_mutual_information_selection_runs(table):
    X, y = model_inputs(table)
    model = build_model(classifier="logistic", selection="mutual_info", k_grid=(3,), cv=3, grid="small").fit(X, y)
    assert model_summary(model)["k"] == 3 * 2  # 3 of each group (rad, clin)
    model = build_model(classifier="logistic", selection="mutual_info", k_grid=(3,), cv=3, grid="small",
                        selection_scope="all").fit(X, y)
    assert model_summary(model)["k"] == 3


def test_group_scope_keeps_the_k_best_of_each_group():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(40, int), np.ones(20, int)]
    columns = {f"cnn_{i:04d}": rng.normal(size=60) for i in range(300)}  # noise, many
    columns["clin_sbp"] = y * 1.0 + rng.normal(scale=1.5, size=60)  # weak real signal
    columns["clin_age"] = rng.normal(size=60)
    columns["missingindicator_clin_d_dimer"] = (rng.random(60) < 0.1).astype(float)
    columns["rad_volume"] = y * 1.5 + rng.normal(size=60)
    X = pd.DataFrame(columns)
    grouped = CappedSelectKBest(k=2, scope="group").fit(X, y)
    kept = list(X.columns[grouped.get_support()])
    assert grouped.k_ == 5 and "clin_sbp" in kept and "rad_volume" in kept
    assert sum(c.startswith("cnn_") for c in kept) == 2
    assert sum(c.startswith(("clin_", "missingindicator_clin_")) for c in kept) == 2
    overall = CappedSelectKBest(k=5, scope="all").fit(X, y)
    best_five = np.argsort(overall.scores_)[-5:]
    assert set(np.flatnonzero(overall.get_support())) == set(best_five)
    with pytest.raises(ValueError, match="scope"):
        CappedSelectKBest(scope="each").fit(X, y)
    # numpy input (as inside the Pipeline): the groups come from column_groups
    named = CappedSelectKBest(k=2, scope="group", column_groups=",".join(c.split("_")[0] if not c.startswith("missing")
                                                                         else "clin" for c in X.columns))
    assert (named.fit(X.to_numpy(), y).get_support() == grouped.get_support()).all()


def test_pipeline_tells_the_selector_each_columns_group_indicators_included(table):
    X, y = model_inputs(table)
    assert X.isna().any().any()
    model = fit_model(build_model(classifier="logistic", k_grid=(2,), cv=3, grid="small"), X, y)
    pipeline = fitted_pipeline(model)
    groups = pipeline.named_steps["select"].column_groups.split(",")
    names = pipeline[:-2].get_feature_names_out()  # the columns reaching the selector
    assert len(groups) == len(names)
    assert groups == [str(n).removeprefix("missingindicator_").split("_")[0] for n in names]
    kept = selected_features(model)
    assert sum(n.removeprefix("missingindicator_").startswith("rad_") for n in kept) == 2
    assert sum(n.removeprefix("missingindicator_").startswith("clin_") for n in kept) == 2


def test_group_k_overrides_k_for_named_groups():
    rng = np.random.default_rng(6)
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    X = pd.DataFrame({**{f"cnn_{i:04d}": rng.normal(size=60) + y for i in range(20)},
                      **{f"rad_f{i}": rng.normal(size=60) for i in range(4)},
                      **{f"clin_v{i}": rng.normal(size=60) for i in range(4)}})
    selector = CappedSelectKBest(k=2, scope="group", group_k={"cnn": 0}).fit(X, y)
    kept = list(X.columns[selector.get_support()])
    assert selector.k_ == 4 and not any(c.startswith("cnn_") for c in kept)
    assert sum(c.startswith("rad_") for c in kept) == 2
    more = CappedSelectKBest(k=1, scope="group", group_k={"cnn": 5}).fit(X, y)
    assert sum(c.startswith("cnn_") for c in X.columns[more.get_support()]) == 5 and more.k_ == 7


def test_search_may_leave_out_an_optional_group_only_where_there_is_a_choice():
    with_cnn = synthetic_table(n_cnn=40)
    X, y = model_inputs(with_cnn)
    model = fit_model(build_model(classifier="logistic", optional_groups=("cnn",), **SMALL), X, y)
    options = {str(p.get("select__group_k")) for p in model.cv_results_["params"]}
    assert options == {"None", "{'cnn': 0}"}
    summary = model_summary(model)
    dropped = model.best_params_.get("select__group_k") == {"cnn": 0}
    assert summary["groups_used"] == (["rad", "clin"] if dropped else ["rad", "clin", "cnn"])
    # forced in (the paper's fusion; the default), or nothing to drop: one candidate per setting, no group_k
    forced = fit_model(build_model(classifier="logistic", **SMALL), X, y)
    assert len(forced.cv_results_["params"]) * 2 == len(model.cv_results_["params"])
    assert model_summary(forced)["groups_used"] == ["rad", "clin", "cnn"]
    without_cnn = fit_model(build_model(classifier="logistic", optional_groups=("cnn",), **SMALL), *model_inputs(synthetic_table()))
    assert len(without_cnn.cv_results_["params"]) == len(forced.cv_results_["params"])
    only_cnn = fit_model(build_model(classifier="logistic", groups=("cnn",), optional_groups=("cnn",), **SMALL), X, y)
    assert len(only_cnn.cv_results_["params"]) == len(forced.cv_results_["params"])
    with pytest.raises(InputError, match="optional group"):
        build_model(optional_groups=("radiology",))  # "deep" became a real group (the CT network's)


def test_noise_cnn_columns_are_left_out_and_do_not_cost_auc():
    # 150 noise "CNN" columns beside a real signal: forced in they cost AUC; the search leaves them out
    from sklearn.metrics import roc_auc_score

    table = synthetic_table(n=240, n_rad=6, n_clin=4, n_cnn=150, informative=3, missing=0.0, seed=3)
    train, test = table.iloc[:120], table.iloc[120:]
    X, y = model_inputs(train)
    X_test, y_test = model_inputs(test)
    kwargs = dict(classifier="logistic", k_grid=(3, "all"), cv=3, grid="small")
    chosen = fit_model(build_model(optional_groups=("cnn",), **kwargs), X, y)
    forced = fit_model(build_model(**kwargs), X, y)
    assert model_summary(chosen)["groups_used"] == ["rad", "clin"]
    auc_chosen = roc_auc_score(y_test, chosen.predict_proba(X_test)[:, 1])
    auc_forced = roc_auc_score(y_test, forced.predict_proba(X_test)[:, 1])
    assert auc_chosen > auc_forced  # 0.945 vs 0.903 when written


# --------------------------------------------------------------------------- bundle


def _bundle(fitted, table, tmp_path):
    return save_model(
        fitted,
        tmp_path / "model",
        feature_columns=None,
        settings={"classifier": "svm"},
        train_table_hash=table_hash(table.iloc[:60]),
        evaluation={"auc": 0.8},
    )


def test_bundle_round_trip_gives_identical_predictions(fitted, table, tmp_path):
    path = _bundle(fitted, table, tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "model.skops"]
    bundle = load_model(path, expected_columns=table.columns)
    X, _ = model_inputs(table.iloc[60:])
    np.testing.assert_array_equal(bundle.estimator.predict_proba(X), fitted.predict_proba(X))
    assert bundle.feature_columns == feature_columns(table, ("rad", "clin"))
    assert bundle.train_table_hash == table_hash(table.iloc[:60])
    assert bundle.evaluation == {"auc": 0.8} and bundle.settings == {"classifier": "svm"}
    assert set(bundle.versions) == {"scikit-learn", "numpy", "scipy", "pandas", "skops", "hematoma"}
    predictions = bundle.predict_table(table.iloc[60:])
    assert predictions["patient_id"].tolist() == table["patient_id"].iloc[60:].tolist()


def test_bundle_refuses_to_overwrite(fitted, table, tmp_path):
    _bundle(fitted, table, tmp_path)
    with pytest.raises(InputError, match="already exists"):
        _bundle(fitted, table, tmp_path)


def test_bundle_refuses_missing_columns(fitted, table, tmp_path):
    path = _bundle(fitted, table, tmp_path)
    with pytest.raises(InputError, match=r"lacks 2 feature column.*rad_f1, clin_v2"):
        load_model(path, expected_columns=table.drop(columns=["rad_f1", "clin_v2"]).columns)


def test_bundle_refuses_another_sklearn_version_unless_allowed(fitted, table, tmp_path):
    path = _bundle(fitted, table, tmp_path)
    meta = json.loads((path / "bundle.json").read_text())
    meta["versions"]["scikit-learn"] = "0.24.2"
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="scikit-learn 0.24.2"):
        load_model(path)
    with pytest.warns(UserWarning, match="scikit-learn 0.24.2"):
        assert load_model(path, allow_version_mismatch=True).estimator is not None


def test_bundle_refuses_an_altered_model_file(fitted, table, tmp_path):
    path = _bundle(fitted, table, tmp_path)
    (path / "model.skops").write_bytes((path / "model.skops").read_bytes() + b"\0")
    with pytest.raises(InputError, match="checksum"):
        load_model(path)


class Smuggled(TransformerMixin, BaseEstimator):
    """A type no allow-list knows: stands for code an attacker wants to run at load."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def test_bundle_refuses_untrusted_types(fitted, table, tmp_path):
    import hashlib

    path = _bundle(fitted, table, tmp_path)
    tampered = fitted_pipeline(fitted)
    tampered.steps.insert(1, ("smuggled", Smuggled()))
    sio.dump(tampered, path / "model.skops")
    meta = json.loads((path / "bundle.json").read_text())
    meta["model_sha256"] = hashlib.sha256((path / "model.skops").read_bytes()).hexdigest()  # a careful attacker
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="does not trust.*Smuggled"):
        load_model(path)
    with pytest.raises(ValueError, match="outside model_bundle.TRUSTED_TYPES"):
        save_model(tampered, tmp_path / "other")


@pytest.mark.parametrize(("selection", "threshold", "scaling"),
                         [("f_classif", "youden", "standard"), ("mutual_info", "fixed", "quantile")])
def test_allow_list_covers_every_model_we_build(selection, threshold, scaling):
    table = synthetic_table(n=60, n_rad=4, n_clin=2, seed=4)
    X, y = model_inputs(table)
    model = build_model("auto", k_grid=(2,), cv=2, grid="small", selection=selection, threshold=threshold, threshold_cv=2,
                        scaling=scaling)
    types = set(sio.get_untrusted_types(data=sio.dumps(model.fit(X, y))))
    if threshold == "fixed":  # our own steps are there
        assert "hematoma.model.CappedSelectKBest" in types
    assert types <= set(TRUSTED_TYPES)


def test_fitted_families_are_all_trusted():
    table = synthetic_table(n=60, n_rad=4, n_clin=2, seed=4)
    X, y = model_inputs(table)
    for classifier in ("svm", "gradient_boosting"):  # fitted calibrated SVM / TreePredictor states
        model = build_model(classifier, k_grid=(2,), cv=2, grid="small").fit(X, y)
        assert set(sio.get_untrusted_types(data=sio.dumps(model))) <= set(TRUSTED_TYPES)


# --------------------------------------------------------------------------- repeated inner CV, elastic net


def test_one_repeat_is_the_search_before_repetitions(table):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    X, y = model_inputs(table)
    model = build_model("auto", cv_repeats=1, elastic_net=False, seed=2, **SMALL)
    assert type(model.cv) is StratifiedKFold
    assert (model.cv.n_splits, model.cv.shuffle, model.cv.random_state) == (3, True, 2)
    solvers = {g["clf"][0].solver for g in model.param_grid if isinstance(g["clf"][0], LogisticRegression)}
    assert solvers == {"lbfgs"}  # no elastic-net candidate
    fit_model(model, X, y)
    assert model.n_splits_ == 3 and "split3_test_score" not in model.cv_results_
    # the same folds as a plain seeded StratifiedKFold, so the same scores
    plain = build_model("auto", cv_repeats=1, elastic_net=False, seed=2, **SMALL)
    plain.set_params(cv=list(StratifiedKFold(3, shuffle=True, random_state=2).split(X, y)))
    np.testing.assert_allclose(fit_model(plain, X, y).cv_results_["mean_test_score"], model.cv_results_["mean_test_score"])
    summary = model_summary(model)
    assert (summary["inner_cv_folds"], summary["inner_cv_repeats"]) == (3, 1)


def test_repeated_inner_cv_scores_every_fold_of_every_repeat(table):
    from sklearn.model_selection import RepeatedStratifiedKFold

    X, y = model_inputs(table)
    model = build_model("logistic", cv_repeats=4, seed=1, **SMALL)
    assert isinstance(model.cv, RepeatedStratifiedKFold) and model.cv.get_n_splits() == 3 * 4
    fit_model(model, X, y)
    assert model.n_splits_ == 12
    scores = np.column_stack([model.cv_results_[f"split{i}_test_score"] for i in range(12)])
    np.testing.assert_allclose(scores.mean(axis=1), model.cv_results_["mean_test_score"])
    summary = model_summary(model)
    assert (summary["inner_cv_folds"], summary["inner_cv_repeats"]) == (3, 4)
    with pytest.raises(InputError, match="cv_repeats must be a whole number"):
        build_model(cv_repeats=0)


def test_class_count_check_names_the_repeated_cv(table):
    X, y = model_inputs(table)
    few = y.copy()
    few[few == 1] = 0
    few.iloc[:2] = 1
    with pytest.raises(InputError, match=r"3-fold cross-validation \(repeated 2 times\) needs at least 3 patients"):
        fit_model(build_model("logistic", cv_repeats=2, **SMALL), X, few)
    with pytest.raises(InputError, match=r"3-fold cross-validation \(repeated 2 times\)"):
        fit_model(build_model("logistic", cv_repeats=2, threshold="youden", threshold_cv=2, **SMALL), X, few)


def test_repeated_inner_folds_fit_on_their_training_patients_only(table):
    from sklearn.model_selection import RepeatedStratifiedKFold

    class RecordFitIds(TransformerMixin, BaseEstimator):
        seen: list = []

        def fit(self, X, y=None):
            RecordFitIds.seen.append(frozenset(X.index))
            return self

        def transform(self, X):
            return X

    train, test = table.iloc[:60], table.iloc[60:]
    X, y = model_inputs(train)
    model = build_model("logistic", cv_repeats=2, seed=5, **SMALL)
    model.estimator.steps.insert(0, ("record", RecordFitIds()))
    fit_model(model, X, y)
    folds = RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=5).split(X, y)
    expected = {frozenset(X.index[train_index]) for train_index, _ in folds} | {frozenset(X.index)}
    assert set(RecordFitIds.seen) == expected and len(expected) == 3 * 2 + 1  # each repeat's folds, then the refit
    assert not set().union(*RecordFitIds.seen) & set(test["patient_id"])


def test_elastic_net_is_an_auto_candidate_and_fits(table):
    from sklearn.linear_model import LogisticRegression

    X, y = model_inputs(table)
    model = build_model("auto", elastic_net=True, **SMALL)
    nets = [g for g in model.param_grid if isinstance(g["clf"][0], LogisticRegression) and g["clf"][0].solver == "saga"]
    assert len(nets) == 1 and nets[0]["clf__l1_ratio"] == [0.5]
    assert not any(g["clf"][0].solver == "saga" for g in build_model("auto", elastic_net=False, **SMALL).param_grid
                   if isinstance(g["clf"][0], LogisticRegression))
    assert not any(isinstance(g["clf"][0], LogisticRegression) and g["clf"][0].solver == "saga"
                   for g in build_model("svm", **SMALL).param_grid)  # the paper's path stays an SVM search
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # saga converges on these columns
        net = fit_model(build_model("elastic_net", cv_repeats=2, **SMALL), X, y)
    summary = model_summary(net)
    assert summary["classifier"] == "elastic_net" and summary["params"]["l1_ratio"] == 0.5
    assert summary["inner_cv_auc"] > 0.7
    assert np.all(np.isfinite(net.predict_proba(X)))
