"""The suite's own arrangements, which the other tests rely on without checking."""

from __future__ import annotations

import os

import pytest


def test_an_xdist_worker_runs_torch_on_its_share_of_the_cores():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers == 1:
        pytest.skip("one process: torch keeps every core")
    import torch

    # conftest sets OMP_NUM_THREADS; this fails if torch was imported before it did
    assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // workers)
