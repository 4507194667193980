"""MM-SADA: stages and weights, the reversal coefficient ramp, the correspondence head's input."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.data.build import build_pair_data
from cmcl.methods import StepContext, build_method
from cmcl.models.build import build_model
from cmcl.modules import grl_coefficient


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


@pytest.mark.parametrize(
    ("name", "warmup", "adapt"),
    [
        ("mm_sada", {"corr": 5.0}, {"corr": 1.0, "adv_rgb": 1.0, "adv_flow": 1.0}),
        ("mm_sada_modality", {"corr": 5.0}, {"corr": 1.0}),
        ("mm_sada_domain", {}, {"adv_rgb": 1.0, "adv_flow": 1.0}),
    ],
)
def test_terms_and_weights_per_stage(tiny_store, name, warmup, adapt):
    _, method, source, target = _setup(tiny_store, name)
    uses_corr = "corr" in warmup
    assert method.needs_target("warmup") == uses_corr and method.needs_target("adapt")
    first = method(source, target if uses_corr else None, StepContext("warmup", 0, 6))
    assert first.weights == {"src_ce": 1.0, **warmup}
    second = method(source, target, StepContext("adapt", 3, 8))
    assert second.weights == {"src_ce": 1.0, **adapt}
    assert all(torch.isfinite(v) for v in second.losses.values())


def test_weights_come_from_the_config(tiny_store):
    extra = {"method.correspondence_weight": 0.3, "method.correspondence_weight_warmup": 2.0}
    _, method, source, target = _setup(tiny_store, "mm_sada", **extra)
    assert method(source, target, StepContext("warmup", 0, 6)).weights["corr"] == 2.0
    assert method(source, target, StepContext("adapt", 0, 6)).weights["corr"] == 0.3


def _backbone_grads(method):
    grads = {}
    for m in ("rgb", "flow"):
        weight = method.model.streams[m].backbone.net[0].weight
        grads[m] = torch.zeros_like(weight) if weight.grad is None else weight.grad.clone()
    return grads


@pytest.mark.parametrize("step", [0, 2, 5, 8])
def test_discriminator_gradient_reaches_the_streams_reversed_and_ramped(tiny_store, step):
    _, method, source, target = _setup(tiny_store, "mm_sada_domain", **{"method.grl_scale": 0.7})
    method.eval()  # no dropout, fixed BN statistics: both passes below see the same features
    ctx = StepContext("adapt", step, 8)
    coefficient = grl_coefficient(step / 8, scale=0.7)
    for modality, other in (("rgb", "flow"), ("flow", "rgb")):
        disc = method.adversary.discriminators[modality]
        method.zero_grad()
        method(source, target, ctx).losses[f"adv_{modality}"].backward()
        reversed_grads = _backbone_grads(method)
        disc_grad = disc.net[0].weight.grad.clone()
        # the same loss without the reversal
        method.zero_grad()
        out_s = method.model(source["rgb"], source["flow"])
        out_t = method.model(target["rgb"], target["flow"])
        plain = method.adversary.loss(
            disc(out_s.features[modality]), disc(out_t.features[modality])
        )
        plain.backward()
        plain_grads = _backbone_grads(method)
        assert torch.count_nonzero(plain_grads[modality]) > 0
        assert torch.allclose(disc.net[0].weight.grad, disc_grad, atol=1e-7)  # not reversed
        expected = plain_grads[modality] * -coefficient
        assert torch.allclose(reversed_grads[modality], expected, atol=1e-7)
        assert torch.count_nonzero(reversed_grads[other]) == 0


def test_correspondence_head_sees_concatenated_features_of_both_domains(tiny_store):
    config, method, source, target = _setup(tiny_store, "mm_sada_modality")
    head = method.correspondence.head
    seen = []
    handle = head.classifier.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    method(source, target, StepContext("adapt", 0, 8))
    handle.remove()
    (x,) = seen
    n = len(source["index"]) + len(target["index"])
    assert x.shape == (n, 2 * config.model.feature_dim)
