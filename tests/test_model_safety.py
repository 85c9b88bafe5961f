"""Model files a user is handed: tampered tree arrays, unreadable skops files, unsealed folders (issue 15).

A skops file is a zip of ``schema.json`` and ``.npy`` members; the tests
rewrite a tree's node array (or the schema) as an attacker would, recompute
the checksum that sits beside it, and check that loading refuses the file with
one line instead of predicting (which crashed the process: exit -11/139).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError
from hematoma.model import build_model, model_inputs
from hematoma.model_bundle import load_model, save_model
from hematoma.segmentation import HemorrhageSegmentationModel, VoxelHemorrhageClassifier
from hematoma.segmentation.voxel_features import FEATURE_NAMES
from test_model import synthetic_table
from test_segmentation_phantoms import make_head_phantom

runner = CliRunner()


# --------------------------------------------------------------------------- skops surgery


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _objects(schema, class_name: str) -> list[dict]:
    """The schema entries of ``class_name`` objects, in file order."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("__class__") == class_name:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def tamper_nodes(path: Path, class_name: str, edit, which: int = 0) -> None:
    """Apply ``edit(nodes)`` to the node array of the ``which``-th tree of ``class_name`` in a skops file."""
    members = _members(path)
    entry = _objects(json.loads(members["schema.json"]), class_name)[which]
    name = entry["content"]["content"]["nodes"]["file"]
    nodes = np.load(io.BytesIO(members[name]), allow_pickle=False)
    edit(nodes)
    buffer = io.BytesIO()
    np.save(buffer, nodes, allow_pickle=False)
    members[name] = buffer.getvalue()
    _write(path, members)


def tamper_schema(path: Path, edit) -> None:
    members = _members(path)
    schema = json.loads(members["schema.json"])
    edit(schema)
    members["schema.json"] = json.dumps(schema).encode()
    _write(path, members)


def reseal(folder: Path) -> None:
    """Recompute the checksum beside model.skops, as a careful attacker (or a careless editor) would."""
    meta_path = folder / ("bundle.json" if (folder / "bundle.json").exists() else "settings.json")
    meta = json.loads(meta_path.read_text())
    meta["model_sha256"] = hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))


def first_split(nodes) -> int:
    if "is_leaf" in nodes.dtype.names:  # TreePredictor
        return int(np.flatnonzero(nodes["is_leaf"] == 0)[0])
    return int(np.flatnonzero(nodes["left_child"] != -1)[0])  # sklearn Tree


def _hematoma(*args) -> subprocess.CompletedProcess:
    """The CLI in a child process: a segfault there is an exit status here, not a dead test run."""
    return subprocess.run([sys.executable, "-m", "hematoma", *map(str, args)], capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gbm_bundle(tmp_path_factory):
    """A gradient-boosting model bundle (HistGradientBoosting: TreePredictor arrays) and a feature table for it."""
    table = synthetic_table(n=60, n_rad=4, n_clin=2, seed=4)
    X, y = model_inputs(table)
    with threadpool_limits(limits=1):
        model = build_model("gradient_boosting", groups=("rad", "clin"), k_grid=(2,), cv=2, grid="small").fit(X, y)
    root = tmp_path_factory.mktemp("bundle")
    table.to_csv(root / "features.csv", index=False)
    return save_model(model, root / "model"), root / "features.csv"


def _segmenter(kind: str, folder: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, len(FEATURE_NAMES))).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    with threadpool_limits(limits=1, user_api="openmp"):
        classifier = VoxelHemorrhageClassifier(estimators=(kind,), n_splits=2).fit(X, y, groups=np.arange(300) % 3)
    return HemorrhageSegmentationModel(classifier, {"slice_thickness_mm": [5.0, 5.0]}).save(folder)


@pytest.fixture(scope="module")
def forest_segmenter(tmp_path_factory):
    """A `segment-train`-style folder whose classifier is a random forest (sklearn Tree arrays)."""
    return _segmenter("random_forest", tmp_path_factory.mktemp("forest") / "segmenter")


