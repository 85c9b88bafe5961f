"""One PNG per NCCT sign found: the axial slice that shows it, the sign's region outlined and labelled.

Two panels in a brain window (W80/L40, as the overlay): the whole slice, and a
zoom on the clot and the sign, each with the hematoma outlined thin in red and
the sign's region outlined in cyan (a yellow box on the whole slice marks the
zoom).  A yellow label names the sign with its measurement ("black hole: 34 HU
below the clot").  Slices are shown in the radiological convention (patient's
right on the viewer's left, anterior at the top): the CT, the mask and the
region are put in LPS order first.

The panels are rasterised here (outlines coloured pixel by pixel, then placed
with ``figimage`` at their exact size): matplotlib's own resampling of an
image could drop a one-pixel outline, and the exact placement lets a test find
the outline's pixels inside the region's box (:attr:`SignFigure.region_box`).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage as ndi

from ..errors import InputError
from ..segmentation.overlay import BRAIN_WINDOW
from ..storage import atomic_path, refuse_overwrite, same_file

HEMATOMA_COLOUR = (255, 64, 64)  # red, as the overlay's hematoma
SIGN_COLOUR = (0, 255, 255)  # cyan: distinct from the red outline and from grey
BOX_COLOUR = (255, 221, 0)  # yellow: the zoomed area and the label
SIGN_NAMES = {
    "hypodensity": "hypodensity", "black_hole": "black hole", "blend": "blend sign", "swirl": "swirl sign",
    "fluid_level": "fluid level", "island": "island sign", "satellite": "satellite sign",
}
#: SignFinding.measurement -> how its value reads.
MEASUREMENTS = {
    "contrast_hu": "{:.0f} HU below the clot",
    "core_hu": "core {:.0f} HU, at or below brain",
    "step_hu": "dependent part {:.0f} HU denser",
    "distance_mm": "{:.1f} mm from the clot",
    "count": "{:.0f} small bleeds (separate or budding)",
}
OVERVIEW_PX = 300  # longest side of the whole-slice panel
ZOOM_PX = 380  # longest side of the zoom panel
ZOOM_MARGIN_MM = 8.0  # around the clot and the sign
ZOOM_MIN_MM = 30.0  # a small clot is still shown in its surroundings
_TOP, _BOTTOM, _SIDE, _GAP = 56, 34, 12, 16  # pixel bands around the panels (title, legend)
_DPI = 100


@dataclass
class SignFigure:
    path: Path
    region_box: tuple[int, int, int, int]  # (x0, y0, x1, y1), PNG pixels, the region in the zoom panel (inclusive)


def sign_name(sign: str) -> str:
    return SIGN_NAMES.get(sign, sign.replace("_", " "))


def measurement_text(finding) -> str:
    """``"black hole: 34 HU below the clot"``."""
    form = MEASUREMENTS.get(finding.measurement)
    value = float(finding.value)
    if form is None or not math.isfinite(value):
        return sign_name(finding.sign) if form is None else f"{sign_name(finding.sign)}: not measured"
    return f"{sign_name(finding.sign)}: {form.format(value)}"


def sign_figure_path(report: str | Path, sign: str) -> Path:
    """Where the figure of ``sign`` goes: next to the report, ``<report name>_sign_<sign>.png``."""
    report = Path(report)
    return report.with_name(f"{report.stem}_sign_{sign}.png")


def _lps(image: sitk.Image) -> np.ndarray:
    if image.GetDimension() == 2:
        return sitk.GetArrayFromImage(image)[None]
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def _lps_spacing(image: sitk.Image) -> tuple[float, float]:
    """(row, column) spacing in mm of the LPS-ordered slices."""
    oriented = image if image.GetDimension() == 2 else sitk.DICOMOrient(image, "LPS")
    spacing = oriented.GetSpacing()
    return float(spacing[1]), float(spacing[0])


def _region_volume(ct: sitk.Image, finding) -> sitk.Image:
    """The finding's 2D region as a volume on the CT's grid (so that it is reoriented with the CT)."""
    shape = sitk.GetArrayViewFromImage(ct).shape
    region = np.asarray(finding.region, dtype=bool)
    if ct.GetDimension() == 2:
        array = region.astype(np.uint8)
    else:
        if not 0 <= finding.slice_index < shape[0] or region.shape != shape[1:]:
            raise InputError(None, f"the {finding.sign} finding (slice {finding.slice_index}, region {region.shape}) "
                                   f"does not fit the CT ({shape})")
        array = np.zeros(shape, dtype=np.uint8)
        array[finding.slice_index] = region
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(ct)
    return image


def _resize(array: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    factors = (shape[0] / array.shape[0], shape[1] / array.shape[1])
    return ndi.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The inner band of ``mask``, ``width`` pixels wide (so it lies inside the region it outlines)."""
    if not mask.any():
        return mask
    return mask & ~ndi.binary_erosion(mask, iterations=width, border_value=0)


