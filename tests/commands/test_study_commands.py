"""`cmcl study`: errors before anything runs, refusing to overwrite, status from files."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from cmcl.cli import cli
from cmcl.study.directory import create_study_dir
from cmcl.study.spec import parse_spec


def write(path, **data):
    base = {"name": "c", "benchmark": "synthetic-epic", "pairs": ["D2-D1"], "methods": ["cmco"]}
    path.write_text(yaml.safe_dump({**base, **data}))
    return path


def test_run_reports_file_errors_with_the_valid_values(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["study", "run", str(write(tmp_path / "s.yaml", metric="acc"))])
    assert result.exit_code != 0
    assert "s.yaml: key 'metric': must be one of target_acc, source_val_acc" in result.output
    result = runner.invoke(
        cli, ["study", "run", str(write(tmp_path / "s.yaml")), "--set", "train.stepz=3"]
    )
    assert result.exit_code != 0 and "unknown setting 'train.stepz'" in result.output
    assert not (tmp_path / "studies_out").exists()


def test_run_refuses_an_existing_study(tmp_path):
    file = write(tmp_path / "s.yaml", seeds=2)
    create_study_dir(parse_spec(yaml.safe_load(file.read_text())), storage=tmp_path / "out")
    result = CliRunner().invoke(
        cli, ["study", "run", str(file), "--storage", str(tmp_path / "out")]
    )
    assert result.exit_code != 0
    assert "already holds this study" in result.output and "cmcl study resume" in result.output
    result = CliRunner().invoke(
        cli, ["study", "run", str(file), "--storage", str(tmp_path / "out"), "--synthetic"]
    )
    # The file is already synthetic: --synthetic changes nothing, so it is the same study.
    assert "already holds this study" in result.output


def test_running_a_finished_study_again_is_not_an_error(tmp_path):
    """The README's main job run twice: the second `study run` finds nothing to do."""
    from cmcl.study.records import RunRecord, StudyState, TrialRecord

    file = write(tmp_path / "s.yaml")
    out = tmp_path / "out"
    study = create_study_dir(parse_spec(yaml.safe_load(file.read_text())), storage=out)
    run = RunRecord(run_id="t0000-D2-D1-s0", benchmark="synthetic-epic", pair="D2-D1", seed=0)
    run.state = "done"
    record = TrialRecord(
        trial_id="t0000",
        number=0,
        method="cmco",
        variant=None,
        pairs=[["synthetic-epic", "D2-D1"]],
        params={},
        names={},
        description="cmco on D2-D1",
        runs=[run],
        state="done",
        value=50.0,
    )
    study.write_state(StudyState(trials={"t0000": record}))
    result = CliRunner().invoke(cli, ["study", "run", str(file), "--storage", str(out)])
    assert result.exit_code == 0, result.output
    assert "every trial has ended: nothing to run" in result.output
    assert "1 done" in result.output  # followed by the status


def test_status_reads_files_only(tmp_path):
    path = create_study_dir(
        parse_spec(yaml.safe_load(write(tmp_path / "s.yaml").read_text())), storage=tmp_path
    ).path
    result = CliRunner().invoke(cli, ["study", "status", str(path)])
    assert result.exit_code == 0, result.output
    assert "0 done" in result.output and "1 pending" in result.output
    result = CliRunner().invoke(cli, ["study", "status", str(tmp_path)])
    assert result.exit_code != 0 and "not a study directory" in result.output


