"""Render a DICOM SEG over its CT slice, from the two DICOM files alone (pydicom + matplotlib, not hematoma's reader).

    python docs/figures/seg_over_ct.py CT_SERIES_FOLDER SEG.dcm OUT.png

Picks the SEG frame with the most segmented pixels, finds the CT slice it references (Referenced SOP Instance UID
of the frame's Derivation Image Sequence, else the same Image Position Patient), shows that slice in a brain
window (W 80 / L 40 HU) with the segment's outline and a translucent fill, as a DICOM viewer overlays it.

The README's figure: `python docs/figures/seg_over_ct.py --demo docs/figures/seg_over_ct.png` writes a full-size
synthetic head CT as a DICOM series, runs `hematoma segment CT --out SEG.dcm`, and renders the result.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom


def frame_of_largest_area(seg) -> tuple[int, np.ndarray]:
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    index = int(np.argmax(frames.reshape(len(frames), -1).sum(axis=1)))
    return index, frames[index].astype(bool)


def referenced_slice(seg, index: int, ct_folder: Path):
    frame = seg.PerFrameFunctionalGroupsSequence[index]
    wanted = None
    if "DerivationImageSequence" in frame:
        wanted = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
    for path in sorted(ct_folder.iterdir()):
        ds = pydicom.dcmread(path)
        if ds.SOPInstanceUID == wanted or (wanted is None and np.allclose(
                [float(v) for v in ds.ImagePositionPatient], position, atol=1e-3)):
            return ds
    raise SystemExit(f"{ct_folder}: no CT slice matches frame {index + 1} of the SEG")


def render(ct_folder: Path, seg_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seg = pydicom.dcmread(seg_path)
    index, segment = frame_of_largest_area(seg)
    ct = referenced_slice(seg, index, ct_folder)
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    label = seg.SegmentSequence[0].SegmentLabel
    algorithm = seg.SegmentSequence[0].get("SegmentAlgorithmName", "")
    figure, axis = plt.subplots(figsize=(6, 6), dpi=110)
    axis.imshow(hu, cmap="gray", vmin=0, vmax=80)
    axis.imshow(np.ma.masked_where(~segment, segment), cmap="autumn", alpha=0.35)
    axis.contour(segment, levels=[0.5], colors="red", linewidths=1.2)
    axis.set_title(f"DICOM SEG segment '{label}' ({algorithm}) over CT instance {ct.InstanceNumber}\n"
                   f"{seg_path.name}: frame {index + 1} of {seg.NumberOfFrames}, "
                   f"{segment.sum() * float(ct.PixelSpacing[0]) * float(ct.PixelSpacing[1]) / 100:.1f} cm² on this slice",
                   fontsize=9)
    axis.axis("off")
    figure.tight_layout()
    figure.savefig(out)
    print(f"-> {out}")


def demo(out: Path) -> None:
    import SimpleITK as sitk

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from test_dicom_seg import _positions
    from test_io import write_ct_series

    from hematoma.synthetic import make_head_ct

    with tempfile.TemporaryDirectory() as tmp:
        ct, _ = make_head_ct(size="full", seed=3, hematoma_ml=25.0, irregularity=0.5, heterogeneity=0.5)
        folder = Path(tmp) / "ct"
        write_ct_series(folder, np.clip(sitk.GetArrayFromImage(ct), -1024, 3071), _positions(ct),
                        pixel_spacing=ct.GetSpacing()[1::-1], thickness=ct.GetSpacing()[2])
        seg = Path(tmp) / "hematoma.dcm"
        subprocess.run([sys.executable, "-m", "hematoma", "segment", str(folder), "--out", str(seg)], check=True)
        render(folder, seg, out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--demo":
        demo(Path(sys.argv[2]))
    elif len(sys.argv) == 4:
        render(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
