"""Studies on a private local Ray: a grid study where two trials fail (the rest completes).

Runs are seconds long on the tiny feature store (tests/conftest.py). The
slow tests (Optuna, ASHA, SIGKILL + resume) are in test_study_slow.py.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
from conftest import tiny_overrides

from cmcl.study.directory import create_study_dir
from cmcl.study.naming import JOURNAL_FILE, TUNE_DIR, results_file
from cmcl.study.records import read_trial_records
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


def variants_spec(name: str, store, *variants: dict):
    """A grid study of source_only on D2-D1 over ``variants`` on the tiny store."""
    return parse_spec(
        {
            "name": name,
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["source_only"],
            "settings": tiny_settings(store),
            "variants": list(variants),
        }
    )


def test_grid_study_records_failing_trials_and_completes_the_rest(
    private_ray, tiny_store, tmp_path
):
    from ray import tune

    from cmcl.ray.study import run_study

    spec = variants_spec(
        "failing",
        tiny_store,
        {"name": "ok"},
        {"name": "nan", "settings": {"train.lr": 1e20}},
        {"name": "nostore", "settings": {"data.features": str(tmp_path / "missing")}},
    )
    path = create_study_dir(spec, storage=tmp_path)
    run_study(path, echo=False)

    records = {r["variant"]: r for r in read_trial_records(path)}
    assert {v: r["state"] for v, r in records.items()} == {
        "ok": "done",
        "nan": "errored",
        "nostore": "errored",
    }
    assert (
        "NonFiniteLossError: loss term 'total' is nan at warmup step 2" in records["nan"]["reason"]
    )
    assert records["nan"]["reason"].startswith(f"run {records['nan']['runs'][0]} failed")
    assert "missing" in records["nostore"]["reason"]
    ok = records["ok"]
    assert ok["value"] is not None and ok["per_pair"] == {"D2-D1": ok["value"]}

    # Tune agrees (read without starting anything), and errors are errors there too.
    grid = tune.Tuner.restore(str(path / TUNE_DIR), trainable="study_trial").get_results()
    errors = {r.metrics.get("trial_id") or r.path.split("/")[-1]: r.error for r in grid}
    assert len(errors) == 3 and sum(e is not None for e in errors.values()) == 2

    frame = pd.read_parquet(results_file(path, ok["runs"][0]))
    assert (
        len(frame) == 7 and (frame["variant"] == "ok").all() and (frame["study"] == "failing").all()
    )
    # The value is the SPEC's: the mean of the last eval_last_k adaptation evaluations.
    tail = frame[frame["stage"] == "adapt"]["target_acc"].tail(3)
    assert ok["value"] == pytest.approx(tail.mean())

    text = format_status(study_status(path))
    assert "1 done" in text and "2 errored" in text and "NonFiniteLossError" in text
    assert not (path / JOURNAL_FILE).exists()


def test_resume_runs_errored_trials_again_only_when_asked(private_ray, tiny_store, tmp_path):
    import shutil

    from cmcl.ray.study import run_study

    late = tmp_path / "late_store"  # appears after the first attempt, as a remounted disk would
    spec = variants_spec(
        "retry",
        tiny_store,
        {"name": "ok"},
        {"name": "late", "settings": {"data.features": str(late)}},
    )
    path = create_study_dir(spec, storage=tmp_path)
    run_study(path, echo=False)
    first = {r["variant"]: r for r in read_trial_records(path)}
    assert {v: r["state"] for v, r in first.items()} == {"ok": "done", "late": "errored"}
    ok_file = results_file(path, first["ok"]["runs"][0])
    ok_stamp = ok_file.stat().st_mtime_ns

    # A plain resume keeps the errored trial errored (a NaN would only repeat).
    run_study(path, echo=False)
    assert {r["variant"]: r["state"] for r in read_trial_records(path)} == {
        "ok": "done",
        "late": "errored",
    }

    shutil.copytree(tiny_store, late)
    run_study(path, retry_errored=True, echo=False)
    records = {r["variant"]: r for r in read_trial_records(path)}
    assert {v: r["state"] for v, r in records.items()} == {"ok": "done", "late": "done"}
    assert records["late"]["trial_id"] == first["late"]["trial_id"]
    assert records["late"]["value"] is not None
    assert records["ok"] == first["ok"] and ok_file.stat().st_mtime_ns == ok_stamp
    frame = pd.read_parquet(results_file(path, records["late"]["runs"][0]))
    assert len(frame) == 7 and not frame.duplicated(["stage", "step"]).any()
    assert "2 done" in format_status(study_status(path))


def test_resume_without_tune_state_stops_and_restart_unfinished_keeps_ended_trials(
    private_ray, tiny_store, tmp_path
):
    import shutil

    from cmcl.ray.study import run_study
    from cmcl.study.records import write_trial_record
    from cmcl.study.restart import StudyStateError

    spec = variants_spec("lost", tiny_store, {"name": "a"}, {"name": "b", "settings": {"T": 0.7}})
    path = create_study_dir(spec, storage=tmp_path)
    run_study(path, echo=False)
    first = {r["variant"]: r for r in read_trial_records(path)}
    # As if the driver had died before Tune's first snapshot, with trial b still running.
    shutil.rmtree(path / TUNE_DIR)
    write_trial_record(path, {**first["b"], "state": "running", "value": None})
    kept_file = results_file(path, first["a"]["runs"][0])
    stamp = kept_file.stat().st_mtime_ns
    before = sorted(str(p.relative_to(path)) for p in path.rglob("*") if "lease" not in p.name)

    with pytest.raises(StudyStateError) as caught:
        run_study(path, echo=False)
    message = str(caught.value)
    assert f"Tune's state {path / TUNE_DIR} is missing" in message
    assert "1 ended trial(s) and 1 unfinished; nothing was changed" in message
    assert f"cmcl study resume {path} --restart-unfinished" in message
    after = sorted(str(p.relative_to(path)) for p in path.rglob("*") if "lease" not in p.name)
    assert after == before and not list(path.glob("stale-*"))

    run_study(path, restart_unfinished=True, echo=False)
    records = {r["variant"]: r for r in read_trial_records(path)}
    assert {v: r["state"] for v, r in records.items()} == {"a": "done", "b": "done"}
    assert records["a"] == first["a"] and kept_file.stat().st_mtime_ns == stamp
    assert records["b"]["trial_id"] != first["b"]["trial_id"]  # run again, from its start
    (aside,) = path.glob("unfinished-*")
    assert (aside / "trials" / f"{first['b']['trial_id']}.json").exists()
    assert (aside / "results" / f"evals-{first['b']['runs'][0]}.parquet").exists()
    frame = pd.read_parquet(results_file(path, records["b"]["runs"][0]))
    assert len(frame) == 7 and not frame.duplicated(["stage", "step"]).any()
    assert sorted(p.name for p in (path / "results").iterdir()) == sorted(
        f"evals-{r['runs'][0]}.parquet" for r in records.values()
    )


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
    (record,) = read_trial_records(tmp_path / "broken")
    error_file = tmp_path / "broken" / TUNE_DIR / record["trial_id"] / "error.txt"
    assert error_file.exists()
    assert (
        f"Error: study broken: no trial finished (1 of 1 errored); the first, trial "
        f"{record['trial_id']}: run {record['runs'][0]} failed: FileNotFoundError" in result.output
    )
    assert f"the full error is in {error_file}" in result.output
    assert "driver: failed" in result.output
    assert not (tmp_path / "broken" / "driver.lease").exists()
