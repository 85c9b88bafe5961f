"""Deep hemorrhage segmentation with BLAST-CT's published network and weights.

BLAST-CT (Monteiro et al., Lancet Digit Health 2020) is a DeepMedic-style 3D
CNN trained on real head CT; its classes are 1 intraparenchymal haemorrhage
(IPH), 2 extra-axial haemorrhage (EAH), 3 perilesional oedema and 4
intraventricular haemorrhage (IVH).  The network is built by the ``blast-ct``
package from the weights' ``config.json``; this module does what its
inference loop does, faster:

* the same pre-processing (the package's own reorientation and resampling
  to the config's 1 mm grid), the -15..100 HU window scaled to [-1, 1],
  edge padding;
* the same tiling phase: outputs of the subsampled pathways depend on where
  the x3 and x5 subsampling falls, so tiles start on multiples of 15 mm as the
  package's 30 mm tiles do, and the masks agree (a test compares them);
* larger tiles than the package's 30^3 outputs from 110^3 inputs, and tiles
  whose output holds no voxel above the window's floor (air, fat: every input
  voxel at -1) are not run: they are background.  The package computes every
  tile of its padded grid through a DataLoader that copies each patch.
* ensembles average the models' softmax probabilities, as the package does.

The class map is computed on the 1 mm grid and put back on the input's grid
by nearest neighbour, as the package's saver does.

``segment(..., blood=...)`` also pools the first model's penultimate feature
maps over the hematoma, its rim and the oedema while the tiles run (the
``deep_`` features, :mod:`hematoma.features.ct_network`): each tile's maps are
kept only until its class map is known.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .brain import orient_ct
from .options import DEFAULT_BLOOD
from .deep_weights import WeightsFolder, find_weights, load_state_dict, sha256

CLASS_NAMES = ("background", "iph", "eah", "oedema", "ivh")
#: Which blood classes form the hematoma mask (see segmentation.options for the default).
HEMATOMA_CLASSES = {"iph": (1,), "iph+ivh": (1, 4), "blood": (1, 2, 4)}
DEFAULT_HEMATOMA_CLASSES = DEFAULT_BLOOD
#: Largest output tile (z, y, x) in mm on the 1 mm grid; multiples of 15 keep the package's
#: subsampling phase.  Each axis takes the multiple of 15 up to this that pads the volume least.
DEFAULT_TILE_MM = (60, 90, 90)
_PHASE = 15


@dataclass
class DeepSegmentation:
    """BLAST-CT's class map on the input's grid, with what made it."""

    labels: sitk.Image  # UInt8, 0..4 (CLASS_NAMES)
    weights: list[dict] = field(default_factory=list)  # [{"file", "sha256"}] per model
    weights_source: str = ""
    seconds: float = 0.0
    tiles_run: int = 0
    tiles_total: int = 0
    # Per region ("hematoma", "rim", "oedema"): (mean, max per penultimate channel, voxels), when asked for
    # (``segment(blood=...)``; features.ct_network.RegionPooler.result).
    pooled: dict | None = None

    def mask(self, classes: str = DEFAULT_HEMATOMA_CLASSES) -> sitk.Image:
        """UInt8 0/1 mask of the chosen blood classes (see ``HEMATOMA_CLASSES``)."""
        chosen = hematoma_classes(classes)
        mask = sitk.GetImageFromArray(np.isin(sitk.GetArrayViewFromImage(self.labels), chosen).astype(np.uint8))
        mask.CopyInformation(self.labels)
        return mask

    def class_mask(self, name: str) -> sitk.Image:
        """UInt8 0/1 mask of one class of ``CLASS_NAMES`` (e.g. "ivh", "oedema")."""
        mask = sitk.GetImageFromArray((sitk.GetArrayViewFromImage(self.labels) == CLASS_NAMES.index(name)).astype(np.uint8))
        mask.CopyInformation(self.labels)
        return mask

    def volumes_ml(self) -> dict[str, float]:
        """Volume of each class in mL, on the input's grid."""
        counts = np.bincount(sitk.GetArrayViewFromImage(self.labels).ravel(), minlength=len(CLASS_NAMES))
        spacing = self.labels.GetSpacing()
        voxel_ml = float(np.prod(spacing if len(spacing) == 3 else (*spacing, 1.0))) / 1000.0
        return {name: float(counts[i]) * voxel_ml for i, name in enumerate(CLASS_NAMES) if i > 0}


def hematoma_classes(name: str) -> tuple[int, ...]:
    if name not in HEMATOMA_CLASSES:
        raise InputError(None, f"unknown blood classes {name!r}; choose one of {', '.join(HEMATOMA_CLASSES)}")
    return HEMATOMA_CLASSES[name]


