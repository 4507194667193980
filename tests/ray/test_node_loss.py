"""Losing a node under a study, on a real multi-node Ray on this machine (slow).

``ray.cluster_utils.Cluster``: a head with no CPUs and worker nodes of one CPU
each (separate raylets). ``remove_node(node, allow_graceful=False)`` kills a
node's raylet and its workers, as a reclaimed spot instance does. The study's
driver runs in this process, joined to the cluster, in a thread.
"""

from __future__ import annotations

import os
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
    keys.setdefault("search", {"lambda": [1.0, 2.0]})
    keys.setdefault("seeds", 2)
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
            "settings": keys.pop("settings", settings),
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


def _checkpoints(run_dir) -> list[str]:
    root = run_dir / "checkpoints"
    return (
        sorted(p.name for p in root.iterdir() if (p / "state.pt").exists()) if root.is_dir() else []
    )


def test_a_node_lost_under_a_two_worker_run_restarts_it_from_its_newest_checkpoint(
    tiny_store, tmp_path
):
    """`cmcl train --workers 2 --address ...` on the cluster, a node killed after the run's
    second checkpoint and one added back 70 s later (Ray Train's worker group waits a minute
    and tries again): the run continues from its newest checkpoint, not Ray's older one,
    and the terminal gets one line per event, no traceback."""
    import subprocess
    import sys

    from conftest import ROOT

    settings = {
        "train.warmup_steps": 20,
        "train.steps": 2400,
        "train.eval_every": 100,
        "train.checkpoint_every": 300,
        "train.lr_step": 1200,
        "model.dropout": 0.0,
    }
    overrides = tiny_overrides(tiny_store, **settings)
    args = ["--features", str(tiny_store), "--method", "cmco", "--workers", "2"]
    for key, value in overrides.items():
        if key not in ("benchmark", "pair", "data.features"):
            args += ["--set", f"{key}={value}"]
    storage = tmp_path / "storage"
    with private_cluster(nodes=2, cpus_per_node=1) as cluster:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": cluster.address}

        def train(name: str) -> subprocess.Popen:
            command = [sys.executable, "-m", "cmcl.cli", "train", *args]
            command += ["--address", cluster.address, "--out", str(storage / name)]
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

        assert train("straight").wait(600) == 0, (tmp_path / "straight.log").read_text()[-3000:]
        lost = train("lost")
        run_dir = storage / "lost"
        _wait_for(lambda: len(_checkpoints(run_dir)) >= 2, 300, "two checkpoints")
        newest = _checkpoints(run_dir)[-1]
        cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
        time.sleep(70)
        cluster.add_node(num_cpus=1)
        assert lost.wait(600) == 0, (tmp_path / "lost.log").read_text()[-3000:]
    text = (tmp_path / "lost.log").read_text()
    step = int(newest.removeprefix("step_"))
    assert f"[cmcl] resuming at step {step} of 2420" in text, text[-3000:]
    assert "a Ray Train worker failed" in text and "waiting for the cluster to hold 2" in text
    assert "Traceback" not in text and "[state-dump]" not in text, text[-3000:]
    history = pd.read_parquet(run_dir / "metrics.parquet")
    reference = pd.read_parquet(storage / "straight" / "metrics.parquet")
    columns = ["global_step", "target_acc", "target_acc_rgb", "target_acc_flow"]
    pd.testing.assert_frame_equal(history[columns], reference[columns])
    print(f"two-worker run: newest checkpoint at the kill {newest}; what the user saw:\n{text}")


def test_a_study_on_a_cluster_too_small_says_so_and_goes_on_when_a_node_joins(
    tiny_store, tmp_path, capfd
):
    spec = _spec(
        tiny_store,
        "small",
        search={"lambda": [1.0]},
        seeds=1,
        resources={"workers": 2},
        settings={
            k: v for k, v in tiny_overrides(tiny_store).items() if k not in ("benchmark", "pair")
        },
    )
    with private_cluster(nodes=1, cpus_per_node=1) as cluster:
        study = create_study_dir(spec, storage=tmp_path)
        outcome: dict = {}
        thread = _drive_in_thread(study.location, outcome)
        seen = []

        def said_it_waits() -> bool:
            seen.append(capfd.readouterr().err)
            return "waiting: no run can start" in "".join(seen)

        _wait_for(said_it_waits, 90, "the driver to say what it waits for")
        cluster.add_node(num_cpus=1)
        thread.join(300)
        assert not thread.is_alive() and "error" not in outcome, outcome
    seen.append(capfd.readouterr().err)
    err = "".join(seen)
    assert "each run needs 2 CPU (2 workers), the cluster has 1 CPU, 0 GPU on 2 node(s)" in err
    assert "the cluster changed: 1 run(s) at once" in err
    (trial,) = study.read_state().trials.values()
    assert trial.state == "done"
