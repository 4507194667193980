"""Checkpoint random states: every DDP worker gets its own back when the worker count is unchanged."""

from __future__ import annotations

import torch

from cmcl.engine import checkpoint as ckpt


def _parts():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return {"method": model, "optimizer": optimizer, "scheduler": scheduler}


def _state_after(seed: int) -> dict:
    torch.manual_seed(seed)
    return ckpt.rng_state()


def test_each_worker_restores_its_own_stream(tmp_path):
    workers = [_state_after(1), _state_after(2)]
    parts = _parts()  # (initialising a layer draws from the stream)
    torch.manual_seed(1)  # rank 0 writes the checkpoint: its own state is "rng"
    path = ckpt.save_checkpoint(
        tmp_path / "step",
        **parts,
        position=ckpt.Position(stage="adapt", steps_done=3),
        meta={},
        worker_rng=workers,
    )
    expected = {}
    for seed in (1, 2):
        torch.manual_seed(seed)
        expected[seed] = torch.rand(4)

    torch.manual_seed(99)
    position = ckpt.load_checkpoint(path, **_parts(), rank=1, world=2)
    assert position.own_rng and torch.equal(torch.rand(4), expected[2])
    position = ckpt.load_checkpoint(path, **_parts(), rank=0, world=2)
    assert position.own_rng and torch.equal(torch.rand(4), expected[1])

    # Another worker count: rank 0 keeps its stream, the others are told to derive one.
    position = ckpt.load_checkpoint(path, **_parts(), rank=2, world=3)
    assert not position.own_rng and torch.equal(torch.rand(4), expected[1])
    position = ckpt.load_checkpoint(path, **_parts(), rank=0, world=1)
    assert position.own_rng and torch.equal(torch.rand(4), expected[1])


def test_a_one_process_checkpoint_gives_other_workers_no_stream_of_their_own(tmp_path):
    parts = _parts()
    torch.manual_seed(5)
    path = ckpt.save_checkpoint(
        tmp_path / "step", **parts, position=ckpt.Position(stage="warmup", steps_done=1), meta={}
    )
    assert not ckpt.load_checkpoint(path, **_parts(), rank=1, world=2).own_rng
    assert ckpt.load_checkpoint(path, **_parts(), rank=0, world=2).own_rng
