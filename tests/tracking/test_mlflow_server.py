"""Against a real MLflow server only (slow): a process killed outright and resumed with
cmcl train --resume, and files attached to a study's experiment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tiny_overrides
from mlflow_fixtures import SERVER_EXTRA, has_mlflow_server, shared_server
from tracking_helpers import mlflow_histories, mlflow_runs, tracked_fit

from cmcl.config import RunConfig

pytestmark = pytest.mark.slow

LONG = {
    "train.steps": 300,
    "train.lr_step": 150,
    "train.eval_every": 25,
    "train.checkpoint_every": 50,
    "train.log_every": 10,
}
"""Long enough (a few seconds of steps) to kill the process between two checkpoints."""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not has_mlflow_server():
        pytest.skip(f"the MLflow server is not installed: {SERVER_EXTRA}")
    return shared_server(tmp_path_factory)


def _train(store, out, env, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "cmcl.cli", "train", "--features", str(store)]
    args += ["--out", str(out), "--quiet", "--tracking", "mlflow", *extra]
    for key, value in {**tiny_overrides(store), **LONG}.items():
        if key not in ("benchmark", "pair", "data.features"):
            args += ["--set", f"{key}={value}"]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_killed_process_resumed_by_cmcl_train_is_still_one_run(tiny_store, tmp_path, server):
    env = {**os.environ, "MLFLOW_TRACKING_URI": server, "MLFLOW_EXPERIMENT_NAME": "killed"}
    out = tmp_path / "killed"
    first = _train(tiny_store, out, env)
    checkpoint = out / "checkpoints" / "step_0000106"  # 6 warm-up + 100 adaptation steps
    deadline = time.monotonic() + 240
    while not checkpoint.is_dir() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert checkpoint.is_dir() and not (out / "summary.json").exists(), "not killed mid-way"
    (running,) = mlflow_runs(server, "killed")
    assert running.info.status == "RUNNING"  # nothing could mark it: SIGKILL

    second = _train(tiny_store, out, env, "--resume")
    _, errors = second.communicate(timeout=300)
    assert second.returncode == 0, errors
    assert "tracking:" not in errors

    config = {**tiny_overrides(tiny_store), **LONG, "out": str(tmp_path / "straight")}
    os.environ["MLFLOW_TRACKING_URI"] = server
    try:
        os.environ["MLFLOW_EXPERIMENT_NAME"] = "straight"
        tracked_fit("mlflow", RunConfig.from_overrides(config))
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
        os.environ.pop("MLFLOW_EXPERIMENT_NAME")
    (got,) = mlflow_runs(server, "killed")
    (want,) = mlflow_runs(server, "straight")
    assert got.info.run_id == running.info.run_id and got.info.status == "FINISHED"
    histories = mlflow_histories(server, got.info.run_id)
    assert histories == mlflow_histories(server, want.info.run_id)
    assert all(steps == sorted(set(steps)) for steps in histories.values())
    assert histories["target_acc"][-1] == 306


def test_files_are_attached_to_the_studys_experiment(tmp_path, server, monkeypatch):
    from mlflow import MlflowClient

    from cmcl.tracking import attach_files

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    table = tmp_path / "table3.csv"
    table.write_text("method,acc\ncmco,51.0\n")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "curves.svg").write_text("<svg/>")
    attach_files([table, plots], tracking="mlflow", group="report-study")
    attach_files([table], tracking="mlflow", group="report-study")  # the same report run again
    (run,) = mlflow_runs(server, "report-study")
    assert run.data.tags["cmcl.kind"] == "report"
    listed = {f.path for f in MlflowClient(server).list_artifacts(run.info.run_id)}
    assert listed == {"table3.csv", "plots"}
