"""Trainable voxel classifier for hemorrhage, in the spirit of PItcHPERFeCT.

PItcHPERFeCT (ichseg) describes each candidate voxel by local predictors and
classifies it with a random forest, at a probability cut-off chosen for Dice.
Here:

* :class:`VoxelHemorrhageClassifier` is a scikit-learn estimator that picks,
  by cross-validation grouped by patient, one of a logistic regression, a
  histogram gradient boosting and a random forest, refits it on all voxels and
  tunes its probability cut-off for Dice on the out-of-fold predictions;
* :class:`HemorrhageSegmentationModel` wraps a fitted classifier with the
  settings its predictors were computed with; it is what
  ``segment_hemorrhage(image, model)`` uses, and it is saved as a folder:
  ``model.skops`` (loaded with an explicit list of trusted types, so loading
  a model cannot run code, and its tree arrays bounds-checked) and
  ``settings.json`` (with the SHA-256 of ``model.skops``, checked on load);
* :func:`collect_training_voxels` samples candidate voxels of CT scans with
  masks, :func:`train_from_manifest` does it all for a cohort manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import SimpleITK as sitk
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import __version__
from ..errors import InputError
from ..storage import write_json
from . import voxel_features
from .brain import OrientedCT, brain_mask_array, orient_ct
from .hemorrhage import CANDIDATE_HU, bounding_box, candidate_voxels, finish_mask, keep_index_hematoma

MODEL_FORMAT_VERSION = 1
MODEL_FILE = "model.skops"
SETTINGS_FILE = "settings.json"
ESTIMATOR_NAMES = ("logistic", "hist_gradient_boosting", "random_forest")
#: Types a saved model may contain beyond skops' defaults; anything else is refused.
TRUSTED_TYPES = (
    "hematoma.segmentation.classifier.VoxelHemorrhageClassifier",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn.tree._tree.Tree",
)
#: Slice thicknesses / pixel sizes may differ from the training scans by this factor.
GEOMETRY_TOLERANCE = 1.5


def make_estimator(name: str, random_state=0):
    """One of the candidate classifiers, by name."""
    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, early_stopping=True, random_state=random_state)
    if name == "random_forest":
        # Shallow-ish trees: a full-depth forest on 10^5 voxels is slow to apply and large to store.
        return RandomForestClassifier(n_estimators=50, min_samples_leaf=20, max_depth=12, n_jobs=2, random_state=random_state)
    raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATOR_NAMES)}")


def dice_at_thresholds(probability, y, sample_weight=None, thresholds=None):
    """Weighted Dice of ``probability >= t`` against ``y`` for each threshold ``t``."""
    thresholds = np.linspace(0.05, 0.95, 91) if thresholds is None else np.asarray(thresholds)
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    positive = np.asarray(y) == 1
    predicted = probability[None, :] >= thresholds[:, None]
    overlap = (predicted & positive[None, :]) @ weight
    total = predicted @ weight + weight[positive].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(total > 0, 2 * overlap / total, 1.0)
    return thresholds, dice


class VoxelHemorrhageClassifier(ClassifierMixin, BaseEstimator):
    """Hemorrhage-vs-not classifier of voxels, model chosen by grouped CV, cut-off tuned for Dice.

    Parameters
    ----------
    estimators : tuple of str
        Candidate models (:data:`ESTIMATOR_NAMES`); one alone skips the choice
        but still tunes the cut-off on out-of-fold predictions.
    n_splits : int
        Folds of the cross-validation (grouped by patient when ``groups`` are given).
    random_state : int
        Seed of the models and of the folds.

    ``fit(X, y, groups=None, sample_weight=None)``: ``sample_weight`` weighs
    voxels in the Dice used to choose the model and cut-off (the inverse of
    their sampling fraction, so Dice refers to all candidate voxels); the
    models themselves are fitted unweighted.
    """

    def __init__(self, estimators=ESTIMATOR_NAMES, n_splits=3, random_state=0):
        self.estimators = estimators
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, X, y, groups=None, sample_weight=None):
        X, y = validate_data(self, X, y, dtype=np.float32)
        self.classes_ = np.unique(y)
        if not np.array_equal(self.classes_, [0, 1]):
            raise ValueError(f"y must hold both classes 0 and 1, got {self.classes_.tolist()}")
        cv, cv_groups = self._folds(y, groups)
        self.cv_results_ = {}
        best = None
        for name in self.estimators:
            probability = cross_val_predict(
                make_estimator(name, self.random_state), X, y, groups=cv_groups, cv=cv, method="predict_proba"
            )[:, 1]
            thresholds, dice = dice_at_thresholds(probability, y, sample_weight)
            index = int(np.argmax(dice))
            self.cv_results_[name] = {"dice": float(dice[index]), "threshold": float(thresholds[index])}
            if best is None or dice[index] > self.cv_results_[best]["dice"]:
                best = name
        self.selected_estimator_ = best
        self.threshold_ = self.cv_results_[best]["threshold"]
        self.cv_dice_ = self.cv_results_[best]["dice"]
        self.estimator_ = clone(make_estimator(best, self.random_state)).fit(X, y)
        return self

    def _folds(self, y, groups):
        if groups is not None and len(np.unique(groups)) >= 2:
            return GroupKFold(n_splits=min(self.n_splits, len(np.unique(groups)))), groups
        if groups is not None:
            warnings.warn("one patient only: cross-validation cannot be grouped by patient; voxels are split at random", stacklevel=3)
        n_splits = max(2, min(self.n_splits, int(np.bincount(y).min())))
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state), None

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] >= self.threshold_).astype(int)]


def current_settings() -> dict:
    """The settings that predictors are computed with in this version (compared on loading)."""
    return {
        "format_version": MODEL_FORMAT_VERSION,
        "feature_names": list(voxel_features.FEATURE_NAMES),
        "candidate_hu": list(CANDIDATE_HU),
        "blood_neighbour_hu": list(voxel_features.BLOOD_NEIGHBOUR_HU),
        "neighbourhood_radius_mm": voxel_features.NEIGHBOURHOOD_RADIUS_MM,
        "smoothing_sigmas_mm": list(voxel_features.SMOOTHING_SIGMAS_MM),
    }


class HemorrhageSegmentationModel:
    """A fitted :class:`VoxelHemorrhageClassifier` plus the settings and training geometry it belongs to."""

    def __init__(self, classifier: VoxelHemorrhageClassifier, training: dict, settings: dict | None = None):
        self.classifier = classifier
        self.training = training
        self.settings = current_settings() if settings is None else settings

    # -- use ---------------------------------------------------------------
    def check_image(self, ct: OrientedCT, source=None) -> None:
        """Refuse an image whose geometry is far from that of the training scans."""
        thickness = self.training.get("slice_thickness_mm")
        if thickness and ct.was_2d:
            raise InputError(source, f"is a single 2D slice, but the model was trained on 3D scans with "
                                     f"{_range_text(thickness)} mm slices; use the rule-based segmenter (no --model)")
        checks = (("slice thickness", ct.spacing_zyx[0], thickness), ("pixel size", min(ct.spacing_zyx[1:]), self.training.get("pixel_size_mm")))
        for what, value, seen in checks:
            if seen and not (seen[0] / GEOMETRY_TOLERANCE <= value <= seen[1] * GEOMETRY_TOLERANCE):
                raise InputError(source, f"{what} {value:.2f} mm is outside the range the model was trained on "
                                         f"({_range_text(seen)} mm); retrain it on such scans or use the rule-based segmenter (no --model)")

    def predict_mask(self, hu: np.ndarray, brain: np.ndarray, spacing_zyx) -> np.ndarray:
        """Hemorrhage mask (bool) of an LPS (z, y, x) HU array and its brain mask."""
        candidates = candidate_voxels(hu, brain, spacing_zyx, strict=False)
        found = np.zeros(hu.shape, dtype=bool)
        if candidates.any():
            features = voxel_features.compute_features(hu, brain, spacing_zyx, candidates)
            found[candidates] = self.classifier.predict(features) == 1
        kept = keep_index_hematoma(found, spacing_zyx)
        return finish_mask(kept, brain, spacing_zyx) if kept.any() else kept

    # -- storage -----------------------------------------------------------
    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise InputError(folder, "already exists and is not empty; pass --overwrite to replace the model in it")
        folder.mkdir(parents=True, exist_ok=True)
        from ..storage import atomic_path

        import skops.io  # here, not at the top: it imports torch (~5 s), which segmenting never needs

        data = skops.io.dumps(self.classifier)
        with atomic_path(folder / MODEL_FILE) as temporary:
            temporary.write_bytes(data)
        settings = dict(self.settings)
        settings.update(
            model_sha256=hashlib.sha256(data).hexdigest(),
            package_version=__version__,
            sklearn_version=sklearn.__version__,
            selected_estimator=self.classifier.selected_estimator_,
            threshold=self.classifier.threshold_,
            cross_validation=self.classifier.cv_results_,
            training=self.training,
        )
        write_json(folder / SETTINGS_FILE, settings)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "HemorrhageSegmentationModel":
        folder = Path(folder)
        settings_path, model_path = folder / SETTINGS_FILE, folder / MODEL_FILE
        if not folder.is_dir():
            raise InputError(folder, "is not a model folder (expected a folder made by `hematoma segment-train`)")
        for path in (settings_path, model_path):
            if not path.is_file():
                raise InputError(path, "is missing: not a model folder made by `hematoma segment-train`")
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(settings_path, f"cannot be read as JSON ({error})") from None
        if not isinstance(settings, dict):
            raise InputError(settings_path, "is not a settings object: not a model folder made by `hematoma segment-train`")
        for key, expected in current_settings().items():
            if settings.get(key) != expected:
                raise InputError(settings_path, f"the model was trained with {key} = {settings.get(key)!r}, but this version "
                                                f"of hematoma ({__version__}) uses {expected!r}; retrain it with `hematoma segment-train`")
        recorded = settings.get("model_sha256")
        if not isinstance(recorded, str):
            raise InputError(settings_path, f"records no checksum of {MODEL_FILE} (written by an older hematoma, or edited), "
                                            "so the model cannot be verified; retrain it with `hematoma segment-train`")
        _refuse_other_content(model_path)
        if hashlib.sha256(model_path.read_bytes()).hexdigest() != recorded:
            raise InputError(model_path, f"does not match the checksum in {SETTINGS_FILE} (corrupted or altered); "
                                         "copy the folder again or retrain it with `hematoma segment-train`")
        from ..model_bundle import load_skops  # imports skops: see save()

        classifier = load_skops(model_path, TRUSTED_TYPES)
        _check_classifier(classifier, model_path)
        return cls(classifier, _training_geometry(settings.get("training", {}), settings_path),
                   {k: settings[k] for k in current_settings()})


def _training_geometry(training, settings_path: Path) -> dict:
    """The recorded training geometry, refused unless each range is two positive numbers (check_image uses them)."""
    if not isinstance(training, dict):
        raise InputError(settings_path, f"'training' is a {type(training).__name__}, not an object")
    for key in ("slice_thickness_mm", "pixel_size_mm"):
        value = training.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 2
                                      and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in value)
                                      and value[0] <= value[1]):
            raise InputError(settings_path, f"training {key} is {value!r}, not a range [low, high] in mm")
    return training


def _refuse_other_content(model_path: Path) -> None:
    """Name what a model file holds when it is not ours, before the checksum says only that it differs.

    Reads the skops schema only (no object is built): untrusted types, or a
    top-level object other than a VoxelHemorrhageClassifier.
    """
    import zipfile

    import skops.io

    try:
        with zipfile.ZipFile(model_path) as archive:
            root = json.loads(archive.read("schema.json"))
        untrusted = skops.io.get_untrusted_types(file=model_path)
    except Exception:  # noqa: BLE001 - unreadable: load_skops reports it, after the checksum
        return
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise InputError(model_path, f"contains types that are not trusted: {', '.join(unexpected)}; refusing to load it")
    name = root.get("__class__") if isinstance(root, dict) else None
    if name != VoxelHemorrhageClassifier.__name__:
        raise InputError(model_path, f"holds a {name}, not a VoxelHemorrhageClassifier")


def _check_classifier(classifier, model_path: Path) -> None:
    """A fitted classifier of the kind :meth:`VoxelHemorrhageClassifier.fit` makes, or one line saying what is not."""
    if not isinstance(classifier, VoxelHemorrhageClassifier):
        raise InputError(model_path, f"holds a {type(classifier).__name__}, not a VoxelHemorrhageClassifier")
    name = getattr(classifier, "selected_estimator_", None)
    if name not in ESTIMATOR_NAMES:
        raise InputError(model_path, f"holds an unfitted classifier or an unknown model {name!r}")
    expected = type(make_estimator(name))
    if type(classifier.estimator_) is not expected:
        raise InputError(model_path, f"holds a {type(classifier.estimator_).__name__} where fit makes a {expected.__name__}")
    threshold = getattr(classifier, "threshold_", None)
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or not 0 < threshold < 1:
        raise InputError(model_path, f"has a probability cut-off {threshold!r} outside (0, 1)")
    if getattr(classifier, "n_features_in_", None) != len(voxel_features.FEATURE_NAMES):
        raise InputError(model_path, f"takes {getattr(classifier, 'n_features_in_', None)} predictors, "
                                     f"not the {len(voxel_features.FEATURE_NAMES)} this version computes")


def _range_text(values) -> str:
    low, high = values
    return f"{low:.2f}" if abs(high - low) < 1e-6 else f"{low:.2f}-{high:.2f}"


# --- training data ---------------------------------------------------------------


def case_voxels(ct_image: sitk.Image, mask_image: sitk.Image, max_voxels: int, rng: np.random.Generator, source=None):
    """Features, labels and Dice weights of sampled candidate voxels of one scan.

    Up to ``max_voxels / 2`` hemorrhage and as many other candidates are drawn;
    each voxel's weight is the inverse of its class's sampling fraction.
    """
    ct = orient_ct(ct_image, source)
    truth = _oriented_mask(mask_image, ct)
    brain = brain_mask_array(ct.hu, ct.spacing_zyx, source)
    box = bounding_box(brain | truth, margin=(1, 8, 8))
    hu, brain, truth = ct.hu[box], brain[box], truth[box]
    candidates = candidate_voxels(hu, brain, ct.spacing_zyx, strict=False)
    labels = truth[candidates]
    chosen = np.zeros(labels.shape, dtype=bool)
    weights = np.zeros(labels.shape, dtype=np.float64)
    for value in (True, False):
        members = np.nonzero(labels == value)[0]
        if len(members) == 0:
            continue
        take = rng.choice(members, size=min(len(members), max_voxels // 2), replace=False)
        chosen[take] = True
        weights[take] = len(members) / len(take)
    where = np.zeros(hu.shape, dtype=bool)
    where[tuple(index[chosen] for index in np.nonzero(candidates))] = True
    features = voxel_features.compute_features(hu, brain, ct.spacing_zyx, where)
    # compute_features returns voxels in C order; chosen (a subset of candidates) is in C order too.
    return features, labels[chosen].astype(np.int8), weights[chosen], ct.spacing_zyx


def collect_training_voxels(cases: Iterable[tuple[sitk.Image, sitk.Image, str]], max_voxels_per_case: int = 20000, seed: int = 0):
    """Stack :func:`case_voxels` over ``(ct, mask, patient_id)`` triples.

    Returns ``X, y, groups, sample_weight, geometry`` where ``geometry`` holds
    the ranges of slice thickness and pixel size seen.
    """
    rng = np.random.default_rng(seed)
    blocks, thickness, pixel = [], [], []
    for ct_image, mask_image, group in cases:
        X, y, w, spacing = case_voxels(ct_image, mask_image, max_voxels_per_case, rng, source=group)
        blocks.append((X, y, np.full(len(y), str(group), dtype=object), w))
        thickness.append(spacing[0])
        pixel.append(min(spacing[1:]))
    if not blocks:
        raise ValueError("no training cases")
    X, y, groups, weights = (np.concatenate([b[i] for b in blocks]) for i in range(4))
    geometry = {"slice_thickness_mm": [min(thickness), max(thickness)], "pixel_size_mm": [min(pixel), max(pixel)]}
    return X, y, groups, weights, geometry


def _oriented_mask(mask_image: sitk.Image, ct: OrientedCT) -> np.ndarray:
    mask = sitk.JoinSeries(mask_image) if ct.was_2d else sitk.DICOMOrient(mask_image, "LPS")
    array = sitk.GetArrayFromImage(mask) > 0
    if array.shape != ct.hu.shape:
        raise InputError(None, f"mask size {array.shape[::-1]} differs from the CT's {ct.hu.shape[::-1]}")
    return array


def fit_segmentation_model(X, y, groups, weights, geometry, n_cases: int, estimators=ESTIMATOR_NAMES, random_state=0):
    """Fit a :class:`VoxelHemorrhageClassifier` on collected voxels and wrap it as a model."""
    classifier = VoxelHemorrhageClassifier(estimators=estimators, random_state=random_state)
    classifier.fit(X, y, groups=groups, sample_weight=weights)
    training = dict(geometry, n_cases=n_cases, n_patients=int(len(np.unique(groups))), n_voxels=int(len(y)),
                    n_hemorrhage_voxels=int(y.sum()))
    return HemorrhageSegmentationModel(classifier, training)


def train_from_manifest(manifest_path: str | Path, out_dir: str | Path, overwrite: bool = False,
                        max_voxels_per_case: int = 20000, estimators=ESTIMATOR_NAMES, seed: int = 0,
                        progress: bool = True) -> HemorrhageSegmentationModel:
    """Train on every scan of a manifest that has a mask (baseline and follow-up) and save to ``out_dir``."""
    from rich.progress import Progress

    from ..cohort import load_manifest
    from ..io import read_image, read_mask

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(out_dir, "already exists and is not empty; pass --overwrite to replace the model in it")
    manifest = load_manifest(manifest_path)
    pairs = []
    for _, row in manifest.table.iterrows():
        for ct_column, mask_column in (("baseline_ct", "baseline_mask"), ("followup_ct", "followup_mask")):
            ct_path, mask_path = row.get(ct_column), row.get(mask_column)
            if isinstance(ct_path, str) and isinstance(mask_path, str):
                pairs.append((row["patient_id"], ct_path, mask_path))
    if not pairs:
        raise InputError(manifest.path, "no scan has a mask (baseline_mask / followup_mask): nothing to train on")

    def cases():
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("sampling voxels", total=len(pairs))
            for patient, ct_path, mask_path in pairs:
                ct = read_image(ct_path)
                yield ct, read_mask(mask_path, reference=ct, reference_path=ct_path), patient
                bar.advance(task)

    X, y, groups, weights, geometry = collect_training_voxels(cases(), max_voxels_per_case, seed)
    if y.min() == y.max():
        raise InputError(manifest.path, "the masks hold no hemorrhage among the candidate voxels (or only hemorrhage): cannot train")
    model = fit_segmentation_model(X, y, groups, weights, geometry, n_cases=len(pairs), estimators=estimators, random_state=seed)
    model.save(out_dir, overwrite=overwrite)
    return model
