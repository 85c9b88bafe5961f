"""Warm-up training of Inception v3 on cohort 1 (the paper's "CNN cohort") only.

Each patient gives three images (:mod:`.slices`), all labelled with the
patient's HE label.  Patients (never images) are split 80/20, stratified, into
training and validation, so no patient sits on both sides.  Adam (lr 1e-4,
betas 0.9/0.999, weight decay 1e-2), logical batches of 128 made of
micro-batches (gradient accumulation, so a small GPU or a CPU can run the
paper's batch size), at most 100 epochs, class-weighted cross-entropy (plus
0.4 x the auxiliary head's loss, torchvision's recipe), flips and small
rotations on training images only, keeping the weights of the best validation
accuracy (ties: the lower validation loss).

Presets:

- ``paper``: exactly the settings above, every layer trained.
- ``fast``: a CPU setting for the demo and tests: 2 epochs of batch 16 training
  only the last Inception block (``Mixed_7c``) and the heads.  The input stays
  299x299 (Inception v3 needs >= 75 px and its pooled features depend on the
  scale); the frozen layers still run forward, and their BatchNorm statistics
  still adapt to CT (the whole network is in train mode).

Random initial weights (``--weights none``, or ``auto`` without ImageNet) get
their BatchNorm statistics from one pass over the training images first
(:func:`calibrate_batchnorm`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.model_selection import train_test_split

from ...errors import InputError
from .cases import ID, LABEL, read_case_images, series_of
from .network import build_network, select_device
from .slices import SliceSettings, make_stacks

N_IMAGES = 3  # images (stacks) per patient


@dataclass(frozen=True)
class TrainingSettings:
    preset: str = "paper"
    epochs: int = 100
    batch_size: int = 128
    micro_batch_size: int | None = None  # None: 8 on a CPU, 64 on a GPU
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    patience: int | None = None  # epochs without improvement before stopping; None: never
    validation_fraction: float = 0.2
    trainable: tuple[str, ...] = ()  # parameter-name prefixes to train; () = all
    augment: bool = True
    max_rotation_deg: float = 10.0
    aux_loss_weight: float = 0.4

    def __post_init__(self):
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            problems.append(f"batch size must be >= 2, got {self.batch_size}")
        if self.micro_batch_size is not None and self.micro_batch_size < 2:  # BatchNorm needs 2 images
            problems.append(f"micro-batch size must be >= 2, got {self.micro_batch_size}")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience must be >= 1, got {self.patience}")
        if not 0 < self.validation_fraction < 1:
            problems.append(f"validation fraction must be in (0, 1), got {self.validation_fraction}")
        if problems:
            raise InputError(None, "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "paper": TrainingSettings(preset="paper"),
    "fast": TrainingSettings(preset="fast", epochs=2, batch_size=16, micro_batch_size=8,
                             trainable=("Mixed_7c.", "fc.", "AuxLogits.")),
}


def preset(name: str, **overrides) -> TrainingSettings:
    if name not in PRESETS:
        raise InputError(None, f"unknown preset {name!r} (one of {', '.join(PRESETS)})")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class TrainingResult:
    """A trained network and the record of what it saw."""

    network: torch.nn.Module  # best-validation weights, eval mode, on the CPU
    settings: TrainingSettings
    slices: SliceSettings
    weights_requested: str
    weights_source: str
    seed: int
    device: str
    history: pd.DataFrame  # one row per epoch
    best_epoch: int
    cases: pd.DataFrame  # patient_id, he, baseline_ct, baseline_mask, part ("train"/"validation")
    trained_ids: set[str] = field(default_factory=set)  # every patient id of an image fed to training
    validated_ids: set[str] = field(default_factory=set)  # every patient id of an image validated on
    class_weights: tuple[float, float] = (1.0, 1.0)


def _progress(enabled: bool = True) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[status]}"), disable=not enabled)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    # Cheap determinism only: cuDNN's fixed algorithms; CPU kernels are deterministic already.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def split_patients(cases: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """"train"/"validation" per patient, stratified by label when every class can be split."""
    n_val = max(1, math.ceil(fraction * len(cases)))
    if len(cases) - n_val < 1:
        raise InputError(None, f"CNN training needs at least 2 labelled cohort-1 patients, got {len(cases)}")
    labels = cases[LABEL].astype(int).to_numpy()
    counts = np.bincount(labels, minlength=2)
    stratify = labels if counts.min() >= 2 and n_val >= 2 and len(cases) - n_val >= 2 else None
    _, val = train_test_split(np.arange(len(cases)), test_size=n_val, random_state=seed, stratify=stratify)
    part = np.full(len(cases), "train", dtype=object)
    part[val] = "validation"
    return pd.Series(part, index=cases.index)


def build_images(cases: pd.DataFrame, slices: SliceSettings, progress: Progress | None = None):
    """Windowed [0, 1] images (float16 to halve memory), their labels and patient ids (3 per patient)."""
    images, labels, ids = [], [], []
    task = progress.add_task("CNN inputs", total=len(cases), status="") if progress else None
    for row in cases.itertuples(index=False):
        try:
            ct, mask = read_case_images(row.baseline_ct, row.baseline_mask,
                                       series_uid=series_of(row))
            stacks = make_stacks(ct, mask, slices)
        except InputError as error:
            raise InputError(error.path or row.baseline_mask, f"patient {row.patient_id}: {error.problem}") from None
        images.append(torch.from_numpy(stacks.windowed).to(torch.float16))
        labels += [int(getattr(row, LABEL))] * N_IMAGES
        ids += [row.patient_id] * N_IMAGES
        if progress:
            progress.advance(task)
    return torch.cat(images), torch.tensor(labels, dtype=torch.long), np.array(ids, dtype=object)


_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def normalize(windowed: torch.Tensor) -> torch.Tensor:
    return (windowed - _MEAN.to(windowed.device)) / _STD.to(windowed.device)


def augment(windowed: torch.Tensor, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Random left-right flips and rotations within +-max_degrees, zero (air) outside.

    Hand-written as one batched affine resampling on the device instead of a
    per-image torchvision loop.
    """
    n = windowed.shape[0]
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    flips = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flips, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flips, cos
    theta = theta.to(windowed.device, windowed.dtype)
    grid = F.affine_grid(theta, list(windowed.shape), align_corners=False)
    return F.grid_sample(windowed, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _set_trainable(network: torch.nn.Module, prefixes: tuple[str, ...]) -> list[torch.nn.Parameter]:
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(not prefixes or name.startswith(prefixes))
    return [p for p in network.parameters() if p.requires_grad]


def _chunks(indices: torch.Tensor, size: int) -> list[torch.Tensor]:
    # Near-equal chunks (array_split) so no chunk has a single image: BatchNorm
    # in train mode cannot normalise a batch of one.
    return list(torch.tensor_split(indices, math.ceil(len(indices) / size)))


def fit_cnn(cases: pd.DataFrame, settings: TrainingSettings | None = None, slices: SliceSettings | None = None,
            weights: str = "auto", seed: int = 0, device: str = "auto", progress: bool = True) -> TrainingResult:
    """Warm-up train on ``cases`` (patient_id, he, baseline_ct, baseline_mask): all of them are trained on.

    The caller chooses the patients (:func:`hematoma.features.deep.train_cnn` passes cohort 1 only).
    """
    settings = settings or PRESETS["paper"]
    slices = slices or SliceSettings()
    cases = cases.reset_index(drop=True).copy()
    if cases[LABEL].isna().any():
        raise InputError(None, "every CNN training patient needs an HE label")
    cases[LABEL] = cases[LABEL].astype(int)
    seed_everything(seed)
    torch_device = select_device(device)
    micro = settings.micro_batch_size or (64 if torch_device.type == "cuda" else 8)
    cases["part"] = split_patients(cases, settings.validation_fraction, seed)
    train_labels = cases.loc[cases["part"] == "train", LABEL]
    if train_labels.nunique() < 2:
        raise InputError(None, "the CNN's training patients all have the same HE label: "
                               "cohort 1 needs patients with and without expansion")

    with _progress(progress) as bar:
        images, labels, ids = build_images(cases, slices, bar)
        network, source = build_network(weights)
        network.to(torch_device)
        parameters = _set_trainable(network, settings.trainable)
        optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate, betas=settings.betas,
                                     weight_decay=settings.weight_decay)
        train_part = set(cases.loc[cases["part"] == "train", ID])
        is_train = torch.tensor([pid in train_part for pid in ids])
        train_index, val_index = torch.nonzero(is_train).flatten(), torch.nonzero(~is_train).flatten()
        # Balanced class weights from the training images: n / (2 * n_class).
        counts = torch.bincount(labels[train_index], minlength=2).float()
        class_weights = (len(train_index) / (2 * counts)).to(torch_device)
        if source == "random":
            calibrate_batchnorm(network, images, train_index, micro, torch_device)
        generator = torch.Generator().manual_seed(seed)
        result = TrainingResult(network=network, settings=settings, slices=slices, weights_requested=str(weights),
                                weights_source=source, seed=seed, device=str(torch_device), history=pd.DataFrame(),
                                best_epoch=0, cases=cases, class_weights=tuple(class_weights.tolist()))
        rows, best, best_state, stale = [], (-1.0, math.inf), None, 0
        for epoch in range(1, settings.epochs + 1):
            task = bar.add_task(f"epoch {epoch}/{settings.epochs}", total=len(train_index), status="")
            started = time.perf_counter()
            train_loss, train_acc = _train_epoch(network, optimizer, images, labels, ids, train_index, class_weights,
                                                 settings, micro, generator, torch_device, result.trained_ids,
                                                 lambda n: bar.advance(task, n))
            seconds = time.perf_counter() - started
            val_loss, val_acc = _evaluate(network, images, labels, ids, val_index, class_weights, micro,
                                          torch_device, result.validated_ids)
            rows.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                         "validation_loss": val_loss, "validation_accuracy": val_acc, "train_seconds": seconds,
                         "train_images_per_second": len(train_index) / seconds})
            bar.update(task, status=f"loss {train_loss:.3f}  val loss {val_loss:.3f}  val acc {val_acc:.3f}")
            if (val_acc, -val_loss) > (best[0], -best[1]):
                best, stale, result.best_epoch = (val_acc, val_loss), 0, epoch
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}
            else:
                stale += 1
                if settings.patience is not None and stale >= settings.patience:
                    break
    if best_state is not None:
        network.load_state_dict(best_state)
    else:  # only when every validation loss was NaN: keep the last weights
        result.best_epoch = len(rows)
    result.network = network.to("cpu").eval()
    result.history = pd.DataFrame(rows)
    return result


