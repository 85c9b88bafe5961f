"""The deep_ features: BLAST-CT's penultimate maps pooled over hematoma, rim and oedema in the segmenter's run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from typer.testing import CliRunner

from hematoma.cli import app

from hematoma_crops import NEEDS_WEIGHTS, WEIGHTS, hematoma_crop

pytestmark = [NEEDS_WEIGHTS]
torch = pytest.importorskip("torch")
pytest.importorskip("blast_ct", reason="the blast-ct package builds the network")
runner = CliRunner()


def _reference_pooling(labels, features, computed, blood, rim_mm=5.0):
    """Regions of a whole class map (z, y, x) and pooled (C, z, y, x) maps, the plain way."""
    hematoma = np.isin(labels, blood) & computed
    rim = (ndimage.distance_transform_edt(~hematoma) <= rim_mm) & ~hematoma & computed if hematoma.any() \
        else np.zeros_like(hematoma)
    regions = {"hematoma": hematoma, "rim": rim, "oedema": (labels == 3) & computed}
    out = {}
    for name, region in regions.items():
        values = features[:, region]
        if values.shape[1] == 0:
            out[name] = (np.full(features.shape[0], np.nan), np.full(features.shape[0], np.nan), 0)
        else:
            out[name] = (values.astype(np.float64).mean(axis=1), values.max(axis=1), values.shape[1])
    return out


def _assert_same_pooling(pooled, reference):
    for region in ("hematoma", "rim", "oedema"):
        mean, maximum, count = pooled[region]
        ref_mean, ref_max, ref_count = reference[region]
        assert count == ref_count, region
        np.testing.assert_allclose(mean, ref_mean, atol=1e-4, err_msg=region)
        np.testing.assert_allclose(maximum, ref_max, atol=1e-4, err_msg=region)


def test_tile_by_tile_pooling_equals_pooling_the_whole_volume():
    """The pooler's deferral (rim voxels whose blood lies in a later tile) against pooling the whole volume."""
    from hematoma.features.ct_network import RegionPooler

    rng = np.random.default_rng(0)
    shape, tile = (23, 31, 29), (10, 12, 12)
    labels = np.zeros(shape, dtype=np.int64)
    labels[8:14, 10:19, 9:15] = 1  # a clot across tile borders
    labels[5:8, 10:19, 9:15] = 3
    labels[18:20, 2:5, 25:28] = 4
    features = rng.normal(size=(7,) + shape).astype(np.float32)
    planes = [0, 2, 5, 8, 9, 11, 13, 15, 16, 20, 22]  # a thick-slice run computes some planes only
    computed = np.zeros(shape, dtype=bool)
    computed[planes] = True
    pooler = RegionPooler(shape, (1, 4), 7)
    jobs = []
    for z in range(0, shape[0], tile[0]):
        for y in range(0, shape[1], tile[1]):
            for x in range(0, shape[2], tile[2]):
                own = (slice(z, z + tile[0]), slice(y, y + tile[1]), slice(x, x + tile[2]))  # may pass the volume's end
                local = [p - z for p in planes if z <= p < z + tile[0]]
                jobs.append((own, local))
                pooler.expect(own, local)
    for own, local in jobs:
        zs = np.asarray(local) + own[0].start
        padded_labels = np.zeros((len(local), tile[1], tile[2]), dtype=np.int64)
        padded_features = np.zeros((7, len(local), tile[1], tile[2]), dtype=np.float32)
        ny, nx = min(own[1].stop, shape[1]) - own[1].start, min(own[2].stop, shape[2]) - own[2].start
        inside = zs < shape[0]
        padded_labels[inside, :ny, :nx] = labels[zs[inside], own[1], own[2]]
        padded_features[:, inside, :ny, :nx] = features[:, zs[inside], own[1], own[2]]
        probabilities = np.eye(5, dtype=np.float32)[padded_labels].transpose(3, 0, 1, 2)
        pooler.add(own, local, probabilities, torch.from_numpy(padded_features))
    assert pooler.deferred == []  # nothing held once every tile has run
    _assert_same_pooling(pooler.result(), _reference_pooling(labels, features, computed, (1, 4)))


def test_columns_have_a_fixed_order_and_an_empty_region_is_nan():
    from hematoma.features.ct_network import CT_NETWORK_COLUMNS, RegionPooler, ct_network_columns, ct_network_features

    columns = ct_network_columns(3)
    assert columns[:7] == ("deep_hematoma_mean_c000", "deep_hematoma_mean_c001", "deep_hematoma_mean_c002",
                           "deep_hematoma_max_c000", "deep_hematoma_max_c001", "deep_hematoma_max_c002",
                           "deep_rim_mean_c000")
    assert columns[-4:] == ("deep_volume_iph_ml", "deep_volume_eah_ml", "deep_volume_oedema_ml", "deep_volume_ivh_ml")
    assert len(columns) == 3 * 2 * 3 + 4 and len(set(columns)) == len(columns)
    assert len(CT_NETWORK_COLUMNS) == 3 * 2 * 250 + 4
    pooler = RegionPooler((4, 4, 4), (1,), 3)  # no tile with oedema
    own = (slice(0, 4),) * 3
    pooler.expect(own, None)
    labels = np.zeros((4, 4, 4), dtype=np.int64)
    labels[1:3, 1:3, 1:3] = 1
    pooler.add(own, None, np.eye(5, dtype=np.float32)[labels].transpose(3, 0, 1, 2), torch.ones(3, 4, 4, 4))
    values = ct_network_features(pooler.result(), {"iph": 0.008, "eah": 0.0, "oedema": 0.0, "ivh": 0.0})
    assert tuple(values) == columns
    assert all(math.isnan(values[c]) for c in columns if c.startswith("deep_oedema_"))
    assert values["deep_hematoma_mean_c001"] == 1.0 and values["deep_rim_max_c002"] == 1.0
    assert values["deep_volume_iph_ml"] == 0.008


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """A small synthetic head's hematoma with 10 mm around it in plane: seconds."""
    return hematoma_crop(tmp_path_factory.mktemp("ct_network"), hematoma_ml=10, margin_mm=10)[0]


