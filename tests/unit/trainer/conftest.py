"""Trainer unit tests run torch on one thread.

The models here are tiny: with more threads, OpenMP synchronisation dominates
and, on the shared 2-core CI machine, a loaded neighbour made a 60-step loop
go from 0.8 s (1 thread) to 28 s (2 threads).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
