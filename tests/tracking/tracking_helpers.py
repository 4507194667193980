"""Shared by the tracking tests: tiny runs, a crash after a checkpoint, readers of what the
trackers hold (MLflow through MlflowClient, W&B offline files, TensorBoard event files)."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any

from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.engine import Reporter, fit
from cmcl.tracking import tracking_reporter

CRASH_AT = 9
"""A global step just after the checkpoint at 8 (warm-up 6 + adapt 2 with checkpoint_every 2)."""


def tiny_config(store: Path, out: Path, **extra: Any) -> RunConfig:
    overrides = tiny_overrides(
        store,
        method="cmco",
        **{"train.log_every": 3, "train.checkpoint_every": 2, **extra},
    )
    return RunConfig.from_overrides({**overrides, "out": str(out)})


class Crash(Reporter):
    """Ends the process as a kill would, after global step ``at`` (after a checkpoint)."""

    def __init__(self, at: int = CRASH_AT) -> None:
        self.at = at

    def on_step(self, *, global_step: int) -> None:
        if global_step == self.at:
            raise KeyboardInterrupt


def tracked_fit(name: str, config: RunConfig, *, inner: Reporter | None = None, **kwargs):
    """``fit`` as cmcl train runs it with ``--tracking name``."""
    reporter = tracking_reporter(name, config=config, run_dir=config.out, inner=inner, **kwargs)
    with reporter.marking_failure():
        return fit(config, reporter)


def crashed_then_resumed(name: str, config: RunConfig, **kwargs):
    """One run killed after a checkpoint, then resumed from it (``resume="auto"``)."""
    try:
        tracked_fit(name, config, inner=Crash(), **kwargs)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the crash reporter did not stop the run")
    return tracked_fit(name, config.replace({"resume": "auto"}), **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


# -- MLflow ---------------------------------------------------------------------------------
def mlflow_runs(uri: str, experiment: str = "cmcl") -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def mlflow_histories(uri: str, run_id: str) -> dict[str, list[int]]:
    """Metric -> the steps of its points, in the order MLflow returns them."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    return {
        key: sorted(p.step for p in client.get_metric_history(run_id, key))
        for key in run.data.metrics
    }


# -- W&B offline files ----------------------------------------------------------------------
def wandb_records(path: Path):
    """The protobuf records of an offline ``run-<id>.wandb`` file (W&B's LevelDB-style log:
    a 7-byte header, then 32 KiB blocks of records with a 7-byte header each)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # padding to the end of the block
            pos += left - 7
            continue
        pending += raw[pos : pos + length]
        pos += length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_offline_runs(root: Path) -> list[dict[str, Any]]:
    """Each offline run under ``root``: id, group, exit code and history points."""
    runs = []
    for file in sorted(root.glob("**/offline-run-*/run-*.wandb")):
        run: dict[str, Any] = {"file": file, "points": {}, "exit_code": None}
        for record in wandb_records(file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["id"], run["group"] = record.run.run_id, record.run.run_group
                run["config"] = {
                    item.key: json.loads(item.value_json) for item in record.run.config.update
                }
            elif kind == "history":
                step = record.history.step.num
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        run["points"].setdefault(key, []).append(step)
            elif kind == "exit":
                run["exit_code"] = record.exit.exit_code
        runs.append(run)
    return runs


# -- TensorBoard ----------------------------------------------------------------------------
def tensorboard_steps(directory: Path) -> dict[str, list[int]]:
    """Scalar tag -> steps, as TensorBoard itself reads the event files (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    reader.Reload()
    return {tag: [e.step for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}
