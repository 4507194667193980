"""Weights & Biases in offline mode: run files on disk, the same run id after a resume."""

from __future__ import annotations

import pytest
from tracking_helpers import crashed_then_resumed, tiny_config, tracked_fit, wandb_offline_runs

pytest.importorskip("wandb", reason="the wandb client is not installed (pip install 'cmcl[wandb]')")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    root = tmp_path / "wandb-dir"
    root.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(root))
    monkeypatch.setenv("WANDB_PROJECT", "cmcl-tests")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return root


def test_an_offline_run_writes_its_run_file(tiny_store, tmp_path, offline):
    result = tracked_fit("wandb", tiny_config(tiny_store, tmp_path / "run"), study="s1")
    (run,) = wandb_offline_runs(offline)
    assert run["exit_code"] == 0 and run["group"] == "s1"
    assert run["config"]["lambda"] == 1.25 and run["config"]["method.name"] == "cmco"
    assert run["points"]["target_acc"] == [row["global_step"] for row in result.history]
    assert run["points"]["train/loss_total"] == [2, 3, 4, 6, 8, 9, 10, 12, 14]


def test_a_resumed_run_reuses_its_id_and_logs_no_step_twice(tiny_store, tmp_path, offline):
    config = tiny_config(tiny_store, tmp_path / "run")
    crashed_then_resumed("wandb", config)
    first, second = wandb_offline_runs(offline)
    assert first["id"] == second["id"]
    assert (first["exit_code"], second["exit_code"]) == (1, 0)  # killed, then finished
    for key in second["points"]:
        steps = first["points"].get(key, []) + second["points"][key]
        assert steps == sorted(set(steps)), key
    together = first["points"]["target_acc"] + second["points"]["target_acc"]
    assert together == [2, 4, 6, 8, 10, 12, 14]
