"""One run of a study without Ray: its events, a crash followed by a resume, a stop."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, tiny_overrides

from cmcl.study.aggregate import TrialProgress
from cmcl.study.execute import RunJob, RunStopped, execute_run
from cmcl.study.naming import run_id
from cmcl.study.plan import grid_points, run_config, trial_plan
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
    key = plan.runs()[0]
    rid = run_id(trial_id, key.pair, key.seed)
    return RunJob(
        study=spec.name,
        location=str(Path(study_dir) / "runs" / rid),
        trial_id=trial_id,
        run_id=rid,
        benchmark=key.benchmark,
        pair=key.pair,
        seed=key.seed,
        method=plan.method,
        variant=plan.variant,
        config=run_config(spec, plan, key),
        resources=spec.resources,
    )


class Crash(RuntimeError):
    pass


def _evaluations(events):
    return [e for e in events if e["kind"] == "evaluation"]


def test_a_crashed_run_resumes_identically_without_duplicate_rows(tiny_store, tmp_path):
    spec = tiny_spec(tiny_store)
    job = one_job(spec, tmp_path / "a")
    schedule = job.config.train.evaluation_schedule()
    clean_events: list[dict] = []
    execute_run(job, clean_events.append, threads=1)
    assert clean_events[0] == {"kind": "started", "done_steps": 0, "total_steps": 14}
    assert [e["index"] for e in _evaluations(clean_events)] == list(range(1, 8))
    assert len(schedule) == 7
    finished = clean_events[-1]
    assert finished["kind"] == "finished" and len(finished["history"]) == 7
    assert finished["has_weights"] and finished["has_features"]
    clean = pd.DataFrame(finished["history"])

    def crash_at_sixth(event):
        if event["kind"] == "evaluation" and event["index"] == 6:
            raise Crash  # after adapt step 6; the newest checkpoint is adapt step 4

    crashing = one_job(spec, tmp_path / "b")
    with pytest.raises(Crash):
        execute_run(crashing, crash_at_sixth, threads=1)
    resumed_events: list[dict] = []
    execute_run(crashing, resumed_events.append, threads=1)
    # It continues from its newest checkpoint: the 5 evaluations up to it come back from the
    # run's files, 2 are recomputed; every index once.
    assert resumed_events[0] == {"kind": "started", "done_steps": 10, "total_steps": 14}
    assert [e["index"] for e in _evaluations(resumed_events)] == list(range(1, 8))
    resumed = pd.DataFrame(resumed_events[-1]["history"])
    pd.testing.assert_frame_equal(
        clean.drop(columns=["elapsed_s"]), resumed.drop(columns=["elapsed_s"])
    )
    rows = [e["row"] for e in _evaluations(resumed_events)]
    assert [r["target_acc"] for r in rows] == clean["target_acc"].tolist()


def test_a_stopped_run_ends_at_its_next_step(tiny_store, tmp_path):
    import threading

    spec = tiny_spec(tiny_store)
    stop = threading.Event()
    events: list[dict] = []

    def stop_after_first(event):
        events.append(event)
        if event["kind"] == "evaluation":
            stop.set()

    with pytest.raises(RunStopped, match="stopped by the study at step 3"):
        execute_run(one_job(spec, tmp_path), stop_after_first, stop=stop, threads=1)
    assert [e["kind"] for e in events] == ["started", "evaluation"]


def test_the_results_of_a_run_read_with_pandas_alone(tiny_store, tmp_path):
    spec = tiny_spec(tiny_store)
    job = one_job(spec, tmp_path)
    execute_run(job, lambda event: None, threads=1)
    path = Path(job.location) / "metrics.parquet"
    code = (
        "import sys, pandas\n"
        f"frame = pandas.read_parquet({str(path)!r})\n"
        "assert len(frame) == 7 and 'snd' in frame and 'target_acc' in frame\n"
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
