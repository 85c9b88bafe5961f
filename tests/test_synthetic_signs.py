"""The generator's NCCT signs: each, asked for, is where its truth says, with the published HU contrasts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hematoma.synthetic import make_head_ct, synthesize_patient
from hematoma.synthetic.signs import SIGN_NAMES, odds_ratio, sample_signs

CROSS = ndimage.generate_binary_structure(2, 1)[None]  # in-plane 4-neighbourhood, per slice


def _scan(signs, size="small", **kwargs):
    truth: dict = {}
    ct, mask = make_head_ct(size=size, seed=0, hematoma_ml=20.0, signs=signs, sign_truth=truth, **kwargs)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    smooth = ndimage.uniform_filter(hu, size=(1, 3, 3))  # in-plane 3x3 mean: noise / 3
    return hu, smooth, sitk.GetArrayFromImage(mask) > 0, truth, ct.GetSpacing()


def _interior(mask: np.ndarray, spacing=None) -> np.ndarray:
    """The clot without its partial-volume rim: eroded in-plane by 2 voxels or 2 mm, with clot on the slices above
    and below."""
    voxels = 2 if spacing is None else max(2, int(np.ceil(2.0 / spacing[0])))
    inner = ndimage.binary_erosion(mask, CROSS, iterations=voxels)
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[0] = inner[-1] = False
    return inner


def _dark(smooth, mask, below_hu, interior=True, spacing=None):
    """Connected (3D) regions of the clot (its interior: no partial-volume rim) darker than its median by
    ``below_hu`` (smoothed in-plane)."""
    inner = _interior(mask, spacing)
    median = np.median(smooth[inner])
    labels, _n = ndimage.label((smooth < median - below_hu) & (inner if interior else mask))
    sizes = np.bincount(labels.ravel())[1:]
    return labels, sizes, median


@pytest.mark.parametrize("size", ["small", "full"])
def test_a_clot_without_signs_holds_no_hypodense_region(size):
    _hu, smooth, mask, truth, spacing = _scan((), size)
    assert not any(truth[name] for name in SIGN_NAMES) and truth["barras_density"] == 1
    inner = _interior(mask, spacing)
    median = np.median(smooth[inner])
    labels, n = ndimage.label((smooth < median - 10.0) & inner)
    assert n == 0 or np.bincount(labels.ravel())[1:].max() <= 4
    assert 58 <= median <= 85


@pytest.mark.parametrize("size, sign", [("small", "hypodensity"), ("full", "hypodensity"), ("small", "black_hole")])
def test_an_encapsulated_region_is_hypodense_by_its_contrast_and_surrounded_by_clot(size, sign):
    hu, smooth, mask, truth, spacing = _scan((sign,), size)
    assert truth["hypodensity"] == 1 and truth["black_hole"] == int(sign == "black_hole") and truth["blend"] == 0
    contrast = truth["hypodense_contrast_hu"]
    assert (12 <= contrast <= 22) if sign == "hypodensity" else (32 <= contrast <= 45)
    labels, sizes, median = _dark(smooth, mask, contrast / 2, spacing=spacing)
    region = labels == 1 + int(np.argmax(sizes))
    area_mm2 = region.sum() * spacing[0] * spacing[1]
    assert area_mm2 >= np.pi * 2.5**2  # visible: > 6 pixels of the 1.8 mm grid
    assert abs((median - hu[region].mean()) - contrast) < 5.0
    # Encapsulated: two voxels of clot round it in-plane, and clot over it on the slices above and below.
    ring = ndimage.binary_dilation(region, CROSS, iterations=2)
    assert mask[ring].all()
    k = np.flatnonzero(region.any(axis=(1, 2)))
    assert len(k) == 1 and mask[k[0] - 1][region[k[0]]].all() and mask[k[0] + 1][region[k[0]]].all()
    assert (smooth[k[0] - 1][region[k[0]]] > median - 8).mean() > 0.9  # dense above: not a tube to the surface


def test_a_black_hole_region_is_at_least_28_hu_darker_and_a_swirl():
    hu, smooth, mask, truth, _ = _scan(("black_hole",))
    labels, sizes, median = _dark(smooth, mask, 14.0)
    region = labels == 1 + int(np.argmax(sizes))
    assert median - hu[region].mean() >= 28.0
    assert truth["swirl"] == int(truth["swirl_region_hu"] <= 45.0) == int(hu[region].mean() <= 47.0)


def test_a_swirl_is_at_brain_parenchyma_density():
    hu, smooth, mask, truth, _ = _scan(("swirl",))
    assert truth["swirl"] == 1 and truth["swirl_region_hu"] <= 41.0
    labels, sizes, _ = _dark(smooth, mask, 14.0)
    assert 20.0 <= hu[labels == 1 + int(np.argmax(sizes))].mean() <= 45.0  # grey matter 35-45, white 20-30 HU


def test_a_blend_region_reaches_the_clots_border_with_its_contrast():
    hu, smooth, mask, truth, _ = _scan(("blend",))
    assert truth["blend"] == 1 and truth["hypodensity"] == 0 and 22 <= truth["blend_contrast_hu"] <= 40
    labels, sizes, median = _dark(smooth, mask, 10.0, interior=False)
    region = labels == 1 + int(np.argmax(sizes))
    assert region.sum() >= 0.1 * mask.sum()
    assert not mask[ndimage.binary_dilation(region, CROSS, iterations=2)].all()  # open to the surrounding brain
    core = ndimage.binary_erosion(region, CROSS, iterations=1)
    assert median - hu[core].mean() >= 18.0
    assert truth["barras_density"] >= 3


def test_a_fluid_level_has_its_dense_part_posterior_and_a_straight_level():
    _hu, smooth, mask, truth, _ = _scan(("fluid_level",))
    assert truth["fluid_level"] == 1 and truth["barras_density"] == 5
    k = int(np.argmax(mask.sum(axis=(1, 2))))
    plane, clot = smooth[k], _interior(mask)[k]
    rows = np.flatnonzero(clot.any(axis=1))
    row_hu = np.array([plane[r][clot[r]].mean() for r in rows])
    low, high = row_hu[: len(rows) // 4].mean(), row_hu[-len(rows) // 4:].mean()
    assert high - low >= 18.0  # LPS: rows grow towards posterior: the dense part lies behind
    # The level is straight across: along each column the step from light to dense lies on the same row.
    steps = [rows[np.argmax(np.diff(plane[rows, c]))] for c in np.flatnonzero(clot.sum(axis=0) >= len(rows) * 0.8)]
    assert np.ptp(steps) <= 2


@pytest.mark.parametrize("sign, n_parts", [("island", 4), ("satellite", 1)])
def test_islands_and_satellites_are_separate_small_bleeds_in_mask_and_ct(sign, n_parts):
    hu, _, mask, truth, spacing = _scan((sign,))
    assert truth["satellite"] == 1 and truth["island"] == int(sign == "island")
    assert truth["n_satellites"] == n_parts and truth["barras_shape"] == 5
    voxel_ml = np.prod(spacing) / 1000
    assert abs(mask.sum() * voxel_ml - 20.0) <= voxel_ml  # the small bleeds count in the volume
    labels, n = ndimage.label(mask, np.ones((3, 3, 3)))
    assert n == 1 + n_parts
    sizes = np.bincount(labels.ravel())[1:]
    main = labels == 1 + int(np.argmax(sizes))
    outside = ndimage.distance_transform_edt(~main, sampling=spacing[::-1])
    for part in range(1, n + 1):
        bleed = labels == part
        if bleed is main or (bleed == main).all():
            continue
        extent_mm = max(np.ptp(axis) * s + s for axis, s in zip(np.nonzero(bleed)[1:], spacing[1::-1]))
        assert extent_mm <= 10.0
        assert 1.0 <= outside[bleed].min() <= 20.0
        assert hu[bleed].mean() >= 50.0  # at clot density (partial volume at its rim)


def test_separate_bleeds_on_the_full_grid_keep_the_volume():
    _, _, mask, truth, spacing = _scan(("island",), "full")
    voxel_ml = np.prod(spacing) / 1000
    assert truth["n_islands"] >= 3 and abs(mask.sum() * voxel_ml - 20.0) <= voxel_ml


def test_unknown_sign_is_a_user_error():
    from hematoma.errors import InputError

    with pytest.raises(InputError, match="unknown sign"):
        make_head_ct(signs=("spot",))


def test_patient_truth_holds_the_signs_and_the_cohort_csv_the_flat_columns(tmp_path):
    from hematoma.synthetic import generate_cohort
    from hematoma.synthetic.cohort import SIGN_TRUTH_COLUMNS

    patient = synthesize_patient(0, seed=1, size="small")
    signs = patient.truth["signs"]
    assert set(SIGN_NAMES) <= set(signs) and 1 <= signs["barras_shape"] <= 5 and 1 <= signs["barras_density"] <= 5
    generate_cohort(tmp_path / "c", 2, seed=1, size="small", progress=False)
    truth = pd.read_csv(tmp_path / "c" / "truth.csv")
    assert set(SIGN_TRUTH_COLUMNS) <= set(truth.columns)
    for name in SIGN_NAMES + ("barras_shape", "barras_density"):
        assert truth.loc[0, f"truth_sign_{name}"] == signs[name]


def test_signs_leave_every_other_draw_of_the_patient_as_it_was():
    from hematoma.synthetic import sample_clinical_and_risk

    patient = synthesize_patient(3, seed=2, size="small")
    row = sample_clinical_and_risk(1, seed=2, start=3).iloc[0]
    assert patient.truth["true_p"] == pytest.approx(row["true_p"]) and patient.truth["he"] == row["he"]


def test_sign_prevalence_and_association_with_expansion_on_a_sampled_cohort():
    cohort = sample_signs(4000, seed=3)
    published = {"hypodensity": 0.31, "black_hole": 0.146, "blend": 0.169, "island": 0.163, "satellite": 0.407,
                 "swirl": 0.30}
    for name, prevalence in published.items():
        assert abs(cohort[name].mean() - prevalence) < 0.06, name
        assert odds_ratio(cohort[name], cohort["he"]) > 1.8, name
    assert cohort["fluid_level"].mean() < 0.06
    assert (cohort["black_hole"] <= cohort["hypodensity"]).all() and (cohort["island"] <= cohort["satellite"]).all()
