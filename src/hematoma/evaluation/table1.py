"""Table 1: patient characteristics by HE status, with the test each variable calls for.

Continuous variables: Shapiro-Wilk in each group; if neither rejects normality
(p > ``alpha_normal``) the summary is mean ± SD and the test Welch's t-test
(no equal-variance assumption), else median [IQR] and the Mann-Whitney U test.
Categorical variables (non-numeric, or numeric with at most ``max_levels``
distinct values, e.g. 0/1 flags): counts (%) and the chi-square test, or
Fisher's exact test when any expected count is < 5.  Missing values are left
out of each variable's test and counted in ``missing``.

:func:`signs_by_group` gives the NCCT signs (``sign_`` columns) in the same layout.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError

GROUP_NAMES = {0: "no HE", 1: "HE"}


def _is_categorical(values: pd.Series, max_levels: int) -> bool:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return True
    return values.dropna().nunique() <= max_levels


def _fmt(value: float, digits: int) -> str:
    return "NA" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _continuous(groups: list[np.ndarray], alpha_normal: float, digits: int) -> dict:
    def normal(x):
        if len(x) < 3 or np.ptp(x) == 0:
            return False
        return stats.shapiro(x).pvalue > alpha_normal

    if any(len(x) < 2 for x in groups):
        return {"summary": "n too small", "cells": ["" for _ in groups], "test": "none", "p_value": float("nan")}
    if all(normal(x) for x in groups):
        cells = [f"{_fmt(x.mean(), digits)} ± {_fmt(x.std(ddof=1), digits)}" for x in groups]
        p = stats.ttest_ind(*groups, equal_var=False).pvalue
        return {"summary": "mean ± SD", "cells": cells, "test": "Welch t-test", "p_value": float(p)}
    cells = [
        f"{_fmt(np.median(x), digits)} [{_fmt(np.percentile(x, 25), digits)}, {_fmt(np.percentile(x, 75), digits)}]"
        for x in groups
    ]
    p = stats.mannwhitneyu(*groups, alternative="two-sided").pvalue
    return {"summary": "median [IQR]", "cells": cells, "test": "Mann-Whitney U", "p_value": float(p)}


def _contingency_test(table: np.ndarray) -> tuple[str, float]:
    """Chi-square, or Fisher's exact test when an expected count is < 5, of a levels x groups count table."""
    if table.shape[0] < 2:
        return "none", float("nan")
    expected = stats.contingency.expected_freq(table)
    if (expected < 5).any():
        try:
            if table.shape == (2, 2):
                return "Fisher exact", float(stats.fisher_exact(table).pvalue)
            # R x C: scipy estimates the p-value by resampling; seeded for reproducibility
            method = stats.PermutationMethod(n_resamples=9999, rng=np.random.default_rng(0))
            return "Fisher exact", float(stats.fisher_exact(table, method=method).pvalue)
        except (ValueError, NotImplementedError, TypeError, AttributeError):
            # older scipy has Fisher for 2x2 tables only
            return "chi-square (expected < 5)", float(stats.chi2_contingency(table).pvalue)
    return "chi-square", float(stats.chi2_contingency(table).pvalue)


def _categorical(values: pd.Series, label: pd.Series, digits: int) -> list[dict]:
    counts = pd.crosstab(values, label).reindex(columns=[0, 1], fill_value=0)
    totals = counts.sum(axis=0)
    test, p = _contingency_test(counts.to_numpy())
    rows = []
    levels = list(counts.index)
    # A 0/1 flag shows one row (the count of 1s); other variables one row per level.
    shown = [1] if sorted(levels) in ([0, 1], [0.0, 1.0], [False, True]) else levels
    for level in shown:
        cells = [
            f"{int(counts.loc[level, g])} ({_fmt(100 * counts.loc[level, g] / totals[g] if totals[g] else np.nan, digits)}%)"
            for g in (0, 1)
        ]
        rows.append({"level": "" if shown == [1] else str(level), "cells": cells})
    return [{"summary": "n (%)", "test": test, "p_value": float(p), **row} for row in rows]


