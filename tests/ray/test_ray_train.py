"""The engine under Ray Train: same numbers as one process, identical banks, run files, resume."""

from __future__ import annotations

import functools
import json
import math

import pandas as pd
import pytest
from conftest import tiny_overrides
from ray_helpers import private_ray, read_records, recording_loop

from cmcl.config import RunConfig
from cmcl.engine import fit
from cmcl.ray.train import fit_distributed

# dropout 0 and cross-worker BN: nothing may legitimately differ from one process.
# T low so that the pseudo-label term is active within the tiny run.
COMMON = {"model.dropout": 0.0, "model.sync_bn": True, "T": 0.15}
CASES = {
    "source_only": {"method": "source_only"},
    "cmco_per_anchor": {"method": "cmco", "method.cross_domain_form": "per_anchor"},
    "cmco_batch": {"method": "cmco", "method.cross_domain_form": "batch"},
}
SUMMARY_KEYS = ("target_acc", "target_acc_rgb", "target_acc_flow", "pl_acc", "pl_coverage", "snd")


@pytest.fixture(scope="module")
def ray_instance():
    with private_ray(num_cpus=2):
        yield


def _config(store, case: str, **extra) -> RunConfig:
    return RunConfig.from_overrides(tiny_overrides(store, **COMMON, **CASES[case], **extra))


def _close(a, b, where: str) -> None:
    if isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6), (where, a, b)
    else:
        assert a == b, (where, a, b)


def _same_history(expected: list[dict], table: pd.DataFrame, what: str) -> None:
    rows = table.to_dict("records")
    assert len(rows) == len(expected), what
    for i, (one, two) in enumerate(zip(expected, rows, strict=True)):
        # The table has every row's columns; a warm-up row has NaN adaptation losses.
        two = {
            k: v for k, v in two.items() if k in one or not (isinstance(v, float) and math.isnan(v))
        }
        assert set(one) == set(two), what
        for key in one:
            if key != "elapsed_s":
                _close(one[key], two[key], f"{what}: evaluation {i} {key}")


def _same_summary(expected: dict, got: dict) -> None:
    for key in SUMMARY_KEYS:
        _close(expected[key], got[key], key)
    assert got["final"] == expected["final"] and got["best"] == expected["best"]


def test_two_ray_workers_match_the_engine_and_write_the_run_directory(
    ray_instance, tiny_store, tmp_path
):
    config = _config(tiny_store, "cmco_per_anchor")
    single = fit(config)
    mirror = tmp_path / "mirror"
    summary = fit_distributed(
        config.replace({"out": str(mirror)}),
        workers=2,
        storage=str(tmp_path / "storage"),
        name="run",
    )
    run = tmp_path / "storage" / "run"
    _same_history(single.history, pd.read_parquet(run / "metrics.parquet"), "cmco per_anchor")
    _same_summary(single.summary, summary)
    assert any(r.get("loss_do_rgb", 0) > 0 for r in single.history), (
        "pseudo-label term never active"
    )

    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary))
    recorded = RunConfig.load(run / "config.json")
    assert (
        recorded.out == str(run)
        and recorded.flat() == config.replace({"train.device": "cpu"}).flat()
    )
    features = pd.read_parquet(run / "features.parquet")
    assert len(features) == 2 * 2 * 2 * 5  # domains x modalities x spaces x segments
    # keep_checkpoints=2: Ray keeps the newest two, named like the engine's own.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_0000010",
        "step_0000014",
    ]
    assert sorted(p.name for p in mirror.iterdir()) == [
        "config.json",
        "features.parquet",
        "metrics.parquet",
        "model.pt",
        "summary.json",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["source_only", "cmco_batch"])
def test_ray_workers_match_the_engine_and_hold_identical_banks(
    ray_instance, tiny_store, tmp_path, case
):
    config = _config(tiny_store, case, **{"train.eval_every": 1})
    single = fit(config)
    record = tmp_path / "record"
    record.mkdir()
    summary = fit_distributed(
        config,
        workers=2,
        storage=str(tmp_path / "storage"),
        name=case,
        train_loop=functools.partial(recording_loop, record_dir=str(record)),
    )
    _same_history(
        single.history, pd.read_parquet(tmp_path / "storage" / case / "metrics.parquet"), case
    )
    _same_summary(single.summary, summary)
    digests = {row["rank"]: row["data"] for row in read_records(record, "digests")}
    assert set(digests) == {0, 1}
    assert len(digests[0]) == 6 + 8
    assert digests[0] == digests[1]  # banks and parameters, after every step
    if case != "source_only":
        adapt = [d["banks"] for d in digests[0] if d["stage"] == "adapt"]
        assert len(set(adapt)) == len(adapt) == 8


