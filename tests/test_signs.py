"""NCCT signs of expansion on hand-made phantoms that follow the published definitions.

Each phantom is a 35 HU brain with a 70 HU clot ellipsoid (noise SD 5 HU),
rendered with partial volume (sub-voxel sampling), on the synthetic cohort's
two grids (0.45 and 1.8 mm in plane, 5 mm slices).  The mask is the truth:
voxels at least half inside the clot (hypodense parts inside its outline
included), small separate bleeds as separate components.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from hematoma.errors import InputError
from hematoma.features.signs import (
    BAT_COLUMN,
    SIGN_COLUMNS,
    SIGNS,
    SignSettings,
    bat_score,
    compute_signs,
    find_signs,
)

BRAIN_HU, CLOT_HU, NOISE_SD = 35.0, 70.0, 5.0
FOV_MM = (50.0, 64.0, 64.0)  # z, y, x
CENTRE = np.array([25.0, 32.0, 32.0])  # z, y, x (mm): the middle of a slice
CLOT_RADII = np.array([12.0, 12.0, 15.0])  # z, y, x (mm)
GRIDS = {"full": (5.0, 0.45, 0.45), "small": (5.0, 1.8, 1.8)}


def ellipsoid(centre, radii):
    centre, radii = np.asarray(centre, float), np.asarray(radii, float)
    return lambda z, y, x: ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
        (x - centre[2]) / radii[2]) ** 2 <= 1


CLOT = ellipsoid(CENTRE, CLOT_RADII)


def render(spacing, parts, *, mask_parts=None, seed=0, noise=NOISE_SD):
    """CT and mask (sitk, identity direction) of ``parts``: (inside(z, y, x) -> bool, HU) painted in order.

    Voxel values average a sub-voxel grid (partial volume); the mask holds the
    voxels at least half inside ``mask_parts`` (the union of the parts' shapes by default).
    """
    shape = tuple(round(f / s) for f, s in zip(FOV_MM, spacing))
    sub = (5, max(1, round(spacing[1] / 0.3)), max(1, round(spacing[2] / 0.3)))
    hu = np.zeros(shape, np.float32)
    inside = np.zeros(shape, np.float32)
    mask_parts = [p for p, _ in parts] if mask_parts is None else mask_parts
    axes = [np.arange(n) * s for n, s in zip(shape, spacing)]
    offsets = [((np.arange(k) + 0.5) / k - 0.5) * s for k, s in zip(sub, spacing)]
    for dz in offsets[0]:
        for dy in offsets[1]:
            for dx in offsets[2]:
                z, y, x = np.meshgrid(axes[0] + dz, axes[1] + dy, axes[2] + dx, indexing="ij")
                value = np.full(shape, BRAIN_HU, np.float32)
                for part, level in parts:
                    value[part(z, y, x)] = level
                hu += value
                inside += np.logical_or.reduce([p(z, y, x) for p in mask_parts]) if mask_parts else 0
    n = np.prod(sub)
    hu = hu / n + np.random.default_rng(seed).normal(0, noise, shape)
    ct = sitk.GetImageFromArray(hu.astype(np.float32))
    ct.SetSpacing(spacing[::-1])
    mask = sitk.GetImageFromArray((inside / n >= 0.5).astype(np.uint8))
    mask.CopyInformation(ct)
    return ct, mask


def flags(values):
    return {s for s in SIGNS if values["sign_" + s] == 1}


@pytest.fixture(params=sorted(GRIDS))
def spacing(request):
    return GRIDS[request.param]


def hole(contrast, radius=5.0, centre=CENTRE):
    return ellipsoid(centre, [radius] * 3), CLOT_HU - contrast


def open_region(contrast):
    """A hypodense part of the clot reaching its lateral border (the clot's outline unchanged)."""
    part = ellipsoid(CENTRE + [0, 0, 12.0], [7.0, 7.0, 7.0])
    return (lambda z, y, x: part(z, y, x) & CLOT(z, y, x)), CLOT_HU - contrast


# --------------------------------------------------------------------------- columns, settings
def test_columns_prefixed_and_settings_round_trip():
    assert all(c.startswith("sign_") for c in SIGN_COLUMNS) and len(set(SIGN_COLUMNS)) == len(SIGN_COLUMNS)
    assert all("sign_" + s in SIGN_COLUMNS for s in SIGNS)
    assert BAT_COLUMN == "bat_score"
    settings = SignSettings(mode="3d", blood_hu=(45.0, 95.0))
    record = json.loads(json.dumps(settings.as_record()))
    assert SignSettings.from_record(record) == settings
    assert SignSettings().black_hole_min_contrast_hu == 28 and SignSettings().blend_min_contrast_hu == 18
    assert SignSettings().satellite_distance_mm == (1, 20) and SignSettings().satellite_max_diameter_mm == 10
    assert (SignSettings().island_min_separate, SignSettings().island_min_total) == (3, 4)
    with pytest.raises(InputError):
        SignSettings.from_record({"no_such_setting": 1})
    with pytest.raises(InputError):
        SignSettings(mode="4d")


def test_empty_mask_gives_zero_flags_and_nan_measurements():
    ct, mask = render(GRIDS["small"], [(CLOT, CLOT_HU)], mask_parts=[])
    values = compute_signs(ct, mask)
    assert list(values) == list(SIGN_COLUMNS)
    assert flags(values) == set()
    measured = [c for c in SIGN_COLUMNS if c.removeprefix("sign_") not in SIGNS]
    assert all(math.isnan(values[c]) for c in measured)
    assert find_signs(ct, mask) == []


def test_mismatched_mask_is_an_input_error():
    ct, _ = render(GRIDS["small"], [(CLOT, CLOT_HU)])
    other, _ = render((5.0, 1.8, 1.2), [(CLOT, CLOT_HU)])
    with pytest.raises(InputError):
        compute_signs(ct, sitk.Cast(other > 50, sitk.sitkUInt8))


# --------------------------------------------------------------------------- hypodensities
def test_homogeneous_clot_shows_no_sign(spacing):
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU)]))
    assert flags(values) == set()
    assert values["sign_barras_shape"] == 1 and values["sign_barras_density"] == 1


