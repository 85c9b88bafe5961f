"""Scanning the synthetic head: its pose in the gantry and the scanner's grid.

A pose is a rigid transform head -> scanner.  Each scan resamples the
noise-free head (rendered once, :mod:`.phantom`) through its pose onto a
square field of view centred on the isocentre, 5 mm axial slices from the
skull base to the vertex; direction cosines are the identity (LPS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .phantom import HU_AIR, SIZES, SLICE_MM, HeadAnatomy, RenderedHead

@dataclass(frozen=True)
class Pose:
    """Rigid placement of the head in the scanner: p_scanner = R p_head + translation."""

    angles_deg: tuple[float, float, float]  # rotations about x (pitch), y (roll), z (yaw)
    translation_mm: tuple[float, float, float]
    z_start_mm: float  # scanner z of the first slice

    def rotation(self) -> np.ndarray:
        ax, ay, az = np.radians(self.angles_deg)
        rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
        ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
        rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
        return rz @ ry @ rx

    def to_head(self, points: np.ndarray) -> np.ndarray:
        """Scanner points (..., 3) to head-frame points."""
        return (points - np.asarray(self.translation_mm)) @ self.rotation()

    def scanner_to_head_transform(self) -> sitk.Transform:
        rotation = self.rotation()
        transform = sitk.AffineTransform(3)
        transform.SetMatrix(rotation.T.ravel().tolist())
        transform.SetTranslation((-rotation.T @ np.asarray(self.translation_mm)).tolist())
        return transform


def draw_pose(rng: np.random.Generator, anatomy: HeadAnatomy) -> Pose:
    """How the head lies in the gantry: a few degrees of tilt, a few mm off centre."""
    angles = (float(rng.normal(0.0, 4.0)), float(rng.normal(0.0, 2.0)), float(rng.normal(0.0, 3.0)))
    translation = (float(rng.normal(0.0, 4.0)), float(rng.normal(0.0, 5.0)), 0.0)
    return Pose(angles, translation, anatomy.bottom_mm + float(rng.normal(0.0, 1.5)))


def follow_up_pose(rng: np.random.Generator, pose: Pose) -> Pose:
    """The same head scanned again: at most ~2 degrees and ~2 mm away."""
    angles = tuple(a + float(np.clip(rng.normal(0.0, 0.8), -2.0, 2.0)) for a in pose.angles_deg)
    translation = tuple(t + float(np.clip(rng.normal(0.0, 0.8), -2.0, 2.0)) for t in pose.translation_mm)
    return Pose(angles, translation, pose.z_start_mm + float(np.clip(rng.normal(0.0, 1.0), -2.0, 2.0)))


def scanner_reference(anatomy: HeadAnatomy, pose: Pose, size: str) -> sitk.Image:
    """Empty image with the scanner grid: square FOV on the isocentre, 5 mm slices base to vertex."""
    matrix, spacing = int(SIZES[size]["matrix"]), SIZES[size]["spacing"]
    top = pose.translation_mm[2] + anatomy.top_mm + 2.0
    n_slices = int(math.ceil((top - pose.z_start_mm) / SLICE_MM)) + 1
    reference = sitk.Image(matrix, matrix, n_slices, sitk.sitkFloat32)
    half = (matrix - 1) / 2.0 * spacing
    reference.SetSpacing((spacing, spacing, SLICE_MM))
    reference.SetOrigin((-half, -half, pose.z_start_mm))
    return reference


def scan(head: RenderedHead, reference: sitk.Image, pose: Pose) -> np.ndarray:
    """Noise-free scan: the canonical head resampled through the pose (float32, z-y-x)."""
    image = sitk.Resample(head.image, reference, pose.scanner_to_head_transform(), sitk.sitkLinear, HU_AIR, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(image)