def _panel(grey: np.ndarray, hematoma: np.ndarray, region: np.ndarray, shape: tuple[int, int],
           hematoma_px: int, region_px: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB panel of ``shape``: the grey slice with both outlines; and the region resized (for its box)."""
    grey = np.clip(_resize(grey, shape, order=1), 0.0, 1.0)
    hematoma = _resize(hematoma.astype(np.uint8), shape, order=0) > 0
    region = _resize(region.astype(np.uint8), shape, order=0) > 0
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    rgb[_outline(hematoma, hematoma_px)] = HEMATOMA_COLOUR
    rgb[_outline(region, region_px)] = SIGN_COLOUR  # on top: the sign is what the figure is about
    return rgb, region


def _fit(rows_mm: float, cols_mm: float, longest: int) -> tuple[int, int]:
    scale = longest / max(rows_mm, cols_mm)
    return max(round(rows_mm * scale), 1), max(round(cols_mm * scale), 1)


def _zoom_window(hematoma: np.ndarray, region: np.ndarray, spacing: tuple[float, float]) -> tuple[slice, slice]:
    """Rows and columns around the clot and the sign on this slice (a square in mm, at least ZOOM_MIN_MM)."""
    rows, cols = np.nonzero(hematoma | region)
    centre = ((rows.min() + rows.max()) / 2.0, (cols.min() + cols.max()) / 2.0)
    half_mm = max((rows.max() - rows.min() + 1) * spacing[0], (cols.max() - cols.min() + 1) * spacing[1],
                  ZOOM_MIN_MM) / 2.0 + ZOOM_MARGIN_MM
    window = []
    for axis, size in enumerate(hematoma.shape):
        half = math.ceil(half_mm / spacing[axis])
        start = max(round(centre[axis]) - half, 0)
        stop = min(round(centre[axis]) + half + 1, size)
        window.append(slice(start, stop))
    return window[0], window[1]


def draw_sign_figure(ct: sitk.Image, mask: sitk.Image, finding, path: str | Path, overwrite: bool = False,
                     window: tuple[float, float] = BRAIN_WINDOW) -> SignFigure:
    """Write the PNG of ``finding`` (a :class:`~hematoma.features.signs.SignFinding` of ``ct``) to ``path``."""
    path = Path(path)
    refuse_overwrite(path, overwrite)
    hu = _lps(ct).astype(np.float32)
    labels = _lps(mask) > 0
    region3d = _lps(_region_volume(ct, finding)) > 0
    areas = region3d.reshape(region3d.shape[0], -1).sum(axis=1)
    if not areas.any():
        raise InputError(None, f"the {finding.sign} finding has an empty region: nothing to draw")
    k = int(np.argmax(areas))  # the finding's slice, in LPS order
    level, width = window
    grey = (hu[k] - (level - width / 2.0)) / width
    hematoma, region = labels[k], region3d[k]
    spacing = _lps_spacing(ct)

    whole_shape = _fit(grey.shape[0] * spacing[0], grey.shape[1] * spacing[1], OVERVIEW_PX)
    overview, _ = _panel(grey, hematoma, region, whole_shape, 1, 1)
    rows, cols = _zoom_window(hematoma, region, spacing)
    zoom_shape = _fit((rows.stop - rows.start) * spacing[0], (cols.stop - cols.start) * spacing[1], ZOOM_PX)
    zoom, zoomed_region = _panel(grey[rows, cols], hematoma[rows, cols], region[rows, cols], zoom_shape, 1, 2)
    # The zoomed area, boxed on the whole slice.
    sy, sx = whole_shape[0] / grey.shape[0], whole_shape[1] / grey.shape[1]
    y0, y1 = int(rows.start * sy), min(math.ceil(rows.stop * sy), whole_shape[0]) - 1
    x0, x1 = int(cols.start * sx), min(math.ceil(cols.stop * sx), whole_shape[1]) - 1
    overview[[y0, y1], x0:x1 + 1] = BOX_COLOUR
    overview[y0:y1 + 1, [x0, x1]] = BOX_COLOUR

    panel_h = max(whole_shape[0], zoom_shape[0])
    width_px = _SIDE + whole_shape[1] + _GAP + zoom_shape[1] + _SIDE
    height_px = _TOP + panel_h + _BOTTOM
    figure = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(figure)
    bottom = _BOTTOM + panel_h  # top edge of the panels, from the figure's bottom
    figure.figimage(overview, xo=_SIDE, yo=bottom - whole_shape[0], origin="upper")
    zoom_x, zoom_y = _SIDE + whole_shape[1] + _GAP, height_px - bottom  # zoom panel's top-left, PNG pixels
    figure.figimage(zoom, xo=zoom_x, yo=bottom - zoom_shape[0], origin="upper")

    n_slices = sitk.GetArrayViewFromImage(ct).shape[0] if ct.GetDimension() == 3 else 1
    figure.text(0.5, 1 - 8 / height_px, f"{sign_name(finding.sign)} — axial slice {finding.slice_index + 1} of {n_slices}",
                ha="center", va="top", color="white", fontsize=12, weight="bold")
    figure.text(0.5, 1 - 32 / height_px, f"brain window W{width:g}/L{level:g}; patient's right on the viewer's left",
                ha="center", va="top", color="#bbbbbb", fontsize=8.5)
    figure.text(0.5, 10 / height_px, f"red: hematoma outline   cyan: {sign_name(finding.sign)} region   "
                                     "yellow box: the area zoomed on the right", ha="center", va="bottom",
                color="#bbbbbb", fontsize=8.5)

    ys, xs = np.nonzero(zoomed_region)
    box = (zoom_x + int(xs.min()), zoom_y + int(ys.min()), zoom_x + int(xs.max()), zoom_y + int(ys.max()))
    _label(figure, measurement_text(finding), box, (zoom_x, zoom_y, zoom_shape[1], zoom_shape[0]), height_px)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=_DPI, facecolor="black")
    return SignFigure(path=path, region_box=box)


def _label(figure: Figure, text: str, box, panel, height_px: int) -> None:
    """The sign's label in the zoom panel's corner farther from the region, with an arrow to the region's box."""
    x, y, w, h = panel
    top = (box[1] + box[3]) / 2.0 > y + h / 2.0  # region in the lower half: label at the top
    text_y = y + 10 if top else y + h - 10
    # An axes over the whole figure in PNG pixels (y down), above the images, for the annotation only.
    axes = figure.add_axes((0, 0, 1, 1), zorder=2)
    axes.set_xlim(0, figure.bbox.width)
    axes.set_ylim(height_px, 0)
    axes.set_axis_off()
    target_y = box[1] if top else box[3]
    text = "\n".join(textwrap.wrap(text, width=max(int((w - 24) / 8), 12)))  # ~8 px a character at 10 pt bold
    axes.annotate(text, xy=((box[0] + box[2]) / 2.0, target_y), xytext=(x + 8, text_y),
                  va="top" if top else "bottom", ha="left", color=BOX_COLOUR_HEX, fontsize=10, weight="bold",
                  bbox={"boxstyle": "round,pad=0.3", "facecolor": "black", "alpha": 0.7, "edgecolor": BOX_COLOUR_HEX},
                  arrowprops={"arrowstyle": "->", "color": BOX_COLOUR_HEX, "lw": 1.5, "shrinkB": 6})


BOX_COLOUR_HEX = "#{:02x}{:02x}{:02x}".format(*BOX_COLOUR)


def check_figure_paths(paths, others) -> None:
    """Refuse a sign figure path that is one of the other outputs or inputs (``others``: name -> path)."""
    for path in paths:
        for name, other in others.items():
            if other is not None and same_file(path, other):
                raise InputError(path, f"the sign figure would replace the {name}; give the report another name")