@pytest.fixture(scope="module")
def boosting_segmenter(tmp_path_factory):
    return _segmenter("hist_gradient_boosting", tmp_path_factory.mktemp("boosting") / "segmenter")


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    ct, _, _ = make_head_phantom(hematoma_radius_mm=12.0, hematoma_center_mm=(-22.0, 10.0, 0.0), seed=7)
    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    sitk.WriteImage(ct, str(path))
    return path


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --------------------------------------------------------------------------- group 1: tampered trees


def test_tampered_bundle_is_refused_by_evaluate_instead_of_crashing(gbm_bundle, tmp_path):
    """Issue 15 group 1: out-of-range child + recomputed checksum made `evaluate` segfault (exit -11/139)."""
    bundle, features = gbm_bundle
    bundle = _copy(bundle, tmp_path)
    tamper_nodes(bundle / "model.skops", "TreePredictor", lambda nodes: nodes["left"].__setitem__(first_split(nodes), 10**9))
    reseal(bundle)
    result = _hematoma("evaluate", bundle, features, "--out", tmp_path / "report", "--external")
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    line = _one_line(result.stderr)
    assert "model.skops: tree 0 node 0 has child 1000000000 outside 0.." in line
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda n, s: n["feature_idx"].__setitem__(s, 999), r"node \d+ splits on feature 999 outside 0\.\.3"),
    (lambda n, s: n["right"].__setitem__(s, s), r"node \d+ has child \d+ before it \(a cycle\)"),
    (lambda n, s: (n["is_categorical"].__setitem__(s, 1), n["bitset_idx"].__setitem__(s, 7)), r"node \d+ has bitset 7 but the tree holds none"),
    (lambda n, s: n["num_threshold"].__setitem__(s, np.nan), r"node \d+ has a NaN threshold"),
    (lambda n, s: n["value"].__setitem__(n["is_leaf"] == 1, np.inf), r"holds leaf values that are not finite"),
], ids=["feature", "cycle", "bitset", "nan-threshold", "inf-leaf"])
def test_every_kind_of_bad_gradient_boosting_tree_is_refused(gbm_bundle, tmp_path, edit, message):
    bundle = _copy(gbm_bundle[0], tmp_path)
    tamper_nodes(bundle / "model.skops", "TreePredictor", lambda nodes: edit(nodes, first_split(nodes)), which=3)
    reseal(bundle)
    with pytest.raises(InputError, match=r"model\.skops: tree 3 " + message):
        load_model(bundle)


def test_untampered_bundle_still_loads_and_predicts(gbm_bundle):
    bundle, features = gbm_bundle
    import pandas as pd

    predictions = load_model(bundle).predict_table(pd.read_csv(features))
    assert predictions["probability"].between(0, 1).all() and len(predictions) == 60


def test_tampered_segmenter_is_refused_by_segment_instead_of_crashing(forest_segmenter, ct_file, tmp_path):
    """Issue 15 group 1: a `segment-train` folder (no checksum then) with bad tree arrays crashed `segment --model`."""
    folder = _copy(forest_segmenter, tmp_path)
    tamper_nodes(folder / "model.skops", "Tree", lambda nodes: nodes["left_child"].__setitem__(first_split(nodes), 10**9), which=2)
    reseal(folder)
    result = _hematoma("segment", ct_file, "--out", tmp_path / "mask.nii.gz", "--model", folder)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "model.skops: tree 2 node 0 has child 1000000000 outside 0.." in _one_line(result.stderr)
    assert not (tmp_path / "mask.nii.gz").exists()


_FRESH_IDS = itertools.count(1)


