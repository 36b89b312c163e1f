"""Model tests run single-threaded: their tiny tensors gain nothing from threads, and on a busy
shared CPU intra-op threads make each small op wait (observed: 100x slower)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
