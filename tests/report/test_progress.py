"""Progress lines on stderr while a report works; --quiet; the closing line's file count."""

from __future__ import annotations

import io

from click.testing import CliRunner
from report_fixtures import Run
from report_fixtures_v2 import write_study_v2

from cmcl.cli import cli
from cmcl.report.build import build_report
from cmcl.report.progress import Progress

SYN = "synthetic-epic"


def test_progress_lines_name_the_step_and_the_time(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 9.0])
    monkeypatch.setattr("cmcl.report.progress.time.monotonic", lambda: next(clock, 99.0))
    stream = io.StringIO()
    progress = Progress(stream, every_s=5.0)
    progress.stage("reading grid")  # t=1
    progress.tick("grid: 10 runs read")  # t=2: 1 s after the last line, not printed
    progress.tick("grid: 20 runs read")  # t=9: printed
    Progress(None).stage("nothing")
    assert stream.getvalue().splitlines() == [
        "[report    1.0s] reading grid",
        "[report    9.0s] grid: 20 runs read",
    ]


def test_the_cli_prints_progress_on_stderr_unless_quiet(tmp_path):
    runs = [Run(SYN, "D2-D1", m, 0, 45.0) for m in ("source_only", "cmco")]
    study = write_study_v2(tmp_path, "s", runs)
    out = tmp_path / "r"
    loud = CliRunner().invoke(cli, ["report", str(study), "--out", str(out), "--formats", "md"])
    assert loud.exit_code == 0, loud.output
    assert "] reading s (results format 2," in loud.stderr
    assert "] s: 2 runs" in loud.stderr and "] writing md" in loud.stderr
    files = sum(1 for p in out.rglob("*") if p.is_file())
    assert f"wrote {out}/ ({files} files)" in loud.stdout
    quiet = CliRunner().invoke(
        cli, ["report", str(study), "--out", str(out), "--formats", "md", "--quiet"]
    )
    assert quiet.exit_code == 0 and quiet.stderr == ""
    # The Python API is silent unless given a stream.
    build_report([study], tmp_path / "api", formats=["md"], max_tsne=0)


def test_the_cli_refuses_a_missing_local_directory(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "is not a directory" in result.output
