"""Which segmenter makes a case's hematoma mask: rules, BLAST-CT, or both with a QA flag.

``--method``:

* ``rules``: the rule-based segmenter (or a trained voxel classifier), no weights;
* ``deep``: BLAST-CT (:mod:`hematoma.segmentation.deep`), the chosen blood classes;
* ``auto``: ``deep`` where a CUDA GPU is present, ``rules`` otherwise (BLAST-CT
  takes about a minute per full-size scan on a 2-core CPU, seconds on a GPU);
* ``both``: the two, compared.  The combined mask is the rules' where the rules
  found blood, and the network's where the rules refused the scan (no brain
  found) or found none: on synthetic heads the rules delineate better (median
  Dice 0.976 against 0.91 for one BLAST-CT model), and on real CT the network
  finds blood where the rules miss it.  Their agreement (Dice, volume
  difference) is recorded and a case is flagged for review (``seg_qa_flag``)
  when Dice < ``QA_MIN_DICE`` or the volumes differ by more than
  ``QA_MAX_VOLUME_DIFFERENCE_ML`` and ``QA_MAX_RELATIVE_DIFFERENCE`` of the
  larger, or when only one of them found blood.

Every result carries the columns the network measures beside the hematoma
(``ivh_volume_ml``, ``phe_volume_ml``: intraventricular blood and perihematomal
oedema, both known markers after ICH) and the provenance of its mask.  When
the network ran (``deep``, ``both``), ``features`` holds its ``deep_`` columns
(:mod:`hematoma.features.ct_network`: its penultimate maps pooled over its own
hematoma of the chosen blood classes, the rim and the oedema, from the same
run); for ``both`` they describe the network's regions even where the mask is
the rules'.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .options import DEFAULT_BLOOD

METHODS = ("auto", "rules", "deep", "both")
DEFAULT_METHOD = "rules"
QA_MIN_DICE = 0.5
QA_MAX_VOLUME_DIFFERENCE_ML = 5.0
QA_MAX_RELATIVE_DIFFERENCE = 0.33
#: Columns a segmented case adds to the feature table (NaN where a method did not measure them).
SEGMENTATION_COLUMNS = ("ivh_volume_ml", "phe_volume_ml", "seg_dice_rules_deep", "seg_volume_difference_ml", "seg_qa_flag")


@dataclass(frozen=True)
class SegmenterSettings:
    """How masks are made; small and picklable (it travels to Dask workers)."""

    method: str = DEFAULT_METHOD
    weights: str | None = None  # BLAST-CT weights folder; None: the blast-ct package's
    n_models: int = 1
    blood: str = DEFAULT_BLOOD  # deep.HEMATOMA_CLASSES

    def check(self) -> "SegmenterSettings":
        from .deep import hematoma_classes

        if self.method not in METHODS:
            raise InputError(None, f"unknown segmentation method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.n_models < 1:
            raise InputError(None, f"--models must be at least 1, got {self.n_models}")
        hematoma_classes(self.blood)
        return self

    @property
    def uses_deep(self) -> bool:
        return self.resolved_method() in ("deep", "both")

    def resolved_method(self) -> str:
        """``auto`` made concrete on this machine."""
        if self.method != "auto":
            return self.method
        return "deep" if gpu_available() else "rules"

    @classmethod
    def from_record(cls, record: dict | None) -> "SegmenterSettings | None":
        """The settings an extraction recorded (``record()``), to segment new patients the same way."""
        if not record:
            return None
        weights = None
        if record.get("weights_source") == "--weights" and record.get("weights"):
            weights = str(Path(record["weights"][0]["file"]).parent)
        return cls(record.get("method", DEFAULT_METHOD), weights, int(record.get("n_models", 1)),
                   record.get("blood_classes", DEFAULT_BLOOD)).check()

    def record(self) -> dict:
        """What the masks depend on, for a run's settings and each case's provenance."""
        record = {"method": self.method, "resolved_method": self.resolved_method()}
        if self.uses_deep:
            segmenter = deep_segmenter(self.weights, self.n_models)
            record.update({"blood_classes": self.blood, "n_models": self.n_models,
                           "weights_source": segmenter.folder.source, "weights": segmenter.provenance,
                           # the deep_ columns (features.ct_network): a folder extracted before them is recomputed
                           "ct_network_features": 1})
        return record


def segmenter_from_options(method: str, weights, n_models: int, blood: str) -> SegmenterSettings | None:
    """The CLI's --method/--weights/--models/--blood; None for the plain rules (the default, nothing recorded)."""
    settings = SegmenterSettings(method, None if weights is None else str(weights), n_models, blood).check()
    if settings == SegmenterSettings():
        return None
    return settings


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def which_ran(settings: SegmenterSettings) -> str:
    """One line saying which segmenter runs, for the console."""
    method = settings.resolved_method()
    why = ""
    if settings.method == "auto":
        why = " (auto: a CUDA GPU is present)" if method == "deep" else " (auto: no CUDA GPU; --method deep runs BLAST-CT on the CPU)"
    if method == "rules":
        return f"segmenter: rules{why}"
    segmenter = deep_segmenter(settings.weights, settings.n_models)
    models = f"{settings.n_models} BLAST-CT model{'s' if settings.n_models > 1 else ''} from {segmenter.folder.folder}"
    return f"segmenter: {method}{why}: {models} on {segmenter.device.type}, hematoma = {settings.blood}"


