"""A four-run study tracked in a real MLflow server, its driver SIGKILLed and resumed (slow):
still exactly four tracked runs, each history whole and duplicate-free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, tiny_overrides
from mlflow_fixtures import SERVER_EXTRA, has_mlflow_server, shared_server
from tracking_helpers import mlflow_histories, mlflow_runs

from cmcl.study.directory import StudyDir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not has_mlflow_server():
        pytest.skip(f"the MLflow server is not installed: {SERVER_EXTRA}")
    return shared_server(tmp_path_factory)


def _driver(args, tmp_path, log, server):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_AUTH_MODE": "disabled",
        "MLFLOW_TRACKING_URI": server,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cmcl.cli", "study", *args, "--num-cpus", "2"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _counts(server: str, experiment: str) -> dict[str, dict[str, int]]:
    """Tracked run key -> metric -> points."""
    counts = {}
    for run in mlflow_runs(server, experiment):
        steps = mlflow_histories(server, run.info.run_id)
        assert all(len(s) == len(set(s)) for s in steps.values()), "a step logged twice"
        counts[run.data.tags["cmcl.run_key"]] = {k: len(v) for k, v in steps.items()}
    return counts


def test_a_tracked_study_killed_and_resumed_is_four_runs_with_whole_histories(
    tiny_store, tmp_path, server
):
    settings = {
        k: v
        for k, v in tiny_overrides(
            tiny_store,
            **{
                "train.warmup_steps": 20,
                "train.steps": 1200,
                "train.eval_every": 40,
                "train.checkpoint_every": 120,
                "train.log_every": 20,
            },
        ).items()
        if k not in ("benchmark", "pair")
    }
    file = tmp_path / "tracked.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "name": "tracked-kill",
                "benchmark": "synthetic-epic",
                "pairs": ["D2-D1"],
                "methods": ["cmco"],
                "settings": settings,
                "search": {"lambda": [1.0, 2.0]},
                "seeds": 2,
                "tracking": "mlflow",
            }
        )
    )
    path = tmp_path / "studies_out" / "tracked-kill"
    study = StudyDir(path)
    with open(tmp_path / "first.log", "w") as log:
        first = _driver(["run", str(file)], tmp_path, log, server)
        try:
            deadline = time.time() + 400
            while time.time() < deadline:
                state = study.read_state() if (path / "state.json").exists() else None
                runs = [r for t in (state.trials.values() if state else []) for r in t.runs]
                if any(r.state == "running" and r.evaluations >= 6 for r in runs):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError((tmp_path / "first.log").read_text()[-3000:])
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    before = _counts(server, "tracked-kill")
    with open(tmp_path / "resume.log", "w") as log:
        resume = _driver(["resume", str(path)], tmp_path, log, server)
        assert resume.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    after = _counts(server, "tracked-kill")
    runs = mlflow_runs(server, "tracked-kill")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert set(before) <= set(after)
    for key, counts in after.items():
        assert counts["target_acc"] == 31, (key, counts, before.get(key))
        # 31 evaluations, 61 loss reads at log_every 20 (one step axis, no point twice).
        assert counts["target_acc"] == 31
        assert counts["train/loss_total"] == 61
    print(f"tracked runs before the resume {len(before)}, after {len(after)}; points: {after}")
