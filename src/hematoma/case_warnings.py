"""The run's warnings in a few lines: what kind, how many cases, which.

Workers keep each case's warnings (a DICOM series chosen, slices resampled)
in its ``case.json``, where no one would see them; ``extract`` and ``run``
print this summary and store the full lists in ``extract.json``.
"""

from __future__ import annotations

# Kinds of case warnings, told apart by their text: case.json keeps messages, not categories.
_WARNING_KINDS = (
    ("series in folder; took the largest", "DICOM series chosen"),
    ("resampled onto a regular grid", "DICOM slices resampled"),
    ("no hemorrhage found", "empty mask"),
    ("disagrees with the follow-up", "manifest he overruled by the follow-up"),
    ("has the same content as baseline_mask", "follow-up mask identical to the baseline's"),
)


def warning_kind(message: str) -> str:
    return next((kind for text, kind in _WARNING_KINDS if text in message), "other warning")


def summarise_warnings(case_warnings: dict[str, list[str]], shown: int = 3) -> list[str]:
    """One line per kind of warning: how many cases, and the first few of them."""
    cases_by_kind: dict[str, list[str]] = {}
    for case, messages in case_warnings.items():
        for kind in dict.fromkeys(warning_kind(m) for m in messages):
            cases_by_kind.setdefault(kind, []).append(case)
    lines = []
    for kind, cases in sorted(cases_by_kind.items(), key=lambda item: -len(item[1])):
        more = f" and {len(cases) - shown} more" if len(cases) > shown else ""
        lines.append(f"{kind}: {len(cases)} case{'s' if len(cases) != 1 else ''} ({', '.join(cases[:shown])}{more})")
    return lines
