"""The synthetic variants render what they say: gaps of the asked width, thin bone, a holder, tilt, more slices."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from typer.testing import CliRunner

from hematoma.errors import InputError
from hematoma.synthetic import (
    Variant,
    axial_slice,
    make_head_ct,
    make_variant_ct,
    skull_base_slices,
    slices_without_brain,
    synthesize_patient,
    synthesize_variant_patient,
    vertex_slices,
)
from hematoma.synthetic.variants import HU_HOLDER, PAD_MM, brain_areas_cm2

SEED = 0


def _hu(image):
    return sitk.GetArrayFromImage(image).astype(float)


def _mask(image):
    return sitk.GetArrayFromImage(image) > 0


@pytest.fixture(scope="module")
def intact():
    return make_variant_ct(Variant(), seed=SEED)


def test_the_intact_variant_is_make_head_ct_voxel_for_voxel(intact):
    ct, mask = make_head_ct(size="small", seed=SEED)
    assert np.array_equal(_hu(ct), _hu(intact.ct)) and np.array_equal(_mask(mask), _mask(intact.hematoma))
    assert intact.variant.is_intact and intact.variant.settings() == {} and intact.variant.label() == "intact"


def test_brain_truth_is_the_intracranial_space(intact):
    brain, hu = _mask(intact.brain), _hu(intact.ct)
    volume_ml = brain.sum() * np.prod(intact.ct.GetSpacing()) / 1000
    assert 900 < volume_ml < 1900  # adult intracranial volume (brain and CSF; the scan starts above the foramen magnum)
    assert _mask(intact.hematoma)[~brain].sum() == 0  # the hematoma lies in it
    # Soft tissue; bone only where a 5 mm slab at the skull base averages brain with its floor.
    assert np.median(hu[brain]) < 45 and np.mean(hu[brain] > 200) < 0.1


@pytest.mark.parametrize("width_mm", [10.0, 30.0])
def test_skull_gap_has_the_asked_width_and_nothing_else_changes(intact, width_mm):
    gap = make_variant_ct(Variant(skull_gap_mm=width_mm, gap_azimuth_deg=90.0), seed=SEED)
    before, after = _hu(intact.ct), _hu(gap.ct)
    removed = (before > 300) & (after < 100)
    assert removed.sum() > 0
    changed = before != after
    # Only bone and its partial-volume rim changed (to less dense: the noise is the same), all of it on
    # the patient's left (+x: high columns).
    assert (after[changed] < before[changed]).all()
    columns = np.nonzero(changed.any(axis=(0, 1)))[0]
    assert columns.min() > before.shape[2] // 2
    # Width: extent along y (perpendicular to the gap's direction) of the removed bone, in the slice where
    # most was removed; the pose turns the head by a few degrees.
    k = int(np.argmax(removed.sum(axis=(1, 2))))
    rows = np.nonzero(removed[k].any(axis=1))[0]
    spacing = gap.ct.GetSpacing()[1]
    measured = (rows.max() - rows.min() + 1) * spacing
    assert abs(measured - width_mm) <= 2 * spacing + 0.1 * width_mm
    assert np.median(after[k][removed[k]]) == pytest.approx(40.0, abs=10.0)  # soft tissue where bone was
    # Same anatomy and lesion: the truth is unchanged.
    assert np.array_equal(_mask(gap.hematoma), _mask(intact.hematoma))
    assert np.array_equal(_mask(gap.brain), _mask(intact.brain))


def test_gap_place_follows_the_azimuth(intact):
    frontal = make_variant_ct(Variant(skull_gap_mm=30.0, gap_azimuth_deg=0.0, gap_centre_z_mm=0.0), seed=SEED)
    removed = (_hu(intact.ct) > 300) & (_hu(frontal.ct) < 100)
    rows = np.nonzero(removed.any(axis=(0, 2)))[0]
    assert rows.max() < removed.shape[1] // 2  # anterior: LPS rows grow towards the back


def test_thin_bone_is_below_the_skull_threshold_at_the_temples_only(intact):
    thin = make_variant_ct(Variant(thin_bone_hu=150.0), seed=SEED)
    before, after = _hu(intact.ct), _hu(thin.ct)
    changed = np.abs(before - after) > 0
    squama = changed & (before > 300)
    assert squama.sum() > 100
    # Below the skull threshold but for the border of the thinned region, which the scan blurs.
    assert np.mean(after[squama] < 200) > 0.8
    assert np.median(after[squama]) == pytest.approx(150.0, abs=10)
    # Both sides, lateral: columns far from the midline; the vault elsewhere keeps its dense bone.
    columns = np.nonzero(squama.any(axis=(0, 1)))[0]
    centre = before.shape[2] / 2
    assert columns.min() < centre - 20 and columns.max() > centre + 20
    assert not squama[:, :, int(centre) - 10:int(centre) + 10].any()
    assert ((after > 1000) & ~changed).sum() > 0.9 * ((before > 1000) & ~changed).sum()
    assert np.array_equal(_mask(thin.hematoma), _mask(intact.hematoma))


def _pitch_deg(brain: np.ndarray, spacing) -> float:
    """Angle of the brain's long (antero-posterior) axis in the y-z plane."""
    z, y, _ = np.nonzero(brain)
    points = np.column_stack([y * spacing[1], z * spacing[2]])
    _, vectors = np.linalg.eigh(np.cov(points.T))
    dy, dz = vectors[:, -1]
    return math.degrees(math.atan2(dz, dy * np.sign(dy or 1)))


