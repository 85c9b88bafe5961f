"""A trained CNN on disk (CNN_DIR): weights, settings, curves, ids; saved and loaded safely.

Files: ``model.safetensors`` (the state dict; loading runs no code),
``settings.json`` (preset, slice settings, weights source, seed, versions, the
SHA-1 of the training data and of the weights file), ``history.csv`` and
``curves.png`` (training and validation loss/accuracy per epoch), ``ids.csv``
(every patient trained or validated on, with its part and label).

The folder is written next to its destination and renamed into place, so a
killed run leaves the previous CNN (or none), never a mix.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ...storage import sha1_file, write_json
from .cases import ID, LABEL
from .network import load_network, read_state_dict, select_device
from .slices import SliceSettings

FORMAT = "hematoma-cnn"
FORMAT_VERSION = 1
ARCHITECTURE = "torchvision.models.inception_v3 (2 classes, aux head, transform_input=True)"
MODEL_FILE = "model.safetensors"
SETTINGS_FILE = "settings.json"


@dataclass
class CNNModel:
    """A network ready to embed (eval mode) and the slice settings it was trained with."""

    network: torch.nn.Module
    slices: SliceSettings
    settings: dict
    path: Path | None = None
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_network(cls, network: torch.nn.Module, slices: SliceSettings | None = None, device: str = "cpu"):
        torch_device = select_device(device)
        return cls(network=network.to(torch_device).eval(), slices=slices or SliceSettings(), settings={},
                   device=torch_device)


def versions() -> dict:
    import torchvision

    from ... import __version__

    return {"hematoma": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def save_cnn(result, cnn_dir: str | Path, data_sha1: str, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write a :class:`~.training.TrainingResult` to ``cnn_dir`` (see the module's docstring)."""
    from safetensors.torch import save_file

    cnn_dir = Path(cnn_dir)
    _check_destination(cnn_dir, overwrite)
    cnn_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp, which makes it 0700) so the folder gets the user's usual permissions.
    staging = cnn_dir.parent / f".{cnn_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in result.network.state_dict().items()}
        save_file(state, str(staging / MODEL_FILE), metadata={"format": FORMAT})
        result.history.to_csv(staging / "history.csv", index=False)
        ids = result.cases[[ID, "part", LABEL]].sort_values(["part", ID])
        ids.to_csv(staging / "ids.csv", index=False)
        plot_curves(result.history, staging / "curves.png")
        best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
        settings = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "architecture": ARCHITECTURE,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "preset": result.settings.preset, "training": result.settings.to_dict(),
            "slices": result.slices.to_dict(), "weights_requested": result.weights_requested,
            "weights_source": result.weights_source, "seed": result.seed, "device": result.device,
            "epochs_run": int(len(result.history)), "best_epoch": int(result.best_epoch),
            "best_validation_accuracy": float(best["validation_accuracy"]),
            "best_validation_loss": float(best["validation_loss"]),
            "class_weights": list(result.class_weights),
            "n_train_patients": int((result.cases["part"] == "train").sum()),
            "n_validation_patients": int((result.cases["part"] == "validation").sum()),
            "data_sha1": data_sha1, "model_sha1": sha1_file(staging / MODEL_FILE), "versions": versions(),
            **(extra or {}),
        }
        write_json(staging / SETTINGS_FILE, settings)
        _move_into_place(staging, cnn_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return cnn_dir


def _check_destination(cnn_dir: Path, overwrite: bool) -> None:
    if not cnn_dir.exists():
        return
    if not cnn_dir.is_dir():
        raise InputError(cnn_dir, "exists and is not a folder")
    if not any(cnn_dir.iterdir()):
        return
    if not (cnn_dir / SETTINGS_FILE).exists():
        # Never delete a folder we did not write, even with --overwrite.
        raise InputError(cnn_dir, "exists and is not a hematoma CNN folder; choose another --out")
    if not overwrite:
        raise InputError(cnn_dir, "already holds a trained CNN; pass --overwrite to replace it")


def _move_into_place(staging: Path, cnn_dir: Path) -> None:
    if not cnn_dir.exists():
        os.replace(staging, cnn_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{cnn_dir.name}.old.", dir=cnn_dir.parent))
    os.replace(cnn_dir, old / "previous")
    os.replace(staging, cnn_dir)
    shutil.rmtree(old, ignore_errors=True)


def plot_curves(history, path: Path) -> None:
    """Loss and accuracy per epoch, training vs validation (matplotlib, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    for axis, measure in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        for part, style in (("train", "-o"), ("validation", "-s")):
            axis.plot(history["epoch"], history[f"{part}_{measure}"], style, label=part, markersize=4)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(measure)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("CNN warm-up training (cohort 1)")
    figure.savefig(path, dpi=100)


def read_settings(cnn_dir: str | Path) -> dict:
    cnn_dir = Path(cnn_dir)
    path = cnn_dir / SETTINGS_FILE
    if not cnn_dir.is_dir():
        raise InputError(cnn_dir, "no such CNN folder (train one with `hematoma cnn train`)")
    if not path.exists():
        raise InputError(cnn_dir, f"is not a trained CNN folder (no {SETTINGS_FILE}); train one with `hematoma cnn train`")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"is not valid JSON ({error})") from None
    if not isinstance(settings, dict):
        raise InputError(path, f"is not a hematoma CNN settings file (a JSON {type(settings).__name__}, not an object)")
    if settings.get("format") != FORMAT:
        raise InputError(path, f"is not a hematoma CNN settings file (format {settings.get('format')!r})")
    version = settings.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(path, f"has format_version {version!r}, not a whole number")
    if version > FORMAT_VERSION:
        raise InputError(path, f"was written by a newer hematoma (format {version}); upgrade")
    return settings


def _slice_settings(data, path: Path) -> SliceSettings:
    """The recorded slice settings, or one line naming the settings file and the bad value."""
    if not isinstance(data, dict):
        raise InputError(path, f"'slices' is a {type(data).__name__}, not an object")
    for key, spec in SliceSettings.__dataclass_fields__.items():
        if key not in data:
            continue
        value = data[key]
        kinds = (int,) if spec.type in (int, "int") else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise InputError(path, f"slices {key} is {value!r}, not a {'whole ' if kinds == (int,) else ''}number")
    try:
        return SliceSettings.from_dict(data)
    except InputError as error:  # raised without a file: name the settings file
        raise InputError(path, error.problem) from None


def slice_differences(trained: SliceSettings, asked: SliceSettings) -> list[str]:
    return [f"{name} {getattr(trained, name)} (trained) vs {getattr(asked, name)} (asked)"
            for name in SliceSettings.__dataclass_fields__ if getattr(trained, name) != getattr(asked, name)]


def load_cnn(cnn_dir: str | Path, slices: SliceSettings | None = None, device: str = "auto") -> CNNModel:
    """Load a trained CNN; refuse when ``slices`` differ from the settings it was trained with."""
    cnn_dir = Path(cnn_dir)
    settings = read_settings(cnn_dir)
    trained = _slice_settings(settings.get("slices", {}), cnn_dir / SETTINGS_FILE)
    if slices is not None and (differences := slice_differences(trained, slices)):
        raise InputError(cnn_dir, "was trained on other CNN inputs than asked for: " + "; ".join(differences)
                                  + " (features from other inputs do not mean what it learnt; "
                                    "use its settings or retrain)")
    model_path = cnn_dir / MODEL_FILE
    if not model_path.exists():
        raise InputError(model_path, "no such file (the CNN folder is incomplete)")
    if settings.get("model_sha1") and sha1_file(model_path) != settings["model_sha1"]:
        raise InputError(model_path, f"does not match its {SETTINGS_FILE} (SHA-1 differs): the folder was altered")
    state = read_state_dict(model_path)
    # Weights that are not numbers would give NaN features silently, not an error.
    broken = next((name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()), None)
    if broken is not None:
        raise InputError(model_path, f"weight {broken} holds values that are not finite numbers")
    network = load_network(state, model_path)
    torch_device = select_device(device)
    return CNNModel(network=network.to(torch_device).eval(), slices=trained, settings=settings, path=cnn_dir,
                    device=torch_device)
