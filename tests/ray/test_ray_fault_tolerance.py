"""A Train worker killed with SIGKILL mid-run: Ray restarts the group from the last checkpoint."""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import threading
import time

import pandas as pd
import pytest
from conftest import tiny_overrides
from ray_helpers import private_ray, read_records, recording_loop

from cmcl.config import RunConfig
from cmcl.ray.train import fit_distributed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    with private_ray(num_cpus=2):
        yield


def _config(store):
    # The default model (dropout, each worker's own BN statistics): a restart must
    # restore every worker's state exactly, not just what the workers share.
    overrides = tiny_overrides(store, method="cmco", T=0.15, **{"train.dump_features": 0})
    return RunConfig.from_overrides(overrides)


def _kill_when_paused(record, deadline_s: float = 240.0) -> dict:
    """Wait for the paused worker's pid, SIGKILL it, and say so for the restarted attempt."""
    paused = record / "paused.json"
    end = time.monotonic() + deadline_s
    while not paused.exists():
        if time.monotonic() > end:
            return {"error": "the worker never paused"}
        time.sleep(0.05)
    pid = json.loads(paused.read_text())["pid"]
    (record / "killed").write_text(str(pid))
    os.kill(pid, signal.SIGKILL)
    return {"pid": pid}


def _comparable(history: pd.DataFrame) -> list[dict]:
    return history.drop(columns=["elapsed_s"]).to_dict("records")


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b, strict=True):
        assert row_a.keys() == row_b.keys()
        for key, x in row_a.items():
            y = row_b[key]
            if isinstance(x, float):
                assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-5), key
            else:
                assert x == y, key


def test_killed_worker_restarts_from_last_checkpoint_and_matches(tiny_store, tmp_path):
    config = _config(tiny_store)
    storage = tmp_path / "storage"
    straight = fit_distributed(config, workers=2, storage=str(storage), name="straight")

    record = tmp_path / "record"
    record.mkdir()
    loop = functools.partial(recording_loop, record_dir=str(record), pause_rank=1, pause_at=12)
    outcome: dict = {}
    killer = threading.Thread(target=lambda: outcome.update(_kill_when_paused(record)))
    killer.start()
    restarted = fit_distributed(
        config, workers=2, storage=str(storage), name="killed", max_failures=2, train_loop=loop
    )
    killer.join()
    assert "pid" in outcome, outcome

    starts = read_records(record, "start")
    # First attempt: two fresh workers; after the kill, two new processes that
    # resumed from a checkpoint (global step 10 here: the last one before step 12).
    assert len(starts) == 4
    first = [s for s in starts if s["data"]["checkpoint"] is None]
    again = [s for s in starts if s["data"]["checkpoint"] is not None]
    assert sorted(s["rank"] for s in first) == [0, 1]
    assert sorted(s["rank"] for s in again) == [0, 1]
    assert outcome["pid"] in {s["pid"] for s in first}
    assert not {s["pid"] for s in again} & {s["pid"] for s in first}
    resumed_from = {s["data"]["checkpoint"] for s in again}
    assert resumed_from <= {"step_0000006", "step_0000010"}, resumed_from

    for key in ("target_acc", "target_acc_rgb", "target_acc_flow", "pl_acc", "pl_coverage", "snd"):
        a, b = straight[key], restarted[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6), key
    assert restarted["final"] == straight["final"]
    metrics_straight = pd.read_parquet(storage / "straight" / "metrics.parquet")
    metrics_killed = pd.read_parquet(storage / "killed" / "metrics.parquet")
    # The history in the checkpoint makes the restarted run's table whole: no gap, no repeat.
    assert list(metrics_killed.global_step) == [2, 4, 6, 8, 10, 12, 14]
    _same_rows(_comparable(metrics_straight), _comparable(metrics_killed))
