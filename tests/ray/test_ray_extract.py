"""Feature extraction over Ray (a private local Ray, two local nodes): same store as in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from ray_helpers import private_cluster, ray_test_environment

from cmcl.data.extract import ExtractSettings, extract_store
from cmcl.data.feature_store import read_split


def _settings(videos) -> ExtractSettings:
    return ExtractSettings(
        benchmark="epic",
        root=str(videos.root),
        domains=("D1",),
        windows=2,
        crop_size=16,
        random_seed=0,
        shard_size=5,
        loader_workers=0,
    )


def _local_store(videos, path: Path) -> Path:
    extract_store(_settings(videos), path, progress=False)
    return path


def _same_store(a_root: Path, b_root: Path) -> None:
    for split in ("train", "test"):
        a, b = read_split(a_root, "D1", split), read_split(b_root, "D1", split)
        assert a.segment_ids == b.segment_ids
        for modality in ("rgb", "flow"):
            x, y = getattr(a, modality), getattr(b, modality)
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4 * float(y.abs().max()))


@pytest.mark.slow
def test_cli_on_private_ray_matches_in_process(tiny_videos, tmp_path):
    from cmcl.cli import cli

    args = ["features", "extract", "--root", str(tiny_videos.root), "--out", str(tmp_path / "ray")]
    args += ["--random-weights", "--windows", "2", "--crop-size", "16", "--domains", "D1"]
    args += ["--shard-size", "5", "--num-cpus", "2", "--quiet"]
    with ray_test_environment():  # the command starts (and stops) a private Ray
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "4 shards (4 computed, 0 already done)" in result.output
    _same_store(tmp_path / "ray", _local_store(tiny_videos, tmp_path / "local"))


@pytest.mark.slow
def test_shards_spread_over_two_nodes(tiny_videos, tmp_path):
    from cmcl.ray.extract import extract_on_ray

    with private_cluster(nodes=2, cpus_per_node=1):
        report = extract_on_ray(_settings(tiny_videos), tmp_path / "ray", progress=False)
    assert (report.computed, report.shards) == (4, 4)
    _same_store(tmp_path / "ray", _local_store(tiny_videos, tmp_path / "local"))


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
