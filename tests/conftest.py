"""Shared fixtures: the real datasets in ../shared/data, and quiet, reproducible torch."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests run on two cores next to each other; more threads only fight.
torch.set_num_threads(min(2, torch.get_num_threads()))


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A plain local ``pytest`` leaves the ``slow`` tests out (``-m slow`` runs them); CI runs all."""
    if under_ci() or config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data``: required under CI (fails clearly), skipped elsewhere when absent."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = f"real datasets not found at {SHARED_DATA} (expected ../shared/data beside the checkout)"
    if under_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