@torch.no_grad()
def calibrate_batchnorm(network, images, index, micro, device) -> None:
    """Set every BatchNorm's running statistics to their average over ``images[index]``.

    Random initial weights come with running mean 0 and variance 1; in eval
    mode (validation, embedding) the activations then grow layer after layer
    (to ~1e11 at the pooled features).  One forward pass in train mode with a
    cumulative average (momentum None) gives statistics of the data instead.
    """
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    network.train()
    for chunk in _chunks(index, micro):
        network(normalize(images[chunk].to(device, torch.float32)))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _weighted_loss(logits, target, class_weights):
    return F.cross_entropy(logits, target, weight=class_weights, reduction="sum")


def _train_epoch(network, optimizer, images, labels, ids, train_index, class_weights, settings, micro, generator,
                 device, seen: set, advance) -> tuple[float, float]:
    network.train()
    order = train_index[torch.randperm(len(train_index), generator=generator)]
    total_loss = total_weight = correct = 0.0
    for batch in _chunks(order, settings.batch_size):
        # Sum of weighted losses over the batch / the batch's total weight = one
        # big batch's weighted mean, however it is cut into micro-batches.
        batch_weight = class_weights[labels[batch].to(device)].sum()
        optimizer.zero_grad(set_to_none=True)
        for chunk in _chunks(batch, micro):
            seen.update(ids[chunk.numpy()].tolist())
            x = images[chunk].to(device, torch.float32)
            if settings.augment:
                x = augment(x, settings.max_rotation_deg, generator)
            y = labels[chunk].to(device)
            output = network(normalize(x))
            loss = _weighted_loss(output.logits, y, class_weights)
            aux = _weighted_loss(output.aux_logits, y, class_weights) if output.aux_logits is not None else 0.0
            ((loss + settings.aux_loss_weight * aux) / batch_weight).backward()
            total_loss += float(loss.detach())
            correct += float((output.logits.argmax(1) == y).sum())
            advance(len(chunk))
        total_weight += float(batch_weight)
        optimizer.step()
    return total_loss / total_weight, correct / len(train_index)


