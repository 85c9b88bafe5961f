"""Model bundle: a fitted model as a folder that can travel between sites safely.

Layout::

    <bundle>/model.skops    the fitted estimator, saved with skops (never pickle/joblib)
    <bundle>/bundle.json    feature columns, settings, dependency versions, the
                            training table's hash, the chosen model, the evaluation
                            it passed, and the SHA-256 of model.skops

Loading must not be able to run code.  skops refuses every type it does not
trust; we pass it only the types on :data:`TRUSTED_TYPES`, an allow-list kept
here in the code.  What the file itself lists is never trusted: a bundle holding
any other type (a tampered file) is refused with the names of the types.
Two of the allow-listed types, scikit-learn's tree arrays, are walked without
bounds checks by compiled code, so every tree is checked on load
(:mod:`hematoma.tree_checks`) before the estimator is returned.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import skops.io as sio

from .errors import InputError
from .evaluation.metrics import to_jsonable
from .model import decision_threshold, fitted_pipeline, model_inputs, model_summary
from .storage import plain_permissions, refuse_overwrite
from .svm_checks import check_fitted_svms
from .tree_checks import check_fitted_trees

BUNDLE_FORMAT = "hematoma-model-bundle"
BUNDLE_FORMAT_VERSION = 1
MODEL_FILE = "model.skops"
META_FILE = "bundle.json"
VERSIONED_PACKAGES = ("scikit-learn", "numpy", "scipy", "pandas", "skops", "hematoma")

# Types that skops does not trust by default and that our models contain
# (scikit-learn estimators themselves are trusted by skops already).  Found with
# skops.io.get_untrusted_types on every model build_model can make; a test
# checks the list still covers them.  Add a type here only after reading it.
TRUSTED_TYPES = (
    "hematoma.known_predictors.KnownPredictorColumns",
    "hematoma.model.CappedSelectKBest",
    "hematoma.model.FeatureGroupSelector",
    "hematoma.model.GroupAwarePipeline",
    "hematoma.model.ModelSearch",
    "hematoma.model.QuantileNormalizer",
    "hematoma.model.f_classif_scores",
    "hematoma.model.mutual_info_scores",
    "hematoma.model_anchor.ScoreAnchor",
    "hematoma.model_blend.PriorBlend",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._classification.balanced_accuracy_score",
    "sklearn.metrics._ranking.roc_auc_score",
    "sklearn.metrics._scorer._CurveScorer",
    "sklearn.metrics._scorer._Scorer",
    "sklearn.model_selection._split.RepeatedStratifiedKFold",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.utils._metadata_requests.MetadataRequest",
    "sklearn.utils._metadata_requests.MethodMetadataRequest",
)


@dataclass
class ModelBundle:
    """A loaded bundle: the fitted estimator and what was saved with it."""

    path: Path
    estimator: object
    feature_columns: list[str]
    settings: dict
    versions: dict
    train_table_hash: str
    evaluation: dict | None = None
    summary: dict = field(default_factory=dict)
    created: str = ""

    @property
    def threshold(self) -> float:
        return decision_threshold(self.estimator)

    def predict_table(self, table: pd.DataFrame) -> pd.DataFrame:
        """``patient_id``, ``probability`` (of HE) and ``predicted`` (0/1) for each row of a feature table."""
        check_columns(self.feature_columns, table.columns, self.path)
        X, _ = model_inputs(table, label=None)
        probability = self.estimator.predict_proba(X)[:, 1]
        predicted = (probability >= self.threshold).astype(int)
        return pd.DataFrame({"patient_id": X.index.astype(str), "probability": probability, "predicted": predicted})


def installed_versions() -> dict[str, str]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            if package == "hematoma":
                from . import __version__

                versions[package] = __version__
            else:
                versions[package] = "not installed"
    return versions


def table_hash(table: pd.DataFrame) -> str:
    """SHA-256 of a table's column names and values (row order matters; index ignored)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([str(c) for c in table.columns]).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _untrusted(types) -> list[str]:
    return sorted(set(types) - set(TRUSTED_TYPES))


