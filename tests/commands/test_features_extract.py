"""`cmcl features extract` in this process (--no-ray); the Ray path is in tests/ray."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cmcl.cli import cli
from cmcl.data.feature_store import read_split

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(videos, out, *extra) -> list[str]:
    return [
        "features",
        "extract",
        "--root",
        str(videos.root),
        "--out",
        str(out),
        *extra,
    ]


def test_extract_without_ray_then_resume(tiny_videos, tmp_path):
    out = tmp_path / "store"
    small = ["--random-weights", "--windows", "1", "--crop-size", "16", "--domains", "D3"]
    small += ["--shard-size", "6", "--loader-workers", "0", "--no-ray", "--quiet"]
    result = CliRunner().invoke(cli, _args(tiny_videos, out, *small))
    assert result.exit_code == 0, result.output
    assert f"{out}: 4 shards (4 computed, 0 already done)" in result.output
    assert f"cmcl train --benchmark epic --features {out}" in result.output
    assert read_split(out, "D3", "test").rgb.shape == (8, 1, 1024)
    assert json.loads((out / "meta.json").read_text())["domains"] == ["D3"]
    again = CliRunner().invoke(cli, _args(tiny_videos, out, *small))
    assert again.exit_code == 0 and "(0 computed, 4 already done)" in again.output


def test_extract_errors(tiny_videos, tmp_path):
    runner = CliRunner()
    out = tmp_path / "store"
    no_weights = runner.invoke(cli, _args(tiny_videos, out, "--i3d-flow", "f.pt"))
    assert no_weights.exit_code != 0
    assert "--i3d-rgb is required" in no_weights.output and "--random-weights" in no_weights.output
    missing = runner.invoke(
        cli, _args(tiny_videos, out, "--i3d-rgb", "nope.pt", "--random-weights", "--no-ray")
    )
    assert missing.exit_code != 0 and "checkpoint nope.pt: no such file" in missing.output
    both = runner.invoke(
        cli, _args(tiny_videos, out, "--random-weights", "--no-ray", "--address", "auto")
    )
    assert both.exit_code != 0 and "drop --address" in both.output
    no_splits = runner.invoke(
        cli, _args(tiny_videos, out, "--random-weights", "--no-ray", "--splits", str(tmp_path))
    )
    assert no_splits.exit_code != 0 and "D1_train.pkl" in no_splits.output
    assert not out.exists() or not (out / "meta.json").exists()
