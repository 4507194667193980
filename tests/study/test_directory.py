"""Study directories: creation and refusal, data options, resources, and `status` from files."""

from __future__ import annotations

import time

import pytest

from cmcl.study.directory import (
    StudyExistsError,
    adaptation_evaluations,
    command_line_overrides,
    create_study_dir,
    load_study_dir,
)
from cmcl.study.naming import DRIVER_FILE, study_location
from cmcl.study.records import RunRecord, StudyState, TrialRecord
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
    study = create_study_dir(spec, storage=tmp_path, source="x.yaml")
    assert study.location == str((tmp_path / "d").resolve())
    _, loaded, meta = load_study_dir(study.location)
    assert loaded == spec
    assert meta["selection_metric"] == "snd" and meta["mode"] == "max" and not meta["oracle"]
    assert meta["tables"] == ["table3_epic"] and meta["trials"] == 4 and meta["runs"] == 4
    assert meta["layout"] == 2
    assert meta["objective"] == "per_pair" and meta["name"] == "d"
    with pytest.raises(StudyExistsError, match=r"already holds this study.*cmcl study resume"):
        create_study_dir(spec, storage=tmp_path)
    with pytest.raises(StudyExistsError, match=r"different study.*differs in: seeds"):
        create_study_dir(spec_of(tables=["table3_epic"], metric="snd", seeds=2), storage=tmp_path)


def test_storage_is_a_path_a_file_uri_or_an_object_store_uri(tmp_path):
    spec = spec_of()
    study = create_study_dir(spec, storage=f"file://{tmp_path}/a")
    assert study.location == str(tmp_path / "a" / "d") and not study.remote
    assert study_location("s3://bucket/studies/", "d") == "s3://bucket/studies/d"
    assert study_location("gs://bucket/x", "d") == "gs://bucket/x/d"
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


def test_adaptation_evaluations():
    spec = spec_of(settings={"train.eval_every": 10}, search={"train.steps": [100, 300]})
    # 300 steps, evaluations every 10 and at the checkpoints (every 200) and the end
    assert adaptation_evaluations(spec) == 30


def _record(study, trial_id, state, *, run_state=None, **extra):
    """Add (or replace) one trial of one run in the study's state.json."""
    state_file = study.read_state() or StudyState()
    run = RunRecord(
        run_id=f"{trial_id}-D2-D1-s0",
        benchmark="synthetic-epic",
        pair="D2-D1",
        seed=0,
        state=run_state or {"errored": "failed", "done": "done"}.get(state, "running"),
    )
    record = TrialRecord(
        trial_id=trial_id,
        number=int(trial_id[1:]),
        method="cmco",
        variant=None,
        pairs=[["synthetic-epic", "D2-D1"]],
        params={},
        names={},
        description=f"cfg {trial_id}",
        runs=[run],
        state=state,
        **extra,
    )
    if state == "errored":
        run.cause, run.reason = "code", extra.get("reason")
    state_file.trials[trial_id] = record
    study.write_state(state_file)


def test_status_from_files(tmp_path):
    study = create_study_dir(spec_of(), storage=tmp_path)
    text = format_status(study_status(study))
    assert "0 done" in text and "4 pending" in text and "none finished yet" in text
    assert "target_acc (oracle: uses target labels)" in text
    _record(study, "t1", "done", value=50.0, per_pair={"D2-D1": 50.0})
    _record(study, "t2", "done", value=60.0, per_pair={"D3-D1": 60.0})
    _record(study, "t3", "errored", reason="NonFiniteLossError: loss term 'total' is nan")
    _record(study, "t4", "running")
    study.store.write_json(
        DRIVER_FILE, {"pid": 1, "host": "h", "state": "running", "time": time.time() - 600}
    )
    status = study_status(study.location)
    assert status.counts == {"pending": 0, "running": 1, "done": 2, "stopped": 0, "errored": 1}
    assert status.runs["done"] == 2 and status.runs["failed"] == 1
    assert status.best["trial_id"] == "t2"
    assert {p: e["value"] for p, e in status.best_per_pair.items()} == {
        "D2-D1": 50.0,
        "D3-D1": 60.0,
    }
    text = format_status(status)
    assert "best so far (any pair): target_acc (oracle: uses target labels) 60.00  trial t2" in text
    assert "errored t3 (cfg t3): NonFiniteLossError: loss term 'total' is nan" in text
    assert "failed run t3-D2-D1-s0 (its code raised)" in text
    assert f"retry: `cmcl study resume {study} --retry-errored`" in text
    assert "not running" in text and "cmcl study resume" in text


def test_status_needs_a_study(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a study directory"):
        study_status(tmp_path)


def test_creating_a_study_that_exists_and_has_ended_says_there_is_nothing_to_run(tmp_path):
    from cmcl.study.directory import StudyFinishedError

    spec = spec_of()  # 4 trials
    study = create_study_dir(spec, storage=tmp_path)
    for i, state in enumerate(["done", "done", "stopped"]):
        _record(study, f"t{i}", state, value=50.0)
    with pytest.raises(StudyExistsError, match="cmcl study resume") as unfinished:
        create_study_dir(spec, storage=tmp_path)  # one trial still pending
    assert not isinstance(unfinished.value, StudyFinishedError)
    _record(study, "t3", "errored", reason="ValueError: x")
    with pytest.raises(StudyExistsError, match="cmcl study resume") as errored:
        create_study_dir(spec, storage=tmp_path)
    assert not isinstance(errored.value, StudyFinishedError)
    _record(study, "t3", "done", value=51.0)
    with pytest.raises(StudyFinishedError, match="nothing to run") as finished:
        create_study_dir(spec, storage=tmp_path)
    assert finished.value.path == study.location
