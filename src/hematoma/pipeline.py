"""The protocols end to end, so that `hematoma demo` / `run` are one Python call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .cohort import load_manifest
from .storage import atomic_path, write_json
from .volume import DEFAULT_DEFINITION, label_expansion, mask_volume_ml


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn()
    )


def label_cohort(manifest_path: str | Path, definition: str = DEFAULT_DEFINITION) -> pd.DataFrame:
    """Volumes (mL) of both masks and the HE label for every patient that has them."""
    from .io import read_image, read_mask

    manifest = load_manifest(manifest_path)
    rows = []
    with _progress() as progress:
        task = progress.add_task("volumes", total=len(manifest.table))
        for case in manifest.table.itertuples(index=False):
            row = {"patient_id": case.patient_id}
            for scan in ("baseline", "followup"):
                mask_path = getattr(case, f"{scan}_mask", None)
                ct_path = getattr(case, f"{scan}_ct", None)
                if isinstance(mask_path, str):
                    reference = read_image(ct_path) if isinstance(ct_path, str) else None
                    mask = read_mask(mask_path, reference=reference, reference_path=ct_path)
                    row[f"{scan}_volume_ml"] = mask_volume_ml(mask)
            if "baseline_volume_ml" in row and "followup_volume_ml" in row:
                row["he"] = int(label_expansion(row["baseline_volume_ml"], row["followup_volume_ml"], definition))
            rows.append(row)
            progress.advance(task)
    return pd.DataFrame(rows)


@dataclass
class DemoResult:
    out: Path
    labels: pd.DataFrame
    summary: dict


def run_demo(out: str | Path, patients: int = 40, seed: int = 0, size: str = "small") -> DemoResult:
    """Synthetic cohort -> volumes and HE labels from its masks -> a short summary."""
    from sklearn.metrics import roc_auc_score

    from .synthetic import generate_cohort

    out = Path(out)
    cohort_dir = out / "cohort"
    generate_cohort(cohort_dir, patients, seed=seed, size=size)
    labels = label_cohort(cohort_dir / "manifest.csv")
    truth = pd.read_csv(cohort_dir / "truth.csv", dtype={"patient_id": str})
    merged = labels.merge(truth[["patient_id", "true_p", "he"]].rename(columns={"he": "true_he"}), on="patient_id")
    with atomic_path(out / "labels.csv") as tmp:
        labels.to_csv(tmp, index=False)
    summary = {
        "patients": int(len(labels)),
        "he_rate": float(labels["he"].mean()),
        "median_baseline_ml": float(labels["baseline_volume_ml"].median()),
        "labels_match_truth": float((merged["he"] == merged["true_he"]).mean()),
        "oracle_auc": float(roc_auc_score(merged["he"], merged["true_p"])) if merged["he"].nunique() == 2 else None,
    }
    write_json(out / "summary.json", summary)
    return DemoResult(out=out, labels=labels, summary=summary)