class DeepSegmenter:
    """BLAST-CT inference: ``DeepSegmenter(weights, n_models).segment(image)``.

    ``weights``: a folder (config.json + model_*.pt) or None for the blast-ct
    package's own folder; ``n_models``: how many of its models to average;
    ``device``: "cpu", "cuda" or None (CUDA where available); ``all_tiles``:
    run every tile as the package does, also those of air only.
    """

    def __init__(self, weights: str | Path | WeightsFolder | None = None, n_models: int = 1, device: str | None = None,
                 tile_mm: tuple[int, int, int] = DEFAULT_TILE_MM, all_tiles: bool = False):
        import torch

        folder = weights if isinstance(weights, WeightsFolder) else find_weights(weights)
        self.folder = folder
        self.model_paths = folder.take(n_models)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if any(t % _PHASE for t in tile_mm) or any(t <= 0 for t in tile_mm):
            raise InputError(None, f"tile sizes must be positive multiples of {_PHASE} mm, got {tile_mm}")
        self.tile = tuple(int(t) for t in tile_mm)
        self.all_tiles = all_tiles
        data = folder.config["data"]
        window = data["transformation"]["IntensityWindowNormalization"]
        self.window = (float(window["lower_bound"]), float(window["upper_bound"]))
        self.resolution = tuple(float(r) for r in data.get("resolution", (1.0, 1.0, 1.0)))
        self.networks = [self._network(path) for path in self.model_paths]
        self.provenance = [{"file": str(path), "sha256": sha256(path)} for path in self.model_paths]

    def _network(self, path: Path):
        import torch
        from blast_ct.models.deepmedic import DeepMedic  # the package's network definition

        spec = self.folder.config["model"]["DeepMedic"]
        data = self.folder.config["data"]
        network = DeepMedic(data.get("input_channels", 1), data["num_classes"], feature_maps=spec["feature_maps"],
                            fully_connected=spec["fully_connected"])
        network.load_state_dict(load_state_dict(path, network.state_dict()))
        network.eval().to(self.device)
        if self.device.type == "cpu":
            network = network.to(memory_format=torch.channels_last_3d)  # ~20 % faster 3D convolutions on CPU
        self.margin = _input_margin(network)
        return network

    # --- pre-processing (the package's, step for step) ----------------------------

    def resample(self, image: sitk.Image, source=None) -> sitk.Image:
        """The CT reoriented and linearly resampled to the network's grid.

        The package's own functions, so that the network sees the same voxels:
        its reorientation resamples (linearly, in the input's pixel type) onto
        a permuted grid, which moves integer HU by up to 1 here and there.
        """
        from blast_ct.nifti.rescale import reorient_image, rescale

        orient_ct(image, source)  # the checks: scalar, 2D/3D, in HU
        if image.GetDimension() == 2:
            image = sitk.JoinSeries(image)
        return rescale(list(self.resolution), reorient_image(image, False))

    def normalise(self, array: np.ndarray) -> np.ndarray:
        lower, upper = self.window
        array = np.clip(array.astype(np.float32), lower, upper)
        return (2.0 * array - lower - upper) / (upper - lower)

    # --- inference ------------------------------------------------------------------

    @property
    def n_channels(self) -> int:
        """Channels of the penultimate feature maps (those feeding the final 1x1x1 block)."""
        from ..features.ct_network import penultimate_channels

        return penultimate_channels(self.folder.config)

    def segment(self, image: sitk.Image, source=None, progress=None, blood: str | None = None) -> DeepSegmentation:
        """Class map of ``image`` (2D slice or 3D volume in HU) on its own grid.

        ``blood``: the hematoma's classes (``HEMATOMA_CLASSES``); given, the first model's penultimate
        maps are pooled over the hematoma, its rim and the oedema in the same run (``pooled``).
        """
        started = time.perf_counter()
        grid = self.resample(image, source)
        planes = None if self.all_tiles else needed_planes(grid, sitk.JoinSeries(image) if image.GetDimension() == 2 else image)
        volume = self.normalise(sitk.GetArrayFromImage(grid))
        pooler = None
        if blood is not None:
            from ..features.ct_network import RegionPooler

            pooler = RegionPooler(volume.shape, hematoma_classes(blood), self.n_channels, spacing=grid.GetSpacing()[::-1])
        probabilities, run, total = self.probabilities(volume, progress, planes, pooler)
        classes = np.argmax(probabilities, axis=0).astype(np.uint8)
        labels = sitk.GetImageFromArray(classes)
        labels.CopyInformation(grid)
        reference = sitk.JoinSeries(image) if image.GetDimension() == 2 else image
        labels = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        if image.GetDimension() == 2:
            labels = labels[:, :, 0]
            labels.CopyInformation(image)
        return DeepSegmentation(labels=labels, weights=self.provenance, weights_source=self.folder.source,
                                seconds=time.perf_counter() - started, tiles_run=run, tiles_total=total,
                                pooled=None if pooler is None else pooler.result())

    def tile_for(self, shape) -> tuple[int, int, int]:
        """Per axis, the multiple of 15 (up to ``tile_mm``) that costs least.

        A tile's full-resolution pathway computes its output plus 16 voxels, so
        an axis costs about (number of tiles) x (tile + 16); larger on ties.
        """
        tile = []
        for n, largest in zip(shape, self.tile):
            sizes = range(_PHASE, largest + 1, _PHASE)
            tile.append(min(sizes, key=lambda t: (-(-n // t) * (t + 16), -t)))
        return tuple(tile)

    def probabilities(self, volume: np.ndarray, progress=None, planes=None, pooler=None) -> tuple[np.ndarray, int, int]:
        """Mean softmax of the models, (classes, z, y, x), for a window-normalised volume on the 1 mm grid.

        ``planes``: the z indices whose output is needed (None: all); the others are left as background.
        ``pooler``: a features.ct_network.RegionPooler given each tile's class probabilities and the first
        model's penultimate maps as the tile runs.
        """
        import torch

        shape = volume.shape
        tile = self.tile_for(shape)
        counts = [-(-n // t) for n, t in zip(shape, tile)]
        padded = np.pad(volume, [(m, m + c * t - n) for m, c, t, n in zip(self.margin, counts, tile, shape)], mode="edge")
        n_classes = self.folder.config["data"]["num_classes"]
        out = np.zeros((n_classes,) + tuple(c * t for c, t in zip(counts, tile)), dtype=np.float32)
        out[0] = 1.0  # background where no tile runs
        jobs = self._plan(padded, tile, counts, planes)
        if pooler is not None:
            for job in jobs:
                if job is not None:
                    pooler.expect(job[2], job[1])
        run = 0
        for job in jobs:
            if job is None:  # a tile of air (or of no wanted plane): background
                if progress is not None:
                    progress()
                continue
            lo, local, own, size = job
            patch = padded[tuple(slice(a, a + t + 2 * m) for a, t, m in zip(lo, size, self.margin))]
            x = torch.from_numpy(np.ascontiguousarray(patch))[None, None].to(self.device)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.inference_mode():
                total, features = None, None
                for i, network in enumerate(self.networks):
                    if i == 0 and pooler is not None:  # the first model's maps: the models' channels do not correspond
                        logits, features = forward_features(network, x, local)
                    else:
                        logits = network(x)[0] if local is None else forward_planes(network, x, local)
                    p = torch.softmax(logits, dim=1)
                    total = p if total is None else total + p
                mean = (total / len(self.networks))[0].float().cpu().numpy()
                if local is None:
                    out[(slice(None),) + own] = mean
                else:
                    out[(slice(None), np.asarray(local) + lo[0]) + own[1:]] = mean
                if pooler is not None:
                    pooler.add(own, local, mean, features[0])
                del features  # the tile's maps live only until pooled
            run += 1
            if progress is not None:
                progress()
        return out[(slice(None),) + tuple(slice(0, n) for n in shape)], run, len(jobs)

    def _plan(self, padded, tile, counts, planes) -> list:
        """Per tile of the grid: None (not run) or (start, computed z offsets or None, output slices, size)."""
        floor = -1.0 + 1e-6
        jobs = []
        for index in [(iz, iy, ix) for iz in range(counts[0]) for iy in range(counts[1]) for ix in range(counts[2])]:
            lo = [i * t for i, t in zip(index, tile)]
            own = tuple(slice(a, a + t) for a, t in zip(lo, tile))
            inside = tuple(slice(a + m, a + m + t) for a, m, t in zip(lo, self.margin, tile))
            local = None if planes is None else [p - lo[0] for p in planes if lo[0] <= p < lo[0] + tile[0]]
            wanted = padded[inside] if local is None else padded[inside][local]
            if not self.all_tiles and (local == [] or not (wanted > floor).any()):
                jobs.append(None)
                continue
            size = list(tile)
            if not self.all_tiles:  # shrink the tile to the 15 mm steps that hold tissue: the rest is air
                lo, size, local = _shrink_to_tissue(lo, tile, local, wanted > floor)
                own = tuple(slice(a, a + t) for a, t in zip(lo, size))
            if local is not None and len(local) == size[0]:
                local = None  # every plane: the plain forward pass
            jobs.append((lo, local, own, size))
        return jobs


def _shrink_to_tissue(lo, tile, local, tissue):
    """The tile cut to the multiples of 15 voxels that hold tissue (``tissue``: the wanted planes' voxels
    above the window's floor), with the wanted planes relative to its new start."""
    lo, size = list(lo), list(tile)
    for axis in (1, 2):
        present = np.nonzero(tissue.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))[0]
        start = (present[0] // _PHASE) * _PHASE
        stop = -(-(present[-1] + 1) // _PHASE) * _PHASE
        lo[axis], size[axis] = lo[axis] + start, stop - start
    planes = np.nonzero(tissue.any(axis=(1, 2)))[0]
    if local is not None:
        planes = [local[i] for i in planes]  # the wanted planes that hold tissue
    start = (planes[0] // _PHASE) * _PHASE
    stop = -(-(planes[-1] + 1) // _PHASE) * _PHASE
    lo[0], size[0] = lo[0] + start, stop - start
    if local is not None:
        local = [p - start for p in planes]
    return lo, size, local


def needed_planes(grid: sitk.Image, native: sitk.Image) -> list[int] | None:
    """The z planes of the 1 mm ``grid`` that nearest-neighbour resampling onto ``native`` reads.

    A 5 mm scan reads one plane in five: the network's per-voxel layers (its
    last convolution and the fully connected ones, half the work) run only
    there.  None (every plane) when the grids' axes are not parallel.
    """
    grid_dir = np.asarray(grid.GetDirection()).reshape(3, 3)
    native_dir = np.asarray(native.GetDirection()).reshape(3, 3)
    cosines = np.abs(grid_dir.T @ native_dir)  # [grid axis, native axis]
    if not np.allclose(np.sort(cosines, axis=1)[:, -1], 1.0, atol=1e-6):
        return None
    axis = int(np.argmax(cosines[2]))  # the native axis along the grid's z
    planes = set()
    for k in range(native.GetSize()[axis]):
        index = [0.0, 0.0, 0.0]
        index[axis] = float(k)
        z = grid.TransformPhysicalPointToContinuousIndex(native.TransformContinuousIndexToPhysicalPoint(index))[2]
        for candidate in {int(np.floor(z + 0.5 - 1e-3)), int(np.floor(z + 0.5 + 1e-3))}:  # both sides of a tie
            if 0 <= candidate < grid.GetSize()[2]:
                planes.add(candidate)
    return sorted(planes)


def forward_planes(network, x, planes: list[int]):
    """Logits of BLAST-CT's DeepMedic at the output z ``planes`` of tile ``x`` only.

    The package's forward computes every plane.  Here the subsampled pathways
    run whole (they are cheap) and are sliced; the full-resolution pathway runs
    whole up to its last block, which is applied to the 3-plane slabs under the
    wanted planes; the fully connected (1x1x1) layers run on those planes.
    Same arithmetic per voxel as ``network(x)``.
    """
    return network.fully_connected(_joined_pathways(network, x, planes))


def forward_features(network, x, planes: list[int] | None = None):
    """(logits, penultimate maps) of tile ``x``: the maps are the output of the fully connected blocks but the
    last (the input of the final 1x1x1 classification block), at every output voxel or at ``planes`` only.
    Same arithmetic as ``network(x)`` / :func:`forward_planes`; one pass."""
    penultimate = network.fully_connected[:-1](_joined_pathways(network, x, planes))
    return network.fully_connected[-1](penultimate), penultimate


def _joined_pathways(network, x, planes: list[int] | None):
    """The three pathways' outputs, concatenated (what DeepMedic's fully connected blocks read)."""
    import torch
    from blast_ct.models.base import crop_center

    output_size = network.get_output_size(tuple(x.shape[2:]))
    if planes is None:  # DeepMedic.forward, step for step
        return torch.cat([path(x, output_size) for path in network.paths], dim=1)
    activations = []
    for path in network.paths:
        layers = list(path.path)  # DownSample, PreActBlocks, UpSample
        h = layers[0](crop_center(x, path.calculate_input_size(output_size)))
        if x.device.type == "cpu":
            # The strided subsampling leaves a layout oneDNN does not take: PyTorch's slow
            # reference convolution would run the subsampled pathways (a fifth of the time).
            h = h.contiguous(memory_format=torch.channels_last_3d)
        if tuple(path.scale_factor) != (1, 1, 1):
            for layer in layers[1:]:
                h = layer(h)
            activations.append(crop_center(h, output_size)[:, :, planes])
            continue
        for block in layers[1:-2]:
            h = block(h)
        slabs = torch.cat([h[:, :, p:p + 3] for p in planes], dim=0)  # the last 3x3x3 block reads planes p..p+2
        last = layers[-2](slabs)  # (planes, C, 1, y, x)
        activations.append(last[:, :, 0].transpose(0, 1).unsqueeze(0))
    return torch.cat(activations, dim=1)


def _input_margin(network) -> tuple[int, int, int]:
    """Input voxels needed on each side of an output tile (40 for BLAST-CT's x5 pathway)."""
    tile = (_PHASE * 2,) * 3
    needed = network.calculate_input_size(tile)
    return tuple((n - t) // 2 for n, t in zip(needed, tile))
