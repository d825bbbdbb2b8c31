"""Test-wide settings and the fixtures several test files share.

One torch thread: tiny models gain nothing from more, and on a busy 2-core machine a second
thread waiting at OpenMP barriers makes every op many times slower.
"""

import pytest
from helpers import save_tiny_model, write_synthetic, write_world_data


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _cache_outside_the_checkout(tmp_path_factory):
    """What commands cache (the demo's quick SASRec) goes to a temporary folder, not data/cache."""
    import os

    before = os.environ.get("M6GEN_CACHE")
    os.environ["M6GEN_CACHE"] = str(tmp_path_factory.mktemp("m6gen-cache"))
    yield
    if before is None:
        os.environ.pop("M6GEN_CACHE", None)
    else:
        os.environ["M6GEN_CACHE"] = before


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data folder, model folder): 8 titles (helpers.TITLES), users u0..u5 of 4 interactions, a tiny saved Llama."""
    root = tmp_path_factory.mktemp("world")
    return write_world_data(root / "data"), save_tiny_model(root / "model")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """(model folder, data folder): a saved tiny Llama + tokenizer and the synthetic training data (helpers.py)."""
    root = tmp_path_factory.mktemp("tiny")
    save_tiny_model(root / "model", hidden=32, layers=2)
    write_synthetic(root / "data")
    return root / "model", root / "data"
