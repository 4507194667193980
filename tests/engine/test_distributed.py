"""The engine on two gloo processes (no Ray) reproduces the one-process run of the same global batch.

With ``model.dropout=0`` and ``model.sync_bn=true`` nothing legitimately
differs between one process with batch B and two processes with B/2 each:
every loss, accuracy and pseudo-label statistic must agree to float
tolerance, and both workers must hold bit-identical memory banks and
parameters after every optimiser step.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.engine import Reporter, fit
from cmcl.methods import method_class

CASES = {
    "source_only": {"method": "source_only"},
    "cmco_per_anchor": {"method": "cmco", "method.cross_domain_form": "per_anchor"},
    "cmco_batch": {"method": "cmco", "method.cross_domain_form": "batch"},
    # Random banks are drawn from rank 0's stream and broadcast: workers' streams differ.
    "cmco_random_banks": {"method": "cmco", "method.bank_init": "random"},
}
# Defaults: dropout, and batch norm with each worker's own statistics.
DEFAULT_MODEL = {"default_model": {"method": "cmco", "model.dropout": 0.5, "model.sync_bn": False}}
# A low threshold so that the cross-domain term has confident anchors in 8 adaptation steps.
COMMON = {"model.dropout": 0.0, "model.sync_bn": True, "T": 0.15, "train.eval_every": 1}


def _config(store: Path, case: str) -> RunConfig:
    settings = {**COMMON, **CASES.get(case, {}), **DEFAULT_MODEL.get(case, {})}
    return RunConfig.from_overrides(tiny_overrides(store, **settings))


def _digest(module: torch.nn.Module, part: str) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        if part in key:
            digest.update(key.encode() + value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _worker(rank: int, world: int, port: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        for case in [*CASES, *DEFAULT_MODEL]:
            config = _config(Path(store), case)
            cls = method_class(config.method.name)
            original = cls.after_step
            digests: list[list[str]] = []
            seen: dict[str, torch.nn.Module] = {}

            def after_step(self, result, ctx, original=original, digests=digests, seen=seen):
                original(self, result, ctx)
                seen["method"] = self
                rng = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()
                digests.append([_digest(self, "banks."), _digest(self, "model."), rng])

            class AtEvaluation(Reporter):
                """Digest of everything the evaluation used (BN running statistics included)."""

                def __init__(self, seen: dict[str, torch.nn.Module]) -> None:
                    self.seen = seen
                    self.digests: list[str] = []

                def on_evaluation(self, metrics, *, checkpoint, is_chief) -> None:
                    self.digests.append(_digest(self.seen["method"], "model."))

            cls.after_step = after_step
            at_evaluation = AtEvaluation(seen)
            try:
                result = fit(config, at_evaluation)
            finally:
                cls.after_step = original
            record = {"history": result.history, "summary_acc": result.summary["target_acc"]}
            record["digests"] = digests
            record["evaluation_digests"] = at_evaluation.digests
            Path(out, f"{case}-rank{rank}.json").write_text(json.dumps(record))
    finally:
        torch_dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_workers(tiny_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("distributed")
    # Children re-import this module; they need the project root and tests/ on the path.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
    )
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_store), str(out)), nprocs=2, join=True)
    return out


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in history]


def _close(a, b, where: str) -> None:
    if isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("case", list(CASES))
def test_two_workers_match_one_process(tiny_store, two_workers, case):
    single = fit(_config(tiny_store, case)).history
    ranks = [json.loads((two_workers / f"{case}-rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        history = rank["history"]
        assert len(history) == len(single) == 14
        for step, (one, two) in enumerate(zip(single, history, strict=True)):
            assert one.keys() == two.keys()
            for key in one:
                if key != "elapsed_s":
                    _close(one[key], two[key], f"{case} evaluation {step} {key}")
    if case != "source_only":
        # The test is only meaningful if the pseudo-label term was active.
        assert any(row["loss_do_rgb"] > 0 for row in single if row["stage"] == "adapt")
        assert any(0 < row["pl_coverage"] < 100 for row in single)


@pytest.mark.parametrize("case", ["cmco_per_anchor", "cmco_batch", "cmco_random_banks"])
def test_workers_hold_identical_banks_and_parameters_after_every_step(two_workers, case):
    first, second = (
        [d[:2] for d in json.loads((two_workers / f"{case}-rank{r}.json").read_text())["digests"]]
        for r in (0, 1)
    )
    assert len(first) == len(second) == 6 + 8
    assert first == second
    banks = [banks for banks, _ in first[6:]]
    assert len(set(banks)) == len(banks), "the banks must change at every adaptation step"


def test_default_model_workers_evaluate_and_checkpoint_the_same_model(two_workers):
    """Without sync_bn each worker's BN running statistics drift apart during training;
    evaluation (each worker predicts its share of the test split) and the checkpoint
    (rank 0's state, loaded by every worker on resume) need one set of them."""
    first, second = (
        json.loads((two_workers / f"default_model-rank{r}.json").read_text()) for r in (0, 1)
    )
    assert _without_time(first["history"]) == _without_time(second["history"])
    assert len(first["evaluation_digests"]) == 14
    assert first["evaluation_digests"] == second["evaluation_digests"]
    # Banks stay identical at every step; parameters too (DDP), whatever the BN statistics.
    assert [d[0] for d in first["digests"]] == [d[0] for d in second["digests"]]


def test_default_model_workers_draw_their_own_dropout_masks(two_workers):
    """One process draws a dropout mask per row of the global batch; so must the workers
    (one shared stream would give every worker's rows the same masks)."""
    first, second = (
        json.loads((two_workers / f"default_model-rank{r}.json").read_text())["digests"]
        for r in (0, 1)
    )
    assert len(first) == len(second) == 6 + 8
    assert all(a[2] != b[2] for a, b in zip(first, second, strict=True))
    # Each stream advances at every step (dropout 0.5 draws).
    assert len({d[2] for d in first}) == len(first)
