"""Slow study tests on a real Ray: Optuna over every pair, ASHA pruning in Optuna, a failing
run among parallel runs, SIGKILL/SIGINT of the driver + resume, two drivers on one study."""

from __future__ import annotations

import contextlib
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

from cmcl.results import RESULTS_DIR, SUMMARIES_DIR, read_dataset
from cmcl.study.directory import StudyDir, create_study_dir
from cmcl.study.naming import JOURNAL_FILE
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


def journal_trials(study: StudyDir):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study.path / JOURNAL_FILE))
    )
    name = study.read_meta()["optuna_study"]
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _evaluations(study: StudyDir) -> pd.DataFrame:
    frame = read_dataset(study.store, RESULTS_DIR).to_pandas()
    return frame.sort_values(["run_id", "global_step"]).reset_index(drop=True)


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
    study = create_study_dir(spec, storage=tmp_path)
    run_study(study.location, echo=False)
    assert study.read_meta()["resolved"]["runs_at_once"] == 2

    trials = study.read_state().trials
    assert len(trials) == 4 and {t.state for t in trials.values()} == {"done"}
    optuna_trials = {f"t{t.number:04d}": t for t in journal_trials(study)}
    assert [t.state.name for t in optuna_trials.values()] == ["COMPLETE"] * 4
    # Optuna calls the parameters what the study file calls them.
    assert all(set(t.params) == {"lambda", "T"} for t in optuna_trials.values())
    assert len({(t.params["lambda"], t.params["T"]) for t in optuna_trials.values()}) == 4
    evaluations = _evaluations(study)
    for trial_id, record in trials.items():
        assert optuna_trials[trial_id].value == pytest.approx(record.value)
        assert optuna_trials[trial_id].user_attrs["cmcl_trial"] == trial_id
        assert set(record.per_pair) == {"D2-D1", "D3-D1"}
        assert record.value == pytest.approx(sum(record.per_pair.values()) / 2)
        for run in record.runs:
            assert (evaluations["run_id"] == run.run_id).sum() == 7


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
    study = create_study_dir(spec, storage=tmp_path)
    run_study(study.location, echo=False)
    trials = study.read_state().trials
    stopped = {t for t, r in trials.items() if r.state == "stopped"}
    done = {t for t, r in trials.items() if r.state == "done"}
    assert stopped and done and len(stopped | done) == 6
    for tid in stopped:
        assert trials[tid].value is None and trials[tid].adapt_evals < 8
        assert "stopped early by ASHA" in trials[tid].reason
    states = {f"t{t.number:04d}": t.state.name for t in journal_trials(study)}
    assert {t: states[t] for t in stopped} == dict.fromkeys(stopped, "PRUNED")
    assert {t: states[t] for t in done} == dict.fromkeys(done, "COMPLETE")


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
            "settings": tiny_settings(
                tiny_store, **{"train.warmup_steps": 40, "train.steps": 4000}
            ),
            "objective": "mean",
        }
    )
    missing = {"synthetic-ucf-hmdb": {"data.features": str(tmp_path / "missing")}}
    study = create_study_dir(spec, storage=tmp_path, overrides=missing)
    # Its only trial errors: the study as a whole failed.
    with pytest.raises(StudyFailedError, match="no trial finished"):
        run_study(study.location, echo=False)
    (trial,) = study.read_state().trials.values()
    assert trial.state == "errored"
    epic, ucf = trial.runs
    assert trial.reason.startswith(f"run {ucf.run_id} failed: FileNotFoundError")
    # The D2-D1 run was stopped with its trial, long before its 4040 steps; its slot is free.
    assert epic.state == "cancelled" and epic.evaluations < 100
    deadline = time.time() + 30
    while time.time() < deadline and ray.available_resources().get("CPU") != 2.0:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU") == 2.0


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


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_TMPDIR": RAY_TMP,
        "RAY_AUTH_MODE": "disabled",
    }


