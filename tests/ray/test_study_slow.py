"""Slow study tests: Optuna over every pair, ASHA pruning, and SIGKILL of the driver + resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml
from conftest import ROOT, tiny_overrides

from cmcl.study.directory import create_study_dir
from cmcl.study.naming import JOURNAL_FILE, TUNE_DIR, results_file, run_dir
from cmcl.study.records import read_json, read_trial_records
from cmcl.study.spec import parse_spec

pytestmark = pytest.mark.slow
RAY_TMP = "/tmp/ray-cmcl-study-tests"


@pytest.fixture(scope="module")
def private_ray():
    import ray

    os.environ.setdefault("RAY_TMPDIR", RAY_TMP)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_settings(store, **extra):
    settings = tiny_overrides(store, **extra)
    return {k: v for k, v in settings.items() if k not in ("benchmark", "pair")}


def journal_trials(path, name):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path / JOURNAL_FILE))
    )
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def test_optuna_study_over_every_pair(private_ray, tiny_store, tmp_path):
    from cmcl.ray.study import run_study

    spec = parse_spec(
        {
            "name": "hpo",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1", "D3-D1"],
            "methods": ["cmco"],
            "settings": tiny_settings(tiny_store),
            "search": {"lambda": {"low": 0.5, "high": 2.0}, "T": {"values": [0.6, 0.8]}},
            "searcher": "optuna",
            "trials": 4,
            "objective": "mean",
            "metric": "snd",
        }
    )
    path = create_study_dir(spec, storage=tmp_path)
    run_study(path, echo=False)
    meta = read_json(path / "study.json")
    assert meta["resolved"]["parallel_runs"] == 2  # both pairs at once, as Ray tasks

    records = read_trial_records(path)
    assert len(records) == 4 and {r["state"] for r in records} == {"done"}
    trials = journal_trials(path, "hpo")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({(t.params["method.lam"], t.params["method.threshold"]) for t in trials}) == 4
    by_tune_id = {t.user_attrs["tune_trial_id"]: t for t in trials}
    for record in records:
        trial = by_tune_id[record["trial_id"]]
        assert trial.value == pytest.approx(record["value"])
        assert set(record["per_pair"]) == {"D2-D1", "D3-D1"}
        assert record["value"] == pytest.approx(sum(record["per_pair"].values()) / 2)
        assert sorted(trial.intermediate_values) == list(range(1, 8))  # one per round
        for run in record["runs"]:
            assert len(pd.read_parquet(results_file(path, run))) == 7


def test_asha_stops_poor_trials_and_optuna_sees_them_pruned(private_ray, tiny_store, tmp_path):
    from cmcl.ray.study import run_study

    spec = parse_spec(
        {
            "name": "asha",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["source_only"],
            "settings": tiny_settings(tiny_store, **{"train.warmup_steps": 2, "train.steps": 16}),
            "search": {"train.lr": {"low": 1e-5, "high": 0.3, "log": True}},
            "searcher": "optuna",
            "optuna": {"seed": 3, "n_startup_trials": 6},
            "trials": 6,
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
            "max_concurrent": 1,
        }
    )
    path = create_study_dir(spec, storage=tmp_path)
    run_study(path, echo=False)
    records = {r["trial_id"]: r for r in read_trial_records(path)}
    stopped = {t for t, r in records.items() if r["state"] == "stopped"}
    done = {t for t, r in records.items() if r["state"] == "done"}
    assert stopped and done and len(stopped | done) == 6
    for tid in stopped:
        assert records[tid]["value"] is None and records[tid]["adapt_evals"] < 8
        assert "stopped early by ASHA" in records[tid]["reason"]
    states = {t.user_attrs["tune_trial_id"]: t.state.name for t in journal_trials(path, "asha")}
    assert {t: states[t] for t in stopped} == dict.fromkeys(stopped, "PRUNED")
    assert {t: states[t] for t in done} == dict.fromkeys(done, "COMPLETE")


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the driver, then the rest of the process group it leads (its private Ray).

    The driver is started in a session of its own, so the group holds exactly
    the processes it started.
    """
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    time.sleep(1.0)


def _driver(args, tmp_path, log):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_TMPDIR": RAY_TMP,
        "RAY_AUTH_MODE": "disabled",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cmcl.cli", "study", *args, "--num-cpus", "2"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGINT"])
