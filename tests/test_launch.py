"""cmcl.launch: the library half of `cmcl train` (request in, trained run out)."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_overrides

from cmcl.launch import LaunchError, TrainRequest, train_run

NAMED = {"benchmark": "synthetic-epic", "pair": "D2-D1", "method": "cmco", "seed": 0}


def _given(store):
    given = tiny_overrides(store)
    for key in ("benchmark", "pair"):
        given.pop(key)
    return given


def test_a_request_trains_once_and_says_one_banner(tiny_store, tmp_path):
    lines = []
    out = str(tmp_path / "run")
    trained = train_run(TrainRequest(NAMED, _given(tiny_store), out=out), say=lines.append)
    assert trained.where == out
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert trained.summary["target_acc"] == written["target_acc"]
    assert len(lines) == 1 and lines[0].startswith("cmco on synthetic-epic D2-D1, seed 0: ")
    assert lines[0].endswith(f"-> {out}")


@pytest.mark.parametrize("workers", [0, 2], ids=["here", "ray"])
def test_a_held_run_and_a_missing_one_are_refused_before_anything_starts(
    tiny_store, tmp_path, workers
):
    # The same refusal for a local run directory and for a Ray run's STORAGE/NAME.
    run = tmp_path / "run"
    (run / "checkpoints" / "step_0000004").mkdir(parents=True)
    (run / "checkpoints" / "step_0000004" / "state.pt").write_bytes(b"")
    lines = []
    request = TrainRequest(NAMED, _given(tiny_store), out=str(run), workers=workers)
    with pytest.raises(LaunchError, match=r"run already holds a run; add --resume to continue"):
        train_run(request, say=lines.append)
    empty = TrainRequest(NAMED, {}, out=str(tmp_path / "none"), workers=workers, resume=True)
    with pytest.raises(LaunchError, match=r"--resume: no checkpoint under .*none/checkpoints"):
        train_run(empty, say=lines.append)
    assert lines == []  # refused before the banner
    assert isinstance(LaunchError("x"), ValueError)


def test_bad_settings_and_options_are_launch_errors(tiny_store, tmp_path):
    say = [].append
    bad = TrainRequest(NAMED, {**_given(tiny_store), "T": 3}, out=str(tmp_path / "a"))
    with pytest.raises(LaunchError, match=r"threshold T must be in \(0, 1\], got 3"):
        train_run(bad, say=say)
    gpus = TrainRequest(NAMED, {}, out=str(tmp_path / "b"), gpus_per_worker=1)
    with pytest.raises(LaunchError, match="apply to Ray runs: add --workers N"):
        train_run(gpus, say=say)
    nan = TrainRequest(NAMED, {}, out=str(tmp_path / "c"), workers=2, gpus_per_worker=float("nan"))
    with pytest.raises(LaunchError, match="--gpus-per-worker must be a finite number"):
        train_run(nan, say=say)
    tracked = TrainRequest(NAMED, {}, out=str(tmp_path / "d"), workers=2, tracking="tensorboard")
    with pytest.raises(LaunchError, match="--tracking applies to runs trained in this process"):
        train_run(tracked, say=say)
    assert not any((tmp_path / name).exists() for name in "abcd")
