"""MemoryBank: momentum updates step by step against NumPy, buffers, gather hook, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmcl import dist
from cmcl.modules import MemoryBank


def identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def unit(gen: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = gen.normal(size=(n, d))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def numpy_update(memory: np.ndarray, indices: list[int], new: np.ndarray, m: float) -> np.ndarray:
    """row <- normalize(m * row + (1 - m) * new), one index at a time, in float64."""
    out = memory.astype(np.float64)
    for i, row in zip(indices, new.astype(np.float64), strict=True):
        mixed = m * out[i] + (1 - m) * row
        out[i] = mixed / np.linalg.norm(mixed)
    return out


# ---------------------------------------------------------------- construction and state


def test_new_bank_is_zero_unwritten_buffers_without_parameters():
    bank = MemoryBank(7, 3, momentum=0.25)
    assert bank.memory.shape == (7, 3) and bank.memory.dtype == torch.float32
    assert torch.equal(bank.memory, torch.zeros(7, 3))
    assert bank.written.dtype == torch.bool and not bank.written.any()
    assert (bank.num_rows, bank.dim, bank.momentum) == (7, 3, 0.25)
    assert set(bank.state_dict()) == {"memory", "written"}
    assert list(bank.parameters()) == []
    assert not bank.memory.requires_grad


def test_first_update_of_a_new_bank_stores_the_normalised_vector():
    bank = MemoryBank(4, 3, momentum=0.9)
    bank.update(torch.tensor([2]), torch.tensor([[3.0, 0.0, 4.0]]))
    torch.testing.assert_close(bank.memory[2], torch.tensor([0.6, 0.0, 0.8]))
    assert bank.written.tolist() == [False, False, True, False]


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_momentum_updates_step_by_step_against_numpy(momentum):
    gen = np.random.default_rng(int(momentum * 10))
    k, d = 6, 4
    bank = MemoryBank(k, d, momentum=momentum, gather=identity)
    start = unit(gen, k, d)
    bank.initialise(torch.arange(k), torch.from_numpy(start))
    expected = start.astype(np.float64)
    # Indices repeat across updates (rows 0 and 2 three times), never inside one.
    steps = [[0, 2], [2, 3, 5], [0, 2], [1], [5, 0, 2, 4]]
    for indices in steps:
        new = unit(gen, len(indices), d)
        untouched = [i for i in range(k) if i not in indices]
        before = bank.memory.clone()
        bank.update(torch.tensor(indices), torch.from_numpy(new))
        expected = numpy_update(expected, indices, new, momentum)
        np.testing.assert_allclose(bank.memory.numpy(), expected, rtol=0, atol=1e-6)
        assert torch.equal(bank.memory[untouched], before[untouched])
        np.testing.assert_allclose(np.linalg.norm(bank.memory.numpy(), axis=1), 1.0, atol=1e-6)


def test_hand_computed_momentum_step():
    bank = MemoryBank(2, 2, momentum=0.5, gather=identity)
    bank.initialise(torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    bank.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))
    # 0.5 * (1, 0) + 0.5 * (0, 1) = (0.5, 0.5), normalised to (1/sqrt2, 1/sqrt2).
    torch.testing.assert_close(bank.memory, torch.tensor([[2**-0.5, 2**-0.5], [0.0, 1.0]]))
    bank.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))
    mixed = torch.tensor([0.5 * 2**-0.5, 0.5 * 2**-0.5 + 0.5])
    torch.testing.assert_close(bank.memory[0], mixed / mixed.norm())


def test_momentum_zero_replaces_rows():
    bank = MemoryBank(5, 3, momentum=0.0)
    bank.reset_random(torch.Generator().manual_seed(0))
    new = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    bank.update(torch.tensor([4, 1]), new)
    torch.testing.assert_close(bank.memory[[4, 1]], F.normalize(new, dim=1))


def test_rows_stay_unit_norm_over_many_random_updates():
    gen = torch.Generator().manual_seed(1)
    bank = MemoryBank(50, 8, momentum=0.7)
    bank.reset_random(gen)
    for _ in range(40):
        indices = torch.randperm(50, generator=gen)[:10]
        bank.update(indices, F.normalize(torch.randn(10, 8, generator=gen), dim=1))
        torch.testing.assert_close(bank.memory.norm(dim=1), torch.ones(50))


def test_written_mask_tracks_initialise_and_update():
    bank = MemoryBank(6, 2)
    bank.reset_random(torch.Generator().manual_seed(2))
    assert not bank.written.any()
    bank.update(torch.tensor([1, 4]), torch.randn(2, 2))
    bank.initialise(torch.tensor([0]), torch.randn(1, 2))
    assert bank.written.tolist() == [True, True, False, False, True, False]
    bank.update(torch.zeros(0, dtype=torch.long), torch.zeros(0, 2))
    assert bank.written.tolist() == [True, True, False, False, True, False]


def test_initialise_overwrites_with_normalised_rows():
    bank = MemoryBank(3, 2, momentum=0.9)
    bank.update(torch.tensor([0, 1, 2]), torch.randn(3, 2))
    features = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    bank.initialise(torch.tensor([2, 0]), features)
    torch.testing.assert_close(bank.memory[[2, 0]], torch.tensor([[0.6, 0.8], [0.0, -1.0]]))


def test_reset_random_gives_unit_rows_reproducible_by_generator():
    first, second, third = MemoryBank(20, 5), MemoryBank(20, 5), MemoryBank(20, 5)
    first.update(torch.tensor([3]), torch.randn(1, 5))
    first.reset_random(torch.Generator().manual_seed(9))
    second.reset_random(torch.Generator().manual_seed(9))
    third.reset_random(torch.Generator().manual_seed(10))
    assert torch.equal(first.memory, second.memory)
    assert not torch.equal(first.memory, third.memory)
    assert not first.written.any()
    torch.testing.assert_close(first.memory.norm(dim=1), torch.ones(20))
    assert torch.unique(first.memory, dim=0).shape[0] == 20


def test_state_dict_round_trip_through_bytes():
    gen = torch.Generator().manual_seed(3)
    bank = MemoryBank(12, 4, momentum=0.5)
    bank.reset_random(gen)
    bank.update(torch.tensor([0, 5, 11]), torch.randn(3, 4, generator=gen))
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    fresh = MemoryBank(12, 4, momentum=0.5)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.memory, bank.memory) and torch.equal(fresh.written, bank.written)
    new = torch.randn(2, 4, generator=gen)
    bank.update(torch.tensor([5, 6]), new)
    fresh.update(torch.tensor([5, 6]), new)
    assert torch.equal(fresh.memory, bank.memory) and torch.equal(fresh.written, bank.written)
    with pytest.raises(RuntimeError):
        MemoryBank(13, 4).load_state_dict(state)


# ---------------------------------------------------------------- no autograd


def test_update_builds_no_graph_and_keeps_no_alias():
    layer = torch.nn.Linear(3, 4)
    bank = MemoryBank(5, 4, momentum=0.0)
    with torch.enable_grad():
        features = F.normalize(layer(torch.randn(2, 3)), dim=1)
        assert features.requires_grad
        bank.update(torch.tensor([1, 3]), features)
        bank.initialise(torch.tensor([0]), features[:1])
    assert not bank.memory.requires_grad and bank.memory.grad_fn is None
    assert not bank.written.requires_grad
    assert not bank.memory.sum().requires_grad, "the bank must not lead back to the layer"
    stored = bank.memory.clone()
    with torch.no_grad():
        features.mul_(-1.0)  # the caller reuses its tensor: the bank keeps its own copy
    assert torch.equal(bank.memory, stored)


def test_features_of_other_dtypes_are_stored_in_the_bank_dtype():
    bank = MemoryBank(3, 2, momentum=0.5)
    bank.update(torch.tensor([0]), torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    bank.update(torch.tensor([1]), torch.tensor([[0.0, 1.0]], dtype=torch.float16))
    bank.update(torch.tensor([2], dtype=torch.int32), torch.tensor([[2.0, 0.0]]))
    assert bank.memory.dtype == torch.float32
    torch.testing.assert_close(
        bank.memory, torch.tensor([[2**-0.5, 2**-0.5], [0.0, 1.0], [1.0, 0.0]])
    )


# ---------------------------------------------------------------- distributed gather hook


class TwoWorkerGather:
    """Stands in for all-gather on worker ``rank`` of two: its own tensor in its rank slot.

    ``exchange[r]`` is worker r's local (indices, features) of the current step;
    the hook tells the two calls apart by dtype and records what it was given.
    """

    def __init__(self, rank: int, exchange: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.rank, self.exchange, self.calls = rank, exchange, []

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        self.calls.append(tensor.clone())
        slot = 1 if tensor.is_floating_point() else 0
        parts = [tensor if r == self.rank else self.exchange[r][slot] for r in range(2)]
        return torch.cat(parts)


def test_every_worker_applies_the_global_batch():
    gen = torch.Generator().manual_seed(4)
    start = F.normalize(torch.randn(10, 3, generator=gen), dim=1)
    # Per step, (indices, features) of worker 0 then worker 1; shards never overlap.
    steps = [
        [(torch.tensor([0, 7]), torch.randn(2, 3, generator=gen)),
         (torch.tensor([3, 4, 9]), torch.randn(3, 3, generator=gen))],
        [(torch.tensor([7]), torch.randn(1, 3, generator=gen)),
         (torch.tensor([0, 1]), torch.randn(2, 3, generator=gen))],
    ]  # fmt: skip
    exchange: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [TwoWorkerGather(rank, exchange) for rank in range(2)]
    banks = [MemoryBank(10, 3, momentum=0.6, gather=hook) for hook in hooks]
    reference = MemoryBank(10, 3, momentum=0.6, gather=identity)
    reference.initialise(torch.arange(10), start)
    exchange[:] = [(torch.arange(5), start[:5]), (torch.arange(5, 10), start[5:])]
    for rank, bank in enumerate(banks):
        bank.initialise(*exchange[rank])
        assert torch.equal(bank.memory, reference.memory) and bank.written.all()
    for batches in steps:
        exchange[:] = [(i, F.normalize(f, dim=1)) for i, f in batches]
        reference.update(torch.cat([i for i, _ in exchange]), torch.cat([f for _, f in exchange]))
        for rank, (bank, hook) in enumerate(zip(banks, hooks, strict=True)):
            hook.calls.clear()
            bank.update(*exchange[rank])
            assert len(hook.calls) == 2, "indices and features both go through the hook"
            assert torch.equal(hook.calls[0], exchange[rank][0])
            torch.testing.assert_close(hook.calls[1], exchange[rank][1])
            assert torch.equal(bank.memory, reference.memory), f"worker {rank}"
            assert torch.equal(bank.written, reference.written)


def test_duplicating_gather_equals_applying_the_batch_once():
    gen = torch.Generator().manual_seed(5)
    start = F.normalize(torch.randn(6, 4, generator=gen), dim=1)
    new = F.normalize(torch.randn(3, 4, generator=gen), dim=1)
    index = torch.tensor([5, 0, 2])
    twice = MemoryBank(6, 4, gather=lambda t: torch.cat([t, t]))
    once = MemoryBank(6, 4, gather=identity)
    for bank in (twice, once):
        bank.initialise(torch.arange(6), start)
        bank.update(index, new)
    assert torch.equal(twice.memory, once.memory)


def test_default_hook_goes_through_cmcl_dist(monkeypatch):
    seen = []

    def spy(tensor):
        seen.append(tensor)
        return tensor

    bank = MemoryBank(4, 2, momentum=0.5)
    plain = MemoryBank(4, 2, momentum=0.5, gather=identity)
    features = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    bank.update(torch.tensor([3, 0]), features)  # single process: default hook is identity
    plain.update(torch.tensor([3, 0]), features)
    assert torch.equal(bank.memory, plain.memory)
    monkeypatch.setattr(dist, "all_gather_varlen", spy)
    bank.update(torch.tensor([1]), features[:1])
    assert [t.dtype for t in seen] == [torch.int64, torch.float32]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("num_rows", "dim", "momentum", "match"),
    [
        (0, 4, 0.5, "num_rows=0"),
        (-1, 4, 0.5, "num_rows=-1"),
        (4, 0, 0.5, "dim=0"),
        (4, 4, -0.1, "momentum"),
        (4, 4, 1.0, "momentum"),
        (4, 4, 1.5, "momentum"),
        (4, 4, float("nan"), "momentum"),
    ],
)
def test_bad_construction_raises_value_error(num_rows, dim, momentum, match):
    with pytest.raises(ValueError, match=match):
        MemoryBank(num_rows, dim, momentum=momentum)


@pytest.mark.parametrize("method", ["update", "initialise"])
@pytest.mark.parametrize(
    ("indices", "features"),
    [
        (torch.tensor([[0, 1]]), torch.randn(2, 3)),  # 2-D indices
        (torch.tensor([0, 1]), torch.randn(3, 3)),  # length mismatch
        (torch.tensor([0, 1]), torch.randn(2, 4)),  # wrong D
        (torch.tensor([0, 1]), torch.randn(2, 3, 1)),  # 3-D features
        (torch.tensor([0, 5]), torch.randn(2, 3)),  # out of range
        (torch.tensor([-1, 1]), torch.randn(2, 3)),  # negative
        (torch.tensor([0.0, 1.0]), torch.randn(2, 3)),  # float indices
        (torch.tensor([True, False]), torch.randn(2, 3)),  # a mask is not a list of rows
        (torch.tensor([1, 1, 1, 1, 1], dtype=torch.uint8), torch.randn(5, 3)),
    ],
)
def test_bad_update_raises_value_error_and_changes_nothing(method, indices, features):
    bank = MemoryBank(5, 3)
    bank.reset_random(torch.Generator().manual_seed(0))
    before = bank.memory.clone()
    with pytest.raises(ValueError, match="indices"):
        getattr(bank, method)(indices, features)
    assert torch.equal(bank.memory, before) and not bank.written.any()


def test_the_host_knows_when_every_row_is_written_without_reading_the_mask():
    bank = MemoryBank(4, 3)
    assert not bank.fully_written
    bank.initialise(torch.tensor([0, 1]), torch.randn(2, 3))
    assert not bank.fully_written  # two rows of four
    bank.initialise(torch.tensor([2, 3]), torch.randn(2, 3))
    assert bank.fully_written
    bank.reset_random(torch.Generator().manual_seed(0))
    assert not bank.fully_written
    bank.update(torch.arange(4), torch.randn(4, 3))
    assert not bank.fully_written and bank.written.all()  # updates keep the host's word
    restored = MemoryBank(4, 3)
    restored.load_state_dict(bank.state_dict())
    assert restored.fully_written  # read once from the restored mask
    half = MemoryBank(4, 3)
    half.load_state_dict(MemoryBank(4, 3).state_dict())
    assert not half.fully_written


def test_update_reads_no_index_back_to_the_host(monkeypatch):
    reads = []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    bank = MemoryBank(6, 3)
    bank.update(torch.tensor([4, 0, 2]), torch.randn(3, 3))
    assert reads == []
