"""The training loop: stages, determinism, bit-for-bit resume, NaN detection, run files."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_overrides, write_tiny_store

from cmcl.config import RunConfig
from cmcl.engine import NonFiniteLossError, Reporter, fit
from cmcl.engine.checkpoint import latest_checkpoint
from cmcl.engine.trainer import NonFiniteMetricError


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


def test_non_finite_loss_names_stage_step_and_term(tiny_store, tmp_path):
    # An lr this large makes the weights, then the loss, overflow.
    out = tmp_path / "run"
    config = tiny_overrides(tiny_store, method="source_only", out=str(out), **{"train.lr": 1e20})
    with pytest.raises(NonFiniteLossError, match=r"'total' is nan at warmup step 2"):
        fit(RunConfig.from_overrides(config))
    failure = json.loads((out / "failure.json").read_text())
    assert failure["error"] == "NonFiniteLossError" and "warmup step 2" in failure["message"]
    assert not (out / "summary.json").exists()


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


def _damaged_store(tmp_path, domain: str, split: str, change) -> Path:
    """A copy of the tiny store whose ``domain``/``split`` arrays went through ``change``."""
    from cmcl.data.feature_store import read_split, write_split

    store = write_tiny_store(tmp_path / "store")
    data = read_split(store, domain, split)
    ids, labels = list(data.segment_ids), data.labels.numpy()
    rgb, flow = data.rgb.numpy().copy(), data.flow.numpy().copy()
    ids, labels, rgb, flow = change(ids, labels, rgb, flow)
    write_split(
        store, domain=domain, split=split, segment_ids=ids, labels=labels, rgb=rgb, flow=flow
    )
    return store


def _nan_at(row: int):
    def change(ids, labels, rgb, flow):
        flow[row, 1, 3] = np.nan
        return ids, labels, rgb, flow

    return change


def _emptied(ids, labels, rgb, flow):
    return ids[:0], labels[:0], rgb[:0], flow[:0]


def test_a_nan_feature_is_refused_on_load_naming_the_file_and_the_row(tmp_path):
    store = _damaged_store(tmp_path, "D1", "test", _nan_at(5))
    with pytest.raises(ValueError) as info:
        fit(RunConfig.from_overrides(tiny_overrides(store, method="source_only")))
    message = str(info.value)
    assert f"{store / 'D1_test.parquet'}: 1 of 24 rows have a non-finite flow feature" in message
    assert "row 5 (segment_id 'D1-test-5'), value nan" in message


@pytest.mark.parametrize(("domain", "split"), [("D1", "test"), ("D1", "train"), ("D2", "train")])
def test_an_empty_split_is_refused_on_load_naming_the_file(tmp_path, domain, split):
    store = _damaged_store(tmp_path, domain, split, _emptied)
    with pytest.raises(ValueError, match=rf"{domain}_{split}\.parquet: no segments"):
        fit(RunConfig.from_overrides(tiny_overrides(store, method="cmco")))


def test_the_trainer_refuses_any_data_with_an_empty_split(tiny_store):
    # Data built elsewhere (video mode, a test's own PairData) is checked by the trainer.
    from cmcl.data.feature_store import FeaturePairData

    config = RunConfig.from_overrides(tiny_overrides(tiny_store, method="cmco"))
    data = FeaturePairData(
        tiny_store, benchmark="synthetic-epic", source="D2", target="D1", synchronised=False
    )
    data.info = dataclasses.replace(data.info, sizes={**data.info.sizes, "target_train": 0})
    with pytest.raises(ValueError) as info:
        fit(config, data=data)
    assert str(info.value).startswith(
        f"target_train (D1 train) has no segments in {tiny_store / 'D1_train.parquet'}: "
    )
    assert f"`cmcl data check --features {tiny_store}`" in str(info.value)


def test_nan_predictions_fail_the_run_and_record_why(tiny_store, tmp_path):
    from cmcl.data.feature_store import FeaturePairData

    out = tmp_path / "run"
    config = RunConfig.from_overrides(tiny_overrides(tiny_store, method="cmco", out=str(out)))
    data = FeaturePairData(
        tiny_store, benchmark="synthetic-epic", source="D2", target="D1", synchronised=False
    )
    # After the load check: only evaluation reads target_test, so the losses stay finite.
    data.splits["target_test"].rgb[7] = float("nan")
    with pytest.raises(NonFiniteMetricError) as info:
        fit(config, data=data)
    message = str(info.value)
    assert "target_test predictions are NaN or inf for 1 of 24 segments (first: row 7)" in message
    assert "at warmup step 2 (method cmco, pair D2-D1, seed 0)" in message
    assert isinstance(info.value, NonFiniteLossError)  # ends runs and trials as a NaN loss does
    failure = json.loads((out / "failure.json").read_text())
    assert failure == {"error": "NonFiniteMetricError", "message": message}
    assert not (out / "summary.json").exists()


def test_cmcl_train_exits_non_zero_when_the_metric_would_be_nan(tiny_store, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cmcl.cli import cli
    from cmcl.engine import trainer

    real_predict = trainer.predict

    def nan_predict(*args, **kwargs):
        pred = real_predict(*args, **kwargs)
        return pred._replace(fused=torch.full_like(pred.fused, float("nan")))

    monkeypatch.setattr(trainer, "predict", nan_predict)
    out = tmp_path / "run"
    settings = tiny_overrides(tiny_store, method="source_only")
    args = [f"--set={k}={v}" for k, v in settings.items() if k not in ("benchmark", "pair")]
    result = CliRunner().invoke(cli, ["train", "--out", str(out), "--quiet", *args])
    assert result.exit_code != 0
    assert "predictions are NaN or inf for 24 of 24 segments" in result.output
    assert "NaN or inf" in json.loads((out / "failure.json").read_text())["message"]
    assert not (out / "summary.json").exists()


def test_a_finished_run_clears_an_earlier_failure_record(tiny_store, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "failure.json").write_text('{"error": "x"}')
    fit(RunConfig.from_overrides(tiny_overrides(tiny_store, method="source_only", out=str(out))))
    assert (out / "summary.json").exists() and not (out / "failure.json").exists()
