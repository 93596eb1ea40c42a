"""Backbone tests run single-threaded.

They are dominated by many small operations (TNT's 16-token inner attention, small test
images), where a second thread mostly waits on the first; on a shared machine that waiting
tripled their wall time.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
