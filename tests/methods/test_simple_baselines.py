"""MMD, MCD and pseudo-labelling methods: their terms are the losses on the right tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.data.build import build_pair_data
from cmcl.losses import ClassifierDiscrepancyLoss, MMDLoss
from cmcl.methods import StepContext, build_method
from cmcl.models.build import build_model

ADAPT = StepContext("adapt", 0, 8)


def _setup(store, method, **extra):
    config = RunConfig.from_overrides(tiny_overrides(store, method=method, **extra))
    torch.manual_seed(0)
    data = build_pair_data(config)
    model = build_model(config.model, data.info)
    m = build_method(model=model, config=config.method, info=data.info)
    source = next(data.train_batches("source_train", batch_size=8, seed=0, stage=1, start_step=0))
    target = next(data.train_batches("target_train", batch_size=8, seed=0, stage=1, start_step=0))
    target.pop("label")
    return config, m, source, target


def test_mmd_is_per_modality_on_the_stream_features(tiny_store):
    _, method, source, target = _setup(tiny_store, "mmd", **{"method.mmd_weight": 0.35})
    method.eval()
    result = method(source, target, ADAPT)
    assert result.weights == {"src_ce": 1.0, "mmd_rgb": 0.35, "mmd_flow": 0.35}
    out_s = method.model(source["rgb"], source["flow"])
    out_t = method.model(target["rgb"], target["flow"])
    for m in ("rgb", "flow"):
        expected = MMDLoss()(out_s.features[m], out_t.features[m])
        assert torch.allclose(result.losses[f"mmd_{m}"], expected)


def test_mcd_heads_disagree_on_the_target_through_a_reversal(tiny_store):
    _, method, source, target = _setup(tiny_store, "mcd", **{"method.mcd_weight": 0.4})
    assert method.needs_target("adapt") and not method.needs_target("warmup")
    assert method(source, None, StepContext("warmup", 0, 6)).weights == {
        "src_ce": 1.0,
        "src_ce2": 1.0,
    }
    method.eval()  # deterministic features: dropout off
    result = method(source, target, ADAPT)
    assert result.weights == {"src_ce": 1.0, "src_ce2": 1.0, "mcd_disc": -0.4}
    model = method.model
    out_t = model(target["rgb"], target["flow"])
    head1 = model.fuse({m: model.streams[m].classifier(out_t.features[m]) for m in ("rgb", "flow")})
    head2 = model.fuse({m: method.second[m](out_t.features[m]) for m in ("rgb", "flow")})
    plain = ClassifierDiscrepancyLoss()(head1, head2)
    assert torch.allclose(result.losses["mcd_disc"], plain)
    out_s = model(source["rgb"], source["flow"])
    head2_s = model.fuse({m: method.second[m](out_s.features[m]) for m in ("rgb", "flow")})
    assert torch.allclose(result.losses["src_ce2"], F.cross_entropy(head2_s, source["label"]))
    # heads: same gradient as the plain discrepancy; streams: reversed
    grads = {}
    for name, loss in (("reversed", result.losses["mcd_disc"]), ("plain", plain)):
        method.zero_grad()
        loss.backward(retain_graph=True)
        grads[name] = (
            method.second["rgb"].weight.grad.clone(),
            model.streams["rgb"].backbone.net[0].weight.grad.clone(),
        )
    assert torch.allclose(grads["reversed"][0], grads["plain"][0], atol=1e-7)
    assert torch.allclose(grads["reversed"][1], -grads["plain"][1], atol=1e-7)
    assert torch.count_nonzero(grads["plain"][1]) > 0


@pytest.mark.parametrize("fusion", ["sum", "mean"])
def test_pseudo_label_term_uses_the_fused_target_logits(tiny_store, fusion):
    _, probe, _, target = _setup(tiny_store, "pseudo_label", fusion=fusion)
    confidence = probe.eval().model(target["rgb"], target["flow"]).fused.softmax(dim=1).max(dim=1)
    threshold = float(confidence.values.median().detach())  # about half the clips are confident
    _, method, source, target = _setup(tiny_store, "pseudo_label", T=threshold, fusion=fusion)
    method.eval()
    result = method(source, target, ADAPT)
    assert result.weights == {"src_ce": 1.0, "pl": 1.25}
    fused = method.model(target["rgb"], target["flow"]).fused
    probs = fused.softmax(dim=1)
    confident = probs.max(dim=1).values >= threshold
    assert 0 < int(confident.sum()) < len(confident)  # the threshold really selects
    expected = F.cross_entropy(fused[confident], probs.argmax(dim=1)[confident])
    assert torch.allclose(result.losses["pl"], expected)


def test_pseudo_label_without_confident_clips_is_an_attached_zero(tiny_store):
    _, method, source, target = _setup(tiny_store, "pseudo_label", T=1.0)
    loss = method(source, target, ADAPT).losses["pl"]
    assert loss.item() == 0.0 and loss.requires_grad
