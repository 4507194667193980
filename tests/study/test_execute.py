"""One run of a trial without Ray: result files, events, and a crash followed by a resume."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, tiny_overrides

from cmcl.config import RunConfig
from cmcl.study.aggregate import TrialProgress
from cmcl.study.execute import execute_run, trial_jobs
from cmcl.study.naming import results_file
from cmcl.study.plan import evaluation_schedule, grid_points, trial_plan
from cmcl.study.records import IDENTITY
from cmcl.study.spec import parse_spec


def tiny_spec(store, **extra):
    settings = {k: v for k, v in tiny_overrides(store).items() if k not in ("benchmark", "pair")}
    return parse_spec(
        {
            "name": "ex",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1"],
            "methods": ["cmco"],
            "settings": settings,
            **extra,
        }
    )


def one_job(spec, study_dir, trial_id="t0"):
    plan = trial_plan(spec, {"point": grid_points(spec)[0]})
    return trial_jobs(spec, plan, trial_id=trial_id, study_dir=study_dir)[0]


class Crash(RuntimeError):
    pass


def test_a_crashed_run_resumes_identically_without_duplicate_rows(tiny_store, tmp_path):
    spec = tiny_spec(tiny_store)
    schedule = evaluation_schedule(RunConfig.from_dict(one_job(spec, tmp_path).config).train)
    clean_events: list[dict] = []
    execute_run(one_job(spec, tmp_path / "a"), clean_events.append, threads=1)
    clean = pd.read_parquet(results_file(tmp_path / "a", "t0-D2-D1-s0"))
    assert len(clean) == len(schedule) == 7
    assert [e["index"] for e in clean_events[:-1]] == list(range(1, 8))
    assert clean_events[-1]["kind"] == "summary"
    assert list(clean.columns[: len(IDENTITY)]) == list(IDENTITY)
    assert clean["cfg.method.lam"].tolist() == [1.25] * 7
    assert (clean["run_id"] == "t0-D2-D1-s0").all() and (clean["seed"] == 0).all()

    def crash_at_sixth(event):
        if event["kind"] == "evaluation" and event["index"] == 6:
            raise Crash  # after adapt step 6; the newest checkpoint is adapt step 4

    with pytest.raises(Crash):
        execute_run(one_job(spec, tmp_path / "b"), crash_at_sixth, threads=1)
    assert len(pd.read_parquet(results_file(tmp_path / "b", "t0-D2-D1-s0"))) == 6

    resumed_events: list[dict] = []
    execute_run(one_job(spec, tmp_path / "b"), resumed_events.append, threads=1)
    resumed = pd.read_parquet(results_file(tmp_path / "b", "t0-D2-D1-s0"))
    # 5 evaluations up to the checkpoint come back from the run's files, 2 are recomputed.
    assert [e["index"] for e in resumed_events[:-1]] == list(range(1, 8))
    pd.testing.assert_frame_equal(
        clean.drop(columns=["elapsed_s"]), resumed.drop(columns=["elapsed_s"])
    )


def test_results_are_readable_with_pandas_alone(tiny_store, tmp_path):
    spec = tiny_spec(tiny_store)
    execute_run(one_job(spec, tmp_path), lambda event: None, threads=1)
    path = results_file(tmp_path, "t0-D2-D1-s0")
    code = (
        "import sys, pandas\n"
        f"frame = pandas.read_parquet({str(path)!r})\n"
        "assert len(frame) == 7 and 'cfg.train.steps' in frame and 'snd' in frame\n"
        "assert not {'torch', 'ray', 'cmcl'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)


def test_trial_progress_reports_complete_rounds_then_the_value():
    schedule = [("warmup", 2), ("adapt", 2), ("adapt", 4)]
    runs = [("r1", "b", "D2-D1"), ("r2", "b", "D2-D1"), ("r3", "b", "D3-D1")]
    progress = TrialProgress(runs, metric="snd", schedule=schedule)

    def evaluation(run, index, value):
        metrics = {"target_acc": 10.0 * index, "snd": value}
        return progress.add(
            {"kind": "evaluation", "run_id": run, "index": index, "metrics": metrics}
        )

    assert evaluation("r1", 1, 1.0) == []
    assert evaluation("r1", 2, 2.0) == []
    assert evaluation("r2", 1, 3.0) == []
    first = evaluation("r3", 1, 5.0)
    assert len(first) == 1
    assert first[0]["objective"] == first[0]["snd"] == 3.0
    assert first[0]["pairs"] == {"D2-D1": 2.0, "D3-D1": 5.0}
    assert (first[0]["evaluation"], first[0]["adapt_evals"], first[0]["stage"]) == (1, 0, "warmup")
    assert first[0]["final"] is False
    assert evaluation("r2", 2, 4.0) == []
    second = evaluation("r3", 2, 6.0)
    assert second[0]["objective"] == 4.0 and second[0]["adapt_evals"] == 1
    for run in ("r1", "r2"):
        assert progress.add({"kind": "summary", "run_id": run, "summary": {"snd": 1.0}}) == []
    final = progress.add(
        {"kind": "summary", "run_id": "r3", "summary": {"snd": 4.0, "target_acc": 9.0}}
    )
    assert final[0]["final"] is True and final[0]["objective"] == 2.0
    assert final[0]["pairs"] == {"D2-D1": 1.0, "D3-D1": 4.0}
    assert final[0]["target_acc"] == 9.0  # only r3 has it
    assert math.isnan(progress._combine({"r1": {}, "r2": {}, "r3": {}})["objective"])
    with pytest.raises(ValueError, match="unknown run 'r9'"):
        progress.add({"kind": "summary", "run_id": "r9", "summary": {}})


def test_trial_progress_across_two_benchmarks():
    runs = [("e", "epic", "D2-D1"), ("u", "ucf-hmdb", "U-H")]
    progress = TrialProgress(runs, metric="target_acc", schedule=[("adapt", 5)])
    progress.add({"kind": "summary", "run_id": "e", "summary": {"target_acc": 40.0}})
    (final,) = progress.add({"kind": "summary", "run_id": "u", "summary": {"target_acc": 80.0}})
    assert final["objective"] == 60.0
    assert final["benchmarks"] == {"epic": 40.0, "ucf-hmdb": 80.0}
    assert final["pairs"] == {"D2-D1": 40.0, "U-H": 80.0}
