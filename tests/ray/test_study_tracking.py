"""A study's runs tracked in MLflow and TensorBoard (docs/tracking.md), on a private Ray.

MLflow here is a local sqlite store (``MLFLOW_TRACKING_URI=sqlite:///...``,
the client in the test extra); the killed-driver case against a real
``mlflow server`` is in tests/tracking/test_mlflow_server.py's style, slow.
"""

from __future__ import annotations

import os

import pytest
from conftest import tiny_overrides

from cmcl.study.directory import StudyDir, create_study_dir
from cmcl.study.spec import parse_spec


def _spec(store, name: str, tracking: str):
    settings = {k: v for k, v in tiny_overrides(store).items() if k not in ("benchmark", "pair")}
    return parse_spec(
        {
            "name": name,
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["cmco"],
            "settings": settings,
            "search": {"lambda": [1.0, 2.0]},
            "seeds": 2,
            "tracking": tracking,
        }
    )


@pytest.fixture(scope="module")
def tracked_ray(tmp_path_factory):
    """A private Ray whose workers see MLFLOW_TRACKING_URI (set before Ray starts)."""
    import ray

    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    saved = dict(os.environ)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-cmcl-study-tests")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield os.environ["MLFLOW_TRACKING_URI"]
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def test_a_four_run_study_is_four_tracked_runs_in_its_experiment(tracked_ray, tiny_store, tmp_path):
    from mlflow import MlflowClient

    from cmcl.ray.study import run_study

    study = create_study_dir(_spec(tiny_store, "tracked", "mlflow"), storage=tmp_path)
    run_study(study.location, echo=False)
    client = MlflowClient(tracking_uri=tracked_ray)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4
    records = {r.run_id: r for t in study.read_state().trials.values() for r in t.runs}
    by_key = {run.data.tags["cmcl.run_key"]: run for run in runs}
    assert sorted(by_key) == sorted(f"tracked/{rid}" for rid in records)
    for key, run in by_key.items():
        record = records[key.split("/", 1)[1]]
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params["lambda"] in ("1.0", "2.0") and params["seed"] == str(record.seed)
        assert params["method"] == "cmco" and params["pair"] == "D2-D1"
        assert run.data.tags["cmcl.trial_id"] == key.split("/", 1)[1].split("-")[0]
        history = client.get_metric_history(run.info.run_id, "target_acc")
        steps = [p.step for p in history]
        assert steps == sorted(set(steps)) and len(steps) == record.evaluations == 7


def test_tensorboard_files_of_a_study_run_stay_with_the_run(tracked_ray, tiny_store, tmp_path):
    from cmcl.ray.study import run_study

    study = create_study_dir(_spec(tiny_store, "boards", "tensorboard"), storage=tmp_path)
    run_study(study.location, echo=False)
    for trial in study.read_state().trials.values():
        for run in trial.runs:
            folder = StudyDir(study.location).path / "runs" / run.run_id
            events = list((folder / "tensorboard").rglob("events.out.tfevents.*"))
            assert events, sorted(p.name for p in folder.iterdir())
            assert sorted(p.name for p in folder.iterdir()) == [
                "features.parquet",
                "model.pt",
                "tensorboard",
            ]


def test_tracking_with_multi_worker_runs_is_refused_with_the_way_out():
    from cmcl.study.spec import StudySpecError

    with pytest.raises(StudySpecError, match=r"not tracked live.*cmcl track sync"):
        parse_spec(
            {
                "name": "x",
                "benchmark": "synthetic-epic",
                "pairs": ["D2-D1"],
                "methods": ["cmco"],
                "tracking": "mlflow",
                "resources": {"workers": 2},
            }
        )
