"""Table 8: adversarial terms in place of the contrastive ones (adv_adv, con_adv)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.data.build import build_pair_data
from cmcl.methods import StepContext, build_method
from cmcl.models.build import build_model

ADAPT = StepContext("adapt", 4, 8)


def _setup(store, method, **extra):
    config = RunConfig.from_overrides(tiny_overrides(store, method=method, **extra))
    torch.manual_seed(0)
    data = build_pair_data(config)
    model = build_model(config.model, data.info)
    m = build_method(model=model, config=config.method, info=data.info)
    source = next(data.train_batches("source_train", batch_size=8, seed=0, stage=1, start_step=0))
    target = next(data.train_batches("target_train", batch_size=8, seed=0, stage=1, start_step=0))
    target.pop("label")
    return config, data, m, source, target


def _encode(data, model):
    def encode(split):
        for batch in data.eval_batches(split, batch_size=16, windows="centre"):
            yield batch["index"], model(batch["rgb"], batch["flow"]).features

    return encode


@pytest.mark.parametrize(("head", "dim_key"), [(True, "proj_dim"), (False, "feature_dim")])
def test_adv_adv_discriminates_modalities_on_projected_embeddings(tiny_store, head, dim_key):
    config, _, method, source, target = _setup(
        tiny_store, "adv_adv", **{"method.head_in_modality": head}
    )
    assert not hasattr(method, "banks")
    dim = getattr(config.model, dim_key)
    inputs = []
    for disc in method.modality_discriminators.values():
        disc.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    result = method(source, target, ADAPT)
    assert result.weights == dict.fromkeys(
        ["src_ce", "madv_source", "madv_target", "adv_rgb", "adv_flow"], 1.0
    )
    assert len(inputs) == 4  # (rgb, flow) x (source, target)
    for x in inputs:
        assert x.shape == (8, dim)
        assert torch.allclose(x.norm(dim=1), torch.ones(8), atol=1e-5)
    method.zero_grad()
    result.losses["madv_target"].backward()
    head_grad = method.model.head.net[0].weight.grad
    assert (head_grad is not None and bool(head_grad.abs().sum() > 0)) == head
    assert method.modality_discriminators["source"].net[0].weight.grad is None


def test_con_adv_is_cmco_modality_plus_the_adversarial_domain_term(tiny_store):
    _, data, con_adv, source, target = _setup(tiny_store, "con_adv")
    _, _, modality_only, _, _ = _setup(tiny_store, "cmco_modality")
    assert set(con_adv.banks) == set(modality_only.banks)
    for m in (con_adv, modality_only):
        m.eval()
        m.begin_adaptation(_encode(data, m.model))
    ours = con_adv(source, target, ADAPT)
    theirs = modality_only(source, target, ADAPT)
    assert set(ours.losses) == {"src_ce", "mo_source", "mo_target", "adv_rgb", "adv_flow"}
    for term in ("src_ce", "mo_source", "mo_target"):
        assert torch.equal(ours.losses[term], theirs.losses[term]), term
        assert ours.weights[term] == theirs.weights[term]
    assert ours.weights["adv_rgb"] == ours.weights["adv_flow"] == 1.0
    # the banks are still updated after the step
    before = con_adv.banks["target_rgb_z"].memory.clone()
    con_adv.after_step(ours, ADAPT)
    assert not torch.equal(con_adv.banks["target_rgb_z"].memory, before)
