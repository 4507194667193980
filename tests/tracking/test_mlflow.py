"""MLflow, read back with MlflowClient: one run per run, full and duplicate-free histories,
resume, a server that is down, sync."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow_fixtures import SERVER_EXTRA, has_mlflow_server, shared_server
from tracking_helpers import (
    closed_port,
    crashed_then_resumed,
    mlflow_histories,
    mlflow_runs,
    tiny_config,
    tracked_fit,
)

pytest.importorskip(
    "mlflow", reason="the MLflow client is not installed (pip install 'cmcl[mlflow]')"
)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    if not has_mlflow_server():
        pytest.skip(f"the MLflow server is not installed: {SERVER_EXTRA}")
    return shared_server(tmp_path_factory)


@pytest.fixture(scope="session")
def mlflow_sqlite(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-local') / 'mlflow.db'}"


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def mlflow_uri(request, monkeypatch):
    """Each test against a local store and (slow) a server, in an experiment of its own."""
    uri = request.getfixturevalue("mlflow_sqlite" if request.param == "sqlite" else "mlflow_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name[:200])
    return uri


LOSS_STEPS = [2, 3, 4, 6, 8, 9, 10, 12, 14]
"""log_every 3 within each stage (6 warm-up, 8 adaptation steps) and a read at each evaluation."""


def _experiment() -> str:
    return os.environ["MLFLOW_EXPERIMENT_NAME"]


def test_a_run_is_one_tracked_run_with_its_params_and_full_history(
    tiny_store, tmp_path, mlflow_uri
):
    result = tracked_fit("mlflow", tiny_config(tiny_store, tmp_path / "run"))
    (run,) = mlflow_runs(mlflow_uri, _experiment())
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["lambda"], params["tau"], params["T"], params["delta"]) == (
        "1.25",
        "0.1",
        "0.8",
        "0.5",
    )
    assert (params["method"], params["pair"], params["seed"]) == ("cmco", "D2-D1", "0")
    assert params["train.log_every"] == "3" and params["method.lam"] == "1.25"
    assert run.data.tags["cmcl.run_key"] == f"dir:{(tmp_path / 'run').resolve()}"
    histories = mlflow_histories(mlflow_uri, run.info.run_id)
    evaluations = [row["global_step"] for row in result.history]
    assert histories["target_acc"] == evaluations
    assert histories["target_acc_flow"] == evaluations
    assert histories["train/loss_total"] == LOSS_STEPS
    assert histories["summary/target_acc"] == [14]
    assert run.data.metrics["summary/target_acc"] == pytest.approx(result.summary["target_acc"])


def test_a_resumed_run_continues_the_same_run_without_duplicates(tiny_store, tmp_path, mlflow_uri):
    tracked_fit("mlflow", tiny_config(tiny_store, tmp_path / "straight"))
    crashed_then_resumed("mlflow", tiny_config(tiny_store, tmp_path / "resumed"))
    runs = {run.data.tags["cmcl.run_dir"]: run for run in mlflow_runs(mlflow_uri, _experiment())}
    assert len(runs) == 2  # one per run: the resumed run did not start a second one
    want, got = runs[str(tmp_path / "straight")], runs[str(tmp_path / "resumed")]
    assert got.info.status == "FINISHED"
    histories = mlflow_histories(mlflow_uri, got.info.run_id)
    assert histories == mlflow_histories(mlflow_uri, want.info.run_id)
    assert histories["train/loss_total"] == LOSS_STEPS


def test_the_group_is_the_experiment_unless_one_is_named(tiny_store, tmp_path, mlflow_uri):
    os.environ.pop("MLFLOW_EXPERIMENT_NAME")  # restored by the fixture's monkeypatch
    group = f"study-{tmp_path.name}"
    tracked_fit("mlflow", tiny_config(tiny_store, tmp_path / "run"), study=group, run_id="r0")
    (run,) = mlflow_runs(mlflow_uri, group)
    assert run.data.tags["cmcl.run_key"] == f"{group}/r0"
    assert run.data.tags["cmcl.study"] == group and run.info.run_name == "r0"


def test_a_server_that_is_down_gives_one_warning_and_the_run_finishes(tiny_store, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cmcl.cli",
            "train",
            "--features",
            str(tiny_store),
            "--out",
            str(out),
            "--quiet",
            "--tracking",
            "mlflow",
            *_tiny_sets(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for name in ("config.json", "metrics.parquet", "summary.json", "features.parquet"):
        assert (out / name).is_file(), name
    lines = done.stderr.strip().splitlines()
    warned = [line for line in lines if "tracking:" in line]
    assert len(warned) == 1, done.stderr
    assert "failed" in warned[0] and "goes on without tracking" in warned[0]
    # Nothing else complains (no retry warnings, no traceback): the start line and that one.
    assert len(lines) == 2, done.stderr


def _tiny_sets() -> list[str]:
    from conftest import tiny_overrides

    sets = []
    for key, value in tiny_overrides("unused").items():
        if key in ("benchmark", "pair", "data.features"):
            continue
        sets += ["--set", f"{key}={value}"]
    return [*sets, "--set", "train.log_every=3", "--set", "train.checkpoint_every=2"]


def test_sync_uploads_a_run_once_and_finds_a_tracked_run_again(tiny_store, tmp_path, mlflow_uri):
    from cmcl.engine import fit
    from cmcl.tracking.sync import sync_results

    untracked = tiny_config(tiny_store, tmp_path / "untracked")
    fit(untracked)
    first = sync_results([untracked.out], tracking="mlflow", echo=lambda _: None)
    assert first.runs == 1 and first.points > 0
    again = sync_results([untracked.out], tracking="mlflow", echo=lambda _: None)
    assert again.runs == 1 and again.points == 0
    (run,) = mlflow_runs(mlflow_uri, _experiment())
    histories = mlflow_histories(mlflow_uri, run.info.run_id)
    assert histories["target_acc"] == [2, 4, 6, 8, 10, 12, 14]
    assert all(steps == sorted(set(steps)) for steps in histories.values())

    tracked = tiny_config(tiny_store, tmp_path / "tracked")
    tracked_fit("mlflow", tracked)
    assert sync_results([tracked.out], tracking="mlflow", echo=lambda _: None).points == 0
    assert len(mlflow_runs(mlflow_uri, _experiment())) == 2
