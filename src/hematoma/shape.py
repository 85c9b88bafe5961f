"""Measures of a digital 2D shape that the sign detector and the generator's truth must compute alike."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError


def solidity(region: np.ndarray) -> float:
    """Pixels of a 2D region over the pixels of its convex hull (1 for a digital convex shape).

    The hull of the pixel centres holds ``area + boundary/2 + 1`` lattice points
    (Pick's theorem), so a digital disc scores 1 at any pixel size, where
    comparing areas would penalise coarse pixels.  Ratios are unchanged by the
    (anisotropic) pixel size, so pixel units are enough.
    """
    points = np.argwhere(region)
    if len(points) < 3:
        return 1.0
    try:
        hull = ConvexHull(points)
    except QhullError:  # collinear pixels: a line is convex
        return 1.0
    vertices = points[hull.vertices]
    edges = np.abs(np.diff(np.vstack([vertices, vertices[:1]]), axis=0))
    boundary = int(np.gcd(edges[:, 0], edges[:, 1]).sum())
    return float(min(len(points) / (hull.volume + boundary / 2 + 1), 1.0))
