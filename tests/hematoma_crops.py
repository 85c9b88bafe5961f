"""What the BLAST-CT tests share: the weights' place, the skip without them, and a small synthetic head cropped
around its hematoma to feed the network (seconds, no skull)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hematoma.synthetic import make_head_ct

WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "blast-ct-v1"
NEEDS_WEIGHTS = pytest.mark.skipif(not (WEIGHTS / "model_1.pt").is_file(),
                                   reason="BLAST-CT weights not found in ../shared/models")


def hematoma_crop(folder: Path, hematoma_ml: float, margin_mm: float) -> tuple[Path, sitk.Image]:
    """Write the crop (``margin_mm`` around the hematoma in plane, 2-3 slices above and below) as
    ``folder/ct.nii.gz``; return its path and the true mask on the crop's grid."""
    ct, mask = make_head_ct(size="small", seed=0, hematoma_ml=hematoma_ml)
    z, y, x = np.nonzero(sitk.GetArrayViewFromImage(mask))
    margin = int(margin_mm / ct.GetSpacing()[0])
    box = (slice(max(x.min() - margin, 0), x.max() + margin), slice(max(y.min() - margin, 0), y.max() + margin),
           slice(max(z.min() - 2, 0), z.max() + 3))
    path = folder / "ct.nii.gz"
    sitk.WriteImage(ct[box], str(path))
    return path, mask[box]
