"""Losing a node under a study, on a real multi-node Ray on this machine (slow).

``ray.cluster_utils.Cluster``: a head with no CPUs and worker nodes of one CPU
each (separate raylets). ``remove_node(node, allow_graceful=False)`` kills a
node's raylet and its workers, as a reclaimed spot instance does. The study's
driver runs in this process, joined to the cluster, in a thread.
"""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from conftest import tiny_overrides
from ray_helpers import private_cluster

from cmcl.results import RESULTS_DIR, read_dataset
from cmcl.study.directory import StudyDir, create_study_dir
from cmcl.study.spec import parse_spec

pytestmark = pytest.mark.slow


def _spec(store, name: str, **keys):
    settings = {
        k: v
        for k, v in tiny_overrides(
            store,
            **{
                "train.warmup_steps": 20,
                "train.steps": 4000,
                "train.eval_every": 100,
                "train.checkpoint_every": 400,
                "train.lr_step": 2000,
            },
        ).items()
        if k not in ("benchmark", "pair")
    }
    return parse_spec(
        {
            "name": name,
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["source_only"],
            "settings": settings,
            "search": {"lambda": [1.0, 2.0]},
            "seeds": 2,
            **keys,
        }
    )


def _drive_in_thread(location: str, outcome: dict) -> threading.Thread:
    from cmcl.ray.study import run_study

    def drive() -> None:
        try:
            outcome["location"] = run_study(location, address="auto", echo=True)
        except BaseException as error:  # reported by the test
            outcome["error"] = error

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    return thread


def _evaluations(location: str) -> pd.DataFrame:
    frame = read_dataset(StudyDir(location).store, RESULTS_DIR).to_pandas()
    keep = ["run_id", "stage", "step", "global_step", "target_acc", "snd", "source_val_acc"]
    return frame[keep].sort_values(["run_id", "global_step"]).reset_index(drop=True)


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_node_lost_under_a_study_of_single_worker_runs(tiny_store, tmp_path, capfd):
    import ray

    spec = _spec(tiny_store, "lost")
    with private_cluster(nodes=2, cpus_per_node=1) as cluster:
        plain = create_study_dir(_spec(tiny_store, "plain"), storage=tmp_path)
        outcome: dict = {}
        started = time.time()
        thread = _drive_in_thread(plain.location, outcome)
        thread.join(600)
        plain_wall = time.time() - started
        assert "error" not in outcome, outcome

        study = create_study_dir(spec, storage=tmp_path)
        started = time.time()
        thread = _drive_in_thread(study.location, outcome)

        def a_run_past_a_checkpoint():
            state = study.read_state()
            return state is not None and any(
                r.state == "running" and r.evaluations >= 8
                for t in state.trials.values()
                for r in t.runs
            )

        _wait_for(a_run_past_a_checkpoint, 300, "a run past its first checkpoint")
        victim = next(n for n in cluster.worker_nodes)
        cluster.remove_node(victim, allow_graceful=False)
        killed_at = time.time()
        time.sleep(15)
        cluster.add_node(num_cpus=1)
        thread.join(600)
        wall = time.time() - started
        assert not thread.is_alive() and "error" not in outcome, outcome
    out, err = capfd.readouterr()
    state = study.read_state()
    runs = [r for t in state.trials.values() for r in t.runs]
    assert {r.state for r in runs} == {"done"} and len(runs) == 4
    lost = [r for r in runs if r.node_failures]
    assert lost, [(r.run_id, r.attempts) for r in runs]
    for run in lost:
        assert run.attempts == run.node_failures + 1
        assert run.resumed_from is not None and run.resumed_from >= 420
        assert f"run {run.run_id} lost (" in err
        assert f"run {run.run_id} continues from step {run.resumed_from}" in err
    # Every planned run once, with an uninterrupted study's evaluations.
    assert ray.is_initialized() is False
    pd.testing.assert_frame_equal(_evaluations(plain.location), _evaluations(study.location))
    # Quiet: no raylet state dump or worker traceback at the default verbosity.
    assert "[state-dump]" not in out + err and "Traceback" not in out + err
    print(
        f"node-loss study: {wall:.1f} s wall (uninterrupted: {plain_wall:.1f} s), node killed "
        f"{killed_at - started:.1f} s in; restarted runs from steps "
        f"{[r.resumed_from for r in lost]}"
    )