def test_partial_volume_rim_is_not_blend(spacing):
    """A generous mask (any voxel touching the clot) holds the whole partial-volume rim: still no sign."""
    ct, _ = render(spacing, [(CLOT, CLOT_HU)])
    _, generous = render(spacing, [(ellipsoid(CENTRE, CLOT_RADII + 0.5 * np.array(spacing)), CLOT_HU)])
    values = compute_signs(ct, generous)
    assert values["sign_blend"] == 0 and values["sign_hypodensity"] == 0


def test_gradual_fade_at_edge_is_not_blend(spacing):
    """A clot whose density fades to that of brain over its last 10 mm on one side: no well-defined margin."""
    edge, steps, width = CENTRE[2] + CLOT_RADII[2], 8, 10.0
    parts = [(CLOT, CLOT_HU)] + [
        (lambda z, y, x, x0=edge - width + k * width / steps: CLOT(z, y, x) & (x >= x0),
         CLOT_HU - (CLOT_HU - BRAIN_HU) * k / (steps + 1))
        for k in range(1, steps + 1)
    ]
    values = compute_signs(*render(spacing, parts))
    assert values["sign_blend"] == 0 and values["sign_hypodensity"] == 0


@pytest.mark.parametrize("contrast, black_hole", [(24.0, 0), (32.0, 1)])
def test_black_hole_threshold(spacing, contrast, black_hole):
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU), hole(contrast)]))
    assert values["sign_hypodensity"] == 1
    assert values["sign_black_hole"] == black_hole
    assert values["sign_blend"] == 0
    assert values["sign_black_hole_contrast_hu"] == pytest.approx(contrast, abs=3.0)
    assert values["sign_hypodensity_volume_ml"] == pytest.approx(4 / 3 * math.pi * 5 ** 3 / 1000, rel=0.6)


