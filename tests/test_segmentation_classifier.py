"""Voxel predictors, the trainable voxel classifier and its safe storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from hematoma.errors import InputError
from hematoma.segmentation import HemorrhageSegmentationModel, VoxelHemorrhageClassifier, segment_hemorrhage
from hematoma.segmentation.classifier import (
    MODEL_FILE,
    SETTINGS_FILE,
    collect_training_voxels,
    dice_at_thresholds,
    fit_segmentation_model,
)
from hematoma.segmentation.voxel_features import FEATURE_NAMES, compute_features, local_moments, plane_zscore
from test_segmentation_phantoms import dice, make_head_phantom

TRAINING = [((14.0, (25.0, 5.0, 0.0))), (10.0, (-25.0, -10.0, 5.0)), (17.0, (20.0, -20.0, 0.0))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cases = []
    for seed, (radius, centre) in enumerate(TRAINING):
        ct, truth, _ = make_head_phantom(hematoma_radius_mm=radius, hematoma_center_mm=centre, seed=seed)
        cases.append((ct, truth, f"patient{seed}"))
    X, y, groups, weights, geometry = collect_training_voxels(cases, max_voxels_per_case=600, seed=0)
    # One OpenMP thread: on a busy machine gradient boosting's spinning threads are many times slower.
    with threadpool_limits(limits=1, user_api="openmp"):
        model = fit_segmentation_model(X, y, groups, weights, geometry, n_cases=len(cases))
    folder = model.save(tmp_path_factory.mktemp("model") / "segmenter")
    return model, folder, (X, y, groups)


def test_local_moments_match_direct_computation():
    rng = np.random.default_rng(0)
    hu = rng.normal(40, 10, size=(3, 7, 7)).astype(np.float32)
    brain = np.ones_like(hu, dtype=bool)
    mean, sd, skew, kurtosis = local_moments(hu, brain, size=(3, 3, 3))
    block = hu[0:3, 2:5, 2:5].astype(np.float64).ravel()
    centred = block - block.mean()
    assert mean[1, 3, 3] == pytest.approx(block.mean(), abs=1e-3)
    assert sd[1, 3, 3] == pytest.approx(block.std(), rel=1e-3)
    assert skew[1, 3, 3] == pytest.approx(np.mean(centred**3) / block.std() ** 3, abs=1e-3)
    assert kurtosis[1, 3, 3] == pytest.approx(np.mean(centred**4) / block.std() ** 4, rel=1e-3)


def test_plane_zscore_is_per_slice():
    hu = np.zeros((2, 20, 20), dtype=np.float32)
    hu[0] = np.arange(400).reshape(20, 20)
    hu[1] = 1000 + 2 * np.arange(400).reshape(20, 20)
    z = plane_zscore(hu, np.ones_like(hu, dtype=bool), axis=0)
    assert z[0].mean() == pytest.approx(0, abs=1e-4) and z[1].mean() == pytest.approx(0, abs=1e-4)
    assert z[0].std() == pytest.approx(1, rel=1e-3)


def test_features_have_the_documented_columns():
    ct, truth, _ = make_head_phantom()
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    brain = sitk.GetArrayFromImage(make_head_phantom()[2]) > 0
    where = sitk.GetArrayFromImage(truth) > 0
    features = compute_features(hu, brain, (5.0, 1.4, 1.4), where)
    assert features.shape == (where.sum(), len(FEATURE_NAMES))
    assert np.isfinite(features).all()
    column = dict(zip(FEATURE_NAMES, features.T))
    assert np.median(column["hu"]) > 55  # these voxels are blood
    assert np.median(column["left_right_difference"]) > 20  # brighter than the other hemisphere
    assert np.median(column["fraction_40_80"]) > 0.6  # edge voxels have edema neighbours


def test_dice_at_thresholds():
    probability = np.array([0.9, 0.8, 0.3, 0.1])
    y = np.array([1, 1, 0, 1])
    thresholds, scores = dice_at_thresholds(probability, y, thresholds=[0.5, 0.05])
    assert scores[0] == pytest.approx(2 * 2 / (2 + 3))
    assert scores[1] == pytest.approx(2 * 3 / (4 + 3))


def test_classifier_follows_scikit_learn_conventions(trained):
    _, _, (X, y, groups) = trained
    estimator = VoxelHemorrhageClassifier(estimators=("logistic",), n_splits=2)
    assert estimator.get_params()["n_splits"] == 2
    assert clone(estimator).get_params() == estimator.get_params()
    assert estimator.fit(X, y, groups=groups) is estimator
    for attribute in ("estimator_", "threshold_", "selected_estimator_", "cv_results_", "classes_", "n_features_in_"):
        assert hasattr(estimator, attribute)
    assert set(estimator.predict(X[:50])) <= {0, 1}
    assert estimator.predict_proba(X[:5]).shape == (5, 2)
    with pytest.raises(ValueError):
        estimator.predict(X[:5, :3])  # wrong number of features


def test_model_choice_is_cross_validated(trained):
    model, _, _ = trained
    classifier = model.classifier
    assert set(classifier.cv_results_) == {"logistic", "hist_gradient_boosting", "random_forest"}
    best = max(classifier.cv_results_.values(), key=lambda r: r["dice"])
    assert classifier.cv_results_[classifier.selected_estimator_] == best
    assert 0.05 <= classifier.threshold_ <= 0.95
    assert model.training["n_patients"] == 3


def test_saved_model_segments_a_new_scan(trained):
    _, folder, _ = trained
    model = HemorrhageSegmentationModel.load(folder)
    ct, truth, _ = make_head_phantom(hematoma_radius_mm=12.0, hematoma_center_mm=(-22.0, 10.0, 0.0), seed=7)
    mask = segment_hemorrhage(ct, model=model)
    assert mask.GetSize() == ct.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    assert dice(mask, truth) > 0.85
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    assert settings["feature_names"] == list(FEATURE_NAMES)
    assert settings["threshold"] == model.classifier.threshold_


def test_model_with_other_features_is_refused(trained, tmp_path):
    _, folder, _ = trained
    copy = tmp_path / "other"
    copy.mkdir()
    (copy / MODEL_FILE).write_bytes((folder / MODEL_FILE).read_bytes())
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    settings["feature_names"] = settings["feature_names"][:-1]
    (copy / SETTINGS_FILE).write_text(json.dumps(settings))
    with pytest.raises(InputError, match="feature_names"):
        HemorrhageSegmentationModel.load(copy)
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    settings["format_version"] = 999
    (copy / SETTINGS_FILE).write_text(json.dumps(settings))
    with pytest.raises(InputError, match="format_version.*retrain"):
        HemorrhageSegmentationModel.load(copy)


def test_untrusted_types_are_refused(trained, tmp_path):
    import skops.io
    from sklearn.neighbors import KNeighborsClassifier  # not among the trusted types

    _, folder, _ = trained
    copy = tmp_path / "untrusted"
    copy.mkdir()
    (copy / SETTINGS_FILE).write_text((folder / SETTINGS_FILE).read_text())
    skops.io.dump(KNeighborsClassifier(), copy / MODEL_FILE)
    with pytest.raises(InputError, match="not trusted|not a VoxelHemorrhageClassifier"):
        HemorrhageSegmentationModel.load(copy)


def test_missing_model_files_are_named(tmp_path):
    with pytest.raises(InputError, match="not a model folder"):
        HemorrhageSegmentationModel.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="settings.json"):
        HemorrhageSegmentationModel.load(tmp_path / "empty")


def test_image_model_mismatch_is_refused(trained):
    model, _, _ = trained
    ct, _, _ = make_head_phantom()
    with pytest.raises(InputError, match="2D slice"):
        segment_hemorrhage(ct[:, :, 5], model=model, source="slice.nii.gz")
    thin, _, _ = make_head_phantom(shape_zyx=(24, 110, 96), spacing_xyz=(1.9, 1.9, 1.25))
    with pytest.raises(InputError, match=r"slice thickness 1.25 mm .*5.00 mm"):
        segment_hemorrhage(thin, model=model, source="thin.nii.gz")


def test_existing_model_folder_is_not_overwritten(trained):
    model, folder, _ = trained
    with pytest.raises(InputError, match="--overwrite"):
        model.save(folder)
    model.save(folder, overwrite=True)
    assert (folder / MODEL_FILE).exists()


@pytest.mark.parametrize("name", ["logistic", "hist_gradient_boosting", "random_forest"])
def test_each_estimator_kind_round_trips(name, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, len(FEATURE_NAMES))).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    with threadpool_limits(limits=1, user_api="openmp"):
        classifier = VoxelHemorrhageClassifier(estimators=(name,), n_splits=2).fit(X, y, groups=np.arange(300) % 3)
    HemorrhageSegmentationModel(classifier, {"slice_thickness_mm": [5.0, 5.0]}).save(tmp_path / "m")
    loaded = HemorrhageSegmentationModel.load(tmp_path / "m")
    # allclose: a forest sums its trees in parallel, in no fixed order
    assert np.allclose(loaded.classifier.predict_proba(X), classifier.predict_proba(X), atol=1e-12)
    assert loaded.classifier.selected_estimator_ == name


def test_segmenting_does_not_import_the_model_file_stack():
    # skops pulls in torch (seconds per worker process); only saving and loading a model need it.
    import subprocess
    import sys

    code = "import sys, hematoma.segmentation; print(sorted(m for m in ('skops', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
