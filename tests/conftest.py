"""Shared test fixtures."""

import os
import tempfile

import pytest
import torch

# Inductor caches compiled graphs in one folder per user and reuses a graph compiled against
# another build of the op (another schema) from there: each test session gets its own.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _inductor_cache = tempfile.TemporaryDirectory(prefix="ddetr-inductor-")  # removed at exit
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _inductor_cache.name


@pytest.fixture(scope="module")
def one_thread():
    """Small-tensor tests: with OpenMP threads on a busy shared machine they spend most of
    their time spinning, so such modules run on one thread (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
