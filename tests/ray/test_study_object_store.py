"""Studies in object storage: an S3-API server (moto) and PostgreSQL for Optuna, both real
and started by the tests on this machine (tests/object_store_helpers.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, tiny_overrides
from object_store_helpers import BUCKET, postgres_server, s3_server

from cmcl.results import RESULTS_DIR, SUMMARIES_DIR, read_dataset
from cmcl.study.directory import StudyDir
from cmcl.study.spec import parse_spec


def _settings(store, **extra):
    return {
        k: v for k, v in tiny_overrides(store, **extra).items() if k not in ("benchmark", "pair")
    }


@pytest.fixture(scope="module")
def servers():
    with s3_server() as endpoint, postgres_server() as database:
        yield endpoint, database


def test_an_optuna_study_in_s3_with_its_search_in_postgresql(servers, tiny_store, tmp_path):
    import ray

    from cmcl.cli import cli
    from cmcl.ray.study import run_new_study

    _, database = servers
    spec = parse_spec(
        {
            "name": "s3-study",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["cmco"],
            "settings": _settings(tiny_store),
            "search": {"lambda": {"low": 0.5, "high": 2.0}},
            "searcher": "optuna",
            "trials": 3,
            "optuna_storage": database,
        }
    )
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-cmcl-study-tests")
    location = run_new_study(spec, storage=f"s3://{BUCKET}/studies/", echo=False, num_cpus=2)
    assert not ray.is_initialized()
    assert location == f"s3://{BUCKET}/studies/s3-study"
    study = StudyDir(location)
    trials = study.read_state().trials
    assert {t.state for t in trials.values()} == {"done"} and len(trials) == 3
    # The search lives in PostgreSQL, under the study's own Optuna name.
    name = study.read_meta()["optuna_study"]
    found = optuna.load_study(study_name=name, storage=database).get_trials()
    assert sorted(t.state.name for t in found) == ["COMPLETE"] * 3
    assert {t.number: t.value for t in found} == {t.number: t.value for t in trials.values()}
    # Results and records are whole objects; finished runs keep their weights and features.
    keys = sorted(e.path for e in study.store.list(recursive=True))
    run_files = sorted(k.rsplit("/", 1)[-1] for k in keys if k.startswith("runs/"))
    assert run_files == sorted(["features.parquet", "model.pt"] * 3)
    assert not any("checkpoints" in k or k.endswith(".tmp") for k in keys)
    evaluations = read_dataset(study.store, RESULTS_DIR).to_pandas()
    assert len(evaluations) == 21 and evaluations["run_id"].nunique() == 3
    assert len(read_dataset(study.store, SUMMARIES_DIR)) == 3
    assert "driver.lease" not in keys
    status = CliRunner().invoke(cli, ["study", "status", location])
    assert status.exit_code == 0, status.output
    assert "3 done" in status.output and "driver: finished" in status.output


def test_an_optuna_study_in_object_storage_needs_a_database(servers, tmp_path):
    from cmcl.ray.study import run_new_study

    spec = parse_spec(
        {
            "name": "no-db",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["cmco"],
            "search": {"lambda": {"low": 0.5, "high": 2.0}},
            "searcher": "optuna",
            "trials": 3,
        }
    )
    with pytest.raises(ValueError, match=r"needs an Optuna database.*optuna_storage"):
        run_new_study(spec, storage=f"s3://{BUCKET}/studies", echo=False)
    assert not StudyDir(f"s3://{BUCKET}/studies/no-db").is_study()


def _driver(args, tmp_path, log):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(
        [sys.executable, "-m", "cmcl.cli", "study", *args, "--num-cpus", "2"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.slow
def test_a_study_in_s3_survives_a_killed_driver(servers, tiny_store, tmp_path):
    """SIGKILL the driver while runs train; `cmcl study resume s3://...` finishes the study
    with every run once, the killed runs continuing from checkpoints they uploaded."""
    file = tmp_path / "s3kill.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "name": "s3kill",
                "benchmark": "synthetic-epic",
                "pairs": ["D2-D1"],
                "methods": ["cmco"],
                "settings": _settings(
                    tiny_store,
                    **{
                        "train.warmup_steps": 40,
                        "train.steps": 1600,
                        "train.eval_every": 40,
                        "train.checkpoint_every": 200,
                    },
                ),
                "search": {"lambda": [0.5, 1.0, 2.0]},
            }
        )
    )
    location = f"s3://{BUCKET}/kill/s3kill"
    study = StudyDir(location)
    with open(tmp_path / "first.log", "w") as log:
        first = _driver(["run", str(file), "--storage", f"s3://{BUCKET}/kill"], tmp_path, log)
        try:
            deadline = time.time() + 300
            while time.time() < deadline:
                state = study.read_state() if study.is_study() else None
                runs = [r for t in (state.trials.values() if state else []) for r in t.runs]
                if any(r.state == "running" and r.evaluations >= 8 for r in runs):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError((tmp_path / "first.log").read_text()[-3000:])
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    with open(tmp_path / "resume.log", "w") as log:
        resume = _driver(["resume", location], tmp_path, log)
        try:
            assert resume.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
        finally:
            if resume.poll() is None:
                os.killpg(resume.pid, signal.SIGKILL)
    text = (tmp_path / "resume.log").read_text()
    assert "took over the lease" in text, text[-2000:]
    runs = [r for t in study.read_state().trials.values() for r in t.runs]
    assert {r.state for r in runs} == {"done"} and len(runs) == 3
    evaluations = read_dataset(study.store, RESULTS_DIR).to_pandas()
    assert len(evaluations) == 3 * 41
    assert not evaluations.duplicated(["run_id", "global_step"]).any()
    resumed = [r for r in runs if r.resumed_from]
    assert resumed and all(r.resumed_from >= 240 for r in resumed)
    assert f"continues from step {resumed[0].resumed_from}" in text
