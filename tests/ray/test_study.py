"""Studies on a private local Ray: failing trials, retries, a study that cannot run, ASHA.

Runs are seconds long on the tiny feature store (tests/conftest.py). The
driver's scheduling is tested on a simulated cluster (tests/study/test_driver.py);
these tests run the real executor: Ray tasks, real engines, real result files.
The slow ones (Optuna, SIGKILL + resume, two drivers, lost nodes) are in
test_study_slow.py.
"""

from __future__ import annotations

import os

import pytest
from conftest import tiny_overrides

from cmcl.results import RESULTS_DIR, SUMMARIES_DIR, read_dataset
from cmcl.study.directory import StudyDir, create_study_dir
from cmcl.study.spec import parse_spec
from cmcl.study.status import format_status, study_status


@pytest.fixture(scope="module")
def private_ray(tmp_path_factory):
    """One private 2-CPU Ray for the module, stopped at its end."""
    import ray

    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-cmcl-study-tests")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
    )
    yield
    ray.shutdown()


def tiny_settings(store, **extra):
    settings = tiny_overrides(store, **extra)
    return {k: v for k, v in settings.items() if k not in ("benchmark", "pair")}


def variants_spec(name: str, store, *variants: dict, **keys):
    """A grid study of source_only on D2-D1 over ``variants`` on the tiny store."""
    return parse_spec(
        {
            "name": name,
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["source_only"],
            "settings": tiny_settings(store),
            "variants": list(variants),
            **keys,
        }
    )


def _trials(path) -> dict:
    state = StudyDir(path).read_state()
    return {t.variant: t for t in state.trials.values()}


def test_grid_study_records_failing_trials_and_completes_the_rest(
    private_ray, tiny_store, tmp_path
):
    from cmcl.ray.study import run_study

    spec = variants_spec(
        "failing",
        tiny_store,
        {"name": "ok"},
        {"name": "nan", "settings": {"train.lr": 1e20}},
        {"name": "nostore", "settings": {"data.features": str(tmp_path / "missing")}},
    )
    study = create_study_dir(spec, storage=tmp_path)
    run_study(study.location, echo=False)

    trials = _trials(study.location)
    assert {v: t.state for v, t in trials.items()} == {
        "ok": "done",
        "nan": "errored",
        "nostore": "errored",
    }
    nan = trials["nan"]
    assert "NonFiniteLossError: loss term 'total' is nan at warmup step 2" in nan.reason
    assert nan.reason.startswith(f"run {nan.runs[0].run_id} failed")
    assert nan.runs[0].cause == "code"
    assert "missing" in trials["nostore"].reason
    ok = trials["ok"]
    assert ok.value is not None and ok.per_pair == {"D2-D1": ok.value}

    evals = read_dataset(study.store, RESULTS_DIR).to_pandas()
    assert len(evals) == 7 and (evals["variant"] == "ok").all()
    assert (evals["study"] == "failing").all()
    # The value is the SPEC's: the mean of the last eval_last_k adaptation evaluations.
    tail = evals[evals["stage"] == "adapt"]["target_acc"].tail(3)
    assert ok.value == pytest.approx(tail.mean())
    summaries = read_dataset(study.store, SUMMARIES_DIR).to_pandas()
    assert list(summaries["state"]) == ["done"] and summaries["has_weights"].all()
    # A finished run keeps its final weights and features, nothing else.
    run_dir = study.path / "runs" / ok.runs[0].run_id
    assert sorted(p.name for p in run_dir.iterdir()) == ["features.parquet", "model.pt"]

    text = format_status(study_status(study))
    assert "1 done" in text and "2 errored" in text and "NonFiniteLossError" in text
    assert "--retry-errored" in text
    assert not (study.path / "optuna.journal").exists()


