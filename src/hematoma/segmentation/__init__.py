"""Brain extraction and hemorrhage segmentation of non-contrast head CT.

``brain_mask(image)`` and ``segment_hemorrhage(image, model=None)`` take and
return SimpleITK images (masks are UInt8 0/1 on the image's own grid); the
rule-based segmenter needs no trained model, a voxel classifier can be
trained with ``train_from_manifest`` and loaded with
``HemorrhageSegmentationModel.load``.
"""

from .brain import brain_mask, check_hounsfield
from .classifier import (
    HemorrhageSegmentationModel,
    VoxelHemorrhageClassifier,
    train_from_manifest,
)
from .hemorrhage import NoHemorrhageWarning, mask_for_case, segment_hemorrhage
from .overlay import save_overlay

__all__ = [
    "HemorrhageSegmentationModel",
    "NoHemorrhageWarning",
    "VoxelHemorrhageClassifier",
    "brain_mask",
    "check_hounsfield",
    "mask_for_case",
    "save_overlay",
    "segment_hemorrhage",
    "train_from_manifest",
]
