"""Checkpoints: every DDP worker gets its own random state back when the worker count is
unchanged; a damaged checkpoint is detected and passed over for the previous intact one."""

from __future__ import annotations

import logging

import pytest
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


def _run_with_checkpoints(run_dir, steps=(10, 20)):
    parts = _parts()
    for step in steps:
        ckpt.save_checkpoint(
            run_dir / "checkpoints" / f"step_{step:07d}",
            **parts,
            position=ckpt.Position(stage="adapt", steps_done=step),
            meta={"step": step},
        )
    return [run_dir / "checkpoints" / f"step_{step:07d}" for step in steps]


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
    older, newest = _run_with_checkpoints(tmp_path)
    if damage == "truncate":
        state = newest / ckpt.STATE_FILE
        state.write_bytes(state.read_bytes()[:100])
    elif damage == "flip":  # torch.load would load this silently; the zip CRCs catch it
        _flip_a_byte(newest / ckpt.STATE_FILE)
    else:
        (newest / ckpt.META_FILE).write_text('{"step": 2')
    assert ckpt.checkpoint_problem(older) is None
    problem = ckpt.checkpoint_problem(newest)
    assert problem is not None and str(newest) in problem and "damaged checkpoint" in problem

    found, skipped = ckpt.latest_intact_checkpoint(tmp_path)
    assert found == older and skipped == [problem]
    with caplog.at_level(logging.WARNING, logger="cmcl.engine.checkpoint"):
        assert ckpt.latest_checkpoint(tmp_path) == older
    assert f"resuming from {older} instead" in caplog.text and str(newest) in caplog.text
    # Loading the damaged one directly names it and says what to do.
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"damaged checkpoint.*delete this one"):
        ckpt.load_checkpoint(newest, **_parts())
    assert ckpt.load_checkpoint(older, **_parts()).steps_done == 10


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    for path in _run_with_checkpoints(tmp_path):
        _flip_a_byte(path / ckpt.STATE_FILE)
    with pytest.raises(
        ckpt.CorruptCheckpointError, match=r"no intact checkpoint under .*step_0000020"
    ):
        ckpt.latest_checkpoint(tmp_path)
    assert len(ckpt.checkpoint_dirs(tmp_path)) == 2  # still "holds a run"
    assert ckpt.latest_intact_checkpoint(tmp_path / "nothing") == (None, [])