@torch.inference_mode()
def _evaluate(network, images, labels, ids, index, class_weights, micro, device, seen: set) -> tuple[float, float]:
    network.eval()
    total_loss = total_weight = correct = 0.0
    for chunk in _chunks(index, micro):
        seen.update(ids[chunk.numpy()].tolist())
        y = labels[chunk].to(device)
        logits = network(normalize(images[chunk].to(device, torch.float32)))
        total_loss += float(_weighted_loss(logits, y, class_weights))
        total_weight += float(class_weights[y].sum())
        correct += float((logits.argmax(1) == y).sum())
    return total_loss / total_weight, correct / len(index)


def train_cnn(out, cnn_dir, preset_name: str = "paper", weights: str = "auto", seed: int = 0, device: str = "auto",
              slices: SliceSettings | None = None, overwrite: bool = False, progress: bool = True,
              **overrides) -> TrainingResult:
    """``hematoma cnn train``: warm-up train on OUT's cohort 1 (split part "cnn") and save to ``cnn_dir``.

    ``overrides`` replace fields of the preset (e.g. ``epochs=1``).  Cohort-1
    patients without an HE label are left out; cohort 2 never reaches training.
    """
    from pathlib import Path

    from .bundle import _check_destination
    from .cases import feature_table_path

    settings = preset(preset_name, **overrides)
    _check_destination(Path(cnn_dir), overwrite)  # fail before hours of training, not after
    from ...storage import folder_lock

    if not Path(out).is_dir():
        feature_table_path(out)  # refuses a missing OUT here: the lock would create it
    # split.csv may be written in OUT: one run at a time (`run`, holding OUT already, shares its hold).
    with folder_lock(out):
        return _train_cnn(out, cnn_dir, settings, slices, weights, seed, device, overwrite, progress)


