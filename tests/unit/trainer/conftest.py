"""Trainer unit tests: keep torch to 2 threads (the CI machine has 2 shared cores)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    """The CI machine has 2 cores shared by several jobs."""
    old = torch.get_num_threads()
    torch.set_num_threads(min(old, 2))
    yield
    torch.set_num_threads(old)