@pytest.mark.parametrize("contrast, blend", [(14.0, 0), (22.0, 1)])
def test_blend_threshold(spacing, contrast, blend):
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU), open_region(contrast)]))
    assert values["sign_blend"] == blend
    assert values["sign_hypodensity"] == 0 and values["sign_black_hole"] == 0  # open to the brain
    if blend:
        assert values["sign_blend_contrast_hu"] == pytest.approx(contrast, abs=3.0)


def test_hypodense_blood_left_out_of_the_mask_is_still_a_blend(spacing):
    """A segmenter whose blood threshold lies above the blend's hypodense part (50 HU) leaves it out of the mask."""
    region, level = open_region(20.0)
    ct, mask = render(spacing, [(CLOT, CLOT_HU), (region, level)],
                      mask_parts=[lambda z, y, x: CLOT(z, y, x) & ~region(z, y, x)])
    values = compute_signs(ct, mask)
    assert values["sign_blend"] == 1 and values["sign_hypodensity"] == 0
    assert values["sign_blend_contrast_hu"] == pytest.approx(20.0, abs=4.0)


@pytest.mark.parametrize("level", [BRAIN_HU + 5.0, 20.0])
def test_brain_and_oedema_next_to_a_tight_mask_are_not_absorbed(spacing, level):
    """Grey matter (40 HU) or oedema (20 HU) around a clot, and a mask 2 mm inside its outline: no sign."""
    rim = ellipsoid(CENTRE, CLOT_RADII + 4.0)
    ct, mask = render(spacing, [(rim, level), (CLOT, CLOT_HU)],
                      mask_parts=[ellipsoid(CENTRE, CLOT_RADII - 2.0)])
    values = compute_signs(ct, mask)
    assert flags(values) == set()


def test_region_open_to_the_brain_is_not_a_black_hole(spacing):
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU), open_region(32.0)]))
    assert values["sign_black_hole"] == 0 and values["sign_hypodensity"] == 0 and values["sign_blend"] == 1


def test_swirl_is_an_iso_attenuating_region(spacing):
    iso = compute_signs(*render(spacing, [(CLOT, CLOT_HU), hole(CLOT_HU - BRAIN_HU)]))
    assert {"swirl", "hypodensity", "black_hole"} <= flags(iso)
    grey = compute_signs(*render(spacing, [(CLOT, CLOT_HU), hole(CLOT_HU - 42.0)]))  # grey matter 35-45 HU
    assert "swirl" in flags(grey)
    mild = compute_signs(*render(spacing, [(CLOT, CLOT_HU), hole(15.0)]))
    assert flags(mild) == {"hypodensity"}


def test_mask_with_a_hole_still_gives_hypodensity(spacing):
    """A segmenter may leave a very hypodense core out of the mask: holes are filled per slice."""
    core = ellipsoid(CENTRE, [5.0] * 3)
    ct, mask = render(
        spacing, [(CLOT, CLOT_HU), (core, CLOT_HU - 45)],
        mask_parts=[lambda z, y, x: CLOT(z, y, x) & ~core(z, y, x)],
    )
    assert sitk.GetArrayFromImage(mask)[5].sum() < sitk.GetArrayFromImage(
        render(spacing, [(CLOT, CLOT_HU)])[1])[5].sum()
    values = compute_signs(ct, mask)
    assert values["sign_hypodensity"] == 1 and values["sign_black_hole"] == 1


def test_anisotropic_spacing():
    spacing = (2.5, 0.9, 0.6)
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU), hole(32.0)]))
    assert flags(values) >= {"hypodensity", "black_hole"} and values["sign_blend"] == 0
    assert flags(compute_signs(*render(spacing, [(CLOT, CLOT_HU)]))) == set()


