"""`hematoma cnn train` and `hematoma cnn embed`: the CNN branch of the features."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
cnn_app = typer.Typer(help="Warm-up train Inception v3 on cohort 1, and embed every patient (6144 features).",
                      no_args_is_help=True)

_WEIGHTS_HELP = ("Starting weights: auto (ImageNet if cached or downloadable, else random with a warning), "
                 "imagenet (required), none (random), or a state-dict file (.safetensors or torch).")


_THREADS_HELP = "CPU threads for torch (default: one per core); 1 can be faster on a busy shared machine."


def _set_threads(threads):
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _slice_settings(window_width, window_level, margin_mm):
    from ..features.deep.slices import SliceSettings

    defaults = SliceSettings()
    return SliceSettings(window_width=defaults.window_width if window_width is None else window_width,
                         window_level=defaults.window_level if window_level is None else window_level,
                         margin_mm=defaults.margin_mm if margin_mm is None else margin_mm)


@cnn_app.command()
def train(
    out: Path = typer.Argument(..., help="Output folder of `hematoma extract` (features table, cases/, split.csv)."),
    cnn_dir: Path = typer.Option(..., "--out", help="Folder to write the trained CNN to."),
    preset: str = typer.Option("paper", "--preset", help="paper (the paper's settings) or fast (a short CPU run)."),
    weights: str = typer.Option("auto", "--weights", help=_WEIGHTS_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the split (if none exists yet), the training and augmentation."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Override the preset's maximum number of epochs."),
    patience: int = typer.Option(None, "--patience", min=1, help="Stop after this many epochs without improvement."),
    micro_batch: int = typer.Option(None, "--micro-batch", min=2,
                                    help="Images per forward pass (gradient accumulation up to the batch size)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    window_width: float = typer.Option(None, "--window-width", help="Window width in HU (default 80)."),
    window_level: float = typer.Option(None, "--window-level", help="Window level in HU (default 40)."),
    margin_mm: float = typer.Option(None, "--margin-mm", help="Crop margin around the hematoma in mm (default 10)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a CNN already in --out."),
    threads: int = typer.Option(None, "--threads", min=1, help=_THREADS_HELP),
) -> None:
    """Warm-up train the CNN on cohort 1 of OUT (cohort 2 is never used) and save it to --out."""
    from ..features.deep import train_cnn

    _set_threads(threads)
    result = train_cnn(out, cnn_dir, preset_name=preset, weights=weights, seed=seed, device=device,
                       slices=_slice_settings(window_width, window_level, margin_mm), overwrite=overwrite,
                       epochs=epochs, patience=patience, micro_batch_size=micro_batch)
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    n_train = int((result.cases["part"] == "train").sum())
    console.print(f"trained on {n_train} patients, validated on {len(result.cases) - n_train} (cohort 1), "
                  f"{len(result.history)} epochs on {result.device}, weights {result.weights_source}; "
                  f"best epoch {result.best_epoch}: validation accuracy {best['validation_accuracy']:.3f}, "
                  f"loss {best['validation_loss']:.3f}")
    console.print(f"CNN: {Path(cnn_dir).resolve()}")


@cnn_app.command()
def embed(
    out: Path = typer.Argument(..., help="Output folder of `hematoma extract`."),
    model: Path = typer.Option(..., "--model", help="A CNN folder written by `hematoma cnn train`."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    window_width: float = typer.Option(None, "--window-width", help="Check the CNN was trained with this window width."),
    window_level: float = typer.Option(None, "--window-level", help="Check the CNN was trained with this window level."),
    margin_mm: float = typer.Option(None, "--margin-mm", help="Check the CNN was trained with this crop margin."),
    threads: int = typer.Option(None, "--threads", min=1, help=_THREADS_HELP),
) -> None:
    """Add the 6144 CNN features (cnn_0000..cnn_6143) of every patient to OUT's feature table."""
    from ..features.deep import embed_output
    from ..features.deep.bundle import read_settings
    from ..features.deep.slices import SliceSettings

    _set_threads(threads)
    asked = None
    if any(value is not None for value in (window_width, window_level, margin_mm)):
        trained = SliceSettings.from_dict(read_settings(model).get("slices", {}))
        asked = SliceSettings(
            window_width=trained.window_width if window_width is None else window_width,
            window_level=trained.window_level if window_level is None else window_level,
            margin_mm=trained.margin_mm if margin_mm is None else margin_mm, image_size=trained.image_size)
    result = embed_output(out, model, slices=asked, device=device)
    n_failed = len(result.failures)
    n_done = int(result.features.drop(columns="patient_id").notna().all(axis=1).sum())
    console.print(f"CNN features of {n_done} patients written to "
                  f"{Path(out).resolve() / 'cnn_features.parquet'} and merged into the feature table")
    if n_failed:
        console.print(f"[yellow]{n_failed} patients failed[/]: see {Path(out) / 'cnn_failures.csv'}")


def register(app: typer.Typer) -> None:
    app.add_typer(cnn_app, name="cnn")
