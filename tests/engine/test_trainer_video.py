"""Video mode through the engine and the CLI: I3D streams on tiny synthetic EPIC videos.

A CPU I3D forward of a 16x32x32 clip takes a good fraction of a second here,
so these runs use 16x16 crops and one torch thread (see the one_thread fixture);
the source_only repeats of the cmco cases are marked slow.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner

from cmcl.cli import cli
from cmcl.config import RunConfig
from cmcl.engine import fit

pytestmark = pytest.mark.usefixtures("one_thread")

# The smallest run that still has both stages, an evaluation after each, a
# bank-initialisation pass (cmco) and a feature dump.
TINY_VIDEO_RUN = {
    "data.crop_size": 16,
    "data.test_windows": 1,
    "train.warmup_steps": 1,
    "train.steps": 1,
    "train.batch_source": 2,
    "train.batch_target": 2,
    "train.eval_batch": 8,
    "train.dump_features": 1,
}


def _sets(**extra) -> list[str]:
    pairs = {**TINY_VIDEO_RUN, **extra}
    return [arg for key, value in pairs.items() for arg in ("--set", f"{key}={value}")]


def _finite_losses(history: list[dict]) -> None:
    """Every loss term of every evaluation row is finite (warm-up rows: those it has)."""
    for row in history:
        losses = {k: v for k, v in row.items() if k.startswith("loss_")}
        if row["stage"] == "warmup":  # metrics.parquet gives it NaN adaptation columns
            losses = {k: losses[k] for k in ("loss_total", "loss_src_ce")}
        assert losses and all(math.isfinite(v) for v in losses.values()), row


def test_cli_video_run_cmco(tiny_videos, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--benchmark", "epic", "--root", str(tiny_videos.root), "--pair", "D2-D1"]
    args += ["--method", "cmco", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, [*args, *_sets(**{"data.loader_workers": 0})])
    assert result.exit_code == 0, result.output
    assert "no --i3d-rgb; that I3D stream starts from random weights" in result.output
    config = json.loads((out / "config.json").read_text())
    # --root implies video mode, which scores source_val only where the summary reads it.
    assert config["model"]["backbone"] == "i3d" and config["train"]["source_val"] == "last"
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics["stage"].tolist() == ["warmup", "adapt"]
    assert math.isnan(metrics["source_val_acc"][0]) and not math.isnan(metrics["source_val_acc"][1])
    cmco_terms = {"loss_mo_source", "loss_mo_target", "loss_do_rgb", "loss_do_flow"}
    assert cmco_terms <= set(metrics.columns)
    _finite_losses(metrics.to_dict("records"))
    summary = json.loads((out / "summary.json").read_text())
    assert f"target accuracy {summary['target_acc']:.2f}%" in result.output
    features = pd.read_parquet(out / "features.parquet")
    assert set(features["domain"]) == {"source", "target"}
    assert len(features["vector"][0]) in (1024, 128)


def test_cli_video_option_errors(tiny_videos, tmp_path):
    runner = CliRunner()
    base = ["train", "--benchmark", "epic", "--out", str(tmp_path / "r")]
    missing = runner.invoke(
        cli, [*base, "--root", str(tiny_videos.root), "--i3d-rgb", str(tmp_path / "nope.pt")]
    )
    assert missing.exit_code != 0
    assert f"--i3d-rgb {tmp_path / 'nope.pt'}: no such file" in missing.output
    both = runner.invoke(cli, [*base, "--root", str(tiny_videos.root), "--features", str(tmp_path)])
    assert both.exit_code != 0 and "exclude each other" in both.output
    no_root = runner.invoke(cli, [*base, "--set", "model.backbone=i3d"])
    assert no_root.exit_code != 0 and "needs --root" in no_root.output
    synthetic = runner.invoke(
        cli, ["train", "--root", str(tiny_videos.root), "--out", str(tmp_path / "s")]
    )
    assert synthetic.exit_code != 0 and "not synthetic-epic" in synthetic.output
    feature_mode = runner.invoke(
        cli,
        [*base, "--root", str(tiny_videos.root), "--set", "model.backbone=features"],
    )
    assert feature_mode.exit_code != 0 and "needs data.features" in str(feature_mode.exception)


@pytest.mark.parametrize("method", [pytest.param("source_only", marks=pytest.mark.slow), "cmco"])
def test_fit_video_mode(tiny_videos, tmp_path, method):
    config = RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": "D2-D1",
            "method": method,
            "model.backbone": "i3d",
            "data.root": str(tiny_videos.root),
            "data.loader_workers": 1,
            "out": str(tmp_path / method),
            **TINY_VIDEO_RUN,
            "data.test_windows": 2,
            "train.steps": 2,
            "train.eval_every": 1,
        }
    )
    result = fit(config)
    assert [(r["stage"], r["step"]) for r in result.history] == [
        ("warmup", 1),
        ("adapt", 1),
        ("adapt", 2),
    ]
    _finite_losses(result.history)
    assert result.summary["evaluations"] == 2
    assert 0 <= result.summary["target_acc"] <= 100
    assert not math.isnan(result.summary["source_val_acc"])
    terms = {k for row in result.history for k in row if k.startswith("loss_")}
    cmco_terms = {"loss_mo_source", "loss_mo_target", "loss_do_rgb", "loss_do_flow"}
    expected = {"loss_total", "loss_src_ce"} | (cmco_terms if method == "cmco" else set())
    assert terms == expected


@pytest.mark.slow
def test_cli_video_run_source_only(tiny_videos, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--benchmark", "epic", "--root", str(tiny_videos.root), "--pair", "D2-D1"]
    args += ["--method", "source_only", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, [*args, *_sets(**{"data.loader_workers": 1})])
    assert result.exit_code == 0, result.output
    _finite_losses(pd.read_parquet(out / "metrics.parquet").to_dict("records"))