def test_a_study_with_a_live_driver_is_refused_and_status_still_reads_it(tmp_path):
    from cmcl.study.lease import StudyLease

    file = write(tmp_path / "s.yaml")
    path = create_study_dir(
        parse_spec(yaml.safe_load(file.read_text())), storage=tmp_path / "out"
    ).path
    runner = CliRunner()
    with StudyLease(path):  # this process plays the running driver
        for args in (
            ["run", str(file), "--storage", str(tmp_path / "out")],
            ["resume", str(path)],
        ):
            result = runner.invoke(cli, ["study", *args])
            assert result.exit_code != 0, result.output
            assert f"{path} is being run by another driver (pid" in result.output
            assert f"cmcl study status {path}" in result.output
        status = runner.invoke(cli, ["study", "status", str(path)])
        assert status.exit_code == 0, status.output
        assert "driver: running (pid" in status.output and "cmcl study resume" not in status.output
    # Nothing was written by the refused drivers, and the lease went with its holder.
    assert sorted(p.name for p in path.iterdir()) == ["spec.yaml", "study.json"]


def test_run_changes_study_keys_and_the_directory_records_the_changed_study(tmp_path, monkeypatch):
    import cmcl.ray.study as ray_study
    from cmcl.study.directory import load_study_dir

    file = write(tmp_path / "s.yaml", methods=["source_only", "cmco"], pairs="all", seeds=3)
    # Everything up to Ray: the lease, the directory, spec.yaml and study.json.
    monkeypatch.setattr(ray_study, "run_study", lambda path, **options: path)
    options = ["--seeds", "0,1", "--pairs", "D2-D1", "--study-set", "name=c-small"]
    result = CliRunner().invoke(
        cli, ["study", "run", str(file), *options, "--storage", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "out" / "c-small"
    _, spec, meta = load_study_dir(path)
    assert (spec.name, spec.seeds, spec.pairs) == (
        "c-small",
        (0, 1),
        (("synthetic-epic", "D2-D1"),),
    )
    assert (meta["seeds"], meta["pairs"], meta["trials"]) == ([0, 1], ["D2-D1"], 2)
    recorded = f"{file} with --seeds 0,1 --pairs D2-D1 --study-set name=c-small"
    assert meta["source_file"] == recorded
    assert (path / "spec.yaml").read_text().splitlines()[0].endswith(f"from {recorded}")
    # The same command again: the same study, to be resumed; without the changes: another one.
    again = CliRunner().invoke(
        cli, ["study", "run", str(file), *options, "--storage", str(tmp_path / "out")]
    )
    assert "already holds this study" in again.output
    other = CliRunner().invoke(
        cli,
        [
            "study",
            "run",
            str(file),
            "--study-set",
            "name=c-small",
            "--storage",
            str(tmp_path / "out"),
        ],
    )
    assert other.exit_code != 0 and "holds a different study named 'c-small'" in other.output
    assert "pairs" in other.output and "seeds" in other.output


def test_run_refuses_bad_study_changes_before_anything_is_written(tmp_path):
    file = write(tmp_path / "s.yaml")
    runner = CliRunner()
    for options, message in (
        (["--seeds", "-1"], "with --seeds -1: key 'seeds': must be >= 1; got -1"),
        (["--study-set", "trails=3"], "--study-set trails=3: unknown study key 'trails'"),
        (["--study-set", "searcher=random"], "key 'searcher': must be one of grid, optuna"),
        (["--pairs", "D9-D1"], "with --pairs D9-D1: key 'pairs':"),
    ):
        result = runner.invoke(cli, ["study", "run", str(file), *options])
        assert result.exit_code != 0, result.output
        assert message in result.output
    assert not (tmp_path / "studies_out").exists()


def test_resume_refuses_to_change_the_study(tmp_path):
    path = create_study_dir(
        parse_spec(yaml.safe_load(write(tmp_path / "s.yaml").read_text())), storage=tmp_path
    ).path
    before = (path / "spec.yaml").read_text()
    for options in (["--trials", "3"], ["--seeds", "2"], ["--study-set", "metric=snd"]):
        result = CliRunner().invoke(cli, ["study", "resume", str(path), *options])
        assert result.exit_code == 2, result.output
        assert f"{options[0]}: a study's plan cannot change under it" in result.output
        assert "cmcl study run FILE" in result.output
    assert (path / "spec.yaml").read_text() == before
    assert sorted(p.name for p in path.iterdir()) == ["spec.yaml", "study.json"]
