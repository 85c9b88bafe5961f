"""BLAST-CT deep segmentation: same masks as the package, safe weights, methods auto/deep/both."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.errors import InputError

from hematoma_crops import NEEDS_WEIGHTS, WEIGHTS, hematoma_crop

pytestmark = [NEEDS_WEIGHTS]
torch = pytest.importorskip("torch")
pytest.importorskip("blast_ct", reason="the blast-ct package builds the network")
runner = CliRunner()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """A small synthetic head's hematoma with 15 mm around it in plane: seconds for the network, and no skull."""
    return hematoma_crop(tmp_path_factory.mktemp("deep"), hematoma_ml=20, margin_mm=15)


@pytest.fixture(scope="module")
def segmenter():
    from hematoma.segmentation.deep import DeepSegmenter

    return DeepSegmenter(WEIGHTS, 1)


def test_masks_equal_the_blast_ct_package_output(crop, segmenter, tmp_path):
    pandas = pytest.importorskip("pandas")
    from blast_ct.inference import run_inference

    path, _ = crop
    ours = sitk.GetArrayFromImage(segmenter.segment(sitk.ReadImage(str(path))).labels)
    table = tmp_path / "test.csv"
    pandas.DataFrame({"id": ["case"], "image": [str(path)]}).to_csv(table, index=False)
    run_inference(str(tmp_path / "job"), str(table), str(WEIGHTS / "config.json"), "cpu", str(WEIGHTS / "model_1.pt"),
                  False, False, False, 1, True, True)
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "job" / "predictions" / "case_prediction.nii.gz")))
    assert theirs.shape == ours.shape
    for blood in ((1,), (1, 4), (1, 2, 4)):
        assert dice(np.isin(ours, blood), np.isin(theirs, blood)) >= 0.99
    assert np.mean(ours == theirs) > 0.999


def test_deep_mask_finds_the_synthetic_hematoma_with_volumes(crop, segmenter):
    path, truth = crop
    result = segmenter.segment(sitk.ReadImage(str(path)))
    assert result.labels.GetSize() == truth.GetSize() and np.allclose(result.labels.GetSpacing(), truth.GetSpacing())
    found = sitk.GetArrayFromImage(result.mask("iph")) > 0
    assert dice(found, sitk.GetArrayFromImage(truth) > 0) > 0.85
    volumes = result.volumes_ml()
    assert set(volumes) == {"iph", "eah", "oedema", "ivh"} and all(v >= 0 for v in volumes.values())
    assert result.weights[0]["sha256"] == _sha256_from_sums("model_1.pt")


def test_air_tiles_are_skipped_without_changing_the_probabilities(segmenter):
    from hematoma.segmentation.deep import DeepSegmenter

    rng = np.random.default_rng(0)
    volume = rng.uniform(-1, 1, size=(15, 15, 30)).astype(np.float32)
    volume[:, :, 15:] = -1.0  # air (everything below the window) in the last 15 mm
    small = DeepSegmenter(WEIGHTS, 1, tile_mm=(15, 15, 15))
    skipping, run, total = small.probabilities(volume)
    small.all_tiles = True
    every, run_all, _ = small.probabilities(volume)
    assert (run, run_all, total) == (1, 2, 2)
    assert np.array_equal(skipping[:, :, :, :15], every[:, :, :, :15])
    assert np.all(np.argmax(skipping[:, :, :, 15:], axis=0) == 0)


def test_tiles_shrink_to_the_tissue_they_hold(segmenter):
    """A tile whose tissue fills one 15 mm corner runs as that corner only, with the same probabilities there."""
    from hematoma.segmentation.deep import DeepSegmenter

    volume = np.full((30, 30, 30), -1.0, dtype=np.float32)
    volume[:12, 3:14, :9] = np.random.default_rng(2).uniform(-1, 1, (12, 11, 9))
    small = DeepSegmenter(WEIGHTS, 1, tile_mm=(30, 30, 30))
    shrunk, _, _ = small.probabilities(volume, planes=[0, 5, 10, 20])
    small.all_tiles = True
    every, _, _ = small.probabilities(volume)
    assert np.allclose(shrunk[:, [0, 5, 10], :15, :15], every[:, [0, 5, 10], :15, :15], atol=1e-5)
    assert np.all(np.argmax(shrunk[:, 20], axis=0) == 0) and np.all(np.argmax(shrunk[:, :, 15:], axis=0) == 0)