def json_value(value) -> dict:
    """A schema entry for a plain value, with an id of its own (skops shares entries of equal small values by id)."""
    return {"__class__": type(value).__name__, "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True, "__id__": next(_FRESH_IDS)}


def _max_depth_zero(schema):
    _objects(schema, "Tree")[1]["content"]["content"]["max_depth"] = json_value(0)


@pytest.mark.parametrize(("nodes_edit", "schema_edit", "message"), [
    (lambda n: n["feature"].__setitem__(first_split(n), 16), None, r"node 0 splits on feature 16 outside 0\.\.15"),
    (lambda n: n["feature"].__setitem__(first_split(n), -5), None, r"node 0 splits on feature -5 outside"),
    (lambda n: n["right_child"].__setitem__(n["left_child"] == -1, 1), None, r"node \d+ has one child only"),
    (lambda n: n["left_child"].__setitem__(first_split(n), 0), None, r"node 0 has child 0 before it \(a cycle\)"),
    (lambda n: n["threshold"].__setitem__(first_split(n), np.nan), None, r"node 0 has a NaN threshold"),
    (None, _max_depth_zero, r"records max_depth 0 but is \d+ deep"),
], ids=["feature-high", "feature-negative", "one-child", "cycle", "nan-threshold", "max-depth"])
def test_every_kind_of_bad_decision_tree_is_refused(forest_segmenter, tmp_path, nodes_edit, schema_edit, message):
    folder = _copy(forest_segmenter, tmp_path)
    if nodes_edit is not None:
        tamper_nodes(folder / "model.skops", "Tree", nodes_edit, which=1)
    if schema_edit is not None:
        tamper_schema(folder / "model.skops", schema_edit)
    reseal(folder)
    with pytest.raises(InputError, match=r"model\.skops: tree 1 " + message):
        HemorrhageSegmentationModel.load(folder)


def test_forest_member_fed_other_columns_is_refused(forest_segmenter, tmp_path):
    # A forest calls its trees with check_input=False: a tree built for more columns would read past each row.
    folder = _copy(forest_segmenter, tmp_path)

    def widen(schema):
        tree = _objects(schema, "Tree")[0]
        tree["__reduce__"]["args"]["content"][0] = json_value(40)

    tamper_schema(folder / "model.skops", widen)
    reseal(folder)
    with pytest.raises(InputError, match=r"model\.skops: DecisionTreeClassifier expects 16 features but its tree has 40"):
        HemorrhageSegmentationModel.load(folder)


def test_tampered_boosting_segmenter_is_refused(boosting_segmenter, tmp_path):
    folder = _copy(boosting_segmenter, tmp_path)
    tamper_nodes(folder / "model.skops", "TreePredictor", lambda nodes: nodes["left"].__setitem__(first_split(nodes), 4000))
    reseal(folder)
    with pytest.raises(InputError, match=r"model\.skops: tree 0 node 0 has child 4000 outside"):
        HemorrhageSegmentationModel.load(folder)


# --------------------------------------------------------------------------- group 1: the segmenter's folder is sealed


def test_segmenter_folder_records_and_checks_the_model_checksum(forest_segmenter, tmp_path):
    settings = json.loads((forest_segmenter / "settings.json").read_text())
    assert settings["model_sha256"] == hashlib.sha256((forest_segmenter / "model.skops").read_bytes()).hexdigest()
    folder = _copy(forest_segmenter, tmp_path)
    (folder / "model.skops").write_bytes((folder / "model.skops").read_bytes()[:-10])  # a partial copy
    with pytest.raises(InputError, match=r"model\.skops: does not match the checksum in settings\.json"):
        HemorrhageSegmentationModel.load(folder)


def test_segmenter_folder_without_checksum_is_refused_with_the_way_out(forest_segmenter, tmp_path):
    folder = _copy(forest_segmenter, tmp_path)
    settings = json.loads((folder / "settings.json").read_text())
    del settings["model_sha256"]
    (folder / "settings.json").write_text(json.dumps(settings))
    result = runner.invoke(app, ["segment", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "m.nii.gz"),
                                 "--model", str(folder)])
    assert result.exit_code == 2
    line = _one_line(result.output)
    assert "settings.json: records no checksum of model.skops" in line and "hematoma segment-train" in line


