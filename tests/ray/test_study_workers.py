"""Trials whose runs use two Ray Train workers, with ASHA stopping some of them.

shared/RAY_NOTES.md: when ASHA stops a trial that runs a TorchTrainer, the
workers' placement group leaks unless Ray's State API is up (ray[default] with
the dashboard); two leaks and the sweep hangs. run_study starts its private
Ray with the dashboard for such studies; this test starts one the same way
and checks that the sweep finishes, no placement group is left behind, and a
stopped trial's training really stops (multi-worker trials do not reuse Tune's
actors: a reused actor kept the stopped trial's TorchTrainer running).
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import tiny_overrides

from cmcl.study.directory import create_study_dir
from cmcl.study.records import read_trial_records
from cmcl.study.spec import parse_spec

pytestmark = pytest.mark.slow


def _live_groups() -> list:
    import ray

    return [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]


def test_two_worker_trials_stopped_by_asha_do_not_leak_or_hang(tiny_store, tmp_path):
    import ray

    from cmcl.ray.study import needs_state_api, run_study

    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-cmcl-study-tests")
    settings = {
        k: v
        for k, v in tiny_overrides(
            tiny_store, **{"train.warmup_steps": 2, "train.steps": 12}
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
            "search": {"train.lr": {"low": 1e-5, "high": 0.3, "log": True}},
            "searcher": "optuna",
            "optuna": {"seed": 3, "n_startup_trials": 4},
            "trials": 4,
            "scheduler": {"name": "asha", "grace_period": 1},
            "resources": {"workers": 2},
        }
    )
    assert needs_state_api(spec)  # run_study's own private Ray would start the dashboard
    path = create_study_dir(spec, storage=tmp_path)
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    try:
        run_study(path, echo=False)
        # A stopped trial's group is removed through the State API within seconds.
        deadline = time.time() + 60
        while time.time() < deadline and _live_groups():
            time.sleep(1)
        assert _live_groups() == []
    finally:
        ray.shutdown()
    records = read_trial_records(path)
    states = sorted(r["state"] for r in records)
    assert len(records) == 4 and "stopped" in states and "done" in states, states
    done = next(r for r in records if r["state"] == "done")
    assert (path / "runs" / done["runs"][0] / "summary.json").exists()
    # A stopped trial's training ends with it. With Tune's actor reuse it did not:
    # the stopped trial's TorchTrainer trained to the end in the cached actor
    # (summary.json written), holding its workers and placement group meanwhile.
    for record in records:
        if record["state"] == "stopped":
            run = path / "runs" / record["runs"][0]
            assert not (run / "summary.json").exists(), f"{run.name} trained on after its stop"
