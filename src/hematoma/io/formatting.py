"""Numbers and tuples as text in one-line messages."""

from __future__ import annotations

import numpy as np


def _format_values(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in np.asarray(values).tolist())


def _format_pair(first, second) -> tuple[str, str]:
    """Two values (or tuples) printed with just enough digits to tell them apart."""
    if not isinstance(first, tuple):
        return str(first), str(second)
    for digits in range(6, 18):
        texts = tuple("(" + ", ".join(_number(v, digits) for v in value) + ")" for value in (first, second))
        if texts[0] != texts[1]:
            return texts
    return texts


def _number(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    return text + ".0" if isinstance(value, float) and text.lstrip("-").isdigit() else text
