"""The training loop: stages, determinism, bit-for-bit resume, NaN detection, run files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_overrides, write_tiny_store

from cmcl.config import RunConfig
from cmcl.engine import NonFiniteLossError, Reporter, fit
from cmcl.engine.checkpoint import latest_checkpoint


def _comparable(history):
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in history]


def _same(a, b):
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b, strict=True):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            x, y = row_a[key], row_b[key]
            if isinstance(x, float) and math.isnan(x):
                assert isinstance(y, float) and math.isnan(y), key
            else:
                assert x == y, (key, x, y)


@pytest.mark.parametrize("method", ["source_only", "cmco"])
def test_runs_are_deterministic_for_a_seed(tiny_store, method):
    config = RunConfig.from_overrides(tiny_overrides(tiny_store, method=method))
    first = fit(config).history
    second = fit(config).history
    _same(_comparable(first), _comparable(second))
    other = fit(config.replace({"seed": 1})).history
    assert [r["loss_total"] for r in other] != [r["loss_total"] for r in first]


def test_two_stages_restart_the_step_counter_and_drop_the_lr(tiny_store):
    history = fit(RunConfig.from_overrides(tiny_overrides(tiny_store, method="cmco"))).history
    stages = [(r["stage"], r["step"], r["global_step"]) for r in history]
    assert stages == [
        ("warmup", 2, 2),
        ("warmup", 4, 4),
        ("warmup", 6, 6),
        ("adapt", 2, 8),
        ("adapt", 4, 10),
        ("adapt", 6, 12),
        ("adapt", 8, 14),
    ]
    lrs = [r["lr"] for r in history]
    assert lrs[:4] == pytest.approx([0.01] * 4)
    assert lrs[4:] == pytest.approx([0.001] * 3)
    warmup_terms = {k for k in history[0] if k.startswith("loss_")}
    adapt_terms = {k for k in history[-1] if k.startswith("loss_")}
    assert warmup_terms == {"loss_total", "loss_src_ce"}
    assert {"loss_mo_source", "loss_mo_target", "loss_do_rgb", "loss_do_flow"} <= adapt_terms


class _Crash(Reporter):
    """Simulates a killed process: raises after a given global step."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, *, global_step: int) -> None:
        if global_step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("crash_at", [5, 9, 13])
def test_resume_continues_bit_for_bit(tiny_store, tmp_path, crash_at):
    overrides = tiny_overrides(tiny_store, method="cmco", **{"train.checkpoint_every": 2})
    straight = fit(RunConfig.from_overrides({**overrides, "out": str(tmp_path / "a")}))

    config = RunConfig.from_overrides({**overrides, "out": str(tmp_path / "b")})
    with pytest.raises(KeyboardInterrupt):
        fit(config, _Crash(crash_at))
    assert latest_checkpoint(tmp_path / "b") is not None
    resumed = fit(config.replace({"resume": "auto"}))

    _same(_comparable(straight.history), _comparable(resumed.history))
    state_a = torch.load(latest_checkpoint(tmp_path / "a") / "state.pt", weights_only=True)
    state_b = torch.load(latest_checkpoint(tmp_path / "b") / "state.pt", weights_only=True)
    for key, value in state_a["method"].items():
        assert torch.equal(value, state_b["method"][key]), key
    assert any("banks" in key for key in state_a["method"])


def test_non_finite_loss_names_stage_step_and_term(tmp_path):
    store = write_tiny_store(tmp_path / "store")
    from cmcl.data.feature_store import read_split, write_split

    split = read_split(store, "D2", "train")
    rgb = split.rgb.numpy().copy()
    rgb[:, :, 0] = np.inf
    write_split(
        store,
        domain="D2",
        split="train",
        segment_ids=list(split.segment_ids),
        labels=split.labels.numpy(),
        rgb=rgb,
        flow=split.flow.numpy(),
    )
    with pytest.raises(NonFiniteLossError, match=r"'total' is nan at warmup step 1"):
        fit(RunConfig.from_overrides(tiny_overrides(store, method="source_only")))


def test_run_directory_files(tiny_store, tmp_path):
    out = tmp_path / "run"
    result = fit(RunConfig.from_overrides(tiny_overrides(tiny_store, method="cmco", out=str(out))))
    assert RunConfig.load(out / "config.json").method.name == "cmco"
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert len(metrics) == len(result.history) == 7
    for column in (
        "stage",
        "step",
        "global_step",
        "lr",
        "target_acc",
        "target_acc_rgb",
        "target_acc_flow",
        "target_mean_class_acc",
        "class_acc_0",
        "class_acc_7",
        "pl_coverage",
        "pl_acc",
        "target_entropy",
        "snd",
        "source_val_acc",
        "loss_total",
        "elapsed_s",
    ):
        assert column in metrics.columns, column
    summary = json.loads((out / "summary.json").read_text())
    last3 = metrics[metrics.stage == "adapt"].target_acc.iloc[-3:].mean()
    assert summary["target_acc"] == pytest.approx(last3)
    assert summary["rule"] == "last3" and summary["config"]["method.name"] == "cmco"
    features = pd.read_parquet(out / "features.parquet")
    assert set(features.domain) == {"source", "target"}
    assert set(features.space) == {"feature", "projection"}
    assert len(features) == 2 * 2 * 2 * 5
    dims = features.groupby("space").vector.apply(lambda v: {len(x) for x in v})
    assert dims["feature"] == {32} and dims["projection"] == {8}
    assert len(list((out / "checkpoints").iterdir())) == 2


def test_methods_never_see_target_labels_unless_supervised(tiny_store, monkeypatch):
    from cmcl.methods.cmco import CrossModalContrastive

    seen = []
    original = CrossModalContrastive.adaptation_losses

    def spy(self, source, target, out_s, ctx):
        seen.append(("label" in source, "label" in target))
        return original(self, source, target, out_s, ctx)

    monkeypatch.setattr(CrossModalContrastive, "adaptation_losses", spy)
    fit(RunConfig.from_overrides(tiny_overrides(tiny_store, method="cmco")))
    assert seen and all(s and not t for s, t in seen)


def test_source_val_policy_keeps_the_summary(tiny_store):
    """``last`` scores source_val only in the evaluations the summary averages."""
    base = tiny_overrides(tiny_store, method="source_only")
    runs = {
        policy: fit(RunConfig.from_overrides({**base, "train.source_val": policy}))
        for policy in ("all", "last", "none")
    }
    scored = {
        policy: [not math.isnan(row["source_val_acc"]) for row in run.history]
        for policy, run in runs.items()
    }
    stages = [row["stage"] for row in runs["all"].history]
    adapt = stages.count("adapt")
    k = base["train.eval_last_k"]
    assert scored["all"] == [True] * len(stages)
    assert scored["last"] == [False] * (len(stages) - k) + [True] * k and adapt > k
    assert scored["none"] == [False] * len(stages)
    full, last = runs["all"], runs["last"]
    assert last.summary["source_val_acc"] == full.summary["source_val_acc"]
    strip = lambda rows: [{**r, "source_val_acc": 0.0} for r in _comparable(rows)]  # noqa: E731
    _same(strip(last.history), strip(full.history))  # nothing else changes
    assert math.isnan(runs["none"].summary["source_val_acc"])
