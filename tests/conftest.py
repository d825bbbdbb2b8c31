"""Test-wide settings: one torch thread (tiny models gain nothing from more, and on a busy
2-core machine a second thread waiting at OpenMP barriers makes every op many times slower)."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
