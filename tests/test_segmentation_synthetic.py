"""The segmenters on the project's synthetic heads (small size): realistic anatomy with a skull base."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from hematoma.segmentation import NoHemorrhageWarning, brain_mask, segment_hemorrhage
from hematoma.volume import mask_volume_ml

synthetic = pytest.importorskip("hematoma.synthetic")


def _dice(a, b) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return 2.0 * np.logical_and(x, y).sum() / max(x.sum() + y.sum(), 1)


@pytest.mark.parametrize("location", ["basal_ganglia", "thalamus", "lobar", "infratentorial"])
def test_hematoma_at_each_location(location):
    ct, truth = synthetic.make_head_ct(size="small", seed=3, hematoma_ml=12.0, location=location)
    mask = segment_hemorrhage(ct)
    assert _dice(mask, truth) > 0.88
    # 1.8 mm pixels: one ring of boundary voxels is ~10 % of a 12 mL clot.
    assert mask_volume_ml(mask) == pytest.approx(mask_volume_ml(truth), rel=0.2)


@pytest.mark.parametrize("seed", [0, 1])
def test_head_without_hemorrhage_gives_an_empty_mask(seed):
    ct, _ = synthetic.make_head_ct(size="small", seed=seed, hematoma_ml=0.0)
    with pytest.warns(NoHemorrhageWarning):
        mask = segment_hemorrhage(ct)
    assert mask_volume_ml(mask) == 0.0


def test_brain_mask_holds_the_hematoma_and_no_bone():
    ct, truth = synthetic.make_head_ct(size="small", seed=2, hematoma_ml=25.0, location="lobar")
    brain = sitk.GetArrayFromImage(brain_mask(ct)) > 0
    hu = sitk.GetArrayFromImage(ct)
    assert brain[sitk.GetArrayFromImage(truth) > 0].mean() > 0.98
    assert not brain[hu > 300].any()
    assert 900 < brain.sum() * np.prod(ct.GetSpacing()) / 1000 < 1800  # an adult brain, in mL
