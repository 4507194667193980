"""A run spread over two Ray nodes (separate raylets on this machine) completes and is exact."""

from __future__ import annotations

import functools
import math

import pandas as pd
import pytest
from conftest import tiny_overrides
from ray_helpers import private_cluster, read_records, recording_loop

from cmcl.config import RunConfig
from cmcl.engine import fit
from cmcl.ray.train import fit_distributed

pytestmark = pytest.mark.slow


def test_two_workers_on_two_nodes_complete_the_run(tiny_store, tmp_path):
    config = RunConfig.from_overrides(
        tiny_overrides(
            tiny_store, method="cmco", T=0.15, **{"model.dropout": 0.0, "model.sync_bn": True}
        )
    )
    single = fit(config).summary
    record = tmp_path / "record"
    record.mkdir()
    with private_cluster(nodes=2, cpus_per_node=1) as cluster:
        head = cluster.head_node.node_id
        summary = fit_distributed(
            config,
            workers=2,
            storage=str(tmp_path / "storage"),
            name="spread",
            placement_strategy="STRICT_SPREAD",
            train_loop=functools.partial(recording_loop, record_dir=str(record)),
        )
    nodes = {row["rank"]: row["data"]["node"] for row in read_records(record, "start")}
    assert set(nodes) == {0, 1}
    assert nodes[0] != nodes[1], "STRICT_SPREAD must put the workers on different nodes"
    assert head not in nodes.values(), "the head has no CPUs: no worker may run there"
    digests = {row["rank"]: row["data"] for row in read_records(record, "digests")}
    assert digests[0] == digests[1] and len(digests[0]) == 14
    for key in ("target_acc", "target_acc_rgb", "target_acc_flow", "pl_coverage"):
        assert summary[key] == pytest.approx(single[key], rel=1e-5), key
    assert not math.isnan(summary["target_acc"])
    metrics = pd.read_parquet(tmp_path / "storage" / "spread" / "metrics.parquet")
    assert list(metrics.global_step) == [2, 4, 6, 8, 10, 12, 14]