def test_tiles_cost_least(segmenter):
    assert segmenter.tile_for((51, 86, 73)) == (60, 90, 75)  # one tile: 60 x 90 x 75 mm
    assert segmenter.tile_for((150, 230, 230)) == (60, 60, 60)  # 4 x (60 + 16) < 3 x (90 + 16) in plane
    assert segmenter.tile_for((1, 7, 500)) == (15, 15, 90)


def test_only_the_planes_a_thick_slice_scan_reads_are_computed(segmenter):
    """5 mm slices read one 1 mm plane in five; those planes equal the full forward pass."""
    from hematoma.segmentation.deep import forward_planes, needed_planes

    native = sitk.Image(20, 20, 6, sitk.sitkInt16)
    native.SetSpacing((0.5, 0.5, 5.0))
    grid = segmenter.resample(native - 1000)
    assert needed_planes(grid, native) == [0, 5, 10, 15, 20, 25]
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (1, 1, 110, 110, 110)).astype(np.float32))
    network = segmenter.networks[0]
    x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        full = network(x)[0]
        part = forward_planes(network, x, [0, 7, 29])
    assert torch.allclose(full[:, :, [0, 7, 29]], part, atol=1e-4)


def test_a_single_slice_is_segmented_on_its_own_grid(crop, segmenter):
    path, truth = crop
    image = sitk.ReadImage(str(path))
    middle = int(np.argmax(sitk.GetArrayViewFromImage(truth).sum(axis=(1, 2))))
    image = image[:, :, middle]
    image[0, 0] = -1000  # the crop holds no air; a CT in HU has some
    result = segmenter.segment(image)
    assert result.labels.GetDimension() == 2 and result.labels.GetSize() == image.GetSize()
    found = sitk.GetArrayFromImage(result.mask("blood")) > 0
    assert dice(found, sitk.GetArrayFromImage(truth[:, :, middle]) > 0) > 0.5


# --- weights: found, checked, never executed -----------------------------------------


def _sha256_from_sums(name: str) -> str:
    for line in (WEIGHTS / "SHA256SUMS").read_text().splitlines():
        digest, _, file = line.partition("  ")
        if file.strip().lstrip("*") == name:
            return digest
    raise AssertionError(f"{name} not in SHA256SUMS")


def _weights_copy(tmp_path: Path, models=("model_1.pt",)) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(WEIGHTS / "config.json", folder)
    for name in models:
        shutil.copy(WEIGHTS / name, folder)
    return folder


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_weights_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    from hematoma.segmentation.deep import DeepSegmenter

    folder = _weights_copy(tmp_path, ())
    marker = tmp_path / "code-ran"
    with open(folder / "model_1.pt", "wb") as handle:
        pickle.dump({"path(5, 5, 5)0.path.1.bn.weight": _RunsCode(str(marker))}, handle)
    with pytest.raises(InputError, match="weights_only"):
        DeepSegmenter(folder, 1)
    assert not marker.exists()


def test_a_state_dict_of_another_network_is_named(tmp_path):
    from hematoma.segmentation.deep import DeepSegmenter

    folder = _weights_copy(tmp_path)
    state = torch.load(folder / "model_1.pt", map_location="cpu", weights_only=True)
    name = next(k for k in state if k.endswith("conv.weight"))
    state[name] = torch.zeros(3, 3)
    torch.save(state, folder / "model_1.pt")
    with pytest.raises(InputError, match="shape") as error:
        DeepSegmenter(folder, 1)
    assert "\n" not in str(error.value) and name in str(error.value)
    del state[name]
    torch.save(state, folder / "model_1.pt")
    with pytest.raises(InputError, match="1 missing"):
        DeepSegmenter(folder, 1)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    from hematoma.segmentation.deep_weights import find_weights

    monkeypatch.setenv("BLAST_CT_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-xdg"))
    with pytest.raises(InputError, match="--weights DIR") as error:
        find_weights(None)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="weights folder not found"):
        find_weights(tmp_path / "nowhere")
    empty = tmp_path / "only-config"
    empty.mkdir()
    shutil.copy(WEIGHTS / "config.json", empty)
    with pytest.raises(InputError, match="no model files"):
        find_weights(empty)


