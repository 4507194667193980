"""The study driver on a simulated cluster: slots, values, ASHA, lost runs, crashes, resume."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cmcl.filestore import FileStore
from cmcl.results import RESULTS_DIR, SUMMARIES_DIR, read_dataset
from cmcl.study.directory import create_study_dir, load_study_dir
from cmcl.study.driver import StudyDriver, StudyFailedError, StudyWaitTimeout
from cmcl.study.searchers import GridSource, OptunaSource
from cmcl.study.spec import parse_spec
from cmcl.study.status import format_status, study_status
from tests.study.sim_executor import SimExecutor, accuracy

TINY = {
    "train.warmup_steps": 2,
    "train.steps": 8,
    "train.eval_every": 2,
    "train.checkpoint_every": 100,
    "train.eval_last_k": 2,
}
"""Five evaluations per run: warm-up step 2, adaptation steps 2, 4, 6, 8."""


def _spec(**changes):
    data = {
        "name": "sim",
        "benchmark": "synthetic-epic",
        "pairs": ["D2-D1"],
        "methods": ["source_only", "cmco", "mmd"],
        "settings": dict(TINY),
        "seeds": 3,
        "searcher": "grid",
    }
    data.update(changes)
    return parse_spec(data, source="test")


def _drive(tmp_path, spec, sim, *, source=None, name=None, **options):
    storage = tmp_path / (name or "out")
    location = storage / spec.name
    if not location.exists():
        create_study_dir(spec, storage=storage)
    study, spec, meta = load_study_dir(location)
    source = source or GridSource(spec)
    driver = StudyDriver(
        study, spec, meta, executor=sim, source=source, clock=sim.clock, echo=False, **options
    )
    driver.run()
    return study, driver


def _evaluations(study) -> pd.DataFrame:
    data = read_dataset(study.store, RESULTS_DIR, columns=["run_id", "global_step", "target_acc"])
    return data.to_pandas().sort_values(["run_id", "global_step"]).reset_index(drop=True)


def _summaries(study) -> pd.DataFrame:
    data = read_dataset(study.store, SUMMARIES_DIR, columns=["run_id", "state", "target_acc"])
    return data.to_pandas().sort_values("run_id").reset_index(drop=True)


@pytest.mark.parametrize(
    ("slots", "pairs"), [(2, ["D2-D1"]), (3, ["D2-D1"]), (8, ["D2-D1", "D3-D1"])]
)
def test_runs_fill_every_slot_while_any_run_waits(tmp_path, slots, pairs):
    spec = _spec(pairs=pairs)
    sim = SimExecutor(slots)
    study, _ = _drive(tmp_path, spec, sim)
    runs = 9 * len(pairs)
    assert len(sim.started) == runs
    # Until the last run started, every slot was busy at every tick: no slot waited.
    last_start = max(sim.start_ticks)
    assert all(busy == slots for busy in sim.busy[:last_start])
    # Six ticks per run (start + five evaluations): equal runs packed into the slots.
    assert len(sim.busy) == math.ceil(runs / slots) * 6
    summaries = _summaries(study)
    assert len(summaries) == runs and set(summaries["state"]) == {"done"}
    evaluations = _evaluations(study)
    assert len(evaluations) == 5 * runs
    assert not evaluations.duplicated(["run_id", "global_step"]).any()


def test_a_configurations_value_is_the_mean_of_its_runs_summaries(tmp_path):
    spec = _spec(methods=["cmco"], search={"lambda": [0.5, 1.0]})
    study, driver = _drive(tmp_path, spec, SimExecutor(2))
    summaries = _summaries(study)
    for trial in driver.state.trials.values():
        assert trial.state == "done"
        mine = summaries[summaries["run_id"].str.startswith(trial.trial_id)]
        assert len(mine) == 3
        assert trial.value == pytest.approx(mine["target_acc"].mean())
        assert trial.names == {"method.lam": "lambda"}
    status = study_status(study)
    assert status.counts["done"] == 2 and status.runs["done"] == 6
    assert "lambda=1" in format_status(status)


def test_costly_runs_start_first(tmp_path):
    sim = SimExecutor(1)
    _drive(tmp_path, _spec(), sim)
    methods = [run.split("-")[0] for run in sim.started]
    # cmco (grid index 1) first, then mmd (2), then source_only (0).
    assert methods[:3] == ["t0001"] * 3 and methods[-3:] == ["t0000"] * 3


def test_a_lost_run_restarts_from_its_checkpoint_and_equals_an_uninterrupted_one(tmp_path):
    spec = _spec(methods=["cmco"])
    plain, _ = _drive(tmp_path, spec, SimExecutor(2), name="plain")
    sim = SimExecutor(2, failures={"t0000-D2-D1-s1": ("node", 3)})
    lost, driver = _drive(tmp_path, spec, sim, name="lost")
    run = driver.state.trials["t0000"].run("t0000-D2-D1-s1")
    assert run.state == "done" and run.node_failures == 1 and run.attempts == 2
    assert run.resumed_from == 2
    assert sim.started.count("t0000-D2-D1-s1") == 2
    pd.testing.assert_frame_equal(_evaluations(plain), _evaluations(lost))
    pd.testing.assert_frame_equal(_summaries(plain), _summaries(lost))


def test_a_code_error_fails_its_trial_and_the_others_finish(tmp_path):
    spec = _spec(methods=["cmco"], search={"lambda": [0.5, 1.0]})
    sim = SimExecutor(2, failures={"t0000-D2-D1-s0": ("code", 2)})
    study, driver = _drive(tmp_path, spec, sim)
    failed, other = driver.state.trials["t0000"], driver.state.trials["t0001"]
    assert failed.state == "errored" and "SimCodeError: injected" in failed.reason
    assert failed.run("t0000-D2-D1-s0").cause == "code"
    assert other.state == "done"
    text = format_status(study_status(study))
    assert "failed run t0000-D2-D1-s0 (its code raised)" in text
    assert "--retry-errored" in text


def test_max_failures_retries_a_code_error(tmp_path):
    spec = _spec(methods=["cmco"], max_failures=1)
    sim = SimExecutor(2, failures={"t0000-D2-D1-s0": ("code", 2)})
    _, driver = _drive(tmp_path, spec, sim)
    run = driver.state.trials["t0000"].run("t0000-D2-D1-s0")
    assert run.state == "done" and run.code_failures == 1


def test_a_run_lost_more_often_than_allowed_fails_and_a_plain_resume_finishes_it(tmp_path):
    spec = _spec(methods=["cmco"], node_failures=0)
    sim = SimExecutor(2, failures={"t0000-D2-D1-s2": ("node", 2)})
    with pytest.raises(StudyFailedError, match="lost 1 times"):
        study, _ = _drive(tmp_path, spec, sim)
    study = load_study_dir(tmp_path / "out" / "sim")[0]
    text = format_status(study_status(study))
    assert "lost to the infrastructure" in text and "--retry-errored" not in text
    _, driver = _drive(tmp_path, spec, SimExecutor(2))
    trial = driver.state.trials["t0000"]
    assert trial.state == "done" and {r.state for r in trial.runs} == {"done"}


class _Crash(SimExecutor):
    """Dies (as a SIGKILLed driver would, from the driver's view) at tick ``at``."""

    def __init__(self, slots: int, at: int):
        super().__init__(slots)
        self.at = at

    def poll(self, timeout):
        if self.tick == self.at:
            raise KeyboardInterrupt
        return super().poll(timeout)


@pytest.mark.parametrize("at", [3, 10, 16])
def test_a_driver_stopped_at_any_tick_resumes_with_every_run_once(tmp_path, at):
    spec = _spec(methods=["source_only", "cmco"])
    plain, _ = _drive(tmp_path, spec, SimExecutor(2), name="plain")
    with pytest.raises(KeyboardInterrupt):
        _drive(tmp_path, spec, _Crash(2, at), name="crash")
    resumed, driver = _drive(tmp_path, spec, SimExecutor(2), name="crash")
    assert driver.state.sessions == 2
    pd.testing.assert_frame_equal(_evaluations(plain), _evaluations(resumed))
    pd.testing.assert_frame_equal(_summaries(plain), _summaries(resumed))
    assert all(t.state == "done" for t in driver.state.trials.values())


def test_resume_with_lost_records_rebuilds_them_from_the_results(tmp_path):
    spec = _spec(methods=["source_only", "cmco"])
    with pytest.raises(KeyboardInterrupt):
        _drive(tmp_path, spec, _Crash(2, 14))
    (tmp_path / "out" / "sim" / "state.json").unlink()
    sim = SimExecutor(2)
    resumed, driver = _drive(tmp_path, spec, sim)
    assert len(_summaries(resumed)) == 6
    # Runs whose results were saved did not run again.
    assert len(sim.started) < 6
    assert all(t.state == "done" for t in driver.state.trials.values())


def test_asha_stops_poor_configurations_at_a_rung(tmp_path):
    spec = _spec(
        methods=["cmco"],
        seeds=1,
        search={"lambda": [1.5, 1.0, 0.5, 0.0]},
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    study, driver = _drive(tmp_path, spec, SimExecutor(1))
    states = {t.params["method.lam"]: t.state for t in driver.state.trials.values()}
    assert states[1.5] == "done"
    assert states[0.0] == "stopped"
    stopped = [t for t in driver.state.trials.values() if t.state == "stopped"]
    assert all("stopped early by ASHA" in t.reason for t in stopped)
    summaries = _summaries(study)
    assert set(summaries["state"]) == {"done", "stopped"}


def test_optuna_trials_carry_the_files_names_and_are_told_once(tmp_path):
    import optuna

    spec = _spec(
        methods=["cmco"],
        searcher="optuna",
        trials=4,
        seeds=1,
        search={"lambda": {"low": 0.0, "high": 2.0}},
        optuna={"seed": 3, "n_startup_trials": 2},
    )
    storage = tmp_path / "out"
    create_study_dir(spec, storage=storage)
    _study, spec, meta = load_study_dir(storage / "sim")
    journal = str(tmp_path / "optuna.journal")
    source = OptunaSource(spec, storage=journal, study_name=meta["optuna_study"], concurrent=True)
    _drive(tmp_path, spec, SimExecutor(2), source=source)
    loaded = optuna.load_study(study_name=meta["optuna_study"], storage=source.study._storage)
    trials = loaded.get_trials()
    assert len(trials) == 4
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert all(set(t.params) == {"lambda"} for t in trials)
    for trial in trials:
        assert trial.value == pytest.approx(accuracy_of(trial.params["lambda"]))


def accuracy_of(lam: float) -> float:
    """The simulated summary: mean of the last two evaluations (indices 4 and 5), seed 0."""

    class _Job:
        seed = 0

        class config:
            class method:
                pass

    _Job.config.method.lam = lam
    return (accuracy(_Job, 4) + accuracy(_Job, 5)) / 2


class _NoSlots(SimExecutor):
    def capacity(self):
        capacity = super().capacity()
        return type(capacity)(runs=0, cluster="0 CPU on 1 node(s)", per_run="2 CPU (1 worker)")


def test_a_cluster_too_small_is_reported_and_times_out_when_asked(tmp_path, capsys):
    spec = _spec(methods=["cmco"], seeds=1, resources={"wait_timeout_s": 45})
    create_study_dir(spec, storage=tmp_path / "out")
    study, spec, meta = load_study_dir(tmp_path / "out" / "sim")
    sim = _NoSlots(0)
    driver = StudyDriver(
        study, spec, meta, executor=sim, source=GridSource(spec), clock=sim.clock, echo=True
    )
    with pytest.raises(StudyWaitTimeout, match="wait_timeout_s = 45 s"):
        driver.run()
    err = capsys.readouterr().err
    assert "waiting: no run can start" in err
    assert "each run needs 2 CPU (1 worker), the cluster has 0 CPU on 1 node(s)" in err
    assert err.count("waiting:") == 1


def test_results_read_as_one_table_with_pandas(tmp_path):
    study, _ = _drive(tmp_path, _spec(methods=["cmco"], seeds=1), SimExecutor(1))
    frame = pd.read_parquet(FileStore(study.location).local_path(RESULTS_DIR))
    assert len(frame) == 5 and frame["run_id"].nunique() == 1


def test_a_finished_study_needs_nothing_run_again(tmp_path):
    from cmcl.study.driver import nothing_to_run

    spec = _spec(methods=["cmco"], seeds=1, node_failures=0)
    sim = SimExecutor(1, failures={"t0000-D2-D1-s0": ("node", 2)})
    with pytest.raises(StudyFailedError):
        study, _ = _drive(tmp_path, spec, sim)
    study = load_study_dir(tmp_path / "out" / "sim")[0]
    # A run lost to the infrastructure: a plain resume has something to do.
    assert not nothing_to_run(study.read_state(), 1, retry_errored=False)
    _drive(tmp_path, spec, SimExecutor(1))
    assert nothing_to_run(study.read_state(), 1, retry_errored=False)
    assert not nothing_to_run(study.read_state(), 2, retry_errored=False)  # one trial short
