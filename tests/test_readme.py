"""The README's two quick-start commands: CI runs the second one verbatim."""

from __future__ import annotations

import re

from conftest import ROOT


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_has_exactly_two_one_line_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    main_job, tests = commands
    assert "cmcl study run studies/quickstart.yaml" in main_job and "cmcl report" in main_job
    assert tests.endswith("python -m pytest")
    for command in commands:
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate")
        assert "pip install -q torch==2.13.0 && " in command


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quick_start_commands()[1] in ci_lines


def test_the_main_job_reads_a_study_file_that_exists():
    assert (ROOT / "studies" / "quickstart.yaml").is_file()
