"""Runs of two Ray Train workers in a study, with ASHA stopping some of them.

A stopped multi-worker run writes its STOP marker and its workers stop after
their next evaluation, all at the same step; the run's task then returns, so
its Ray Train worker group and placement group end with it. The study
finishes, no placement group is left behind, and a stopped run's training
really stopped (no summary in its directory).
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import tiny_overrides

from cmcl.study.directory import create_study_dir
from cmcl.study.spec import parse_spec

pytestmark = pytest.mark.slow


def _live_groups() -> list:
    import ray

    return [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]


def test_two_worker_runs_stopped_by_asha_stop_and_leave_nothing_behind(tiny_store, tmp_path):
    import ray

    from cmcl.ray.study import run_study

    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-cmcl-study-tests")
    settings = {
        k: v
        for k, v in tiny_overrides(
            tiny_store, **{"train.warmup_steps": 2, "train.steps": 40, "train.eval_every": 4}
        ).items()
        if k not in ("benchmark", "pair")
    }
    spec = parse_spec(
        {
            "name": "workers",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["source_only"],
            "settings": settings,
            "search": {"train.lr": [0.3, 0.1, 1e-5, 1e-6]},
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
            "resources": {"workers": 2},
        }
    )
    study = create_study_dir(spec, storage=tmp_path)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_study(study.location, echo=False)
        deadline = time.time() + 60
        while time.time() < deadline and _live_groups():
            time.sleep(1)
        assert _live_groups() == []
    finally:
        ray.shutdown()
    trials = study.read_state().trials.values()
    states = sorted(t.state for t in trials)
    assert len(states) == 4 and "stopped" in states and "done" in states, states
    for trial in trials:
        run = trial.runs[0]
        files = study.path / "runs" / run.run_id
        if trial.state == "done":
            assert (files / "model.pt").exists() and run.evaluations == 11
        elif run.state == "stopped":
            # Its training ended with the stop: no summary, fewer evaluations than planned.
            assert not (files / "summary.json").exists(), f"{run.run_id} trained on"
            assert run.evaluations < 11