def table1(
    table: pd.DataFrame,
    label: str = "he",
    variables=None,
    alpha_normal: float = 0.05,
    max_levels: int = 5,
    digits: int = 1,
) -> pd.DataFrame:
    """Characteristics of patients without / with HE and the p-value of their difference.

    ``variables``: columns to describe (default: the clinical ``clin_`` columns).
    Returns one row per variable (one per level for multi-level categories) with
    columns ``variable``, ``level``, ``summary``, ``no HE``, ``HE``, ``test``,
    ``p_value``, ``missing``; ``attrs["n"]`` holds the group sizes.
    """
    if label not in table.columns:
        raise InputError(None, f"the table has no label column {label!r}")
    labelled = table[pd.to_numeric(table[label], errors="coerce").isin([0, 1])]
    y = pd.to_numeric(labelled[label]).astype(int)
    if variables is None:
        variables = [c for c in table.columns if str(c).startswith("clin_")]
    missing_columns = [v for v in variables if v not in table.columns]
    if missing_columns:
        raise InputError(None, f"Table 1 variables not in the table: {missing_columns}")
    rows = []
    for variable in variables:
        values = labelled[variable]
        present = values.notna()
        base = {"variable": variable, "missing": int((~present).sum())}
        if _is_categorical(values, max_levels):
            for row in _categorical(values[present], y[present], digits):
                cells = row.pop("cells")
                rows.append({**base, **row, "no HE": cells[0], "HE": cells[1]})
        else:
            groups = [values[present & (y == g)].to_numpy(dtype=float) for g in (0, 1)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # Shapiro on n > 5000 and ties
                result = _continuous(groups, alpha_normal, digits)
            cells = result.pop("cells")
            rows.append({**base, "level": "", **result, "no HE": cells[0], "HE": cells[1]})
    columns = ["variable", "level", "summary", "no HE", "HE", "test", "p_value", "missing"]
    out = pd.DataFrame(rows, columns=columns)
    out.attrs["n"] = {GROUP_NAMES[g]: int((y == g).sum()) for g in (0, 1)}
    return out


# --------------------------------------------------------------------------- NCCT signs by HE group

#: Row label of each sign flag (hematoma.features.signs.SIGNS, in that order).
SIGN_ROWS = {
    "sign_hypodensity": "hypodensity", "sign_black_hole": "black hole", "sign_blend": "blend sign",
    "sign_swirl": "swirl sign", "sign_fluid_level": "fluid level", "sign_island": "island sign",
    "sign_satellite": "satellite sign",
}
GRADE_ROWS = {"sign_barras_shape": "Barras shape (1-5)", "sign_barras_density": "Barras density (1-5)"}
BAT_ROW, BAT_HIGH_ROW = "BAT score (0-5)", "BAT score >= 3"
BAT_HIGH = 3  # Morotti et al., Stroke 2018: BAT >= 3 identified expansion (sensitivity 0.50, specificity 0.89)


def _flag_row(name: str, values: pd.Series, y: pd.Series, digits: int) -> dict:
    """n (%) with the flag in each group; the Table 1's test of a binary variable on the 2 x 2 table."""
    present = values.notna()
    flag, group = (values[present] >= 0.5), y[present]
    positive = np.array([int((flag & (group == g)).sum()) for g in (0, 1)])
    totals = np.array([int((group == g).sum()) for g in (0, 1)])
    table = np.vstack([totals - positive, positive])
    test, p = _contingency_test(table[table.sum(axis=1) > 0])  # a flag nobody (or everybody) has: no test
    cells = [f"{positive[g]} ({_fmt(100 * positive[g] / totals[g] if totals[g] else np.nan, digits)}%)" for g in (0, 1)]
    return {"variable": name, "level": "", "summary": "n (%)", "no HE": cells[0], "HE": cells[1], "test": test,
            "p_value": float(p), "missing": int((~present).sum())}


def _ordinal_row(name: str, values: pd.Series, y: pd.Series, digits: int) -> dict:
    """An ordinal score: median [IQR] and the Mann-Whitney U test (no normality to test on a 1-5 grade)."""
    present = values.notna()
    groups = [values[present & (y == g)].to_numpy(dtype=float) for g in (0, 1)]
    if any(len(x) == 0 for x in groups):
        cells, test, p = ["" for _ in groups], "none", float("nan")
    else:
        cells = [f"{_fmt(np.median(x), digits)} [{_fmt(np.percentile(x, 25), digits)}, "
                 f"{_fmt(np.percentile(x, 75), digits)}]" for x in groups]
        if np.ptp(np.concatenate(groups)) == 0:
            test, p = "none", float("nan")
        else:
            test, p = "Mann-Whitney U", float(stats.mannwhitneyu(*groups, alternative="two-sided").pvalue)
    return {"variable": name, "level": "", "summary": "median [IQR]", "no HE": cells[0], "HE": cells[1], "test": test,
            "p_value": p, "missing": int((~present).sum())}


def signs_by_group(table: pd.DataFrame, label: str = "he", digits: int = 1) -> pd.DataFrame | None:
    """Each NCCT sign's prevalence by HE group (Table 1 layout), the Barras grades and the BAT score.

    Flags: n (%) of each group with the sign, chi-square or Fisher's exact test
    as the Table 1 tests a binary variable; grades and the BAT score: median
    [IQR] and the Mann-Whitney U test; "BAT score >= 3" n (%) (the high-risk
    cut-off of Morotti et al., Stroke 2018).  The BAT score needs
    ``clin_onset_to_ct_hours``: patients without it count as missing.  Values
    missing (a case whose signs were not measured) are left out and counted.
    None when the table has no ``sign_`` flag (extracted before the signs).
    ``attrs["n"]`` holds the group sizes, ``attrs["notes"]`` what was left out.
    """
    if label not in table.columns:
        raise InputError(None, f"the table has no label column {label!r}")
    if not any(column in table.columns for column in SIGN_ROWS):
        return None
    labelled = table[pd.to_numeric(table[label], errors="coerce").isin([0, 1])]
    y = pd.to_numeric(labelled[label]).astype(int)
    numeric = {c: pd.to_numeric(labelled[c], errors="coerce") for c in (*SIGN_ROWS, *GRADE_ROWS) if c in labelled.columns}
    rows = [_flag_row(name, numeric[c], y, digits) for c, name in SIGN_ROWS.items() if c in numeric]
    rows += [_ordinal_row(name, numeric[c], y, digits) for c, name in GRADE_ROWS.items() if c in numeric]
    notes = []
    from .baselines import bat_scores

    try:
        bat = bat_scores(labelled)
    except KeyError as missing:
        notes.append(f"no BAT score: {missing.args[0]}")
    else:
        rows.append(_ordinal_row(BAT_ROW, bat, y, digits))
        rows.append(_flag_row(BAT_HIGH_ROW, bat.where(bat.isna(), (bat >= BAT_HIGH).astype(float)), y, digits))
    out = pd.DataFrame(rows, columns=["variable", "level", "summary", "no HE", "HE", "test", "p_value", "missing"])
    out.attrs["n"] = {GROUP_NAMES[g]: int((y == g).sum()) for g in (0, 1)}
    out.attrs["notes"] = notes
    return out
