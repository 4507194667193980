"""cmcl.dist: single-process fallbacks, and the gathers on a real two-process gloo group."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from cmcl import dist
from cmcl.modules import MemoryBank


def test_without_a_process_group_everything_is_one_process():
    assert not torch_dist.is_initialized()
    assert dist.is_distributed() is False
    assert dist.rank() == 0
    assert dist.world_size() == 1
    dist.barrier()  # returns at once


@pytest.mark.parametrize("shape", [(0, 3), (1,), (4, 2), (3, 2, 5)])
def test_gathers_are_identity_in_one_process(shape):
    tensor = torch.randn(shape)
    for gather in (dist.all_gather_cat, dist.all_gather_varlen):
        out = gather(tensor)
        assert out.shape == tensor.shape and out.dtype == tensor.dtype
        assert torch.equal(out, tensor)


def test_all_reduce_sum_is_a_new_tensor_with_the_same_values():
    tensor = torch.tensor([1.0, -2.5, 3.0])
    out = dist.all_reduce_sum(tensor)
    assert torch.equal(out, torch.tensor([1.0, -2.5, 3.0]))
    out.div_(2.0)  # as in distributed training, the caller owns the result
    assert torch.equal(tensor, torch.tensor([1.0, -2.5, 3.0]))


def test_broadcast_object_returns_the_object():
    payload = {"seed": 3, "rows": [1, 2]}
    assert dist.broadcast_object(payload) is payload


def test_a_one_process_group_is_not_distributed(tmp_path):
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert dist.is_distributed() is False
        assert (dist.rank(), dist.world_size()) == (0, 1)
        tensor = torch.arange(6.0).reshape(3, 2)
        assert torch.equal(dist.all_gather_varlen(tensor), tensor)
        assert torch.equal(dist.all_reduce_sum(tensor), tensor)
    finally:
        torch_dist.destroy_process_group()


def _two_worker_run(rank: int, store: str, results: str) -> None:
    torch_dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        # Unequal local sizes (3 rows and 1 row), as with an uneven last batch.
        local = torch.arange(3 * 2, dtype=torch.float32).reshape(3, 2) + 100 * rank
        local = local[: 3 - 2 * rank]
        bank = MemoryBank(8, 2, momentum=0.5)
        indices = torch.tensor([0, 1, 2]) if rank == 0 else torch.tensor([7])
        bank.update(indices, local)
        torch.save(
            {
                "flags": (dist.is_distributed(), dist.rank(), dist.world_size()),
                "varlen": dist.all_gather_varlen(local),
                "cat": dist.all_gather_cat(torch.tensor([rank, 10 + rank])),
                "sum": dist.all_reduce_sum(torch.tensor([1.0 + rank])),
                "object": dist.broadcast_object({"rank": rank}),
                "memory": bank.memory,
                "written": bank.written,
            },
            f"{results}.{rank}",
        )
        dist.barrier()
    finally:
        torch_dist.destroy_process_group()


def test_two_gloo_workers_gather_and_keep_identical_banks(tmp_path):
    results = str(tmp_path / "result")
    mp.spawn(_two_worker_run, args=(str(tmp_path / "store"), results), nprocs=2, join=True)
    out = [torch.load(f"{results}.{rank}", weights_only=True) for rank in range(2)]
    full = torch.cat([torch.arange(6.0).reshape(3, 2), torch.tensor([[100.0, 101.0]])])
    reference = MemoryBank(8, 2, momentum=0.5, gather=lambda t: t)
    reference.update(torch.tensor([0, 1, 2, 7]), full)
    for rank, got in enumerate(out):
        assert tuple(got["flags"]) == (True, rank, 2)
        assert torch.equal(got["varlen"], full)
        assert torch.equal(got["cat"], torch.tensor([0, 10, 1, 11]))
        assert torch.equal(got["sum"], torch.tensor([3.0]))
        assert got["object"] == {"rank": 0}
        assert torch.equal(got["memory"], reference.memory)
        assert torch.equal(got["written"], reference.written)