@functools.lru_cache(maxsize=2)
def deep_segmenter(weights: str | None, n_models: int):
    """One loaded network per process (workers reuse it across cases)."""
    from .deep import DeepSegmenter

    return DeepSegmenter(weights, n_models)


@dataclass
class SegmentationResult:
    mask: sitk.Image
    method: str  # what made the mask: "rules", "deep", or "both: rules" / "both: deep"
    columns: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Other structures the segmenter outlined, by hematoma.io.dicom_seg.STRUCTURES name ("ivh", "oedema": BLAST-CT's
    # classes 4 and 3), for a DICOM SEG with one segment each; empty for the rules.
    structures: dict[str, sitk.Image] = field(default_factory=dict)
    # The network's deep_ columns (features.ct_network) when it ran; empty for the rules.
    features: dict[str, float] = field(default_factory=dict)


def segment_with(image: sitk.Image, settings: SegmenterSettings, model=None, source: str | Path | None = None) -> SegmentationResult:
    """The hematoma mask of ``image`` by ``settings`` (``model``: a trained voxel classifier for the rules)."""
    from .hemorrhage import segment_hemorrhage

    method = settings.resolved_method()
    columns = {name: float("nan") for name in SEGMENTATION_COLUMNS}
    if method == "rules":
        return SegmentationResult(segment_hemorrhage(image, model=model, source=source), "rules", columns)
    from ..features.ct_network import ct_network_features

    deep = deep_segmenter(settings.weights, settings.n_models).segment(image, source, blood=settings.blood)
    deep_mask = deep.mask(settings.blood)
    volumes = deep.volumes_ml()
    columns.update(ivh_volume_ml=volumes["ivh"], phe_volume_ml=volumes["oedema"])
    structures = {name: deep.class_mask(name) for name in ("ivh", "oedema")}
    result = SegmentationResult(deep_mask, "deep", columns) if method == "deep" else \
        _combine(image, deep_mask, settings, model, source, columns)
    result.structures = structures
    result.features = ct_network_features(deep.pooled, volumes)
    return result


def _combine(image, deep_mask, settings, model, source, columns) -> SegmentationResult:
    import warnings

    from .hemorrhage import NoHemorrhageWarning, segment_hemorrhage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoHemorrhageWarning)
            rules_mask = segment_hemorrhage(image, model=model, source=source)
    except InputError as error:  # e.g. no brain found: the network's blood is all there is
        columns.update(seg_qa_flag=1.0)
        return SegmentationResult(deep_mask, "both: deep", columns, [f"rules refused the scan ({error.problem}); the mask is BLAST-CT's"])
    rules = sitk.GetArrayViewFromImage(rules_mask) > 0
    deep = sitk.GetArrayViewFromImage(deep_mask) > 0
    dice, difference = agreement(rules, deep, _voxel_ml(rules_mask))
    columns.update(seg_dice_rules_deep=dice, seg_volume_difference_ml=difference)
    larger = max(rules.sum(), deep.sum()) * _voxel_ml(rules_mask)
    flagged = (rules.any() != deep.any()) or dice < QA_MIN_DICE or (
        abs(difference) > QA_MAX_VOLUME_DIFFERENCE_ML and abs(difference) > QA_MAX_RELATIVE_DIFFERENCE * larger)
    columns.update(seg_qa_flag=float(flagged))
    if not rules.any() and deep.any():
        return SegmentationResult(deep_mask, "both: deep", columns, ["the rules found no blood; the mask is BLAST-CT's"])
    return SegmentationResult(rules_mask, "both: rules", columns)


def agreement(a: np.ndarray, b: np.ndarray, voxel_ml: float) -> tuple[float, float]:
    """Dice of two masks (1 where both are empty) and volume difference b - a in mL."""
    total = int(a.sum()) + int(b.sum())
    dice = 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
    return dice, (int(b.sum()) - int(a.sum())) * voxel_ml


def _voxel_ml(image: sitk.Image) -> float:
    spacing = image.GetSpacing()
    return float(np.prod(spacing if len(spacing) == 3 else (*spacing, 1.0))) / 1000.0