def _train_cnn(out, cnn_dir, settings, slices, weights, seed, device, overwrite, progress) -> TrainingResult:
    from pathlib import Path

    from ...cohort import load_or_make_split
    from .bundle import save_cnn
    from .cases import case_inputs, data_sha1, read_feature_table

    table = read_feature_table(out)
    if LABEL not in table.columns:
        raise InputError(Path(out), "the feature table has no 'he' label column: the CNN cannot be trained")
    split = load_or_make_split(Path(out) / "split.csv", table, seed=seed, label=LABEL,
                               remedy="the table's patients changed since it was made: rerun `hematoma extract` "
                                      "with --overwrite for a new split")
    cohort1 = set(split.loc[split["part"] == "cnn", ID].astype(str))
    labelled = table.loc[table[ID].isin(cohort1) & table[LABEL].notna(), [ID, LABEL]]
    cases = labelled.merge(case_inputs(out, labelled[ID]), on=ID, validate="one_to_one")
    result = fit_cnn(cases, settings, slices, weights=weights, seed=seed, device=device, progress=progress)
    unlabelled = len(cohort1) - len(labelled)
    save_cnn(result, cnn_dir, data_sha1(result.cases), overwrite=overwrite,
             extra={"output_folder": str(Path(out).resolve()), "cohort1_unlabelled_left_out": unlabelled})
    return result
