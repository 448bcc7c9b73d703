"""Shared test set-up. ``import study`` first: it sets TF_USE_LEGACY_KERAS=1 before any test imports TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import study  # noqa: F401

if TYPE_CHECKING:
    import pandas as pd

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures: tiny GroupLens directories (ml-100k, ml-1m, ml-latest) and interactions.csv."""
    return FIXTURES


@pytest.fixture(scope="session")
def embedded_table() -> pd.DataFrame:
    """The embedded ml-latest-small canonical table (loaded once; do not modify)."""
    from study.data import load_table

    return load_table("embedded")