def test_segmenter_holding_another_model_kind_is_refused(forest_segmenter, tmp_path):
    folder = _copy(forest_segmenter, tmp_path)

    def rename(schema):  # the forest claims to be the logistic pipeline
        schema["content"]["content"]["selected_estimator_"] = json_value("logistic")

    tamper_schema(folder / "model.skops", rename)
    reseal(folder)
    with pytest.raises(InputError, match="holds a RandomForestClassifier where fit makes a Pipeline"):
        HemorrhageSegmentationModel.load(folder)


# --------------------------------------------------------------------------- group 7: unreadable model.skops


def _not_a_zip(path: Path) -> None:
    path.write_bytes(b"this is not a zip archive\n" * 10)


def _member_missing(path: Path) -> None:
    members = _members(path)
    array = next(name for name in members if name.endswith(".npy"))
    del members[array]
    _write(path, members)


@pytest.mark.parametrize("damage", [_not_a_zip, _member_missing], ids=["BadZipFile", "KeyError"])
def test_unreadable_bundle_model_is_one_line_in_evaluate(gbm_bundle, tmp_path, damage):
    bundle, features = gbm_bundle
    bundle = _copy(bundle, tmp_path)
    damage(bundle / "model.skops")
    reseal(bundle)
    result = runner.invoke(app, ["evaluate", str(bundle), str(features), "--out", str(tmp_path / "r"), "--external"])
    assert result.exit_code == 2, result.output
    line = _one_line(result.output)
    assert f"{bundle / 'model.skops'}: cannot be read as a skops model file" in line


@pytest.mark.parametrize("damage", [_not_a_zip, _member_missing], ids=["BadZipFile", "KeyError"])
def test_unreadable_segmenter_model_is_one_line_in_segment(forest_segmenter, ct_file, tmp_path, damage):
    folder = _copy(forest_segmenter, tmp_path)
    damage(folder / "model.skops")
    reseal(folder)
    result = runner.invoke(app, ["segment", str(ct_file), "--out", str(tmp_path / "m.nii.gz"), "--model", str(folder)])
    assert result.exit_code == 2, result.output
    assert f"{folder / 'model.skops'}: cannot be read as a skops model file" in _one_line(result.output)


# --------------------------------------------------------------------------- group 9: advice that can be followed


def test_version_mismatch_advice_names_the_flag(gbm_bundle, tmp_path):
    bundle = _copy(gbm_bundle[0], tmp_path)
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["versions"]["scikit-learn"] = "1.0.2"
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(InputError) as refused:
        load_model(bundle)
    assert refused.value.problem.endswith(
        "; install scikit-learn==1.0.2 or retrain (or pass --allow-version-mismatch to load it at your own risk)")


# --------------------------------------------------------------------------- the CNN folder (safetensors)


def _cnn_folder(folder: Path, state: dict, settings: dict | None = None) -> Path:
    """A `hematoma cnn train`-style folder holding ``state`` (not a whole network: the readers refuse first)."""
    import torch  # noqa: F401  (safetensors.torch needs it)
    from safetensors.torch import save_file

    from hematoma.features.deep.bundle import FORMAT, FORMAT_VERSION
    from hematoma.features.deep.slices import SliceSettings
    from hematoma.storage import sha1_file

    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"))
    base = {"format": FORMAT, "format_version": FORMAT_VERSION, "slices": SliceSettings().to_dict()}
    base.update(settings or {})
    base["model_sha1"] = sha1_file(folder / "model.safetensors")
    (folder / "settings.json").write_text(json.dumps(base))
    return folder


def _reseal_cnn(folder: Path) -> None:
    from hematoma.storage import sha1_file

    settings = json.loads((folder / "settings.json").read_text())
    settings["model_sha1"] = sha1_file(folder / "model.safetensors")
    (folder / "settings.json").write_text(json.dumps(settings))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _header_lies(path: Path) -> None:
    # safetensors: 8-byte header length, JSON header, data; the header now promises a far larger tensor.
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["fc.weight"]["shape"] = [2000, 2048]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + size:])


