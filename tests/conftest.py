"""Shared test helpers: fixture paths and a one-call ingest into a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from data_loaders import Dataset, ingest

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def ingest_to(tmp_path: Path):
    """ingest_to(format, input, **kwargs) -> Dataset written under tmp_path."""
    counter = {"n": 0}

    def run(format_name: str, input_path: Path | str, **kwargs: Any) -> Dataset:
        counter["n"] += 1
        out = tmp_path / f"ds{counter['n']}"
        ingest(format_name, input_path, out, **kwargs)
        return Dataset.open(out)

    return run


def shared(path: str) -> Path:
    """A file under ../shared/data, or skip the test when it is absent."""
    p = SHARED_DATA / path
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p
