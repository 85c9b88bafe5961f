"""The report's "Segmentation QA" section: the cases whose masks a person should look at.

A run with ``--method deep/both/auto`` adds the BLAST-CT columns to the feature
table (:data:`hematoma.segmentation.methods.SEGMENTATION_COLUMNS`) and records in
``extract.json`` which segmenter ran (``settings.segmentation``) and the flagged
patients (``segmentation_qa_flagged``).  A rules-only table has none of these
columns, and then there is no section at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..protocols import ID, FeatureSource
from ..segmentation.methods import (
    QA_MAX_RELATIVE_DIFFERENCE,
    QA_MAX_VOLUME_DIFFERENCE_ML,
    QA_MIN_DICE,
    SEGMENTATION_COLUMNS,
)

TITLE = "Segmentation QA"
#: Feature-table column -> heading of the flagged cases' table (in this order).
FLAGGED_COLUMNS = {
    ID: "patient",
    "seg_dice_rules_deep": "Dice rules vs BLAST-CT",
    "seg_volume_difference_ml": "volume difference, BLAST-CT - rules (mL)",
    "baseline_volume_ml": "baseline volume (mL)",
    "ivh_volume_ml": "IVH volume (mL)",
    "phe_volume_ml": "oedema volume (mL)",
}
METHOD_TEXT = {
    "rules": "rules (rule-based segmenter)",
    "deep": "BLAST-CT network alone",
    "both": "both: rule-based and BLAST-CT, compared (the mask is the rules' where they found blood, BLAST-CT's otherwise)",
}
RULE = (f"A case is flagged when the two masks' Dice is below {QA_MIN_DICE}, when their volumes differ by more than "
        f"{QA_MAX_VOLUME_DIFFERENCE_ML:g} mL and more than {QA_MAX_RELATIVE_DIFFERENCE:.0%} of the larger, when only one "
        "of them found blood, or when the rules refused the scan; the baseline or the follow-up scan may raise it. "
        "A blank Dice: the baseline was not compared (the rules refused it, or its mask was given); "
        "the reason is in OUT/cases/<patient>/case.json. Worst first: blank Dice, then the lowest Dice, then the largest "
        "volume difference.")


@dataclass
class SegmentationQA:
    """What the section shows, as data (``json()`` goes into metrics.json)."""

    method: dict  # extract.json's settings.segmentation; {} where not recorded
    n_cases: int
    flagged: pd.DataFrame  # feature-table columns of FLAGGED_COLUMNS (+ "test patient"), worst first
    compared: bool  # rules and BLAST-CT both ran (a flag is possible)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.compared:
            return f"rules and BLAST-CT not compared ({self.method_text()}): no case flagged"
        return f"{len(self.flagged)} of {self.n_cases} cases flagged for review"

    def method_text(self) -> str:
        resolved = self.method.get("resolved_method")
        if resolved is None:
            return "not recorded (no extract.json settings beside the feature table)"
        text = METHOD_TEXT.get(resolved, resolved)
        asked = self.method.get("method")
        return text if asked in (None, resolved) else f"{text} (asked: {asked})"

    def facts(self) -> dict[str, str | list[str]]:
        facts: dict[str, str | list[str]] = {"method": self.method_text()}
        if self.method.get("n_models") is not None:
            facts["BLAST-CT models"] = str(self.method["n_models"])
        if self.method.get("blood_classes"):
            facts["hematoma classes"] = str(self.method["blood_classes"])
        if self.method.get("weights_source"):
            facts["weights from"] = str(self.method["weights_source"])
        weights = self.method.get("weights") or []
        if weights:
            facts["weights (sha256)"] = [f"{w.get('file')} ({w.get('sha256')})" for w in weights]
        facts["cases"] = self.summary()
        return facts

    def table(self) -> pd.DataFrame:
        """The flagged cases, formatted for reading (blank where a value was not measured)."""
        shown = pd.DataFrame({FLAGGED_COLUMNS[ID]: self.flagged[ID].astype(str)})
        if "test patient" in self.flagged.columns:
            shown["test patient"] = np.where(self.flagged["test patient"], "yes", "")
        formats = {"seg_dice_rules_deep": "{:.3f}", "seg_volume_difference_ml": "{:+.1f}"}
        for column, heading in list(FLAGGED_COLUMNS.items())[1:]:
            values = self.flagged[column] if column in self.flagged.columns else pd.Series(np.nan, index=self.flagged.index)
            shown[heading] = [("" if pd.isna(v) else formats.get(column, "{:.1f}").format(v)) for v in values]
        return shown.reset_index(drop=True)

    def json(self) -> dict:
        return {"method": self.method, "n_cases": self.n_cases, "compared": self.compared,
                "n_flagged": len(self.flagged), "flagged": self.flagged, "notes": self.notes}


def segmentation_qa(source: FeatureSource, test_ids=()) -> SegmentationQA | None:
    """The QA of ``source``'s table (None for a rules-only run); ``test_ids`` are marked in the table."""
    table = source.table
    if not any(column in table.columns for column in SEGMENTATION_COLUMNS):
        return None
    extract = source.record("extract.json") or {}
    method = (extract.get("settings") or {}).get("segmentation") or {}
    ids = table[ID].astype(str)
    flag = pd.to_numeric(table.get("seg_qa_flag", pd.Series(np.nan, index=table.index)), errors="coerce")
    listed = {str(i) for i in extract.get("segmentation_qa_flagged") or []}
    flagged = table[(flag == 1).to_numpy() | ids.isin(listed).to_numpy()]
    notes = []
    missing = sorted(listed - set(ids))
    if missing:  # e.g. a table filtered after extraction
        notes.append(f"{len(missing)} patient(s) flagged in extract.json are not in this table (e.g. {missing[0]!r})")
    columns = [c for c in FLAGGED_COLUMNS if c in flagged.columns]
    flagged = flagged[columns].copy()
    flagged[ID] = flagged[ID].astype(str)
    for column in columns[1:]:
        flagged[column] = pd.to_numeric(flagged[column], errors="coerce")
    if test_ids is not None and len(test_ids):
        flagged["test patient"] = flagged[ID].isin({str(i) for i in test_ids})
    compared = method.get("resolved_method") == "both" or flag.notna().any()  # a --method deep run never flags
    return SegmentationQA(method=method, n_cases=len(table), flagged=_worst_first(flagged), compared=bool(compared),
                          notes=notes)


def _worst_first(flagged: pd.DataFrame) -> pd.DataFrame:
    """No comparison at all first, then the lowest Dice, then the largest volume difference."""
    dice = flagged.get("seg_dice_rules_deep", pd.Series(np.nan, index=flagged.index))
    difference = flagged.get("seg_volume_difference_ml", pd.Series(np.nan, index=flagged.index))
    order = pd.DataFrame({"dice": dice.fillna(-1.0), "difference": (-difference.abs()).fillna(np.inf), "id": flagged[ID]},
                         index=flagged.index)
    return flagged.loc[order.sort_values(["dice", "difference", "id"]).index].reset_index(drop=True)