def test_driver_killed_or_interrupted_then_resume(stop, tiny_store, tmp_path):
    settings = tiny_settings(
        tiny_store,
        **{
            "train.warmup_steps": 40,
            "train.steps": 600,
            "train.eval_every": 10,
            "train.checkpoint_every": 40,
        },
    )
    study_file = tmp_path / "kill.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "kill",
                "benchmark": "synthetic-epic",
                "pairs": ["D2-D1"],
                "methods": ["cmco"],
                "settings": settings,
                "search": {"lambda": {"low": 0.5, "high": 2.0}, "T": {"low": 0.6, "high": 0.9}},
                "searcher": "optuna",
                "trials": 5,
                "max_concurrent": 2,
            }
        )
    )
    path = tmp_path / "studies_out" / "kill"
    with open(tmp_path / "first.log", "w") as log:
        driver = _driver(["run", str(study_file)], tmp_path, log)
        try:

            def one_done_one_mid_run():
                records = read_trial_records(path) if path.exists() else []
                # Done for a while: Tune's snapshot (every 2 s) has seen it finish.
                done = [
                    r for r in records if r["state"] == "done" and r["updated"] < time.time() - 3
                ]
                mid = [r for r in records if r["state"] == "running" and 8 <= r["evaluations"] < 50]
                return done and mid

            _wait_for(one_done_one_mid_run, 400, "a finished trial and one past a checkpoint")
            if stop == "SIGINT":  # Ctrl-C: Tune stops the trials and saves its state
                driver.send_signal(signal.SIGINT)
                driver.wait(timeout=120)
        finally:
            _kill_tree(driver)
    before = {r["trial_id"]: r for r in read_trial_records(path)}
    finished = {t: r for t, r in before.items() if r["state"] == "done"}
    interrupted = [t for t, r in before.items() if r["state"] == "running"]
    kept = {
        t: pd.read_parquet(results_file(path, r["runs"][0])).drop(columns="elapsed_s")
        for t, r in finished.items()
    }
    mtimes = {t: results_file(path, r["runs"][0]).stat().st_mtime for t, r in finished.items()}

    with open(tmp_path / "resume.log", "w") as log:
        resume = _driver(["resume", str(path)], tmp_path, log)
        try:
            assert resume.wait(timeout=500) == 0, (tmp_path / "resume.log").read_text()[-3000:]
        finally:
            _kill_tree(resume)

    after = {r["trial_id"]: r for r in read_trial_records(path)}
    assert len(after) == 5 and {r["state"] for r in after.values()} == {"done"}
    assert set(before) <= set(after)
    for tid, frame in kept.items():
        run = after[tid]["runs"][0]
        # Kept, not run again: the same rows, the file untouched.
        pd.testing.assert_frame_equal(
            frame, pd.read_parquet(results_file(path, run)).drop(columns="elapsed_s")
        )
        assert results_file(path, run).stat().st_mtime == mtimes[tid]
        assert after[tid]["value"] == finished[tid]["value"]
    for tid in interrupted:
        run = after[tid]["runs"][0]
        frame = pd.read_parquet(results_file(path, run))
        assert len(frame) == 64 and not frame.duplicated(["stage", "step"]).any()
        # It continued from a checkpoint (the engine records resume=auto) instead of restarting.
        assert json.loads((run_dir(path, run) / "config.json").read_text())["resume"] == "auto"
    trials = journal_trials(path, "kill")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert sorted(t.user_attrs["tune_trial_id"] for t in trials) == sorted(after)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 5
    assert len([p for p in (path / TUNE_DIR).iterdir() if p.is_dir()]) == 5


