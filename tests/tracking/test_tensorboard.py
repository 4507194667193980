"""TensorBoard: event files in the run's folder, read back with TensorBoard's own reader."""

from __future__ import annotations

import pytest
from tracking_helpers import crashed_then_resumed, tensorboard_steps, tiny_config, tracked_fit

pytest.importorskip(
    "tensorboard",
    reason="the tensorboard client is not installed (pip install 'cmcl[tensorboard]')",
)


def test_a_run_writes_every_evaluation_and_loss_read_once(tiny_store, tmp_path):
    result = tracked_fit("tensorboard", tiny_config(tiny_store, tmp_path / "run"))
    steps = tensorboard_steps(tmp_path / "run" / "tensorboard")
    evaluations = [row["global_step"] for row in result.history]
    assert steps["target_acc"] == evaluations
    assert steps["target_acc_rgb"] == evaluations
    # log_every 3 within each stage, and a read before each evaluation.
    assert steps["train/loss_total"] == [2, 3, 4, 6, 8, 9, 10, 12, 14]
    assert steps["summary/target_acc"] == [14]


def test_a_resumed_run_has_no_duplicated_steps(tiny_store, tmp_path):
    straight = tiny_config(tiny_store, tmp_path / "straight")
    tracked_fit("tensorboard", straight)
    resumed = tiny_config(tiny_store, tmp_path / "resumed")
    crashed_then_resumed("tensorboard", resumed)
    assert len(list((tmp_path / "resumed" / "tensorboard").glob("events.out.*"))) == 2
    want = tensorboard_steps(tmp_path / "straight" / "tensorboard")
    got = tensorboard_steps(tmp_path / "resumed" / "tensorboard")
    assert got == want


def test_a_log_root_holds_one_folder_per_run(tiny_store, tmp_path):
    config = tiny_config(tiny_store, tmp_path / "run-a")
    tracked_fit("tensorboard", config, directory=tmp_path / "logs")
    assert tensorboard_steps(tmp_path / "logs" / "run-a")["target_acc"]
    assert not (tmp_path / "run-a" / "tensorboard").exists()
