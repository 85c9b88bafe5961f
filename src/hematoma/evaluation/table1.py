"""Table 1: patient characteristics by HE status, with the test each variable calls for.

Continuous variables: Shapiro-Wilk in each group; if neither rejects normality
(p > ``alpha_normal``) the summary is mean ± SD and the test Welch's t-test
(no equal-variance assumption), else median [IQR] and the Mann-Whitney U test.
Categorical variables (non-numeric, or numeric with at most ``max_levels``
distinct values, e.g. 0/1 flags): counts (%) and the chi-square test, or
Fisher's exact test when any expected count is < 5.  Missing values are left
out of each variable's test and counted in ``missing``.
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


def _categorical(values: pd.Series, label: pd.Series, digits: int) -> list[dict]:
    counts = pd.crosstab(values, label).reindex(columns=[0, 1], fill_value=0)
    totals = counts.sum(axis=0)
    table = counts.to_numpy()
    if table.shape[0] < 2:
        test, p = "none", float("nan")
    else:
        expected = stats.contingency.expected_freq(table)
        if (expected < 5).any():
            test = "Fisher exact"
            try:
                if table.shape == (2, 2):
                    p = stats.fisher_exact(table).pvalue
                else:  # R x C: scipy estimates the p-value by resampling; seeded for reproducibility
                    method = stats.PermutationMethod(n_resamples=9999, rng=np.random.default_rng(0))
                    p = stats.fisher_exact(table, method=method).pvalue
            except (ValueError, NotImplementedError, TypeError, AttributeError):
                # older scipy has Fisher for 2x2 tables only
                test, p = "chi-square (expected < 5)", stats.chi2_contingency(table).pvalue
        else:
            test, p = "chi-square", stats.chi2_contingency(table).pvalue
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
