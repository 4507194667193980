"""Feature extraction over a private local Ray: same store as in-process; actor layout."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cmcl.data.extract import ExtractSettings, extract_store
from cmcl.data.feature_store import read_split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_ray_env(monkeypatch):
    """Environment for a private loopback Ray: its own temp dir, cmcl importable by workers."""
    tmp = tempfile.mkdtemp(prefix="ray-video-", dir="/tmp")  # short: socket paths are limited
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_cli_on_private_ray_matches_in_process(tiny_videos, tmp_path, private_ray_env):
    from cmcl.cli import cli

    args = ["features", "extract", "--root", str(tiny_videos.root), "--out", str(tmp_path / "ray")]
    args += ["--random-weights", "--windows", "2", "--crop-size", "16", "--domains", "D1"]
    args += ["--shard-size", "5", "--num-cpus", "2", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "4 shards (4 computed, 0 already done)" in result.output
    local = ExtractSettings(
        benchmark="epic",
        root=str(tiny_videos.root),
        domains=("D1",),
        windows=2,
        crop_size=16,
        random_seed=0,
        shard_size=5,
        loader_workers=0,
    )
    extract_store(local, tmp_path / "local", progress=False)
    for split in ("train", "test"):
        a, b = (
            read_split(tmp_path / "ray", "D1", split),
            read_split(tmp_path / "local", "D1", split),
        )
        assert a.segment_ids == b.segment_ids
        for modality in ("rgb", "flow"):
            x, y = getattr(a, modality), getattr(b, modality)
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4 * float(y.abs().max()))


@pytest.mark.parametrize(
    ("resources", "kwargs", "expected"),
    [
        ({"CPU": 16.0, "GPU": 1.0}, {}, (1, 16.0, 1.0)),
        ({"CPU": 32.0, "GPU": 4.0}, {}, (4, 8.0, 1.0)),
        ({"CPU": 32.0, "GPU": 4.0}, {"gpus_per_worker": 0.5}, (8, 4.0, 0.5)),
        ({"CPU": 8.0}, {}, (8, 1.0, 0.0)),
        ({"CPU": 8.0}, {"cpus_per_worker": 3}, (2, 3, 0.0)),
        ({"CPU": 8.0}, {"max_workers": 2}, (2, 1.0, 0.0)),
        ({"CPU": 16.0, "GPU": 2.0}, {"gpus_per_worker": 0}, (16, 1.0, 0)),
    ],
)
def test_actor_layout(resources, kwargs, expected):
    from cmcl.ray.extract import actor_layout

    args = {"gpus_per_worker": None, "cpus_per_worker": None, **kwargs}
    assert actor_layout(resources, **args) == expected


def test_actor_layout_errors():
    from cmcl.ray.extract import actor_layout

    with pytest.raises(ValueError, match=r"gpus_per_worker=1 but the cluster has 0\.0 GPUs"):
        actor_layout({"CPU": 4.0}, gpus_per_worker=1, cpus_per_worker=None)
    with pytest.raises(ValueError, match="cannot fit one worker of 8 CPUs"):
        actor_layout({"CPU": 4.0}, gpus_per_worker=None, cpus_per_worker=8)
