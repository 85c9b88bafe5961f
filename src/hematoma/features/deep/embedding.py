"""CNN features: 3 images x 2048 pooled Inception v3 features = 6144 columns per patient.

Image k (the stack of offsets (-3,-2,-1), (-1,0,+1), (+1,+2,+3)) gives columns
``cnn_{2048k:04d}`` .. ``cnn_{2048k+2047:04d}``: the global-average-pooled
vector that feeds ``fc``, taken in eval mode (dropout off, BatchNorm frozen),
so the same input and weights always give the same features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ...errors import InputError
from ...storage import atomic_path, folder_lock, sha1_file, write_json
from .bundle import MODEL_FILE, CNNModel, load_cnn
from .cases import ID, case_inputs, feature_table_path, read_case_images, read_feature_table, series_of
from .network import FEATURE_DIM, pooled_features
from .slices import N_STACKS, SliceSettings, make_stacks

PREFIX = "cnn_"
N_FEATURES = N_STACKS * FEATURE_DIM  # 6144
FEATURE_NAMES = [f"{PREFIX}{i:04d}" for i in range(N_FEATURES)]


@dataclass
class Embeddings:
    features: pd.DataFrame  # patient_id + cnn_0000..cnn_6143 (NaN rows for failed patients)
    failures: pd.DataFrame  # patient_id, stage, reason


def _as_model(model) -> CNNModel:
    return model if isinstance(model, CNNModel) else CNNModel.from_network(model)


@torch.inference_mode()
def embed_images(images: np.ndarray, model) -> np.ndarray:
    """(3, 3, H, W) ImageNet-normalised images -> the (6144,) feature vector."""
    model = _as_model(model)
    model.network.eval()
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(model.device)
    return pooled_features(model.network, batch).reshape(-1).float().cpu().numpy()


def embed_patient(ct: sitk.Image, mask: sitk.Image, model) -> np.ndarray:
    """The 6144 CNN features of one case (a :class:`CNNModel` or a bare Inception v3)."""
    model = _as_model(model)
    return embed_images(make_stacks(ct, mask, model.slices).images, model)


def embed_table(cases: pd.DataFrame, model, progress: bool = True) -> Embeddings:
    """Features for every row of ``cases`` (patient_id, baseline_ct, baseline_mask).

    A case that cannot be read or has an empty mask gets a NaN row and a line
    in ``failures``; the others go on.
    """
    model = _as_model(model)
    matrix = np.full((len(cases), N_FEATURES), np.nan, dtype=np.float32)
    failures = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not progress) as bar:
        task = bar.add_task("CNN features", total=len(cases))
        for i, row in enumerate(cases.itertuples(index=False)):
            try:
                ct, mask = read_case_images(row.baseline_ct, row.baseline_mask,
                                            series_uid=series_of(row))
                matrix[i] = embed_patient(ct, mask, model)
            except InputError as error:
                failures.append({ID: row.patient_id, "stage": "cnn", "reason": str(error)})
            bar.advance(task)
    features = pd.DataFrame(matrix, columns=FEATURE_NAMES)
    features.insert(0, ID, cases[ID].astype(str).to_numpy())
    return Embeddings(features=features, failures=pd.DataFrame(failures, columns=[ID, "stage", "reason"]))


def merge_features(table: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``cnn_`` columns replaced by ``features``', matched by patient_id (never row order)."""
    kept = table.drop(columns=[c for c in table.columns if c.startswith(PREFIX)])
    merged = kept.merge(features, on=ID, how="left", validate="one_to_one")
    if len(merged) != len(table):  # validate= guards duplicates; this guards a changed row count
        raise AssertionError("merging CNN features changed the number of patients")
    return merged


def embed_output(out: str | Path, model_dir: str | Path, slices: SliceSettings | None = None,
                 device: str = "auto", progress: bool = True) -> Embeddings:
    """``hematoma cnn embed``: features of ALL patients of OUT's table, written and merged.

    Writes ``OUT/cnn_features.parquet`` and rewrites ``OUT/features.csv`` and
    ``OUT/features.parquet`` with the ``cnn_`` columns replaced (atomically);
    failed patients (unreadable, empty mask, no case.json) get NaN features
    and a line in ``OUT/cnn_failures.csv``.
    """
    out = Path(out)
    if not Path(out).is_dir():
        feature_table_path(out)  # refuses a missing OUT here: the lock would create it
    # OUT's table is rewritten: one run at a time (`run`, holding OUT already, shares its hold).
    with folder_lock(out):
        return _embed_output(out, model_dir, slices, device, progress)


def _embed_output(out: Path, model_dir, slices, device: str, progress: bool) -> Embeddings:
    model = load_cnn(model_dir, slices=slices, device=device)
    table = read_feature_table(out)
    source = feature_table_path(out)
    found, missing = [], []
    for pid in table[ID]:  # a case that was never extracted fails alone, not the whole run
        try:
            found.append(case_inputs(out, [pid]))
        except InputError as error:
            missing.append({ID: pid, "stage": "cnn", "reason": str(error)})
    cases = pd.concat(found, ignore_index=True) if found else case_inputs(out, [])
    embeddings = embed_table(cases, model, progress=progress)
    if missing:
        embeddings.failures = pd.concat([pd.DataFrame(missing), embeddings.failures], ignore_index=True)
    with atomic_path(out / "cnn_features.parquet") as tmp:
        embeddings.features.to_parquet(tmp, index=False)
    merged = merge_features(table, embeddings.features)
    with atomic_path(out / "features.parquet") as tmp:
        merged.to_parquet(tmp, index=False)
    with atomic_path(out / "features.csv") as tmp:
        merged.to_csv(tmp, index=False)
    failures_path = out / "cnn_failures.csv"
    if len(embeddings.failures):
        with atomic_path(failures_path) as tmp:
            embeddings.failures.to_csv(tmp, index=False)
    else:
        failures_path.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    write_json(out / "cnn_features.json", {
        "model": str(Path(model_dir).resolve()), "model_sha1": sha1_file(Path(model_dir) / MODEL_FILE),
        "model_data_sha1": model.settings.get("data_sha1"), "slices": model.slices.to_dict(),
        "feature_table_read": source.name, "patients": int(len(table)), "failures": int(len(embeddings.failures)),
        "device": str(model.device),
    })
    return embeddings
