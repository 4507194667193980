"""Study directories: creation and refusal, data options, resources, and `status` from files."""

from __future__ import annotations

import time

import pytest

from cmcl.study.directory import (
    MEMORY_BUNDLE,
    StudyExistsError,
    adaptation_evaluations,
    command_line_overrides,
    create_study_dir,
    expected_trials,
    load_study_dir,
    plan_resources,
)
from cmcl.study.naming import DRIVER_FILE
from cmcl.study.records import new_record, read_json, write_json, write_trial_record
from cmcl.study.spec import parse_spec
from cmcl.study.status import format_status, study_status


def spec_of(**extra):
    return parse_spec(
        {
            "name": "d",
            "benchmark": "synthetic-epic",
            "pairs": ["D2-D1", "D3-D1"],
            "methods": ["source_only", "cmco"],
            **extra,
        }
    )


def test_create_writes_spec_and_meta_and_refuses_to_overwrite(tmp_path):
    spec = spec_of(tables=["table3_epic"], metric="snd")
    path = create_study_dir(spec, storage=tmp_path, source="x.yaml")
    assert path == (tmp_path / "d").resolve()
    loaded, meta = load_study_dir(path)
    assert loaded == spec
    assert meta["selection_metric"] == "snd" and meta["mode"] == "max" and not meta["oracle"]
    assert meta["tables"] == ["table3_epic"] and meta["trials"] == 4
    assert meta["objective"] == "per_pair" and meta["name"] == "d"
    with pytest.raises(StudyExistsError, match=r"already holds this study.*cmcl study resume"):
        create_study_dir(spec, storage=tmp_path)
    with pytest.raises(StudyExistsError, match=r"different study.*differs in: seeds"):
        create_study_dir(spec_of(tables=["table3_epic"], metric="snd", seeds=2), storage=tmp_path)


