"""CNN features: slices, network weights, warm-up training on cohort 1 only, embeddings."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")

from hematoma.errors import InputError  # noqa: E402
from hematoma.features.deep import (  # noqa: E402
    FEATURE_NAMES, SliceSettings, build_network, embed_output, embed_patient, load_cnn, make_stacks, train_cnn,
)
from hematoma.features.deep.network import WeightsWarning, pooled_features  # noqa: E402
from hematoma.features.deep.slices import apply_window, slice_window, stack_indices  # noqa: E402



@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # One thread: on a shared 2-core machine two spinning OpenMP threads run ~3x slower, not faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    # Never touch the network, and never find a real ImageNet checkpoint by accident.
    monkeypatch.setenv("HEMATOMA_OFFLINE", "1")
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield
    torch.hub.set_dir(old)


def _image(array, spacing=(1.0, 1.0, 5.0), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    return image


def layered_case(n_slices=16, center=8, size=32, spacing=(1.0, 1.0, 5.0)):
    """CT whose slice z is a constant 5*z HU (inside the brain window) and a blob largest at ``center``."""
    ct = np.repeat((5 * np.arange(n_slices, dtype=np.int16))[:, None, None], size * size, axis=1)
    ct = ct.reshape(n_slices, size, size)
    mask = np.zeros_like(ct, dtype=np.uint8)
    for z in range(n_slices):
        radius = max(0, 6 - 2 * abs(z - center))
        if radius:
            mask[z, 16 - radius:16 + radius, 14 - radius:14 + radius] = 1
    return _image(ct, spacing), _image(mask, spacing)


def blob_case(rng, volume_scale, shape=(20, 48, 48), spacing=(4.0, 4.0, 5.0)):
    """A crude head: air, skull ring, brain at 30 HU, a 65 HU hematoma of random shape."""
    z, y, x = np.indices(shape).astype(float)
    c = np.array(shape) / 2
    head = ((y - c[1]) / 20) ** 2 + ((x - c[2]) / 17) ** 2 + ((z - c[0]) / 12) ** 2
    ct = np.where(head < 1, 30, -1000).astype(np.int16)
    ct[(head >= 0.8) & (head < 1)] = 1000
    centre = c + rng.uniform(-2, 2, 3)
    axes = volume_scale * rng.uniform(0.7, 1.3, 3) * np.array([1.5, 4, 4])
    blob = ((z - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((x - centre[2]) / axes[2]) ** 2 < 1
    ct[blob] = 65 + rng.integers(-5, 5)
    return _image(ct, spacing), _image(blob.astype(np.uint8), spacing)


# ------------------------------------------------------------------------------------------- slices


def test_three_stacks_differ_and_hold_exactly_slices_minus3_to_plus3():
    ct, mask = layered_case(center=8)
    stacks = make_stacks(ct, mask)
    assert stacks.center_slice == 8
    assert stacks.slice_indices == (5, 6, 7, 8, 9, 10, 11)
    assert stacks.stack_indices == ((5, 6, 7), (7, 8, 9), (9, 10, 11))
    assert stacks.images.shape == (3, 3, 299, 299) and stacks.images.dtype == np.float32
    # Each channel holds its slice's HU (5*z), windowed: the content proves which slice it is.
    middle = stacks.windowed[:, :, 149, 149]
    expected = apply_window(5.0 * np.array(stacks.stack_indices), 80, 40)
    np.testing.assert_allclose(middle, expected, atol=1e-5)
    seen = {round(v * 80 / 5) for v in middle.ravel()}  # windowed 5z HU -> z (window from 0 HU)
    assert seen == set(range(5, 12))
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.array_equal(stacks.images[a], stacks.images[b])


def test_edge_slices_repeat_at_the_volume_edge():
    assert slice_window(1, 16) == (0, 0, 0, 1, 2, 3, 4)
    assert slice_window(15, 16) == (12, 13, 14, 15, 15, 15, 15)
    assert stack_indices(slice_window(1, 16)) == ((0, 0, 0), (0, 1, 2), (2, 3, 4))
    ct, mask = layered_case(center=0)
    assert make_stacks(ct, mask).slice_indices == (0, 0, 0, 0, 1, 2, 3)


def test_orientation_does_not_change_the_images():
    ct, mask = layered_case(center=8)
    flipped = [sitk.Flip(image, [True, False, True]) for image in (ct, mask)]  # same anatomy, other storage order
    a, b = make_stacks(ct, mask), make_stacks(*flipped)
    np.testing.assert_allclose(a.images, b.images, atol=1e-5)


def test_crop_is_square_in_mm_and_centred_on_the_hematoma():
    shape = (9, 80, 40)  # rows at 0.5 mm, columns at 1 mm: a 20 mm x 20 mm square hematoma
    ct = np.full(shape, 20, dtype=np.int16)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[4, 10:50, 5:25] = 1  # rows 10..49 (20 mm), columns 5..24 (20 mm)
    ct[mask == 1] = 70
    settings = SliceSettings(margin_mm=10.0)
    stacks = make_stacks(_image(ct, (1.0, 0.5, 5.0)), _image(mask, (1.0, 0.5, 5.0)), settings)
    assert stacks.crop_mm == pytest.approx(40.0)
    bright = stacks.windowed[1, 1] > 0.6  # the hematoma (70 HU) on the centre slice
    rows, columns = np.nonzero(bright)
    # 20 mm of a 40 mm crop: half the image, centred, equally tall and wide.
    assert abs(rows.mean() - 149) < 2 and abs(columns.mean() - 149) < 2
    assert abs((rows.max() - rows.min()) - (columns.max() - columns.min())) <= 2
    assert 140 <= rows.max() - rows.min() <= 160


def test_empty_mask_and_bad_settings_are_input_errors():
    ct, mask = layered_case()
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    with pytest.raises(InputError, match="empty"):
        make_stacks(ct, empty)
    with pytest.raises(InputError, match="window width"):
        SliceSettings(window_width=0)


# ------------------------------------------------------------------------------------------ network


def test_weights_auto_offline_imagenet_without_cache_and_missing_file(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        network, source = build_network("auto")  # offline, empty cache: random weights, one warning
    assert source == "random" and network.fc.out_features == 2 and network.AuxLogits.fc.out_features == 2
    assert [w.category for w in caught] == [WeightsWarning]
    with pytest.raises(InputError, match="ImageNet weights"):
        build_network("imagenet")
    with pytest.raises(InputError, match="no such weights file"):
        build_network(tmp_path / "missing.safetensors")


def test_imagenet_layout_from_cache_and_weights_from_a_file(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models.inception import Inception3

    torch.manual_seed(1)
    imagenet_like = Inception3(num_classes=1000, aux_logits=True, init_weights=False)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(imagenet_like.state_dict(), checkpoints / "inception_v3_google-0cc3c7bd.pth")
    network, source = build_network("auto")
    assert source.startswith("imagenet:")
    assert torch.equal(network.Mixed_7c.branch_pool.conv.weight, imagenet_like.Mixed_7c.branch_pool.conv.weight)
    assert network.fc.out_features == 2

    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    again, source = build_network(path)
    assert source.startswith("file:")
    assert torch.equal(again.fc.weight, network.fc.weight)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        build_network(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------- train and embed


N_PATIENTS = 8


@pytest.fixture(scope="module")
def output_folder(tmp_path_factory):
    """A tiny `hematoma extract` output: cases/<pid>/case.json, NIfTIs, features.csv (rows shuffled)."""
    from hematoma.synthetic import make_head_ct

    out = tmp_path_factory.mktemp("out")
    rows = []
    for i in range(N_PATIENTS):
        pid = f"P{i:02d}"
        he = i % 2
        ct, mask = make_head_ct(size="small", seed=i, hematoma_ml=30.0 if he else 12.0)
        case = out / "cases" / pid
        case.mkdir(parents=True)
        sitk.WriteImage(ct, str(case / "ct.nii.gz"))
        sitk.WriteImage(mask, str(case / "baseline_mask.nii.gz"))
        (case / "case.json").write_text(json.dumps({
            "patient_id": pid, "baseline_ct": str(case / "ct.nii.gz"),
            "baseline_mask": str(case / "baseline_mask.nii.gz"), "followup_ct": None, "followup_mask": None}))
        rows.append({"patient_id": pid, "he": float(he), "baseline_volume_ml": float(mask_sum(mask)),
                     "rad_dummy": float(i)})
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # row order != id order
    table.to_csv(out / "features.csv", index=False)
    return out


def mask_sum(mask):
    return sitk.GetArrayViewFromImage(mask).sum()


@pytest.fixture(scope="module")
def trained(output_folder, tmp_path_factory):
    cnn_dir = tmp_path_factory.mktemp("cnn") / "model"
    result = train_cnn(output_folder, cnn_dir, preset_name="fast", weights="none", seed=0, epochs=1, progress=False)
    return result, cnn_dir


def test_only_cohort1_reaches_training_and_validation_is_by_patient(output_folder, trained):
    result, cnn_dir = trained
    split = pd.read_csv(output_folder / "split.csv", dtype={"patient_id": str})
    cohort1 = set(split.loc[split["part"] == "cnn", "patient_id"])
    cohort2 = set(split.loc[split["cohort"] == 2, "patient_id"])
    assert cohort1 and cohort2
    seen = result.trained_ids | result.validated_ids
    assert seen and seen <= cohort1
    assert not seen & cohort2
    assert result.trained_ids and result.validated_ids
    assert not result.trained_ids & result.validated_ids
    assert seen == cohort1  # every labelled cohort-1 patient is used
    ids = pd.read_csv(cnn_dir / "ids.csv", dtype={"patient_id": str})
    assert set(ids.loc[ids["part"] == "train", "patient_id"]) == result.trained_ids
    assert set(ids.loc[ids["part"] == "validation", "patient_id"]) == result.validated_ids


def test_cnn_folder_holds_weights_settings_curves_and_refuses_other_inputs(trained):
    result, cnn_dir = trained
    for name in ("model.safetensors", "settings.json", "history.csv", "curves.png", "ids.csv"):
        assert (cnn_dir / name).exists(), name
    settings = json.loads((cnn_dir / "settings.json").read_text())
    assert settings["preset"] == "fast" and settings["weights_source"] == "random" and settings["seed"] == 0
    assert settings["slices"]["window_width"] == 80 and settings["slices"]["margin_mm"] == 10
    assert len(settings["data_sha1"]) == 40 and {"torch", "torchvision"} <= set(settings["versions"])
    assert settings["training"]["epochs"] == 1 and settings["epochs_run"] == 1
    model = load_cnn(cnn_dir, slices=SliceSettings())
    reference = result.network.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.network.state_dict().items())
    with pytest.raises(InputError, match="window_width 80.0 \\(trained\\) vs 100"):
        load_cnn(cnn_dir, slices=SliceSettings(window_width=100))
    with pytest.raises(InputError, match="--overwrite"):
        train_cnn(cnn_dir.parent.parent, cnn_dir, preset_name="fast", weights="none")  # refused before any work


def test_embeddings_are_6144_and_deterministic(trained):
    result, cnn_dir = trained
    model = load_cnn(cnn_dir)
    ct, mask = blob_case(np.random.default_rng(0), 1.0)
    first = embed_patient(ct, mask, model)
    second = embed_patient(ct, mask, model)
    assert first.shape == (6144,) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    # Calibrated BatchNorm: pooled features of a sane size (random statistics give ~1e11).
    assert 0 < np.abs(first).max() < 1e3
    # Image k fills columns 2048k .. 2048k+2047: the pooled vector of image k.
    images = torch.from_numpy(make_stacks(ct, mask).images)
    with torch.inference_mode():
        pooled = pooled_features(model.network, images).numpy()
    np.testing.assert_allclose(first[2048:4096], pooled[1], rtol=1e-5, atol=1e-6)


def test_cli_embeds_all_patients_merged_by_id_and_a_rerun_replaces(output_folder, trained):
    import typer
    from typer.testing import CliRunner

    from hematoma.commands import cnn

    _, cnn_dir = trained
    app = typer.Typer()
    cnn.register(app)
    app.command("noop")(lambda: None)  # a second command keeps "cnn" a sub-command
    runner = CliRunner()
    before = pd.read_csv(output_folder / "features.csv", dtype={"patient_id": str})
    result = runner.invoke(app, ["cnn", "embed", str(output_folder), "--model", str(cnn_dir)])
    assert result.exit_code == 0, result.output
    cnn_table = pd.read_parquet(output_folder / "cnn_features.parquet")
    assert list(cnn_table.columns) == ["patient_id", *FEATURE_NAMES] and len(FEATURE_NAMES) == 6144
    assert len(cnn_table) == N_PATIENTS and np.isfinite(cnn_table[FEATURE_NAMES].to_numpy()).all()
    merged = pd.read_parquet(output_folder / "features.parquet")
    assert merged["patient_id"].tolist() == before["patient_id"].tolist()  # the table's own (shuffled) order
    assert merged["rad_dummy"].tolist() == before["rad_dummy"].tolist()
    by_id = cnn_table.set_index("patient_id")
    np.testing.assert_allclose(merged[FEATURE_NAMES].to_numpy(),
                               by_id.loc[merged["patient_id"], FEATURE_NAMES].to_numpy(), rtol=1e-6)
    as_csv = pd.read_csv(output_folder / "features.csv", dtype={"patient_id": str})
    assert sum(c.startswith("cnn_") for c in as_csv.columns) == 6144

    embed_output(output_folder, cnn_dir, progress=False)  # rerun: cnn_ columns replaced, not added
    again = pd.read_parquet(output_folder / "features.parquet")
    assert list(again.columns) == list(merged.columns)
    pd.testing.assert_frame_equal(again, merged)

    result = runner.invoke(app, ["cnn", "embed", str(output_folder), "--model", str(cnn_dir),
                                 "--window-width", "120"])
    assert isinstance(result.exception, InputError) and "window_width" in str(result.exception)


def test_cli_train_refuses_before_any_work(output_folder, trained):
    import typer
    from typer.testing import CliRunner

    from hematoma.commands import cnn

    _, cnn_dir = trained
    app = typer.Typer()
    cnn.register(app)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    result = runner.invoke(app, ["cnn", "train", str(output_folder), "--out", str(cnn_dir), "--weights", "none"])
    assert isinstance(result.exception, InputError) and "--overwrite" in str(result.exception)
    result = runner.invoke(app, ["cnn", "train", str(output_folder), "--out", str(cnn_dir.parent / "new"),
                                 "--preset", "slow"])
    assert isinstance(result.exception, InputError) and "unknown preset" in str(result.exception)
    assert not (cnn_dir.parent / "new").exists()