def _driver(args, tmp_path, log):
    return subprocess.Popen(
        [sys.executable, "-m", "cmcl.cli", "study", *args, "--num-cpus", "2"],
        cwd=tmp_path,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _trials(path):
    state = StudyDir(path).read_state() if (path / "state.json").exists() else None
    return {} if state is None else state.trials


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
            }
        )
    )
    path = tmp_path / "studies_out" / "kill"
    with open(tmp_path / "first.log", "w") as log:
        driver = _driver(["run", str(study_file)], tmp_path, log)
        try:

            def one_saved_one_mid_run():
                trials = _trials(path)
                saved = [t for t in trials.values() if t.state == "done" and t.runs[0].saved]
                mid = [t for t in trials.values() if 8 <= t.runs[0].evaluations < 50]
                return saved and mid

            _wait_for(one_saved_one_mid_run, 400, "a saved trial and a run past a checkpoint")
            if stop == "SIGINT":  # Ctrl-C: the driver saves its records and results, then ends
                driver.send_signal(signal.SIGINT)
                driver.wait(timeout=120)
        finally:
            _kill_tree(driver)
    study = StudyDir(path)
    before = dict(_trials(path))
    saved = {t: r for t, r in before.items() if r.state == "done" and r.runs[0].saved}
    interrupted = [t for t, r in before.items() if not r.ended]
    kept = _evaluations(study)
    kept = kept[kept["trial_id"].isin(saved)].drop(columns="elapsed_s").reset_index(drop=True)

    with open(tmp_path / "resume.log", "w") as log:
        resume = _driver(["resume", str(path)], tmp_path, log)
        try:
            assert resume.wait(timeout=500) == 0, (tmp_path / "resume.log").read_text()[-3000:]
        finally:
            _kill_tree(resume)
    log_text = (tmp_path / "resume.log").read_text()
    after = _trials(path)
    assert len(after) == 5 and {r.state for r in after.values()} == {"done"}
    assert set(before) <= set(after)
    evaluations = _evaluations(study)
    assert not evaluations.duplicated(["run_id", "global_step"]).any()
    # Saved trials were kept, not run again: the same rows, the same values.
    again = evaluations[evaluations["trial_id"].isin(saved)].drop(columns="elapsed_s")
    pd.testing.assert_frame_equal(kept, again.reset_index(drop=True))
    for tid in saved:
        assert after[tid].value == saved[tid].value and after[tid].runs[0].attempts == 1
    for tid in interrupted:
        run = after[tid].runs[0]
        assert (evaluations["run_id"] == run.run_id).sum() == 64
        # It continued from a checkpoint instead of restarting.
        if before[tid].runs[0].evaluations >= 8:
            assert run.resumed_from and run.resumed_from >= 40
            assert f"run {run.run_id} continues from step {run.resumed_from}" in log_text
    trials = journal_trials(study)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 5
    summaries = read_dataset(study.store, SUMMARIES_DIR, columns=["run_id"]).to_pandas()
    assert sorted(summaries["run_id"]) == sorted(r.runs[0].run_id for r in after.values())


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
            }
        )
    )
    return file


def _rows_by_lambda(path):
    """Each run's rows without what names or times it (paths differ between studies)."""
    frame = _evaluations(StudyDir(path))
    drop = ["elapsed_s", "cfg.out", "cfg.data.features"]
    frame = frame.drop(columns=[c for c in drop if c in frame])
    return {lam: part.reset_index(drop=True) for lam, part in frame.groupby("cfg.method.lam")}


def test_a_second_driver_is_refused_while_the_first_trains(tiny_store, tmp_path):
    file = _two_trial_study(tmp_path, tiny_store)
    path = tmp_path / "studies_out" / "pair"
    with open(tmp_path / "first.log", "w") as log:
        first = _driver(["run", str(file)], tmp_path, log)
        try:
            _wait_for(
                lambda: any(t.runs[0].evaluations >= 2 for t in _trials(path).values()),
                300,
                "the first driver's runs to train",
            )
            second = {}
            for command in (["resume", str(path)], ["run", str(file)]):
                done = subprocess.run(
                    [sys.executable, "-m", "cmcl.cli", "study", *command, "--num-cpus", "2"],
                    cwd=tmp_path,
                    env=_env(),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                second[command[0]] = done
            status = subprocess.run(
                [sys.executable, "-m", "cmcl.cli", "study", "status", str(path)],
                env=_env(),
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
    trials = _trials(path)
    assert len(trials) == 2 and {r.state for r in trials.values()} == {"done"}
    assert not list(path.glob("stale-*")) and not (path / "driver.lease").exists()

    # The same study, undisturbed, in another storage: the same rows, to the bit.
    with open(tmp_path / "alone.log", "w") as log:
        alone = _driver(["run", str(file), "--storage", "alone"], tmp_path, log)
        try:
            assert alone.wait(timeout=500) == 0, (tmp_path / "alone.log").read_text()[-3000:]
        finally:
            _kill_tree(alone)
    disturbed, undisturbed = _rows_by_lambda(path), _rows_by_lambda(tmp_path / "alone" / "pair")
    assert sorted(disturbed) == [1.0, 2.0] and sorted(undisturbed) == [1.0, 2.0]
    for lam, frame in undisturbed.items():
        assert len(frame) == 31
        pd.testing.assert_frame_equal(disturbed[lam], frame, check_exact=True)
