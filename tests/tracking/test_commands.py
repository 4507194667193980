"""cmcl train --tracking and cmcl track sync, through the command line."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner
from conftest import tiny_overrides

from cmcl.cli import cli


def _train_args(store, out, *extra: str) -> list[str]:
    args = ["train", "--features", str(store), "--out", str(out), "--quiet"]
    for key, value in tiny_overrides(store).items():
        if key not in ("benchmark", "pair", "data.features"):
            args += ["--set", f"{key}={value}"]
    return [*args, *extra]


def test_a_missing_client_stops_cmcl_train_before_the_run_starts(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    result = CliRunner().invoke(
        cli, _train_args(tiny_store, tmp_path / "run", "--tracking", "mlflow")
    )
    assert result.exit_code == 1
    assert "pip install 'cmcl[mlflow]'" in result.output and "mlflow-skinny" in result.output
    assert not (tmp_path / "run").exists()


def test_tracking_options_that_do_not_fit_are_refused(tiny_store, tmp_path):
    runner = CliRunner()
    alone = runner.invoke(cli, _train_args(tiny_store, tmp_path / "a", "--tracking-dir", "x"))
    assert alone.exit_code == 1 and "--tracking-dir needs --tracking" in alone.output
    on_ray = runner.invoke(
        cli, _train_args(tiny_store, tmp_path / "b", "--tracking", "tensorboard", "--workers", "2")
    )
    assert on_ray.exit_code == 1 and "cmcl track sync" in on_ray.output


def test_train_then_sync_twice_adds_nothing(tiny_store, tmp_path):
    pytest.importorskip(
        "tensorboard",
        reason="the tensorboard client is not installed (pip install 'cmcl[tensorboard]')",
    )
    from tracking_helpers import tensorboard_steps

    runner = CliRunner()
    out = tmp_path / "run"
    trained = runner.invoke(cli, _train_args(tiny_store, out))
    assert trained.exit_code == 0, trained.output
    logs = tmp_path / "logs"
    sync = ["track", "sync", str(out), "--tracking", "tensorboard", "--tracking-dir", str(logs)]
    first = runner.invoke(cli, sync)
    assert first.exit_code == 0, first.output
    assert "synced 1 runs to tensorboard" in first.output and ": 0 new points" not in first.output
    steps = tensorboard_steps(logs / "run")
    assert steps["target_acc"] == [2, 4, 6, 8, 10, 12, 14]
    second = runner.invoke(cli, sync)
    assert second.exit_code == 0 and "synced 1 runs to tensorboard: 0 new points" in second.output
    assert tensorboard_steps(logs / "run") == steps
