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


def test_status_reads_files_only(tmp_path):
    path = create_study_dir(
        parse_spec(yaml.safe_load(write(tmp_path / "s.yaml").read_text())), storage=tmp_path
    )
    result = CliRunner().invoke(cli, ["study", "status", str(path)])
    assert result.exit_code == 0, result.output
    assert "0 done" in result.output and "1 pending" in result.output
    result = CliRunner().invoke(cli, ["study", "status", str(tmp_path)])
    assert result.exit_code != 0 and "not a study directory" in result.output


def test_a_study_with_a_live_driver_is_refused_and_status_still_reads_it(tmp_path):
    from cmcl.study.lease import StudyLease

    file = write(tmp_path / "s.yaml")
    path = create_study_dir(parse_spec(yaml.safe_load(file.read_text())), storage=tmp_path / "out")
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
