"""The ``deep_`` columns: BLAST-CT's penultimate activations pooled over the hematoma, its rim and the oedema.

BLAST-CT (Monteiro et al., Lancet Digit Health 2020) was trained on real head
CT, so its hidden layers describe blood and the tissue around it the way a
network that has seen such scans does; ImageNet weights cannot be had offline.
The features are read from the segmenter's own run (no second forward pass):
:class:`RegionPooler` receives each output tile's class map and penultimate
feature maps (the output of the second fully connected 1x1x1 block, the maps
that feed the final classification block; 250 channels for the published
config) and keeps only per-region sums, maxima and counts.

Regions, on the network's 1 mm grid (only the voxels the network computed:
for a thick-slice scan the 1 mm planes the native slices read):

* ``hematoma``: the chosen blood classes (``--blood``), as the mask;
* ``rim``: voxels outside the hematoma within ``RIM_MM`` = 5 mm of it
  (Euclidean); the perihematomal zone where oedema forms (Urday et al.,
  Nat Rev Neurol 2015, measure PHE in this band);
* ``oedema``: class 3, the network's perihematomal oedema (it may overlap
  the rim).

With several models averaged, the class map is the ensemble's and the
features are the FIRST model's: the channels of independently trained models
do not correspond, so their mean would mean nothing.

Column order (``ct_network_columns``, ``CT_NETWORK_COLUMNS`` for the published
config): for region in hematoma, rim, oedema; for statistic in mean, max; for
each channel: ``deep_{region}_{statistic}_c{channel:03d}``; then the class
volumes ``deep_volume_{iph,eah,oedema,ivh}_ml`` (on the CT's own grid, as
``ivh_volume_ml``).  A region without a computed voxel gives NaN.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

REGIONS = ("hematoma", "rim", "oedema")
STATISTICS = ("mean", "max")
VOLUME_CLASSES = ("iph", "eah", "oedema", "ivh")
RIM_MM = 5.0
OEDEMA_CLASS = 3  # BLAST-CT's class index of perilesional oedema (segmentation.deep.CLASS_NAMES)
#: Penultimate channels of the published BLAST-CT config (model.DeepMedic.fully_connected[-1]).
PUBLISHED_CHANNELS = 250


def penultimate_channels(config: dict) -> int:
    """Channels of the maps that feed the final 1x1x1 block, from a BLAST-CT config.json."""
    return int(config["model"]["DeepMedic"]["fully_connected"][-1])


def ct_network_columns(n_channels: int) -> tuple[str, ...]:
    pooled = [f"deep_{region}_{statistic}_c{c:03d}" for region in REGIONS for statistic in STATISTICS
              for c in range(n_channels)]
    return tuple(pooled + [f"deep_volume_{name}_ml" for name in VOLUME_CLASSES])


CT_NETWORK_COLUMNS = ct_network_columns(PUBLISHED_CHANNELS)


def ct_network_features(pooled: dict[str, tuple[np.ndarray, np.ndarray, int]], volumes_ml: dict[str, float]) -> dict[str, float]:
    """The ``deep_`` columns in their documented order from :meth:`RegionPooler.result` and the class volumes."""
    n_channels = len(next(iter(pooled.values()))[0])
    values = []
    for region in REGIONS:
        mean, maximum, _ = pooled[region]
        values.extend(float(v) for v in mean)
        values.extend(float(v) for v in maximum)
    values.extend(float(volumes_ml[name]) for name in VOLUME_CLASSES)
    return dict(zip(ct_network_columns(n_channels), values))


class RegionPooler:
    """Per-region channel sums, maxima and counts of a tiled network run, tile by tile.

    ``shape``: the 1 mm grid (z, y, x); ``blood``: the hematoma's class
    indices; ``n_channels``: the penultimate channels; ``spacing``: the grid's (z, y, x) spacing in mm.  Call
    :meth:`expect` with every tile that will run, then :meth:`add` for each
    as it runs, then :meth:`result`.

    Hematoma and oedema voxels are pooled as their tile runs.  A rim voxel
    may owe its place to blood in a tile not yet run; such voxels (within
    ``RIM_MM`` of a tile still to come and not yet known to be rim) keep
    their features until the last tile that could reach them has run, then
    are pooled or dropped.  So the memory held is a few millimetres of tile
    faces, never the volume's channels.
    """

    def __init__(self, shape, blood, n_channels: int, spacing=(1.0, 1.0, 1.0), rim_mm: float = RIM_MM):
        self.n_channels = int(n_channels)
        self.shape = tuple(int(n) for n in shape)
        self.blood = tuple(blood)
        self.spacing = tuple(float(s) for s in spacing)
        self.rim_mm = float(rim_mm)
        self.reach = tuple(int(math.floor(rim_mm / s + 1e-9)) for s in self.spacing)  # voxels within rim_mm per axis
        self.labels = np.zeros(self.shape, dtype=np.uint8)  # the class map so far (0 where no tile has run yet)
        self.pending = np.zeros(self.shape, dtype=bool)  # voxels a tile still to run will compute
        self.stats: dict[str, list] = {}
        self.deferred: list[dict] = []  # {"coords": (k, 3) array, "features": (C, k) tensor, "box": slices}

    # --- geometry -------------------------------------------------------------------

    def _voxels(self, own, planes):
        """The tile's computed voxels inside the volume: z indices, y and x slices, and how to cut the tile's arrays."""
        z0 = own[0].start
        local = np.arange(own[0].stop - z0) if planes is None else np.asarray(planes)
        keep = local + z0 < self.shape[0]
        ys = slice(own[1].start, min(own[1].stop, self.shape[1]))
        xs = slice(own[2].start, min(own[2].stop, self.shape[2]))
        return local[keep] + z0, ys, xs, (np.nonzero(keep)[0], slice(0, ys.stop - ys.start), slice(0, xs.stop - xs.start))

    def _box(self, zs, ys, xs, grow: int = 1):
        """The tile's bounding box widened by ``grow`` x the rim's reach, clipped to the volume."""
        lo = (int(zs.min()), ys.start, xs.start)
        hi = (int(zs.max()) + 1, ys.stop, xs.stop)
        return tuple(slice(max(a - grow * r, 0), min(b + grow * r, n)) for a, b, r, n in zip(lo, hi, self.reach, self.shape))

    def _near_blood(self, box):
        """Bool map over ``box``: within rim_mm of a blood voxel known so far (None: no blood there)."""
        blood = np.isin(self.labels[box], self.blood)
        if not blood.any():
            return None
        return ndimage.distance_transform_edt(~blood, sampling=self.spacing) <= self.rim_mm + 1e-6

    def expect(self, own, planes) -> None:
        zs, ys, xs, _ = self._voxels(own, planes)
        if len(zs):
            self.pending[zs, ys, xs] = True

    # --- pooling --------------------------------------------------------------------

    def _pool(self, region: str, values) -> None:
        """Add (C, k) feature values (a torch tensor) to a region's sums and maxima."""
        if values.shape[1] == 0:
            return
        total, maximum = values.double().sum(dim=1), values.amax(dim=1)
        if region not in self.stats:
            self.stats[region] = [total, maximum, values.shape[1]]
        else:
            stat = self.stats[region]
            stat[0] += total
            stat[1] = stat[1].maximum(maximum)
            stat[2] += values.shape[1]

    def add(self, own, planes, probabilities: np.ndarray, features) -> None:
        """One tile: ``own`` its output slices on the (padded) grid, ``planes`` its computed z offsets (None: all),
        ``probabilities`` (classes, planes, y, x) the mean softmax, ``features`` (C, planes, y, x) its maps."""
        import torch

        zs, ys, xs, cut = self._voxels(own, planes)
        if not len(zs):
            return
        classes = np.argmax(probabilities, axis=0)[cut]
        features = features[(slice(None), torch.from_numpy(cut[0]).to(features.device)) + cut[1:]]
        self.labels[zs, ys, xs] = classes
        self.pending[zs, ys, xs] = False
        device = features.device
        hematoma = np.isin(classes, self.blood)
        self._pool("hematoma", features[:, torch.from_numpy(hematoma).to(device)])
        self._pool("oedema", features[:, torch.from_numpy(classes == OEDEMA_CLASS).to(device)])

        box = self._box(zs, ys, xs)
        def at(array):  # the tile's computed voxels of a map over ``box``
            return array[zs - box[0].start][:, ys.start - box[1].start:ys.stop - box[1].start,
                                            xs.start - box[2].start:xs.stop - box[2].start]

        near = self._near_blood(box)
        rim = np.zeros_like(hematoma) if near is None else at(near) & ~hematoma
        self._pool("rim", features[:, torch.from_numpy(rim).to(device)])
        pending = self.pending[box]
        if pending.any():  # blood still to come within reach: keep these voxels' features until it has come
            undecided = ndimage.maximum_filter(pending, size=tuple(2 * r + 1 for r in self.reach))
            undecided = at(undecided) & ~hematoma & ~rim
            if undecided.any():
                where = np.nonzero(undecided)
                coords = np.stack([zs[where[0]], where[1] + ys.start, where[2] + xs.start], axis=1)
                self.deferred.append({"coords": coords, "features": features[:, torch.from_numpy(undecided).to(device)].clone(),
                                      "box": self._box(coords[:, 0], slice(coords[:, 1].min(), coords[:, 1].max() + 1),
                                                       slice(coords[:, 2].min(), coords[:, 2].max() + 1))})
        self._settle(hematoma.any(), box)

    def _settle(self, new_blood: bool, tile_box) -> None:
        """Pool the deferred voxels new blood made rim; drop those no tile still to run can reach."""
        import torch

        kept = []
        for chunk in self.deferred:
            box = chunk["box"]
            if new_blood and all(a.start < b.stop and b.start < a.stop for a, b in zip(box, tile_box)):
                near = self._near_blood(box)
                if near is not None:
                    local = chunk["coords"] - [s.start for s in box]
                    rim = near[local[:, 0], local[:, 1], local[:, 2]]
                    if rim.any():
                        mask = torch.from_numpy(rim).to(chunk["features"].device)
                        self._pool("rim", chunk["features"][:, mask])
                        chunk["coords"], chunk["features"] = chunk["coords"][~rim], chunk["features"][:, ~mask]
            if len(chunk["coords"]) and self.pending[box].any():
                kept.append(chunk)
        self.deferred = kept

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """Per region: (mean per channel, max per channel, voxel count); NaN for an empty region."""
        n = self.n_channels
        out = {}
        for region in REGIONS:
            if region in self.stats:
                total, maximum, count = self.stats[region]
                out[region] = ((total / count).float().cpu().numpy(), maximum.float().cpu().numpy(), int(count))
            else:
                out[region] = (np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32), 0)
        return out