def test_tilt_pitches_the_head_and_keeps_it_whole(intact):
    tilted = make_variant_ct(Variant(tilt_deg=20.0), seed=SEED)
    spacing = tilted.ct.GetSpacing()
    turned = _pitch_deg(_mask(tilted.brain), spacing) - _pitch_deg(_mask(intact.brain), spacing)
    assert abs(abs(turned) - 20.0) <= 3.0
    brain = _mask(tilted.brain)
    assert not brain[0].any() and not brain[-1].any()  # the scan holds the whole tilted brain
    volumes = [_mask(scan.hematoma).sum() * np.prod(spacing) / 1000 for scan in (tilted, intact)]
    assert volumes[0] == pytest.approx(volumes[1], abs=0.1)


def test_head_holder_lies_behind_the_head_on_a_pad(intact):
    held = make_variant_ct(Variant(head_holder=True), seed=SEED)
    before, after = _hu(intact.ct), _hu(held.ct)
    holder = (after > HU_HOLDER - 50) & (after < HU_HOLDER + 50) & (before < -900)
    assert holder.sum() > 500
    head = before > -500
    spacing = held.ct.GetSpacing()[::-1]
    gap = ndimage.distance_transform_edt(~head, sampling=spacing[0:1] * 0 + (1e6,) + spacing[1:])
    assert gap[holder].min() >= PAD_MM - 2 * spacing[1]  # separated from the scalp by the pad
    rows = np.nonzero(holder.any(axis=(0, 2)))[0]
    head_rows = np.nonzero(head.any(axis=(0, 2)))[0]
    assert rows.max() > head_rows.max()  # behind the occiput (LPS: posterior = high rows)
    assert np.array_equal(before[head], after[head])  # the head itself is untouched


def test_below_base_adds_slices_without_brain_and_padding_fills_the_corners(intact):
    lower = make_variant_ct(Variant(below_base_mm=20.0, fov_padding_hu=-3024.0), seed=SEED)
    added = lower.ct.GetSize()[2] - intact.ct.GetSize()[2]
    assert added == 4
    assert np.array_equal(_mask(lower.brain)[added:], _mask(intact.brain))
    empty = slices_without_brain(lower)
    assert {0, 1} <= set(empty) and 0 not in slices_without_brain(intact)
    hu = _hu(lower.ct)
    assert (hu[:, 0, 0] == -3024).all() and (hu[:, 64, 64] > -3024).all()


def test_skull_base_and_vertex_slices_show_brain(intact):
    base, vertex = skull_base_slices(intact), vertex_slices(intact)
    assert len(base) == 4 and len(vertex) == 3 and max(base) < min(vertex)
    areas = brain_areas_cm2(intact)
    assert all(areas[k] >= 10.0 for k in base + vertex)
    assert areas[max(vertex) + 1:].max(initial=0) < 10.0  # nothing above the vertex slices shows 10 cm^2
    piece = axial_slice(intact, base[0])
    assert piece.ct.GetDimension() == 2 and piece.brain.GetSize() == piece.ct.GetSize()
    assert np.array_equal(_mask(piece.brain), _mask(intact.brain)[base[0]])
    with pytest.raises(InputError, match="outside the scan"):
        axial_slice(intact, intact.ct.GetSize()[2])