@pytest.fixture(scope="module")
def finished_run(ray_instance, tiny_store, tmp_path_factory):
    """A finished 2-worker cmco run, its storage and its summary."""
    storage = tmp_path_factory.mktemp("finished")
    config = _config(tiny_store, "cmco_per_anchor", **{"train.dump_features": 0})
    summary = fit_distributed(config, workers=2, storage=str(storage), name="run")
    return config, storage, summary


@pytest.mark.slow
def test_rerun_with_the_same_name_restores_instead_of_training_again(finished_run, tmp_path):
    config, storage, summary = finished_run
    record = tmp_path / "record"
    record.mkdir()
    again = fit_distributed(
        config,
        workers=2,
        storage=str(storage),
        name="run",
        train_loop=functools.partial(recording_loop, record_dir=str(record)),
    )
    starts = read_records(record, "start")
    assert {s["data"]["checkpoint"] for s in starts} == {"step_0000014"}
    assert all(d == [] for d in (r["data"] for r in read_records(record, "digests")))
    _same_summary(summary, again)
    assert len(pd.read_parquet(storage / "run" / "metrics.parquet")) == 7


@pytest.mark.slow
def test_two_worker_checkpoint_resumes_on_one_worker(finished_run, tmp_path):
    config, storage, summary = finished_run
    checkpoint = storage / "run" / "checkpoints" / "step_0000010"
    assert json.loads((checkpoint / "meta.json").read_text())["global_step"] == 10
    # In this process, with the engine alone.
    alone = fit(config.replace({"out": str(tmp_path / "alone"), "resume": str(checkpoint)}))
    _same_summary(summary, alone.summary)
    assert [r["global_step"] for r in alone.history] == [2, 4, 6, 8, 10, 12, 14]
    # And as a fresh one-worker Ray Train run seeded with that checkpoint.
    one = fit_distributed(
        config.replace({"resume": str(checkpoint)}),
        workers=1,
        storage=str(tmp_path / "storage"),
        name="one",
    )
    _same_summary(summary, one)


@pytest.mark.slow
def test_a_non_finite_loss_under_ray_train_records_why_in_the_run(
    ray_instance, tiny_store, tmp_path
):
    from cmcl.engine import NonFiniteLossError

    config = RunConfig.from_overrides(
        tiny_overrides(
            tiny_store, method="source_only", out=str(tmp_path / "out"), **{"train.lr": 1e20}
        )
    )
    storage = tmp_path / "storage"
    with pytest.raises(NonFiniteLossError, match="'total' is nan at warmup step 2"):
        fit_distributed(config, workers=2, storage=str(storage), name="run")
    for record in (storage / "run" / "failure.json", tmp_path / "out" / "failure.json"):
        failure = json.loads(record.read_text())
        assert failure["error"] == "NonFiniteLossError" and "warmup step 2" in failure["message"]


@pytest.mark.slow
def test_a_damaged_newest_ray_checkpoint_is_passed_over_for_the_previous_one(
    ray_instance, tiny_store, tmp_path
):
    config = _config(tiny_store, "cmco_per_anchor", **{"train.dump_features": 0})
    storage = tmp_path / "storage"
    summary = fit_distributed(config, workers=2, storage=str(storage), name="run")
    newest = storage / "run" / "checkpoints" / "step_0000014" / "state.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit: torch.load would not notice
    newest.write_bytes(bytes(data))
    record = tmp_path / "record"
    record.mkdir()
    again = fit_distributed(
        config,
        workers=2,
        storage=str(storage),
        name="run",
        train_loop=functools.partial(recording_loop, record_dir=str(record)),
    )
    # Ray hands over its newest checkpoint; the workers pass over it to step 10 (global
    # step 10 = adaptation step 4) and train adaptation steps 5-8 again, on both ranks.
    starts = read_records(record, "start")
    assert {s["data"]["checkpoint"] for s in starts} == {"step_0000014"}
    digests = [r["data"] for r in read_records(record, "digests")]
    assert len(digests) == 2
    assert all([d["step"] for d in rank] == [5, 6, 7, 8] for rank in digests)
    _same_summary(summary, again)