@pytest.mark.parametrize("damage", [_truncate, _header_lies], ids=["truncated", "header-shape"])
def test_damaged_cnn_weights_are_one_line(tmp_path, damage):
    import torch

    from hematoma.features.deep import load_cnn

    folder = _cnn_folder(tmp_path / "cnn", {"fc.weight": torch.zeros(2, 2048), "fc.bias": torch.zeros(2)})
    damage(folder / "model.safetensors")
    _reseal_cnn(folder)
    with pytest.raises(InputError, match=r"model\.safetensors: cannot be read as a state dict") as refused:
        load_cnn(folder, device="cpu")
    assert "\n" not in str(refused.value)


def test_cnn_weights_of_other_shapes_or_not_numbers_are_one_line(tmp_path):
    import torch

    from hematoma.features.deep import load_cnn

    wrong = _cnn_folder(tmp_path / "wrong", {"fc.weight": torch.zeros(3, 7), "fc.bias": torch.zeros(3)})
    with pytest.raises(InputError, match=r"model\.safetensors: does not fit the 2-class Inception v3"):
        load_cnn(wrong, device="cpu")
    nan = _cnn_folder(tmp_path / "nan", {"fc.weight": torch.full((2, 2048), float("nan")), "fc.bias": torch.zeros(2)})
    with pytest.raises(InputError, match=r"model\.safetensors: weight fc\.weight holds values that are not finite"):
        load_cnn(nan, device="cpu")


@pytest.mark.parametrize(("settings", "message"), [
    ({"format_version": "1"}, r"has format_version '1', not a whole number"),
    ({"slices": [80, 40]}, r"'slices' is a list, not an object"),
    ({"slices": {"image_size": "large"}}, r"slices image_size is 'large', not a whole number"),
    ({"slices": {"window_width": -5}}, r"window width must be > 0 HU"),
], ids=["version", "slices-list", "slices-text", "slices-range"])
def test_malformed_cnn_settings_are_one_line_naming_the_file(tmp_path, settings, message):
    import torch

    from hematoma.features.deep import load_cnn

    folder = _cnn_folder(tmp_path / "cnn", {"fc.bias": torch.zeros(2)}, settings)
    with pytest.raises(InputError, match=r"settings\.json: " + message):
        load_cnn(folder, device="cpu")
    (folder / "settings.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"settings\.json: is not a hematoma CNN settings file \(a JSON list"):
        load_cnn(folder, device="cpu")


# ------------------------------------------------------------------ libsvm arrays (the paper's SVM)


@pytest.mark.parametrize("edit, message", [
    (lambda m: setattr(m, "_dual_coef_", m._dual_coef_[:, :2].copy()), "dual coefficients of shape"),
    (lambda m: setattr(m, "support_vectors_", m.support_vectors_[:, :2].copy()), "support vectors of shape"),
    (lambda m: setattr(m, "_intercept_", np.array([np.nan])), "not finite"),
])
def test_svm_arrays_that_disagree_are_refused_before_libsvm_reads_them(edit, message):
    # libsvm trusts these sizes: a short dual_coef_ gave silently wrong decision values (-0.9999 -> -1.1376).
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import make_classification
    from sklearn.svm import SVC

    from hematoma.svm_checks import check_fitted_svms

    X, y = make_classification(60, 5, random_state=0)
    calibrated = CalibratedClassifierCV(SVC(), cv=3).fit(X, y)
    assert check_fitted_svms(calibrated, "model.skops") == 3  # one SVC per calibration fold, all valid
    svm = SVC().fit(X, y)
    edit(svm)
    with pytest.raises(InputError, match=message) as caught:
        check_fitted_svms({"calibrated": calibrated, "tampered": svm}, "model.skops")
    assert str(caught.value).startswith("model.skops: SVC")