def test_a_failing_run_among_parallel_runs_errors_the_trial(private_ray, tiny_store, tmp_path):
    """Objective mean over two benchmarks, runs side by side; the U-H run has no data."""
    import ray

    from cmcl.ray.study import StudyFailedError, run_study

    spec = parse_spec(
        {
            "name": "parallel-failure",
            "benchmark": ["synthetic-epic", "synthetic-ucf-hmdb"],
            "pairs": ["D2-D1", "U-H"],
            "methods": ["source_only"],
            "settings": tiny_settings(tiny_store, **{"train.warmup_steps": 40, "train.steps": 200}),
            "objective": "mean",
        }
    )
    missing = {"synthetic-ucf-hmdb": {"data.features": str(tmp_path / "missing")}}
    path = create_study_dir(spec, storage=tmp_path, overrides=missing)
    # Its only trial errors: the study as a whole failed.
    with pytest.raises(StudyFailedError, match="no trial finished"):
        run_study(path, echo=False)
    (record,) = read_trial_records(path)
    assert record["state"] == "errored"
    assert record["reason"].startswith(f"run {record['runs'][1]} failed: FileNotFoundError")
    assert read_json(path / "study.json")["resolved"]["parallel_runs"] == 2
    # The D2-D1 run was cancelled with its trial; its resources come back.
    deadline = time.time() + 30
    while time.time() < deadline and ray.available_resources().get("CPU") != 2.0:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU") == 2.0
    time.sleep(5)
    assert not (run_dir(path, record["runs"][0]) / "summary.json").exists()


def _two_trial_study(tmp_path, tiny_store):
    settings = tiny_settings(
        tiny_store,
        **{
            "train.warmup_steps": 40,
            "train.steps": 1200,
            "train.eval_every": 40,
            "train.checkpoint_every": 80,
        },
    )
    file = tmp_path / "pair.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "name": "pair",
                "benchmark": "synthetic-epic",
                "pairs": ["D2-D1"],
                "methods": ["cmco"],
                "settings": settings,
                "search": {"lambda": [1.0, 2.0]},
                "max_concurrent": 2,
            }
        )
    )
    return file


def _results_by_lambda(path):
    """Each run's rows without what names the run (ids differ between studies) or times it."""
    frames = {}
    for record in read_trial_records(path):
        (run,) = record["runs"]
        frame = pd.read_parquet(results_file(path, run))
        drop = ["trial_id", "run_id", "elapsed_s", *(c for c in frame if c.startswith("cfg.out"))]
        frames[record["params"]["method.lam"]] = frame.drop(columns=drop)
    return frames


def test_a_second_driver_is_refused_while_the_first_trains(tiny_store, tmp_path):
    file = _two_trial_study(tmp_path, tiny_store)
    path = tmp_path / "studies_out" / "pair"
    with open(tmp_path / "first.log", "w") as log:
        first = _driver(["run", str(file)], tmp_path, log)
        try:
            _wait_for(
                lambda: any(
                    r["state"] == "running" and r["evaluations"] >= 2
                    for r in (read_trial_records(path) if path.exists() else [])
                ),
                300,
                "the first driver's trials to train",
            )
            second = {}
            for command in (["resume", str(path)], ["run", str(file)]):
                done = subprocess.run(
                    [sys.executable, "-m", "cmcl.cli", "study", *command, "--num-cpus", "2"],
                    cwd=tmp_path,
                    env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": RAY_TMP},
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                second[command[0]] = done
            status = subprocess.run(
                [sys.executable, "-m", "cmcl.cli", "study", "status", str(path)],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert first.poll() is None, "the first driver ended before the second was tried"
            assert first.wait(timeout=500) == 0, (tmp_path / "first.log").read_text()[-3000:]
        finally:
            _kill_tree(first)
    for command, done in second.items():
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert (
            f"Error: {path} is being run by another driver (pid {first.pid} on " in done.stderr
        ), done.stderr
    assert status.returncode == 0 and f"driver: running (pid {first.pid} on" in status.stdout
    records = read_trial_records(path)
    assert len(records) == 2 and {r["state"] for r in records} == {"done"}
    assert len(list((path / "results").iterdir())) == 2
    assert not list(path.glob("stale-*")) and not (path / "driver.lease").exists()

    # The same study, undisturbed, in another storage: the same rows, to the bit.
    with open(tmp_path / "alone.log", "w") as log:
        alone = _driver(["run", str(file), "--storage", "alone"], tmp_path, log)
        try:
            assert alone.wait(timeout=500) == 0, (tmp_path / "alone.log").read_text()[-3000:]
        finally:
            _kill_tree(alone)
    disturbed, undisturbed = (
        _results_by_lambda(path),
        _results_by_lambda(tmp_path / "alone" / "pair"),
    )
    assert sorted(disturbed) == [1.0, 2.0] and sorted(undisturbed) == [1.0, 2.0]
    for lam, frame in undisturbed.items():
        assert len(frame) == 31
        pd.testing.assert_frame_equal(disturbed[lam], frame, check_exact=True)