def test_storage_is_a_path_or_a_file_uri(tmp_path):
    spec = spec_of()
    assert create_study_dir(spec, storage=f"file://{tmp_path}/a") == (tmp_path / "a" / "d")
    for uri in ("s3://bucket/studies", "gs://bucket/x"):
        with pytest.raises(ValueError, match=r"must be a filesystem path.*(NFS|sync)"):
            create_study_dir(spec, storage=uri)
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_command_line_overrides(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    both = parse_spec(
        {
            "name": "x",
            "benchmark": ["epic", "ucf-hmdb"],
            "pairs": ["D2-D1", "U-H"],
            "methods": ["cmco"],
            "search": {"lambda": [1.0]},
        }
    )
    overrides = command_line_overrides(
        both,
        features=(str(tmp_path / "a"), f"ucf-hmdb={tmp_path / 'b'}"),
        assignments={"T": 0.9},
    )
    assert overrides == {
        "epic": {"data.features": str(tmp_path / "a"), "method.threshold": 0.9},
        "ucf-hmdb": {"data.features": str(tmp_path / "b"), "method.threshold": 0.9},
    }
    # A real benchmark's name also addresses its synthetic twin; --root means video mode.
    twin = command_line_overrides(both.on_synthetic(), root=(f"epic={tmp_path / 'a'}",))
    assert twin == {"synthetic-epic": {"data.root": str(tmp_path / "a"), "model.backbone": "i3d"}}
    with pytest.raises(ValueError, match="'kinetics' is not a benchmark of this study"):
        command_line_overrides(both, features=(f"kinetics={tmp_path}",))
    with pytest.raises(ValueError, match=r"features directory .*missing does not exist"):
        command_line_overrides(both, features=(str(tmp_path / "missing"),))
    with pytest.raises(ValueError, match=r"method\.lam is searched"):
        command_line_overrides(both, assignments={"lambda": 2.0})
    with pytest.raises(ValueError, match=r"--set: key 'seed'.*'seeds'"):
        command_line_overrides(both, assignments={"seed": 2})
    with pytest.raises(
        ValueError, match=r"settings for epic: method\.threshold: threshold T must be in \(0, 1\]"
    ):
        command_line_overrides(both, assignments={"T": 2.0})


@pytest.mark.parametrize(
    ("extra", "cluster", "parallel", "concurrent", "at_once", "pool"),
    [
        ({}, {"CPU": 2}, 1, 4, 2, True),
        ({"objective": "mean"}, {"CPU": 2}, 2, 2, 2, True),
        ({"objective": "mean", "seeds": 3}, {"CPU": 16}, 6, 2, 12, True),
        ({"seeds": 3}, {"CPU": 8}, 3, 4, 8, True),
        ({"resources": {"parallel_runs": 1}, "seeds": 3}, {"CPU": 8}, 1, 4, 4, True),
        (
            {"resources": {"gpus_per_worker": 1, "cpus_per_worker": 4}},
            {"CPU": 32, "GPU": 2},
            1,
            4,
            2,
            True,
        ),
        ({"resources": {"workers": 2}}, {"CPU": 8}, 1, 4, 4, False),
        ({"max_concurrent": 1}, {"CPU": 8}, 1, 1, 1, True),
    ],
)
def test_plan_resources(extra, cluster, parallel, concurrent, at_once, pool):
    plan = plan_resources(spec_of(**extra), cluster)
    got = (plan["parallel_runs"], plan["max_concurrent"], plan["runs_at_once"], plan["pool"])
    assert got == (parallel, concurrent, at_once, pool)
    # A trial reserves only its own token; its runs take the cluster's slots.
    assert plan["bundles"] == [MEMORY_BUNDLE]


def simulate_idle(plan: dict, *, trials: int, runs: int, run_s: float, start_s: float) -> float:
    """Slot-seconds left idle while runs were still waiting to start, in a pooled study.

    Trials start ``start_s`` after a place among ``max_concurrent`` frees (Tune's cost
    of a new trial) and submit up to ``parallel_runs`` runs at a time; Ray runs the
    queued runs first come, first served on ``runs_at_once``-or-more free slots.
    """
    import heapq

    slots = int(plan["cluster"]["CPU"])
    events: list[tuple[float, str, int]] = []  # (time, kind, trial)
    queue: list[int] = []  # trials whose next run is queued, in submission order
    left = dict.fromkeys(range(trials), runs)  # runs not yet submitted
    active_runs = dict.fromkeys(range(trials), 0)
    started, next_trial, free, idle, now = 0, 0, slots, 0.0, 0.0
    for _ in range(min(plan["max_concurrent"], trials)):
        heapq.heappush(events, (start_s, "start", next_trial))
        next_trial += 1

    def submit(trial: int) -> None:
        while left[trial] and active_runs[trial] < plan["parallel_runs"]:
            left[trial] -= 1
            active_runs[trial] += 1
            queue.append(trial)

    while events or queue:
        while queue and free:
            trial = queue.pop(0)
            free -= 1
            heapq.heappush(events, (now + run_s, "end", trial))
        if not events:
            break
        when, kind, trial = heapq.heappop(events)
        if queue or next_trial < trials or any(left.values()):
            idle += free * (when - now)
        now = when
        if kind == "start":
            started += 1
            submit(trial)
        else:
            free += 1
            active_runs[trial] -= 1
            submit(trial)
            if not left[trial] and not active_runs[trial] and next_trial < trials:
                heapq.heappush(events, (now + start_s, "start", next_trial))
                next_trial += 1
    return idle - start_s * slots  # the study's own start is not a gap between runs


@pytest.mark.parametrize("slots", [2, 3, 8])
@pytest.mark.parametrize(("extra", "runs"), [({}, 1), ({"seeds": 3}, 3), ({"seeds": 2}, 2)])
def test_pooled_runs_leave_no_slot_idle(slots, extra, runs):
    """3 seeds on 2 slots used to leave a slot idle for every trial's third run (1.6-1.9x the
    ideal wall time); pooled runs of several trials fill every slot until the last run starts."""
    spec = spec_of(**extra)
    plan = plan_resources(spec, {"CPU": slots})
    trials = expected_trials(spec)
    assert plan["runs_at_once"] == min(slots, trials * runs)
    # Tune's cost to start a trial (~5 s without actor reuse) against 15-30 s runs.
    idle = simulate_idle(plan, trials=trials, runs=runs, run_s=15.0, start_s=5.0)
    assert idle == pytest.approx(0.0, abs=1e-9), f"{idle} slot-seconds idle"


def test_plan_resources_errors_and_override():
    with pytest.raises(ValueError, match=r"needs 1 CPU and 1 GPU.*cluster has 4 CPU, 0 GPU"):
        plan_resources(spec_of(resources={"gpus_per_worker": 1}), {"CPU": 4})
    assert plan_resources(spec_of(), {"CPU": 8}, max_concurrent=3)["max_concurrent"] == 3


def test_adaptation_evaluations():
    spec = spec_of(settings={"train.eval_every": 10}, search={"train.steps": [100, 300]})
    # 300 steps, evaluations every 10 and at the checkpoints (every 200) and the end
    assert adaptation_evaluations(spec) == 30


def _record(path, trial_id, state, **extra):
    record = new_record(
        trial_id,
        plan={
            "method": "cmco",
            "variant": None,
            "pairs": ["D2-D1"],
            "params": {},
            "description": f"cfg {trial_id}",
        },
        runs=[f"{trial_id}-D2-D1-s0"],
    )
    record.update(state=state, **extra)
    write_trial_record(path, record)


def test_status_from_files(tmp_path):
    path = create_study_dir(spec_of(), storage=tmp_path)
    text = format_status(study_status(path))
    assert "0 done" in text and "4 pending" in text and "none finished yet" in text
    assert "target_acc (oracle: uses target labels)" in text
    _record(path, "t1", "done", value=50.0, per_pair={"D2-D1": 50.0})
    _record(path, "t2", "done", value=60.0, per_pair={"D3-D1": 60.0})
    _record(path, "t3", "errored", reason="NonFiniteLossError: loss term 'total' is nan")
    _record(path, "t4", "running")
    write_json(
        path / DRIVER_FILE, {"pid": 1, "host": "h", "state": "running", "time": time.time() - 600}
    )
    status = study_status(path)
    assert status.counts == {"pending": 0, "running": 1, "done": 2, "stopped": 0, "errored": 1}
    assert status.best["trial_id"] == "t2"
    assert {p: e["value"] for p, e in status.best_per_pair.items()} == {
        "D2-D1": 50.0,
        "D3-D1": 60.0,
    }
    text = format_status(status)
    assert "best so far (any pair): target_acc (oracle: uses target labels) 60.00  trial t2" in text
    assert "errored t3 (cfg t3): NonFiniteLossError: loss term 'total' is nan" in text
    assert "not running" in text and "cmcl study resume" in text
    assert read_json(path / "trials" / "t1.json")["state"] == "done"


def test_status_needs_a_study(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a study directory"):
        study_status(tmp_path)


def test_creating_a_study_that_exists_and_has_ended_says_there_is_nothing_to_run(tmp_path):
    from cmcl.study.directory import StudyFinishedError

    spec = spec_of()  # 4 trials
    path = create_study_dir(spec, storage=tmp_path)
    for i, state in enumerate(["done", "done", "stopped"]):
        _record(path, f"t{i}", state, value=50.0)
    with pytest.raises(StudyExistsError, match="cmcl study resume") as unfinished:
        create_study_dir(spec, storage=tmp_path)  # one trial still pending
    assert not isinstance(unfinished.value, StudyFinishedError)
    _record(path, "t3", "errored", reason="ValueError: x")
    with pytest.raises(StudyExistsError, match="cmcl study resume") as errored:
        create_study_dir(spec, storage=tmp_path)
    assert not isinstance(errored.value, StudyFinishedError)
    _record(path, "t3", "done", value=51.0)
    with pytest.raises(StudyFinishedError, match="nothing to run") as finished:
        create_study_dir(spec, storage=tmp_path)
    assert finished.value.path == path