@pytest.mark.parametrize("settings, problem", [
    ({"skull_gap_mm": -1.0}, "skull gap"),
    ({"thin_bone_hu": 5.0}, "thin bone"),
    ({"tilt_deg": 60.0}, "tilt"),
    ({"below_base_mm": 50.0}, "below-base"),
    ({"fov_padding_hu": 0.0}, "FOV padding"),
])
def test_impossible_variants_are_named(settings, problem):
    with pytest.raises(InputError, match=problem):
        Variant(**settings)


def test_variant_settings_round_trip():
    variant = Variant(skull_gap_mm=30.0, tilt_deg=10.0, head_holder=True)
    assert variant.settings() == {"skull_gap_mm": 30.0, "tilt_deg": 10.0, "head_holder": True}
    assert Variant.from_settings(variant.settings()) == variant
    with pytest.raises(InputError, match="unknown synthetic variant setting"):
        Variant.from_settings({"skull_gap": 3})


def test_an_intact_variant_patient_is_the_cohort_patient():
    plain = synthesize_patient(1, seed=2, size="small")
    same = synthesize_variant_patient(1, seed=2, size="small", variant=Variant())
    for name in ("baseline_ct", "followup_ct", "baseline_mask", "followup_mask"):
        assert np.array_equal(_hu(getattr(plain, name)), _hu(getattr(same, name)))
    assert plain.truth == same.truth and plain.clinical == same.clinical


def test_a_variant_patient_has_the_defect_in_both_scans_and_records_it():
    plain = synthesize_patient(1, seed=2, size="small")
    gapped = synthesize_variant_patient(1, seed=2, size="small", variant=Variant(skull_gap_mm=30.0))
    for name in ("baseline_ct", "followup_ct"):
        removed = (_hu(getattr(plain, name)) > 300) & (_hu(getattr(gapped, name)) < 100)
        assert removed.sum() > 20
    assert np.array_equal(_mask(plain.baseline_mask), _mask(gapped.baseline_mask))
    assert gapped.truth["variant"] == {"skull_gap_mm": 30.0} and "variant" not in plain.truth


def test_synth_cli_writes_a_variant_cohort_and_keeps_it_apart(tmp_path):
    from hematoma.cli import app

    out = tmp_path / "cohort"
    runner = CliRunner()
    command = ["synth", "--out", str(out), "--patients", "1", "--size", "small", "--seed", "4"]
    result = runner.invoke(app, command + ["--skull-gap-mm", "30", "--thin-bone-hu", "150", "--head-holder"])
    assert result.exit_code == 0, result.output
    assert "variant: skull gap 30 mm at 90 deg, thin bone 150 HU, head holder" in result.output
    settings = json.loads((out / "synthetic_settings.json").read_text())
    assert settings["variant"] == {"skull_gap_mm": 30.0, "thin_bone_hu": 150.0, "head_holder": True}
    record = json.loads((out / "records" / "P0001.json").read_text())
    assert record["truth"]["variant"] == settings["variant"]
    assert json.loads((out / "oracle.json").read_text())["variant"] == settings["variant"]
    ct = sitk.ReadImage(str(out / "images" / "P0001_baseline.nii.gz"))
    assert ((_hu(ct) > HU_HOLDER - 50) & (_hu(ct) < HU_HOLDER + 50)).sum() > 500  # the holder is in the scan
    # The same variant again: nothing to do; another (here none) is refused, as another seed would be.
    again = runner.invoke(app, command + ["--skull-gap-mm", "30", "--thin-bone-hu", "150", "--head-holder"])
    assert again.exit_code == 0 and "skipped 1 already written" in again.output
    refused = runner.invoke(app, command)
    assert refused.exit_code != 0 and "other settings" in refused.output and "variant" in refused.output
    bad = runner.invoke(app, command + ["--skull-gap-mm", "500"])
    assert bad.exit_code != 0


def test_an_intact_cohort_keeps_its_settings_file(tmp_path):
    from hematoma.synthetic import generate_cohort

    generate_cohort(tmp_path, 1, seed=3, size="small", progress=False)
    assert "variant" not in json.loads((tmp_path / "synthetic_settings.json").read_text())