def test_resume_runs_failed_code_again_only_when_asked(private_ray, tiny_store, tmp_path):
    import shutil

    from cmcl.ray.study import run_study

    late = tmp_path / "late_store"  # appears after the first attempt, as a remounted disk would
    spec = variants_spec(
        "retry",
        tiny_store,
        {"name": "ok"},
        {"name": "late", "settings": {"data.features": str(late)}},
    )
    study = create_study_dir(spec, storage=tmp_path)
    run_study(study.location, echo=False)
    first = _trials(study.location)
    assert {v: t.state for v, t in first.items()} == {"ok": "done", "late": "errored"}
    chunks = sorted(p.name for p in (study.path / SUMMARIES_DIR).iterdir())

    # A plain resume keeps it errored (a code error would only repeat): nothing runs.
    run_study(study.location, echo=False)
    assert {v: t.state for v, t in _trials(study.location).items()} == {
        "ok": "done",
        "late": "errored",
    }
    assert sorted(p.name for p in (study.path / SUMMARIES_DIR).iterdir()) == chunks

    shutil.copytree(tiny_store, late)
    run_study(study.location, retry_errored=True, echo=False)
    trials = _trials(study.location)
    assert {v: t.state for v, t in trials.items()} == {"ok": "done", "late": "done"}
    assert trials["late"].trial_id == first["late"].trial_id
    assert trials["late"].value is not None
    assert trials["ok"].value == first["ok"].value
    evals = read_dataset(study.store, RESULTS_DIR).to_pandas()
    assert len(evals) == 14 and not evals.duplicated(["run_id", "stage", "step"]).any()
    assert "2 done" in format_status(study_status(study))


def test_a_study_in_which_no_trial_finished_exits_non_zero(private_ray, tiny_store, tmp_path):
    import yaml
    from click.testing import CliRunner

    from cmcl.cli import cli

    settings = {**tiny_settings(tiny_store), "data.features": str(tmp_path / "missing")}
    file = tmp_path / "broken.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "name": "broken",
                "benchmark": "synthetic-epic",
                "pairs": ["D2-D1"],
                "methods": ["source_only"],
                "settings": settings,
            }
        )
    )
    result = CliRunner().invoke(
        cli, ["study", "run", str(file), "--storage", str(tmp_path), "--quiet"]
    )
    assert result.exit_code == 1, result.output
    (trial,) = StudyDir(tmp_path / "broken").read_state().trials.values()
    assert (
        f"Error: study broken: no trial finished (1 of 1 errored); the first, trial "
        f"{trial.trial_id}: run {trial.runs[0].run_id} failed: FileNotFoundError" in result.output
    )
    assert "driver: failed" in result.output
    assert not (tmp_path / "broken" / "driver.lease").exists()


def test_asha_stops_runs_and_their_slots_serve_the_next_runs(private_ray, tiny_store, tmp_path):
    from cmcl.ray.study import run_study

    settings = tiny_settings(
        tiny_store, **{"train.warmup_steps": 4, "train.steps": 400, "train.eval_every": 4}
    )
    spec = parse_spec(
        {
            "name": "asha",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["source_only"],
            "settings": settings,
            "search": {"train.lr": [0.05, 0.02, 0.0001, 0.00001]},
            "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 2},
        }
    )
    study = create_study_dir(spec, storage=tmp_path)
    run_study(study.location, echo=False)
    state = study.read_state()
    ended = {t.params["train.lr"]: t for t in state.trials.values()}
    stopped = [t for t in ended.values() if t.state == "stopped"]
    assert stopped and all("stopped early by ASHA" in t.reason for t in stopped)
    summaries = read_dataset(study.store, SUMMARIES_DIR).to_pandas()
    assert set(summaries["state"]) <= {"done", "stopped"}
    # A stopped run ended at its next step, well before its schedule's end.
    for trial in stopped:
        for run in trial.runs:
            assert run.state in ("stopped", "cancelled")
            assert run.evaluations < 100


def test_a_planted_pickle_in_the_study_directory_is_never_executed(
    private_ray, tiny_store, tmp_path
):
    """Resume reads plain data only: pickles planted where cmcl 0.1 kept Tune's state (or
    anywhere else in the directory) are never loaded."""
    import pickle

    from cmcl.ray.study import run_study

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    spec = variants_spec("planted", tiny_store, {"name": "ok"})
    study = create_study_dir(spec, storage=tmp_path)
    run_study(study.location, echo=False)
    for relative in ("tune/tuner.pkl", "tune/searcher-state.pkl", "state.pkl", "runs/x.pkl"):
        path = study.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(Payload()))
    # A finished study, and one with a trial to run again: neither loads a pickle.
    run_study(study.location, echo=False)
    state = study.read_state()
    state.trials["t0000"].runs[0].state = "failed"
    state.trials["t0000"].runs[0].cause = "node"
    state.trials["t0000"].state = "errored"
    study.write_state(state)
    run_study(study.location, echo=False)
    assert not marker.exists()
    assert study.read_state().trials["t0000"].state == "done"