def save_model(
    estimator,
    out_dir: str | Path,
    feature_columns=None,
    settings: dict | None = None,
    train_table_hash: str = "",
    evaluation: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a fitted estimator and its metadata as a bundle folder, atomically.

    ``feature_columns``: the columns the model needs at prediction time; ``None``
    takes them from the fitted Pipeline.  A list that lacks some of those is an
    error (the bundle would accept tables the model cannot use).
    """
    out_dir = Path(out_dir)
    refuse_overwrite(out_dir, overwrite)
    used = list(fitted_pipeline(estimator).named_steps["groups"].columns_)
    feature_columns = used if feature_columns is None else [str(c) for c in feature_columns]
    not_listed = [c for c in used if c not in set(feature_columns)]
    if not_listed:
        raise ValueError(f"feature_columns lacks {len(not_listed)} column(s) the model uses: {not_listed[:10]}")
    data = sio.dumps(estimator)
    unknown = _untrusted(sio.get_untrusted_types(data=data))
    if unknown:
        # Refuse to write what load_model would refuse to read.
        raise ValueError(f"the estimator holds types outside model_bundle.TRUSTED_TYPES: {unknown}")
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "feature_columns": feature_columns,
        "settings": settings or {},
        "versions": installed_versions(),
        "train_table_hash": train_table_hash,
        "summary": model_summary(estimator),
        "evaluation": evaluation,
        "model_file": MODEL_FILE,
        "model_sha256": hashlib.sha256(data).hexdigest(),
    }
    text = json.dumps(to_jsonable(meta), indent=2, sort_keys=True, allow_nan=False) + "\n"
    # Build the folder beside its destination, then rename: a bundle appears whole or not at all.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        plain_permissions(staging)  # mkdtemp makes it 0700: colleagues could not read the bundle
        (staging / MODEL_FILE).write_bytes(data)
        (staging / META_FILE).write_text(text, encoding="utf-8")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            staging.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def load_model(path: str | Path, expected_columns=None, allow_version_mismatch: bool = False) -> ModelBundle:
    """Load a bundle, refusing (``InputError`` with the reason) anything we cannot vouch for.

    - a missing or malformed ``bundle.json``, or a ``model.skops`` that does not
      match its recorded checksum;
    - scikit-learn of another major.minor version than the one that saved it
      (estimators' internals change between minor versions) unless
      ``allow_version_mismatch=True`` (then a warning);
    - any type outside :data:`TRUSTED_TYPES`, a ``model.skops`` skops cannot
      read, and tree arrays with indices out of range (:mod:`.tree_checks`);
    - ``expected_columns`` (the columns of the table to predict on) lacking
      feature columns the model needs: they are listed.
    """
    path = Path(path)
    meta_path, model_path = path / META_FILE, path / MODEL_FILE
    if not path.is_dir():
        raise InputError(path, "no such model bundle folder")
    if not meta_path.is_file() or not model_path.is_file():
        raise InputError(path, f"not a model bundle: needs {META_FILE} and {MODEL_FILE}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(meta_path, f"cannot be read as JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise InputError(meta_path, f"not a {BUNDLE_FORMAT} file")
    if meta.get("format_version") != BUNDLE_FORMAT_VERSION:
        version = meta.get("format_version")
        raise InputError(meta_path, f"bundle format version {version} is not supported (expected {BUNDLE_FORMAT_VERSION})")
    if _sha256(model_path) != meta.get("model_sha256"):
        raise InputError(model_path, "does not match the checksum in bundle.json (corrupted or altered)")
    _check_versions(meta.get("versions", {}), path, allow_version_mismatch)
    estimator = load_skops(model_path, TRUSTED_TYPES)
    feature_columns = list(meta.get("feature_columns", []))
    if expected_columns is not None:
        check_columns(feature_columns, expected_columns, path)
    return ModelBundle(
        path=path,
        estimator=estimator,
        feature_columns=feature_columns,
        settings=meta.get("settings", {}),
        versions=meta.get("versions", {}),
        train_table_hash=meta.get("train_table_hash", ""),
        evaluation=meta.get("evaluation"),
        summary=meta.get("summary", {}),
        created=meta.get("created", ""),
    )


def load_skops(model_path: Path, trusted_types) -> object:
    """The estimator in a skops file whose types are all in ``trusted_types``, its trees checked.

    Every failure is one ``InputError`` naming the file: types outside the
    list, a file skops cannot read (not a zip, a member missing, a malformed
    schema or array), tree arrays out of range.
    """
    try:
        untrusted = sio.get_untrusted_types(file=model_path)
    except Exception as error:  # noqa: BLE001 - whatever the reader trips on, the file is malformed
        raise InputError(model_path, f"cannot be read as a skops model file ({_reason(error)})") from None
    refused = sorted(set(untrusted) - set(trusted_types))
    if refused:
        raise InputError(model_path, f"holds types this version of hematoma does not trust, refusing to load: {refused}")
    try:
        estimator = sio.load(model_path, trusted=list(untrusted))
    except Exception as error:  # noqa: BLE001 - as above; only allow-listed types can be built here
        raise InputError(model_path, f"cannot be read as a skops model file ({_reason(error)})") from None
    try:
        check_fitted_trees(estimator, model_path)
        check_fitted_svms(estimator, model_path)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - an attribute of the wrong kind where a fitted one belongs
        raise InputError(model_path, f"holds a malformed fitted estimator ({_reason(error)})") from None
    return estimator


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def check_columns(needed, available, bundle_path=None) -> None:
    """InputError listing the model's feature columns that ``available`` lacks."""
    available = {str(c) for c in available}
    missing = [c for c in needed if c not in available]
    if missing:
        shown = ", ".join(missing[:20]) + (f" ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise InputError(bundle_path, f"the table lacks {len(missing)} feature column(s) the model needs: {shown}")


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


def _check_versions(saved: dict, path: Path, allow_mismatch: bool) -> None:
    now = installed_versions()
    saved_sklearn = saved.get("scikit-learn", "unknown")
    if _major_minor(saved_sklearn) != _major_minor(now["scikit-learn"]):
        reason = (
            f"saved with scikit-learn {saved_sklearn}, this environment has {now['scikit-learn']}; "
            f"install scikit-learn=={saved_sklearn} or retrain"
        )
        if not allow_mismatch:
            raise InputError(path, reason + " (or pass --allow-version-mismatch to load it at your own risk)")
        warnings.warn(f"{path}: {reason}; loading anyway as asked", stacklevel=3)
    others = [
        f"{p} {saved.get(p)} -> {now[p]}"
        for p in VERSIONED_PACKAGES
        if p != "scikit-learn" and saved.get(p) not in (None, now[p])
    ]
    if others:
        warnings.warn(f"{path}: saved with other package versions: {', '.join(others)}", stacklevel=3)
