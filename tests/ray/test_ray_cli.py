"""``cmcl train --workers N``: errors before anything starts, and a run through Ray Train."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import tiny_overrides
from ray_helpers import private_ray

from cmcl.cli import cli


def _sets(store, **extra):
    pairs = tiny_overrides(store, **extra)
    for key in ("benchmark", "pair"):
        pairs.pop(key)
    return [arg for key, value in pairs.items() for arg in ("--set", f"{key}={value}")]


def _train(*args):
    return CliRunner().invoke(cli, ["train", "--method", "cmco", *args])


def test_workers_must_divide_the_global_batch(tiny_store, tmp_path):
    result = _train("--workers", "3", "--storage", str(tmp_path), *_sets(tiny_store))
    assert result.exit_code != 0
    assert "train.batch_source=8 is not divisible by 3 workers" in result.output
    assert "valid worker counts: [1, 2, 4, 8]" in result.output


def test_gpus_per_worker_without_gpus_is_refused(tiny_store, tmp_path):
    result = _train(
        "--workers", "2", "--gpus-per-worker", "1", "--storage", str(tmp_path), *_sets(tiny_store)
    )
    assert result.exit_code != 0
    assert "1 GPUs per worker x 2 workers needs 2 GPUs; this machine has 0" in result.output


def test_ray_options_without_workers_are_refused(tiny_store, tmp_path):
    result = _train("--storage", str(tmp_path), *_sets(tiny_store))
    assert result.exit_code != 0 and "add --workers N" in result.output


def test_existing_run_needs_resume_and_resume_needs_a_run(tiny_store, tmp_path):
    result = _train("--workers", "2", "--storage", str(tmp_path), "--resume", *_sets(tiny_store))
    assert result.exit_code != 0 and "--resume: no checkpoint under" in result.output
    done = tmp_path / "synthetic-epic-D2-D1-cmco-s0" / "checkpoints" / "step_0000004"
    done.mkdir(parents=True)
    (done / "state.pt").write_bytes(b"")
    result = _train("--workers", "2", "--storage", str(tmp_path), *_sets(tiny_store))
    assert result.exit_code != 0 and "already holds a run; add --resume" in result.output


@pytest.mark.slow
def test_train_with_two_workers_writes_the_run_to_storage(tiny_store, tmp_path):
    out = tmp_path / "runs" / "two"
    args = ["--workers", "2", "--out", str(out), "--quiet", *_sets(tiny_store)]
    with private_ray(num_cpus=2):
        result = _train(*args)
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert f"target accuracy {summary['target_acc']:.2f}%" in result.output
        assert f"wrote {out}/summary.json" in result.output
        assert (out / "checkpoints" / "step_0000014" / "state.pt").is_file()
        # A finished run resumes to the same result without training again.
        again = _train(*args, "--resume")
        assert again.exit_code == 0, again.output
        assert f"target accuracy {summary['target_acc']:.2f}%" in again.output
