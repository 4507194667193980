"""CLI smoke runs: help texts, a tiny training run, errors and resume."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import tiny_overrides

from cmcl.cli import cli


def _sets(store, **extra):
    pairs = tiny_overrides(store, **extra)
    for key in ("benchmark", "pair"):
        pairs.pop(key)
    return [arg for key, value in pairs.items() for arg in ("--set", f"{key}={value}")]


def test_every_command_has_help():
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in cli.commands:
        sub = runner.invoke(cli, [command, "--help"])
        assert sub.exit_code == 0, command
        assert "Usage:" in sub.output and len(sub.output.splitlines()) > 3, command


def test_train_writes_a_run_directory_and_prints_the_accuracy(tiny_store, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--method", "cmco", "--seed", "1", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, [*args, *_sets(tiny_store)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert f"target accuracy {summary['target_acc']:.2f}%" in result.output
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 1
    # A second run into the same directory is refused; --resume continues (already finished).
    again = CliRunner().invoke(cli, [*args, *_sets(tiny_store)])
    assert again.exit_code != 0 and "--resume" in again.output
    resumed = CliRunner().invoke(cli, [*args, "--resume", *_sets(tiny_store)])
    assert resumed.exit_code == 0, resumed.output
    assert f"target accuracy {summary['target_acc']:.2f}%" in resumed.output


def test_train_rejects_bad_values_with_the_valid_ones(tmp_path):
    runner = CliRunner()
    bad_method = runner.invoke(cli, ["train", "--method", "foo", "--out", str(tmp_path)])
    assert bad_method.exit_code != 0 and "valid: source_only" in bad_method.output
    bad_value = runner.invoke(cli, ["train", "--set", "T=3", "--out", str(tmp_path)])
    assert bad_value.exit_code != 0 and "threshold T must be in (0, 1], got 3" in bad_value.output
    bad_key = runner.invoke(cli, ["train", "--set", "train.stepz=3", "--out", str(tmp_path)])
    assert bad_key.exit_code != 0 and "unknown setting 'train.stepz'" in bad_key.output


def test_methods_lists_every_registered_method():
    from cmcl.methods import METHODS

    result = CliRunner().invoke(cli, ["methods"])
    assert result.exit_code == 0
    for name, cls in METHODS.items():
        assert name in result.output and cls.description in result.output


def test_commands_import_no_ray_before_their_session_starts():
    # A private Ray binds to loopback only if ray is first imported inside ray_session
    # (cmcl/ray/session.py); the modules loaded before a session must not import it.
    import subprocess
    import sys

    code = (
        "import sys, cmcl.cli, cmcl.commands.train, cmcl.launch, "
        "cmcl.commands.features, cmcl.commands.study, cmcl.ray.extract, cmcl.ray.storage, "
        "cmcl.ray.scaling, cmcl.ray.session; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
