"""Inception v3 (torchvision) with a 2-class head, and where its starting weights come from.

``weights``:

- ``"imagenet"``: torchvision's ImageNet weights from its cache
  (``torch.hub.get_dir()/checkpoints/inception_v3_google-*.pth``), downloaded
  there if absent (unless offline, below); no network -> a clear error,
  quickly (never a hang).
- ``"none"``: random initialisation (what the tests use; never touches the network).
- ``"auto"``: ImageNet when cached (or downloadable, unless ``HEMATOMA_OFFLINE=1``
  or running under pytest), else random weights with one warning.
- a path: a state dict in a ``.safetensors`` file, or a torch file read with
  ``torch.load(weights_only=True)`` (no code runs); either torchvision's
  1000-class ImageNet layout or one of our own trained 2-class CNNs.

The classification heads (``fc`` and the auxiliary ``AuxLogits.fc``) are
replaced by 2-class layers; ``transform_input=True`` always, because our
inputs are ImageNet-normalised as torchvision's ImageNet weights expect.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models import Inception_V3_Weights
from torchvision.models.inception import Inception3

from ...errors import InputError
from ...storage import atomic_path

N_CLASSES = 2
FEATURE_DIM = 2048  # the pooled vector that feeds ``fc``
WEIGHT_CHOICES = ("auto", "imagenet", "none")
IMAGENET = Inception_V3_Weights.IMAGENET1K_V1
OFFLINE_ENV = "HEMATOMA_OFFLINE"
DOWNLOAD_TIMEOUT_S = 10.0


class WeightsWarning(UserWarning):
    """The CNN starts from random weights although pretrained ones were asked for."""


def new_inception(num_classes: int = N_CLASSES) -> Inception3:
    """A randomly initialised Inception v3 with the auxiliary head (used in training)."""
    return Inception3(num_classes=num_classes, aux_logits=True, transform_input=True, init_weights=True)


def replace_heads(model: Inception3, num_classes: int = N_CLASSES) -> Inception3:
    """Swap the 1000-class ImageNet heads for fresh ``num_classes`` ones (seeded by torch's RNG)."""
    if model.fc.out_features != num_classes:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    if model.AuxLogits is not None and model.AuxLogits.fc.out_features != num_classes:
        model.AuxLogits.fc = nn.Linear(model.AuxLogits.fc.in_features, num_classes)
    return model


def build_network(weights: str | Path = "auto") -> tuple[Inception3, str]:
    """Inception v3 with 2-class heads, and a description of where its weights came from."""
    choice = str(weights)
    if choice == "none":
        return new_inception(), "random"
    if choice == "imagenet":
        path = imagenet_checkpoint(download=not offline())
        return _from_state_dict(read_state_dict(path), path), f"imagenet:{path.name}"
    if choice == "auto":
        path = imagenet_checkpoint(download=not offline(), required=False)
        if path is None:
            warnings.warn("ImageNet weights for Inception v3 are not in torchvision's cache "
                          f"({checkpoint_dir()}) and could not be downloaded: the CNN starts from random weights "
                          "(give --weights PATH to use a local copy)", WeightsWarning, stacklevel=2)
            return new_inception(), "random"
        return _from_state_dict(read_state_dict(path), path), f"imagenet:{path.name}"
    path = Path(weights)
    if not path.exists():
        raise InputError(path, f"no such weights file (weights are one of {', '.join(WEIGHT_CHOICES)} or a file)")
    return _from_state_dict(read_state_dict(path), path), f"file:{path.resolve()}"


def offline() -> bool:
    """True when the network must not be tried (``HEMATOMA_OFFLINE=1``, or under pytest)."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0") or "PYTEST_CURRENT_TEST" in os.environ


def checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_checkpoint(download: bool = True, required: bool = True) -> Path | None:
    """torchvision's cached ImageNet checkpoint, downloading it first if allowed and needed."""
    expected = checkpoint_dir() / Path(IMAGENET.url).name
    cached = [expected] if expected.exists() else sorted(checkpoint_dir().glob("inception_v3_google-*.pth"))
    if cached:
        return cached[0]
    problem = "not in torchvision's cache" + ("" if download else f" (no download: {OFFLINE_ENV} is set or under tests)")
    if download:
        try:
            return _download(IMAGENET.url, expected)
        except (OSError, urllib.error.URLError, TimeoutError) as error:
            problem = f"not in torchvision's cache and the download failed ({_reason(error)})"
    if required:
        raise InputError(expected, f"ImageNet weights for Inception v3 {problem}; copy the file there "
                                   "or pass --weights PATH (or --weights none to start from random weights)")
    return None


def _reason(error: BaseException) -> str:
    return str(getattr(error, "reason", None) or error) or type(error).__name__


def _resolves(host: str, timeout: float) -> bool:
    # getaddrinfo has no timeout of its own; a daemon thread bounds it so a
    # machine with a broken resolver fails in seconds, not minutes.
    result: list[bool] = []

    def lookup():
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _download(url: str, destination: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download with timeouts (torch.hub's download has none) and check torchvision's hash prefix."""
    host = urllib.parse.urlparse(url).hostname
    if not _resolves(host, timeout):
        raise OSError(f"cannot resolve {host}: no network?")
    expected_prefix = destination.name.rsplit("-", 1)[-1].split(".")[0]
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(destination) as temporary:
        with open(temporary, "wb") as handle:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                handle.write(block)
        if not digest.hexdigest().startswith(expected_prefix):
            raise OSError(f"downloaded file's SHA-256 does not start with {expected_prefix}")
    return destination


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch file, loading no code (weights_only=True)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any reader failure is a bad weights file
        raise InputError(path, f"cannot be read as a state dict ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "is not a state dict (a mapping of names to tensors)")
    return state


def _from_state_dict(state: dict[str, torch.Tensor], path: Path) -> Inception3:
    """Inception v3 holding ``state`` (any number of classes, with or without the aux head), 2-class heads."""
    if "fc.weight" not in state:
        raise InputError(path, "is not an Inception v3 state dict (no 'fc.weight')")
    num_classes = int(state["fc.weight"].shape[0])
    has_aux = any(key.startswith("AuxLogits.") for key in state)
    model = Inception3(num_classes=num_classes, aux_logits=has_aux, transform_input=True, init_weights=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise InputError(path, f"does not fit Inception v3 ({str(error).splitlines()[0]})") from None
    if not has_aux:  # training needs the auxiliary head: a fresh one
        from torchvision.models.inception import InceptionAux

        model.aux_logits = True
        model.AuxLogits = InceptionAux(768, N_CLASSES)
    return replace_heads(model)


def load_network(state: dict[str, torch.Tensor], path: str | Path) -> Inception3:
    """A trained 2-class network from its state dict (strict: same architecture)."""
    model = Inception3(num_classes=N_CLASSES, aux_logits=True, transform_input=True, init_weights=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise InputError(path, f"does not fit the 2-class Inception v3 ({str(error).splitlines()[0]})") from None
    return model


def pooled_features(model: Inception3, images: torch.Tensor) -> torch.Tensor:
    """The 2048-d global-average-pooled vectors (the input of ``fc``) in eval mode."""
    captured: list[torch.Tensor] = []
    handle = model.fc.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        model(images)
    finally:
        handle.remove()
    return captured[0]


def select_device(device: str = "auto") -> torch.device:
    """CUDA when present (``auto``), else the CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(None, "--device cuda asked for, but torch sees no CUDA GPU")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(None, f"unknown device {device!r} (auto, cpu, cuda, cuda:N)") from None