def test_the_package_cache_is_used_when_no_folder_is_given(tmp_path, monkeypatch):
    from hematoma.segmentation.deep_weights import find_weights

    cache = tmp_path / "cache"
    (cache / "saved_models").mkdir(parents=True)
    shutil.copy(WEIGHTS / "model_1.pt", cache / "saved_models" / "model_1.torch_model")
    monkeypatch.setenv("BLAST_CT_CACHE_DIR", str(cache))
    found = find_weights(None)
    assert found.source == "blast-ct package" and [p.name for p in found.model_paths] == ["model_1.torch_model"]
    assert found.config["data"]["num_classes"] == 5  # the package's bundled config.json


def test_more_models_than_the_folder_holds_is_refused(tmp_path):
    from hematoma.segmentation.deep import DeepSegmenter

    with pytest.raises(InputError, match="--models 5 asked, but the folder holds 4"):
        DeepSegmenter(WEIGHTS, 5)


# --- methods --------------------------------------------------------------------------


def test_segment_cli_deep_writes_the_mask_and_the_other_volumes(crop, tmp_path):
    path, truth = crop
    out = tmp_path / "mask.nii.gz"
    result = runner.invoke(app, ["segment", str(path), "--out", str(out), "--method", "deep", "--weights", str(WEIGHTS)])
    assert result.exit_code == 0, result.output
    assert "segmenter: deep" in result.output and str(WEIGHTS) in result.output.replace("\n", "")
    assert "intraventricular blood" in result.output and "perihematomal oedema" in result.output
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    assert dice(mask, sitk.GetArrayFromImage(truth) > 0) > 0.85


def test_both_falls_back_to_the_network_where_the_rules_find_no_brain(crop):
    """The crop has no skull: the rules refuse it; 'both' returns BLAST-CT's blood and flags the case."""
    from hematoma.segmentation.methods import SegmenterSettings, segment_with

    path, truth = crop
    image = sitk.ReadImage(str(path))
    with pytest.raises(InputError, match="no brain"):
        segment_with(image, SegmenterSettings("rules"))
    result = segment_with(image, SegmenterSettings("both", str(WEIGHTS)), source=path)
    assert result.method == "both: deep" and result.columns["seg_qa_flag"] == 1.0
    assert "rules refused" in result.notes[0]
    assert dice(sitk.GetArrayFromImage(result.mask) > 0, sitk.GetArrayFromImage(truth) > 0) > 0.85


def test_both_records_agreement_where_the_rules_find_the_brain(crop):
    """The crop inside a bone box (a 'skull' the rules can close) and air: both methods find the clot."""
    from hematoma.segmentation.methods import SegmenterSettings, segment_with

    path, truth = crop
    image = sitk.ReadImage(str(path))
    boxed = sitk.ConstantPad(sitk.ConstantPad(image, (3, 3, 0), (3, 3, 0), 1000), (4, 4, 0), (4, 4, 0), -1000)
    result = segment_with(boxed, SegmenterSettings("both", str(WEIGHTS)))
    assert result.method == "both: rules"
    assert result.columns["seg_dice_rules_deep"] > 0.7 and result.columns["seg_qa_flag"] == 0.0
    assert np.isfinite(result.columns["seg_volume_difference_ml"]) and np.isfinite(result.columns["ivh_volume_ml"])


def test_auto_says_which_ran_and_takes_the_rules_without_a_gpu():
    from hematoma.segmentation.methods import SegmenterSettings, which_ran

    settings = SegmenterSettings("auto", str(WEIGHTS))
    if torch.cuda.is_available():
        assert settings.resolved_method() == "deep" and "GPU is present" in which_ran(settings)
    else:
        assert settings.resolved_method() == "rules" and "no CUDA GPU" in which_ran(settings)


def test_bad_method_options_are_one_line():
    result = runner.invoke(app, ["segment", "ct.nii.gz", "--out", "m.nii.gz", "--method", "magic"])
    assert result.exit_code == 2 and "unknown segmentation method 'magic'" in result.output
    result = runner.invoke(app, ["segment", "ct.nii.gz", "--out", "m.nii.gz", "--method", "deep", "--blood", "red"])
    assert result.exit_code == 2 and "unknown blood classes 'red'" in result.output


