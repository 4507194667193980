from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import Dataset

from cmcl.data.loaders import ReusableLoader, auto_workers, resolve_workers


class _Items(Dataset):
    """Item k -> (k, pid of the process that loaded it)."""

    def __len__(self) -> int:
        return 100

    def __getitem__(self, key: int) -> tuple[int, int]:
        return key, os.getpid()


def _collate(items):
    return [k for k, _ in items], {pid for _, pid in items}


def test_passes_reuse_the_same_worker_processes():
    loader = ReusableLoader(_Items(), workers=2, collate_fn=_collate)
    try:
        first = list(loader.iterate([[0, 1], [2], [3, 4]]))
        second = list(loader.iterate([[9], [8, 7]]))
        assert [keys for keys, _ in first] == [[0, 1], [2], [3, 4]]
        assert [keys for keys, _ in second] == [[9], [8, 7]]
        pids = lambda batches: set().union(*(p for _, p in batches))  # noqa: E731
        assert os.getpid() not in pids(first)
        assert pids(second) <= pids(first) and len(pids(first)) <= 2
        # An endless pass abandoned half way does not leak into the next one.
        endless = loader.iterate([k, k + 1] for k in range(0, 10**6, 2))
        assert next(endless)[0] == [0, 1]
        assert [keys for keys, _ in loader.iterate([[5]])] == [[5]]
        with pytest.raises(RuntimeError, match="ended by a newer one"):
            next(endless)
        workers = loader._loader._iterator._workers
        assert all(w.is_alive() for w in workers)
    finally:
        loader.close()
    assert not any(w.is_alive() for w in workers)
    # A closed loader starts fresh workers on its next pass.
    assert [keys for keys, _ in loader.iterate([[1]])] == [[1]]
    loader.close()


def test_in_process_loading():
    loader = ReusableLoader(_Items(), workers=0, collate_fn=_collate)
    batches = list(loader.iterate([[3], [1, 2]]))
    assert batches == [([3], {os.getpid()}), ([1, 2], {os.getpid()})]
    loader.close()


def test_global_rng_untouched():
    loader = ReusableLoader(_Items(), workers=1, collate_fn=_collate)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    list(loader.iterate([[1]]))
    list(loader.iterate([[2]]))
    assert torch.equal(torch.rand(2), expected)
    loader.close()


@pytest.mark.parametrize(
    ("cpus", "local", "expected"),
    [(1, 1, 1), (2, 1, 1), (16, 1, 7), (16, 2, 3), (16, 8, 1), (64, 1, 16), (5, 1, 2)],
)
def test_auto_workers(cpus, local, expected):
    assert auto_workers(cpus, local) == expected


def test_resolve_workers(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr("cmcl.data.loaders.available_cpus", lambda: 9)
    assert resolve_workers(-1) == 4
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3
    with pytest.raises(ValueError, match="-1 for auto; got -2"):
        resolve_workers(-2)
