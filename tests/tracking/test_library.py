"""The tracker-independent parts: names, parameters, idempotent steps, the failure path."""

from __future__ import annotations

import logging
import math
import sys
import time

import pytest

from cmcl.config import RunConfig
from cmcl.tracking import TrackingNotInstalledError, check_tracking, run_identity, run_params
from cmcl.tracking.base import Backend, StepFilter
from cmcl.tracking.identity import evaluation_values, loss_values, summary_values
from cmcl.tracking.reporter import TrackingReporter


def test_parameters_carry_the_users_names_and_the_whole_config():
    config = RunConfig.from_overrides({"lambda": 1.0, "T": 0.9, "tau": 0.2, "seed": 3})
    params = run_params(config.flat())
    assert params["lambda"] == 1.0 and params["T"] == 0.9 and params["tau"] == 0.2
    assert params["delta"] == config.method.delta
    assert (params["method"], params["pair"], params["seed"]) == ("cmco", "D2-D1", 3)
    assert {k: params[k] for k in config.flat()} == config.flat()
    # The cfg.* columns of a results table give the same parameters.
    assert run_params({f"cfg.{k}": v for k, v in config.flat().items()}) == params


def test_a_run_is_keyed_by_study_and_run_id_or_by_its_directory(tmp_path):
    study = run_identity(study="table6", trial_id="t1", run_id="t1-D2-D1-s0")
    assert study.run_key == "table6/t1-D2-D1-s0" and study.group == "table6"
    assert study.tags["cmcl.trial_id"] == "t1" and study.tags["cmcl.run_key"] == study.run_key
    bare = run_identity(run_dir=tmp_path / "run")
    assert bare.run_key == f"dir:{(tmp_path / 'run').resolve()}" and bare.group is None
    assert run_identity(run_dir=str(tmp_path / "run")).run_key == bare.run_key
    with pytest.raises(ValueError, match="stable key"):
        run_identity(study="table6")


def test_values_keep_finite_numbers_under_the_engines_names():
    row = {"stage": "adapt", "step": 2, "global_step": 8, "target_acc": 50.0, "pl_acc": math.nan}
    assert evaluation_values(row) == {"target_acc": 50.0}
    assert loss_values({"total": 1.5}) == {"train/loss_total": 1.5}
    summary = {"rule": "last9", "target_acc": 51.0, "best": {"target_acc": 52.0, "step": 6}}
    assert summary_values({**summary, "config": {"a": 1}}) == {
        "summary/target_acc": 51.0,
        "summary/best_target_acc": 52.0,
        "summary/best_step": 6.0,
    }


def test_the_step_filter_passes_each_point_once():
    steps = StepFilter({"a": 4, "b": 2})
    assert steps.new({"a": 1.0, "b": 1.0, "c": 1.0}, step=3) == {"b": 1.0, "c": 1.0}
    assert steps.new({"a": 1.0, "b": 1.0}, step=3) == {}
    assert steps.new({"a": 1.0}, step=5) == {"a": 1.0}
    floor = StepFilter({"*": 6})
    assert floor.new({"x": 1.0}, step=6) == {} and floor.new({"x": 1.0}, step=7) == {"x": 1.0}


@pytest.mark.parametrize("name", ["mlflow", "wandb", "tensorboard"])
def test_a_missing_client_is_an_error_naming_the_extra(monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # what an absent package looks like
    with pytest.raises(TrackingNotInstalledError, match=rf"pip install 'cmcl\[{name}\]'"):
        check_tracking(name)


def test_an_unknown_tracker_names_the_valid_ones():
    with pytest.raises(ValueError, match="mlflow, wandb, tensorboard; got 'neptune'"):
        check_tracking("neptune")


class _Down(Backend):
    name = "down"

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def open(self, identity, params, *, resume_step):
        self.calls.append("open")
        raise ConnectionError("connection refused\nsecond line")


class _Slow(Backend):
    name = "slow"

    def open(self, identity, params, *, resume_step):
        time.sleep(5)
        return {}


def _reporter(backend, **kwargs) -> TrackingReporter:
    return TrackingReporter(
        backend=backend,
        label="test tracker",
        identity=run_identity(study="s", run_id="r"),
        params={},
        **kwargs,
    )


def _drive(reporter: TrackingReporter) -> None:
    reporter.on_start(total_steps=4, done_steps=0, is_chief=True)
    for step in (1, 2, 3, 4):
        reporter.on_losses({"total": 1.0}, global_step=step, is_chief=True)
    reporter.on_evaluation({"global_step": 4, "target_acc": 1.0}, checkpoint=None, is_chief=True)
    reporter.on_end({"steps": 4, "target_acc": 1.0}, is_chief=True)


def test_a_tracker_that_fails_gives_one_warning_and_is_left_alone(caplog):
    calls: list[str] = []
    reporter = _reporter(lambda: _Down(calls))
    with caplog.at_level(logging.WARNING, logger="cmcl.tracking"):
        _drive(reporter)
    assert calls == ["open"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "cmcl.tracking"]
    assert len(warnings) == 1
    assert "test tracker failed (ConnectionError: connection refused)" in warnings[0]


def test_a_stuck_tracker_holds_the_end_of_the_run_for_flush_s_only(caplog):
    reporter = _reporter(_Slow, flush_s=0.5)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="cmcl.tracking"):
        _drive(reporter)
    assert time.perf_counter() - started < 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "cmcl.tracking"]
    assert len(warnings) == 1 and "did not finish within 0.5 s" in warnings[0]