def test_three_d_mode_is_stricter_on_encapsulation(spacing):
    """A region closed on its middle slice but open above: a hypodensity per slice, not in 3D."""
    chimney = ellipsoid(CENTRE + [10.0, 0, 0], [12.0, 4.0, 4.0])
    parts = [(CLOT, CLOT_HU), (lambda z, y, x: chimney(z, y, x) & CLOT(z, y, x), CLOT_HU - 32)]
    ct, mask = render(spacing, parts)
    assert compute_signs(ct, mask)["sign_hypodensity"] == 1
    assert compute_signs(ct, mask, SignSettings(mode="3d"))["sign_hypodensity"] == 0


# --------------------------------------------------------------------------- fluid level
def fluid_parts(dense_posterior=True):
    cut = CENTRE[1] + 2.0
    dense = (lambda z, y, x: CLOT(z, y, x) & (y >= cut)) if dense_posterior else (
        lambda z, y, x: CLOT(z, y, x) & (y < cut))
    return [(CLOT, 42.0), (dense, 76.0)]


def test_fluid_level_dense_part_posterior(spacing):
    values = compute_signs(*render(spacing, fluid_parts()))
    assert values["sign_fluid_level"] == 1 and values["sign_barras_density"] == 5
    assert values["sign_fluid_level_step_hu"] == pytest.approx(34, abs=6)
    assert values["sign_blend"] == 0  # the upper layer of a level is not a blend
    upside_down = compute_signs(*render(spacing, fluid_parts(dense_posterior=False)))
    assert upside_down["sign_fluid_level"] == 0


def flipped_y(image: sitk.Image) -> sitk.Image:
    """The same physical image stored with rows running anteriorly (direction y = -1)."""
    array = sitk.GetArrayFromImage(image)[:, ::-1, :]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(image.GetSpacing())
    out.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    last_row = image.TransformIndexToPhysicalPoint((0, image.GetSize()[1] - 1, 0))
    out.SetOrigin(last_row)
    return out


def test_flipped_direction_keeps_the_level_posterior():
    spacing = GRIDS["small"]
    ct, mask = render(spacing, fluid_parts())
    assert compute_signs(flipped_y(ct), flipped_y(mask))["sign_fluid_level"] == 1
    ct, mask = render(spacing, fluid_parts(dense_posterior=False))
    assert compute_signs(flipped_y(ct), flipped_y(mask))["sign_fluid_level"] == 0


# --------------------------------------------------------------------------- islands, satellites
def bleeds_at(positions, radius=3.0):
    return [(ellipsoid(p, [radius] * 3), CLOT_HU) for p in positions]


# Gaps of 3-4 mm: blurred blood bridges narrower gaps on the 1.8 mm grid.
SEPARATE = [CENTRE + d for d in ([0, 0, -21.0], [0, -19.0, 0], [0, 19.0, 6.0])]


def test_three_separate_bleeds_make_an_island_sign(spacing):
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU)] + bleeds_at(SEPARATE)))
    assert values["sign_island"] == 1 and values["sign_island_separate_count"] == 3
    assert values["sign_satellite"] == 1 and values["sign_satellite_count"] == 3
    assert 1 <= values["sign_satellite_distance_mm"] <= 20
    assert values["sign_barras_shape"] == 5


def test_bleeds_found_in_the_ct_when_the_mask_holds_only_the_main_clot(spacing):
    ct, _ = render(spacing, [(CLOT, CLOT_HU)] + bleeds_at(SEPARATE))
    _, mask = render(spacing, [(CLOT, CLOT_HU)])
    assert compute_signs(ct, mask)["sign_island"] == 1


def test_one_satellite_is_not_an_island(spacing):
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU)] + bleeds_at(SEPARATE[:1])))
    assert values["sign_satellite"] == 1 and values["sign_island"] == 0
    assert values["sign_satellite_distance_mm"] == pytest.approx(21 - 15 - 3, abs=2.0)


