"""The paper's Figure 3: the hematoma on the axial slice where it is largest.

Left, the slice with the hematoma in red; right, the same slice without it,
both in a brain window (W80/L40 by default).  Slices are shown in the
radiological convention (patient's right on the viewer's left, anterior at
the top): the volume is put in LPS order first.  The figure is drawn with
matplotlib's object API on an Agg canvas (no pyplot, no display, no global
backend switch) and written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..storage import atomic_path, refuse_overwrite
from ..volume import mask_volume_ml

BRAIN_WINDOW = (40.0, 80.0)  # level, width (HU)


def _lps_array(image: sitk.Image) -> np.ndarray:
    if image.GetDimension() == 2:
        return sitk.GetArrayFromImage(image)[None]
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def largest_area_slice(mask: np.ndarray) -> int:
    """Index (axis 0) of the slice with the most mask voxels (the middle slice of an empty mask)."""
    areas = (mask > 0).sum(axis=tuple(range(1, mask.ndim)))
    return int(np.argmax(areas)) if areas.any() else mask.shape[0] // 2


def save_overlay(ct: sitk.Image, mask: sitk.Image, path: str | Path, window=BRAIN_WINDOW, overwrite: bool = True,
                 title: str | None = None) -> Path:
    """Write the two-panel PNG of ``mask`` (red) on ``ct`` at the slice of largest hematoma area."""
    path = Path(path)
    refuse_overwrite(path, overwrite)
    hu, labels = _lps_array(ct).astype(np.float32), _lps_array(mask) > 0
    k = largest_area_slice(labels)
    level, width = window
    grey = np.clip((hu[k] - (level - width / 2.0)) / width, 0.0, 1.0)
    spacing = ct.GetSpacing()
    aspect = spacing[1] / spacing[0]

    red = np.zeros(grey.shape + (4,), dtype=np.float32)
    red[..., 0] = 1.0
    red[..., 3] = 0.55 * labels[k]

    figure = Figure(figsize=(10, 5.4), dpi=100)
    FigureCanvasAgg(figure)
    volume = mask_volume_ml(mask)
    panels = figure.subplots(1, 2)
    for axes, with_mask in zip(panels, (True, False)):
        axes.imshow(grey, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        if with_mask:
            axes.imshow(red, aspect=aspect, interpolation="nearest")
            axes.set_title(f"hematoma (red), {volume:.1f} mL")
        else:
            axes.set_title(f"CT, brain window W{width:g}/L{level:g}")
        axes.set_axis_off()
    figure.suptitle(title or f"axial slice {k + 1} of {hu.shape[0]} (largest hematoma area)")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return path
