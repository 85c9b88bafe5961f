"""`hematoma segment` / `hematoma segment-train` and the overlay figure."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from hematoma.cli import app
from hematoma.io import read_mask, write_image
from hematoma.segmentation import save_overlay
from hematoma.segmentation.overlay import largest_area_slice
from hematoma.volume import mask_volume_ml
from test_segmentation_phantoms import dice, make_head_phantom

runner = CliRunner()


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scan")
    ct, truth, _ = make_head_phantom()
    return write_image(ct, folder / "ct.nii.gz"), truth


def test_segment_writes_mask_overlay_and_volume(scan, tmp_path):
    ct_path, truth = scan
    out, png = tmp_path / "mask.nii.gz", tmp_path / "figure.png"
    result = runner.invoke(app, ["segment", str(ct_path), "--out", str(out), "--overlay", str(png)])
    assert result.exit_code == 0, result.output
    mask = read_mask(out, reference=sitk.ReadImage(str(ct_path)))
    assert dice(mask, truth) > 0.95
    assert f"{mask_volume_ml(mask):.2f} mL" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segment_refuses_to_overwrite(scan, tmp_path):
    ct_path, _ = scan
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"keep me")
    result = runner.invoke(app, ["segment", str(ct_path), "--out", str(out)])
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert out.read_bytes() == b"keep me"
    result = runner.invoke(app, ["segment", str(ct_path), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output


def test_segment_refuses_an_unknown_mask_format_before_working(scan, tmp_path):
    ct_path, _ = scan
    result = runner.invoke(app, ["segment", str(ct_path), "--out", str(tmp_path / "mask.png")])
    assert result.exit_code == 2 and "unsupported mask format" in result.output


def test_segment_names_an_offset_image(tmp_path):
    ct, _, _ = make_head_phantom()
    raw = write_image(sitk.Cast(ct, sitk.sitkInt32) + 1024, tmp_path / "raw.nii.gz")
    result = runner.invoke(app, ["segment", str(raw), "--out", str(tmp_path / "mask.nii.gz")])
    assert result.exit_code == 2
    assert "raw.nii.gz" in result.output and "+1024" in result.output
    assert not (tmp_path / "mask.nii.gz").exists()


def test_segment_empty_scan_warns_and_writes_zero(tmp_path):
    ct, _, _ = make_head_phantom(hematoma_radius_mm=None)
    path = write_image(ct, tmp_path / "ct.nii.gz")
    result = runner.invoke(app, ["segment", str(path), "--out", str(tmp_path / "mask.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "0.00 mL" in result.output
    assert mask_volume_ml(read_mask(tmp_path / "mask.nii.gz")) == 0


def test_segment_train_and_use_the_model(tmp_path):
    rows = []
    for seed, (radius, centre) in enumerate([(14.0, (25.0, 5.0, 0.0)), (10.0, (-25.0, -10.0, 5.0)), (16.0, (20.0, -20.0, 0.0))]):
        ct, truth, _ = make_head_phantom(hematoma_radius_mm=radius, hematoma_center_mm=centre, seed=seed)
        write_image(ct, tmp_path / f"ct{seed}.nii.gz")
        write_image(truth, tmp_path / f"mask{seed}.nii.gz")
        rows.append({"patient_id": f"P{seed}", "baseline_ct": f"ct{seed}.nii.gz", "baseline_mask": f"mask{seed}.nii.gz"})
    rows.append({"patient_id": "P9", "baseline_ct": "ct0.nii.gz", "baseline_mask": ""})  # no mask: not used
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    model = tmp_path / "model"
    with threadpool_limits(limits=1, user_api="openmp"):
        result = runner.invoke(app, ["segment-train", str(manifest), "--out", str(model), "--max-voxels-per-case", "600"])
    assert result.exit_code == 0, result.output
    assert "3 scans of 3 patients" in result.output
    assert (model / "model.skops").exists() and (model / "settings.json").exists()

    result = runner.invoke(app, ["segment-train", str(manifest), "--out", str(model)])
    assert result.exit_code == 2 and "--overwrite" in result.output

    ct, truth, _ = make_head_phantom(hematoma_radius_mm=12.0, hematoma_center_mm=(-20.0, 10.0, 0.0), seed=5)
    path = write_image(ct, tmp_path / "new.nii.gz")
    out = tmp_path / "new_mask.nii.gz"
    result = runner.invoke(app, ["segment", str(path), "--out", str(out), "--model", str(model)])
    assert result.exit_code == 0, result.output
    assert dice(read_mask(out), truth) > 0.85


def test_segment_with_a_missing_model_is_refused(scan, tmp_path):
    ct_path, _ = scan
    result = runner.invoke(app, ["segment", str(ct_path), "--out", str(tmp_path / "m.nii.gz"), "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "model folder" in result.output


def test_overlay_shows_the_largest_slice(tmp_path):
    ct, truth, _ = make_head_phantom(hematoma_center_mm=(25.0, 5.0, 8.0))
    areas = sitk.GetArrayFromImage(truth).sum(axis=(1, 2))
    assert largest_area_slice(sitk.GetArrayFromImage(truth)) == int(np.argmax(areas))
    path = save_overlay(ct, truth, tmp_path / "figure.png")
    image = sitk.ReadImage(str(path))
    pixels = sitk.GetArrayFromImage(image)
    assert pixels.shape[-1] in (3, 4)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 150) & (pixels[..., 2] < 150)
    left, right = red[:, : pixels.shape[1] // 2], red[:, pixels.shape[1] // 2 :]
    assert left.sum() > 100 and right.sum() == 0  # hematoma in red on the left panel only
    with pytest.raises(Exception, match="--overwrite"):
        save_overlay(ct, truth, path, overwrite=False)


def test_overlay_of_a_single_slice(tmp_path):
    ct, truth, _ = make_head_phantom()
    path = save_overlay(ct[:, :, 5], truth[:, :, 5], tmp_path / "slice.png")
    assert path.stat().st_size > 1000


# ---------------------------------------------------------------- --series and output paths (issue 15)


def test_segment_reads_the_series_chosen_with_series(tmp_path):
    from test_io import write_ct_series

    folder = tmp_path / "dicom"
    positions = [(0.0, 0.0, 5.0 * k) for k in range(10)]
    uids = {}
    for name, radius in (("bleed", 14.0), ("clear", None)):
        ct, _, _ = make_head_phantom(hematoma_radius_mm=radius)
        hu = np.clip(sitk.GetArrayFromImage(ct), -1024, 3071)
        uids[name] = write_ct_series(folder, hu, positions, pixel_spacing=(1.4, 1.4),
                                     names=[f"{name}{k:02d}.dcm" for k in range(10)])
    out = tmp_path / "mask.nii.gz"
    result = runner.invoke(app, ["segment", str(folder), "--out", str(out)])
    assert result.exit_code == 2 and "--series" in result.output and not out.exists()
    assert uids["bleed"] in result.output and uids["clear"] in result.output
    result = runner.invoke(app, ["segment", str(folder), "--out", str(out), "--series", uids["bleed"]])
    assert result.exit_code == 0, result.output
    assert mask_volume_ml(read_mask(out)) > 5
    result = runner.invoke(app, ["segment", str(folder), "--out", str(out), "--series", uids["clear"], "--overwrite"])
    assert result.exit_code == 0, result.output
    assert mask_volume_ml(read_mask(out)) == 0


def test_segment_refuses_out_and_overlay_on_one_path_before_working(scan, tmp_path):
    ct_path, _ = scan
    same = tmp_path / "result.nii.gz"
    result = runner.invoke(app, ["segment", str(ct_path), "--out", str(same), "--overlay", str(same)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--out and --overlay name the same file" in lines[0]
    assert not same.exists()  # refused up front: no mask written first
    linked = tmp_path / "link.nii.gz"
    linked.symlink_to(same)
    result = runner.invoke(app, ["segment", str(ct_path), "--out", str(same), "--overlay", str(linked)])
    assert result.exit_code == 2 and "same file" in result.output and not same.exists()


@pytest.mark.parametrize("option", ["--out", "--overlay"])
def test_segment_refuses_to_write_over_its_input_ct(tmp_path, option):
    ct, _, _ = make_head_phantom()
    ct_path = write_image(ct, tmp_path / "ct.nii.gz")
    before = ct_path.read_bytes()
    outputs = {"--out": str(tmp_path / "mask.nii.gz"), "--overlay": str(tmp_path / "figure.png")}
    outputs[option] = str(ct_path)
    result = runner.invoke(app, ["segment", str(ct_path), "--out", outputs["--out"], "--overlay",
                                 outputs["--overlay"], "--overwrite"])
    assert result.exit_code == 2
    assert f"{option} is the input CT itself" in result.output
    assert ct_path.read_bytes() == before
    assert not (tmp_path / "mask.nii.gz").exists() and not (tmp_path / "figure.png").exists()