def test_large_separate_bleed_is_not_a_satellite(spacing):
    large = [(ellipsoid(CENTRE + [0, 0, -25.0], [6.0, 7.0, 7.0]), CLOT_HU)]  # 14 mm across, 3 mm away
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU)] + large))
    assert values["sign_satellite"] == 0 and values["sign_island"] == 0


def test_four_bubbles_budding_from_the_clot_make_an_island_sign(spacing):
    r = 3.5
    buds = [CENTRE + [0, 12.0 * math.sin(a) + 1.5 * math.sin(a), 15.0 * math.cos(a) + 1.5 * math.cos(a)]
            for a in np.radians([30, 150, 210, 330])]
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU)] + bleeds_at(buds, radius=r)))
    assert values["sign_island"] == 1 and values["sign_island_separate_count"] == 0
    assert values["sign_island_count"] >= 4


def test_calcification_rim_is_not_a_bleed(spacing):
    calcified = [(ellipsoid(CENTRE + [0, 0, -22.0], [2.0, 2.0, 2.0]), 400.0)]
    values = compute_signs(*render(spacing, [(CLOT, CLOT_HU)] + calcified))
    assert values["sign_satellite"] == 0


# --------------------------------------------------------------------------- Barras, findings, BAT
def test_barras_shape_grades_lobulated_clots_higher(spacing):
    lobes = [(ellipsoid(CENTRE + [0, 10.0 * s, 9.0 * c], [9.0, 8.0, 8.0]), CLOT_HU)
             for s, c in ((1, 1), (-1, 1), (1, -1), (-1, -1))]
    small = (ellipsoid(CENTRE, [12.0, 8.0, 8.0]), CLOT_HU)
    values = compute_signs(*render(spacing, [small] + lobes))
    assert values["sign_barras_shape"] >= 3
    assert values["sign_barras_shape_solidity"] < 0.9


def test_findings_give_the_slice_and_region(spacing):
    ct, mask = render(spacing, [(CLOT, CLOT_HU), hole(32.0)])
    findings = {f.sign: f for f in find_signs(ct, mask)}
    assert {"hypodensity", "black_hole"} <= set(findings)
    shape = sitk.GetArrayFromImage(ct).shape
    centre_slice = int(CENTRE[0] // spacing[0])
    for sign in ("hypodensity", "black_hole"):
        finding = findings[sign]
        assert finding.slice_index == centre_slice
        assert finding.region.shape == shape[1:] and finding.region.dtype == bool
        rows, cols = np.nonzero(finding.region)
        assert abs(rows.mean() * spacing[1] - CENTRE[1]) < 2 and abs(cols.mean() * spacing[2] - CENTRE[2]) < 2
        assert finding.measurement == "contrast_hu" and finding.value == pytest.approx(32, abs=3)


def test_findings_on_a_flipped_image_map_back_to_its_rows():
    spacing = GRIDS["small"]
    ct, mask = render(spacing, fluid_parts())
    straight = {f.sign: f for f in find_signs(ct, mask)}["fluid_level"]
    flipped = {f.sign: f for f in find_signs(flipped_y(ct), flipped_y(mask))}["fluid_level"]
    assert flipped.slice_index == straight.slice_index
    assert np.array_equal(flipped.region[::-1], straight.region)


@pytest.mark.parametrize("blend, hypodensity, hours, expected", [
    (0, 0, 5.0, 0), (1, 0, 5.0, 1), (0, 1, 5.0, 2), (0, 0, 1.0, 2), (1, 1, 2.0, 5), (1, 1, 2.5, 3),
    (1, 1, None, math.nan), (1, 1, math.nan, math.nan), (math.nan, 0, 1.0, math.nan),
])
def test_bat_score(blend, hypodensity, hours, expected):
    score = bat_score(blend, hypodensity, hours)
    assert (math.isnan(score) and math.isnan(expected)) or score == expected
