"""The paper's method: gradients, bank updates and initialisation, switches."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.data.build import build_pair_data
from cmcl.methods import StepContext, build_method
from cmcl.models.build import build_model


def _setup(store, **extra):
    config = RunConfig.from_overrides(tiny_overrides(store, **extra))
    torch.manual_seed(0)
    data = build_pair_data(config)
    model = build_model(config.model, data.info)
    method = build_method(model=model, config=config.method, info=data.info)
    source = next(data.train_batches("source_train", batch_size=8, seed=0, stage=1, start_step=0))
    target = next(data.train_batches("target_train", batch_size=8, seed=0, stage=1, start_step=0))
    target.pop("label")
    return config, data, method, source, target


def _encode(data, model):
    def encode(split):
        for batch in data.eval_batches(split, batch_size=16, windows="centre"):
            out = model(batch["rgb"], batch["flow"])
            yield batch["index"], out.features

    return encode


def test_gradients_reach_both_streams_and_the_projection_head(tiny_store):
    _, data, method, source, target = _setup(tiny_store, method="cmco", T=0.01)
    method.begin_adaptation(_encode(data, method.model))
    result = method(source, target, StepContext("adapt", 0, 10))
    assert {"src_ce", "mo_source", "mo_target", "do_rgb", "do_flow"} == set(result.losses)
    for name in ("mo_source", "mo_target", "do_rgb", "do_flow"):
        method.zero_grad()
        result.losses[name].backward(retain_graph=True)
        # A cross-modal term reaches both streams (two directions); the cross-domain
        # term of modality k only reaches stream k (pseudo-labels are detached).
        reached = {"rgb", "flow"} if name.startswith("mo_") else {name.split("_")[1]}
        for stream in ("rgb", "flow"):
            grad = method.model.streams[stream].backbone.net[0].weight.grad
            got = grad is not None and bool(grad.abs().sum() > 0)
            assert got == (stream in reached), (name, stream)
        head_grad = method.model.head.net[0].weight.grad
        uses_head = name.startswith("mo_")
        assert (head_grad is not None and head_grad.abs().sum() > 0) == uses_head, name


def test_bank_initialisation_pass_and_update_after_step(tiny_store):
    _, data, method, source, target = _setup(tiny_store, method="cmco")
    banks = method.banks
    assert set(banks) == {
        "source_rgb_z",
        "source_flow_z",
        "target_rgb_z",
        "target_flow_z",
        "source_rgb_f",
        "source_flow_f",
    }
    method.eval()
    method.begin_adaptation(_encode(data, method.model))
    for bank in banks.values():
        assert bool(bank.written.all())
        assert torch.allclose(bank.memory.norm(dim=1), torch.ones(bank.num_rows), atol=1e-5)
    method.train()
    before = {k: b.memory.clone() for k, b in banks.items()}
    ctx = StepContext("adapt", 0, 10)
    result = method(source, target, ctx)
    method.after_step(result, ctx)
    m = method.config.delta
    for key, bank in banks.items():
        domain = key.split("_", 1)[0]
        index = result.state[f"{domain}_index"]
        expected = torch.nn.functional.normalize(
            m * before[key][index] + (1 - m) * result.state[key], dim=1
        )
        assert torch.allclose(bank.memory[index], expected, atol=1e-6), key
        untouched = torch.ones(bank.num_rows, dtype=torch.bool)
        untouched[index] = False
        assert torch.equal(bank.memory[untouched], before[key][untouched]), key


@pytest.mark.parametrize(
    ("method", "extra", "banks"),
    [
        ("cmco_modality", {}, {"source_rgb_z", "source_flow_z", "target_rgb_z", "target_flow_z"}),
        ("cmco_domain", {}, {"source_rgb_f", "source_flow_f"}),
        ("cmco_domain", {"method.head_in_domain": True}, {"source_rgb_z", "source_flow_z"}),
    ],
)
def test_halves_keep_only_their_banks_and_terms(tiny_store, method, extra, banks):
    _, data, m, source, target = _setup(tiny_store, method=method, **extra)
    assert set(m.banks) == banks
    m.begin_adaptation(_encode(data, m.model))
    terms = set(m(source, target, StepContext("adapt", 0, 10)).losses)
    expected = {"mo_source", "mo_target"} if method == "cmco_modality" else {"do_rgb", "do_flow"}
    assert terms == {"src_ce", *expected}


def test_random_bank_initialisation_masks_unwritten_rows(tiny_store):
    _, data, method, source, target = _setup(
        tiny_store, method="cmco", **{"method.bank_init": "random"}
    )
    method.begin_adaptation(_encode(data, method.model))
    assert not any(bool(b.written.any()) for b in method.banks.values())
    result = method(source, target, StepContext("adapt", 0, 10))
    assert all(torch.isfinite(v) for v in result.losses.values())
    method.after_step(result, StepContext("adapt", 0, 10))
    written = method.banks["source_rgb_z"].written
    assert int(written.sum()) == len(source["index"]) and bool(written[source["index"]].all())


def test_confident_pseudo_labels_drive_the_domain_term(tiny_store):
    _, data, method, source, target = _setup(tiny_store, method="cmco_domain", T=1.0)
    method.begin_adaptation(_encode(data, method.model))
    result = method(source, target, StepContext("adapt", 0, 10))
    assert result.losses["do_rgb"].item() == 0.0 and result.losses["do_flow"].item() == 0.0
    assert result.losses["do_rgb"].requires_grad


def test_random_banks_leave_anchors_without_a_written_positive_out(tiny_store):
    _, data, method, source, target = _setup(
        tiny_store, method="cmco", T=0.01, **{"method.bank_init": "random"}
    )
    method.begin_adaptation(_encode(data, method.model))
    ctx = StepContext("adapt", 0, 10)
    result = method(source, target, ctx)
    # Nothing written yet: no anchor has a real positive, no source row is a positive.
    for name in ("mo_source", "mo_target", "do_rgb", "do_flow"):
        assert result.losses[name].item() == 0.0 and result.losses[name].requires_grad, name
    method.after_step(result, ctx)
    again = method(source, target, ctx)
    assert again.losses["mo_source"].item() > 0.0  # the source rows of this batch are written
    assert again.losses["mo_target"].item() > 0.0


def test_a_bf16_autocast_step_keeps_losses_and_banks_in_float32(tiny_store):
    _, data, method, source, target = _setup(tiny_store, method="cmco", T=0.01)
    method.begin_adaptation(_encode(data, method.model))
    ctx = StepContext("adapt", 0, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = method(source, target, ctx)
        reference = method.model.streams["rgb"].classifier(torch.randn(2, 32))
    assert reference.dtype == torch.bfloat16  # the layers do run in bfloat16
    for name, value in result.losses.items():
        assert value.dtype == torch.float32, name
    for name, value in result.state.items():
        if value.is_floating_point():
            assert value.dtype == torch.float32, name
    result.total().backward()
    method.after_step(result, ctx)
    for name, bank in method.banks.items():
        assert bank.memory.dtype == torch.float32, name
        norms = bank.memory[bank.written].norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method_name", ["cmco", "mmd"])
def test_a_bf16_training_run_on_cpu_computes_every_loss_in_float32(
    tiny_store, monkeypatch, method_name
):
    from cmcl.engine import fit
    from cmcl.methods.base import StepResult

    seen: list[tuple[str, torch.dtype]] = []
    original = StepResult.total

    def record(self):
        seen.extend((name, value.dtype) for name, value in self.losses.items())
        return original(self)

    monkeypatch.setattr(StepResult, "total", record)
    config = RunConfig.from_overrides(
        tiny_overrides(tiny_store, method=method_name, **{"train.precision": "bf16"})
    )
    fit(config)
    adaptation_terms = {"cmco": "mo_source", "mmd": "mmd_rgb"}[method_name]
    assert {"src_ce", adaptation_terms} <= {name for name, _ in seen}
    assert {dtype for _, dtype in seen} == {torch.float32}