def test_config_json_is_checked(tmp_path):
    from hematoma.segmentation.deep_weights import find_weights

    folder = _weights_copy(tmp_path)
    (folder / "config.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(InputError, match="not a BLAST-CT config"):
        find_weights(folder)


# --- extract / predict with --method -------------------------------------------------


def test_extract_with_both_records_method_volumes_and_qa_flag(crop, tmp_path):
    """One skull-less crop: the rules refuse it, BLAST-CT's mask is used, the case is flagged and listed;
    a rerun resumes; another method on the same folder is refused, saying so."""
    path, _ = crop
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"patient_id,baseline_ct,he\np1,{path},1\n")
    out = tmp_path / "out"
    args = ["extract", str(manifest), "--out", str(out), "--workers", "1", "--method", "both", "--weights", str(WEIGHTS)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "segmenter: both" in result.output and "disagree on 1 case(s)" in result.output
    features = __import__("pandas").read_csv(out / "features.csv")
    assert features.loc[0, "seg_qa_flag"] == 1.0 and features.loc[0, "ivh_volume_ml"] >= 0
    assert features.loc[0, "baseline_volume_ml"] > 10
    record = json.loads((out / "cases" / "p1" / "case.json").read_text())
    assert record["segmentation"]["baseline"] == "both: deep"
    assert record["provenance"]["settings"]["segmentation"]["weights"][0]["sha256"] == _sha256_from_sums("model_1.pt")
    assert any("rules refused" in w for w in record["warnings"])
    assert json.loads((out / "extract.json").read_text())["segmentation_qa_flagged"] == ["p1"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 unchanged" in again.output
    other = runner.invoke(app, args[:-4] + ["--method", "deep", "--weights", str(WEIGHTS)])
    assert other.exit_code == 2 and "segments with deep" in other.output


def test_predict_segments_as_the_training_masks_were_made():
    """A model's extract record names its segmenter: predict rebuilds the same settings from it."""
    from hematoma.segmentation.methods import SegmenterSettings

    settings = SegmenterSettings("both", str(WEIGHTS), 2, "iph+ivh")
    again = SegmenterSettings.from_record(settings.record())
    assert again == settings
    assert SegmenterSettings.from_record(None) is None


def test_the_commands_blood_default_is_the_library_default():
    import inspect

    from hematoma.commands import extract, modeling, segment
    from hematoma.segmentation.options import DEFAULT_BLOOD

    for command in (segment.segment, extract.extract, modeling.predict, modeling.run):
        assert inspect.signature(command).parameters["blood"].default.default == DEFAULT_BLOOD


def test_deep_seg_has_the_ivh_and_oedema_segments_of_the_network(crop, segmenter, tmp_path):
    """`segment --method deep --out x.dcm`: one SEG segment per structure, each read back equal to the network's
    class on the CT's grid."""
    import pydicom
    from test_dicom_seg import _positions
    from test_io import write_ct_series

    from hematoma.io import read_dicom_seg, read_image

    path, _ = crop
    ct = sitk.ReadImage(str(path))
    folder = tmp_path / "ct"
    write_ct_series(folder, np.clip(sitk.GetArrayFromImage(ct), -1024, 3071), _positions(ct),
                    pixel_spacing=ct.GetSpacing()[1::-1], thickness=ct.GetSpacing()[2])
    out = tmp_path / "seg.dcm"
    result = runner.invoke(app, ["segment", str(folder), "--out", str(out), "--method", "deep", "--weights", str(WEIGHTS)])
    assert result.exit_code == 0, result.output
    labels = [item.SegmentLabel for item in pydicom.dcmread(out).SegmentSequence]
    assert labels == ["hematoma", "intraventricular blood", "perihematomal oedema"]
    image = read_image(folder)
    classes = sitk.GetArrayFromImage(segmenter.segment(image).labels)
    assert (classes == 3).sum() > 0, "the network found no oedema: the test would prove nothing"
    for label, index in (("intraventricular blood", 4), ("perihematomal oedema", 3)):
        back = sitk.GetArrayFromImage(read_dicom_seg(out, reference=image, segment=label)) > 0
        assert np.array_equal(back, classes == index), label
