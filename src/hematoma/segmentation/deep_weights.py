"""Finding and loading BLAST-CT's published weights without running code.

BLAST-CT (Monteiro et al., Lancet Digit Health 2020; Apache-2.0) publishes its
models as PyTorch state dicts with a ``config.json`` that describes the
network.  A weights folder is either one the user names (``--weights DIR``:
``config.json`` and ``model_*.pt`` / ``model_*.torch_model``) or the one the
``blast-ct`` package fills on first use (its bundled ``data/`` folder, or its
cache: ``$BLAST_CT_CACHE_DIR``, ``$XDG_CACHE_HOME/blast_ct`` or
``~/.cache/blast_ct``).  Nothing is downloaded here: the package's own loader
fetches from GitHub, which fails offline and must not happen in tests.

Loading uses ``torch.load(weights_only=True)`` (tensors only, no pickled code)
and checks every layer's name and shape against the network built from the
config, so a file from another model gives one clear line, not a traceback
half-way through ``load_state_dict``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

#: How to get weights, for the message where none are found.
HOW_TO_GET_WEIGHTS = (
    "give --weights DIR (a folder with config.json and model_1.pt ...; BLAST-CT's V1 models, Apache-2.0, "
    "are at github.com/biomedia-mira/blast-ct, blast_ct/data/saved_models), or install the blast-ct package "
    "and run `python -c \"import blast_ct.assets as a; a.prefetch_all()\"` once on a machine with internet"
)
_MODEL_FILE = re.compile(r"^model_(\d+)\.(pt|pth|torch_model)$")


@dataclass
class WeightsFolder:
    """A folder of BLAST-CT models: the network's config and the model files in index order."""

    folder: Path
    config: dict
    model_paths: list[Path]
    source: str  # "--weights" or "blast-ct package"
    config_path: Path = field(default=None)

    def take(self, n_models: int) -> list[Path]:
        if n_models < 1:
            raise InputError(self.folder, f"--models must be at least 1, got {n_models}")
        if n_models > len(self.model_paths):
            raise InputError(self.folder, f"--models {n_models} asked, but the folder holds {len(self.model_paths)} model file(s): "
                             f"{', '.join(p.name for p in self.model_paths)}")
        return self.model_paths[:n_models]


def package_weight_folders() -> list[Path]:
    """Where the ``blast-ct`` package keeps its weights (bundled data, then its cache), existing or not."""
    folders = []
    try:
        import blast_ct.assets as assets  # noqa: PLC0415 - optional; only its paths are read

        folders.append(Path(assets._package_data_dir()))
        folders.append(Path(assets._cache_root()))
    except ImportError:
        cache = os.environ.get("BLAST_CT_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "blast_ct")
        folders.append(Path(cache))
    return folders


def find_weights(weights: str | Path | None = None) -> WeightsFolder:
    """The weights folder to use: ``weights`` if given, else the blast-ct package's; one clear line where none."""
    if weights is not None:
        return read_weights_folder(Path(weights), "--weights")
    config_fallback = None
    for folder in package_weight_folders():
        models = folder / "saved_models"
        config = folder / "config.json"
        if config.is_file():
            config_fallback = config_fallback or config
        if models.is_dir() and _model_files(models):
            return read_weights_folder(models, "blast-ct package", config_path=config if config.is_file() else config_fallback)
    raise InputError(None, f"no BLAST-CT weights found (looked in {', '.join(str(f) for f in package_weight_folders())}): {HOW_TO_GET_WEIGHTS}")


def read_weights_folder(folder: Path, source: str, config_path: Path | None = None) -> WeightsFolder:
    if not folder.is_dir():
        raise InputError(folder, f"weights folder not found: {HOW_TO_GET_WEIGHTS}")
    config_path = config_path or folder / "config.json"
    if not config_path.is_file():
        raise InputError(folder, "no config.json in the weights folder (BLAST-CT's network description; it comes with the weights)")
    try:
        config = json.loads(config_path.read_text())
        config["model"]["DeepMedic"]
        config["data"]["num_classes"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(config_path, f"not a BLAST-CT config (needs model.DeepMedic and data.num_classes): {error}") from None
    models = _model_files(folder)
    if not models:
        raise InputError(folder, f"no model files (model_1.pt, model_2.pt ...) in the weights folder: {HOW_TO_GET_WEIGHTS}")
    return WeightsFolder(folder=folder, config=config, model_paths=models, source=source, config_path=config_path)


def _model_files(folder: Path) -> list[Path]:
    found = []
    for path in folder.iterdir():
        match = _MODEL_FILE.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def load_state_dict(path: Path, expected: dict) -> dict:
    """Tensors of ``path`` (no code run), checked against ``expected`` (name -> tensor) by name and shape."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle, zip and torch errors alike mean "not a state dict"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(path, f"not a PyTorch state dict that loads without running code (weights_only): {reason}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "not a state dict of tensors")
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise InputError(path, f"layers do not match BLAST-CT's network from config.json: "
                               f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise InputError(path, f"layer {name!r} has shape {tuple(state[name].shape)}, the network expects {tuple(tensor.shape)}")
        if state[name].is_floating_point() and not bool(torch.isfinite(state[name]).all()):
            raise InputError(path, f"layer {name!r} holds NaN or infinite values")
    return state


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
