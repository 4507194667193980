"""Run names, storage locations and the checks made before any Ray worker starts (no Ray needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.ray.scaling import check_scaling, missing_resources
from cmcl.ray.storage import (
    RunLocation,
    check_run_name,
    record_config,
    resolve_storage,
    run_location,
)


@pytest.mark.parametrize("name", ["epic-D2-D1-cmco-s0", "trial_00001-D1-D2-s2", "a", "x.y=1+2"])
def test_valid_run_names(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "-x", "a b", "x" * 201, ".."])
def test_invalid_run_names_are_rejected_with_the_rule(name):
    with pytest.raises(ValueError, match="run name must be"):
        check_run_name(name)


def test_storage_is_made_absolute_and_uris_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_storage("runs") == str(tmp_path / "runs")
    assert resolve_storage(f"file://{tmp_path}/x") == str(tmp_path / "x")
    assert resolve_storage("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert run_location("s3://bucket/prefix", "r1") == "s3://bucket/prefix/r1"
    assert run_location("runs", "r1") == str(tmp_path / "runs" / "r1")
    with pytest.raises(ValueError, match="storage must be"):
        resolve_storage("")


def test_run_location_reads_writes_and_lists_checkpoints(tmp_path):
    location = RunLocation(tmp_path / "store", "run")
    assert location.read_json("summary.json") is None
    location.write_bytes("summary.json", json.dumps({"target_acc": 50.0}).encode())
    assert location.read_json("summary.json") == {"target_acc": 50.0}
    assert not list((tmp_path / "store" / "run").glob("*.tmp"))
    for step, complete in ((4, True), (8, True), (12, False)):
        directory = tmp_path / "store" / "run" / "checkpoints" / f"step_{step:07d}"
        directory.mkdir(parents=True)
        if complete:
            (directory / "state.pt").write_bytes(b"x")
    assert location.checkpoint_names() == ["step_0000004", "step_0000008"]
    local = tmp_path / "local" / "metrics.parquet"
    local.parent.mkdir()
    local.write_bytes(b"table")
    location.upload(local)
    copied = location.download_results(tmp_path / "mirror")
    assert sorted(p.name for p in copied) == ["metrics.parquet", "summary.json"]
    assert (tmp_path / "mirror" / "metrics.parquet").read_bytes() == b"table"


def test_global_batch_must_divide_by_workers(tiny_store):
    config = RunConfig.from_overrides(tiny_overrides(tiny_store, **{"train.batch_target": 6}))
    check_scaling(config, workers=2)
    with pytest.raises(ValueError, match=r"train.batch_source=8 is not divisible by 3 workers"):
        check_scaling(config, workers=3)
    with pytest.raises(
        ValueError, match=r"train.batch_target=6 .* valid worker counts: \[1, 2, 3, 6\]"
    ):
        check_scaling(config, workers=4)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        check_scaling(config, workers=0)


def test_gpu_layouts_that_cannot_work(tiny_store):
    config = RunConfig.from_overrides(tiny_overrides(tiny_store))
    with pytest.raises(ValueError, match="several NCCL ranks on one GPU"):
        check_scaling(config, workers=2, gpus_per_worker=0.5)
    check_scaling(config, workers=1, gpus_per_worker=0.5)
    with pytest.raises(ValueError, match="needs gpus_per_worker > 0"):
        check_scaling(config.replace({"train.device": "cuda"}), workers=2)
    with pytest.raises(ValueError, match=r"train\.device=cpu with gpus_per_worker"):
        check_scaling(config.replace({"train.device": "cpu"}), workers=2, gpus_per_worker=1)


def test_missing_resources_names_what_is_short():
    have = {"CPU": 2.0}
    assert missing_resources(have, workers=2, gpus_per_worker=0, cpus_per_worker=1) is None
    message = missing_resources(have, workers=2, gpus_per_worker=1, cpus_per_worker=1)
    assert message == "2 workers need 2 GPU; the Ray cluster has 2 CPU, 0 GPU"
    message = missing_resources(have, workers=4, gpus_per_worker=0, cpus_per_worker=1)
    assert message == "4 workers need 4 CPU; the Ray cluster has 2 CPU, 0 GPU"


def test_a_run_name_refuses_a_different_configuration(tiny_store, tmp_path):
    config = RunConfig.from_overrides(tiny_overrides(tiny_store, method="cmco"))
    location = RunLocation(tmp_path, "run")
    record_config(location, config)
    recorded = RunConfig.load(Path(location.uri) / "config.json")
    assert recorded.out == location.uri and recorded.resume is None
    assert recorded.flat() == config.flat()
    record_config(location, config.replace({"resume": "/somewhere"}))  # same run: accepted
    with pytest.raises(ValueError, match=r"\(method.lam: recorded 1.25, requested 2.0\)"):
        record_config(location, config.replace({"lambda": 2.0}))
