"""Shared test settings: no network, headless plotting, few threads."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HEMATOMA_OFFLINE", "1")  # code that could fetch weights must not try

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real public data of ../shared/data, or a skip saying it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (../shared is absent in a user's clone)")
    return SHARED_DATA