def test_pooled_features_equal_a_hooked_full_forward_pass(crop):
    """Small tiles (the rim crosses their borders, thick slices compute one plane in five) against one plain
    forward pass of the whole crop with a hook on the penultimate block, pooled over the same regions."""
    from hematoma.segmentation.deep import DeepSegmenter, needed_planes

    image = sitk.ReadImage(str(crop))
    segmenter = DeepSegmenter(WEIGHTS, 1, tile_mm=(15, 30, 30))
    result = segmenter.segment(image, blood="blood")
    assert result.tiles_run > 4

    grid = segmenter.resample(image)
    volume = segmenter.normalise(sitk.GetArrayFromImage(grid))
    shape = volume.shape
    outputs = [-(-n // 15) * 15 for n in shape]
    padded = np.pad(volume, [(m, m + o - n) for m, o, n in zip(segmenter.margin, outputs, shape)], mode="edge")
    network = segmenter.networks[0]
    captured = {}
    hook = network.fully_connected[1].register_forward_hook(lambda module, args, output: captured.update(maps=output))
    try:
        with torch.inference_mode():
            logits = network(torch.from_numpy(padded)[None, None])[0]
    finally:
        hook.remove()
    crop_to = (slice(None),) + tuple(slice(0, n) for n in shape)
    labels = torch.softmax(logits, dim=1)[0].argmax(dim=0).numpy()[crop_to[1:]]
    features = captured["maps"][0].numpy()[crop_to]
    assert features.shape[0] == 250
    computed = np.zeros(shape, dtype=bool)
    computed[needed_planes(grid, image)] = True
    reference = _reference_pooling(labels, features, computed, (1, 2, 4))
    assert all(reference[r][2] > 0 for r in ("hematoma", "rim", "oedema")), "an empty region would prove nothing"
    _assert_same_pooling(result.pooled, reference)


def _manifest(tmp_path, crop) -> Path:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"patient_id,baseline_ct,he\np1,{crop},1\n")
    return manifest


def test_extract_with_the_network_writes_the_deep_columns_and_the_rules_do_not(crop, tmp_path):
    import pandas as pd

    from hematoma.features.ct_network import CT_NETWORK_COLUMNS

    image = sitk.ReadImage(str(crop))  # inside a bone box and air: the rules find a brain there too
    boxed = sitk.ConstantPad(sitk.ConstantPad(image, (3, 3, 0), (3, 3, 0), 1000), (4, 4, 0), (4, 4, 0), -1000)
    ct = tmp_path / "boxed.nii.gz"
    sitk.WriteImage(boxed, str(ct))
    manifest = _manifest(tmp_path, ct)
    out = tmp_path / "deep"
    result = runner.invoke(app, ["extract", str(manifest), "--out", str(out), "--workers", "1", "--method", "deep",
                                 "--weights", str(WEIGHTS)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "features.csv")
    deep = [c for c in table.columns if c.startswith("deep_")]
    assert sorted(deep) == sorted(CT_NETWORK_COLUMNS)  # case.json keeps its keys sorted, so does the table
    assert table.loc[0, "deep_volume_iph_ml"] > 1 and np.isfinite(table.loc[0, "deep_hematoma_mean_c000"])
    rules = tmp_path / "rules"
    result = runner.invoke(app, ["extract", str(manifest), "--out", str(rules), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert not any(c.startswith("deep_") for c in pd.read_csv(rules / "features.csv").columns)


def test_predict_refuses_a_deep_model_without_the_network(crop, tmp_path, monkeypatch):
    from hematoma.errors import InputError
    from hematoma.prediction import Predictor

    class Bundle:
        path = tmp_path / "model.skops"
        feature_columns = ["rad_original_firstorder_Mean", "deep_hematoma_mean_c000"]

    predictor = Predictor.__new__(Predictor)
    predictor.bundle, predictor.segmenter, predictor.segmentation_model = Bundle(), None, None
    mask = tmp_path / "mask.nii.gz"
    image = sitk.ReadImage(str(crop))
    sitk.WriteImage(sitk.Cast(image > 60, sitk.sitkUInt8), str(mask))
    for given in (None, mask):  # the rules segment, or a mask is given: the network does not run
        with pytest.raises(InputError, match="--method deep") as error:
            predictor.predict(crop, mask=given)
        assert "\n" not in str(error.value)
