"""AdaBN: the target forward changes batch-norm statistics only; re-estimation is undone."""

from __future__ import annotations

import copy

import torch
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.data.build import build_pair_data
from cmcl.engine import fit
from cmcl.methods import StepContext, build_method
from cmcl.methods.adabn import batch_norms
from cmcl.models.build import build_model

ADAPT = StepContext("adapt", 0, 10)


def _setup(store, **extra):
    config = RunConfig.from_overrides(tiny_overrides(store, method="adabn", **extra))
    torch.manual_seed(0)
    data = build_pair_data(config)
    model = build_model(config.model, data.info)
    method = build_method(model=model, config=config.method, info=data.info)
    source = next(data.train_batches("source_train", batch_size=8, seed=0, stage=1, start_step=0))
    target = next(data.train_batches("target_train", batch_size=8, seed=0, stage=1, start_step=0))
    target.pop("label")
    return config, data, method, source, target


def _bn_inputs(model):
    """Record the input of every batch-norm layer during the next forward passes."""
    seen: dict[torch.nn.Module, list[torch.Tensor]] = {bn: [] for bn in batch_norms(model)}
    handles = [
        bn.register_forward_hook(lambda m, args, out: seen[m].append(args[0].detach().clone()))
        for bn in seen
    ]
    return seen, handles


def _buffers(method):
    return {k: v.clone() for k, v in method.state_dict().items() if "running" in k}


def test_target_forward_updates_only_the_running_statistics(tiny_store):
    _, _, method, source, target = _setup(tiny_store)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    seen, handles = _bn_inputs(method.model)
    out_s = method.model(source["rgb"], source["flow"])
    after_source = {k: v.clone() for k, v in method.state_dict().items()}
    for values in seen.values():
        values.clear()
    result = method.adaptation_losses(source, target, out_s, ADAPT)
    for h in handles:
        h.remove()
    assert result.losses == {} and result.weights == {}
    for key, value in method.state_dict().items():
        if "running" in key or "num_batches" in key:
            continue
        assert torch.equal(value, before[key]), key  # weights untouched
    for bn, inputs in seen.items():
        (x,) = inputs  # exactly one target forward through each layer
        m = bn.momentum
        prefix = next(k for k, v in method.named_modules() if v is bn)
        old_mean = after_source[f"{prefix}.running_mean"]
        old_var = after_source[f"{prefix}.running_var"]
        assert torch.allclose(bn.running_mean, (1 - m) * old_mean + m * x.mean(0), atol=1e-6)
        assert torch.allclose(bn.running_var, (1 - m) * old_var + m * x.var(0), atol=1e-5)


def test_gradients_equal_source_only_and_only_bn_buffers_differ(tiny_store):
    config, data, adabn, source, target = _setup(tiny_store)
    plain = build_method(
        model=copy.deepcopy(adabn.model),
        config=config.method.__class__(name="source_only"),
        info=data.info,
    )
    results = {}
    for name, method in (("adabn", adabn), ("source_only", plain)):
        torch.manual_seed(3)  # same dropout masks on the source batch
        result = method(source, target if name == "adabn" else None, ADAPT)
        method.zero_grad()
        result.total().backward()
        results[name] = {
            n: p.grad.clone() for n, p in method.model.named_parameters() if p.grad is not None
        }
    assert results["adabn"].keys() == results["source_only"].keys()
    assert any(k.startswith("streams.rgb.backbone") for k in results["adabn"])
    for name, grad in results["adabn"].items():
        assert torch.equal(grad, results["source_only"][name]), name
    ours, theirs = _buffers(adabn.model), _buffers(plain.model)
    assert all(not torch.equal(ours[k], theirs[k]) for k in ours)


def _all_target_windows(data):
    def batches(split):
        n = data.info.sizes[split]
        for batch in data.eval_batches(
            split, batch_size=n, windows="test", indices=torch.arange(n)
        ):
            yield {"rgb": batch["rgb"].flatten(0, 1), "flow": batch["flow"].flatten(0, 1)}

    return batches


def test_classic_reestimation_uses_the_target_and_restores_training_statistics(tiny_store):
    _, data, method, source, target = _setup(tiny_store, **{"method.adabn_reestimate": True})
    method(source, target, ADAPT)  # some training statistics
    training = _buffers(method.model)
    weights = {k: v.clone() for k, v in method.state_dict().items() if "running" not in k}
    momenta = [bn.momentum for bn in batch_norms(method.model)]
    # expected statistics: those of every target training window, as one batch
    reference = copy.deepcopy(method.model).eval()
    seen, _ = _bn_inputs(reference)
    windows = next(_all_target_windows(data)("target_train"))
    reference(windows["rgb"], windows["flow"])
    with method.evaluation(_all_target_windows(data)):
        assert method.training  # the trainer's mode flags are left alone
        # the copy's layers come in the same order as the original's
        for bn, ref in zip(batch_norms(method.model), seen, strict=True):
            (x,) = seen[ref]
            assert torch.allclose(bn.running_mean, x.mean(0), atol=1e-5)
            assert torch.allclose(bn.running_var, x.var(0), atol=1e-4)
    for key, value in _buffers(method.model).items():
        assert torch.equal(value, training[key]), key
    for key, value in method.state_dict().items():
        if "running" not in key:
            assert torch.equal(value, weights[key]), key
    assert [bn.momentum for bn in batch_norms(method.model)] == momenta


def test_without_the_option_evaluation_changes_nothing(tiny_store):
    _, data, method, source, target = _setup(tiny_store)
    method(source, target, ADAPT)
    training = _buffers(method.model)
    with method.evaluation(_all_target_windows(data)):
        for key, value in _buffers(method.model).items():
            assert torch.equal(value, training[key]), key


def test_reestimation_changes_evaluation_but_not_training(tiny_store):
    short = {"train.warmup_steps": 2, "train.steps": 4, "train.lr_step": 2}
    base = tiny_overrides(tiny_store, method="adabn", **short)
    plain = fit(RunConfig.from_overrides(base)).history
    classic = fit(RunConfig.from_overrides({**base, "method.adabn_reestimate": True})).history
    losses = [[v for k, v in r.items() if k.startswith("loss_")] for r in plain]
    assert losses == [[v for k, v in r.items() if k.startswith("loss_")] for r in classic]
    assert [r["source_val_acc"] for r in plain] == [r["source_val_acc"] for r in classic]
    assert [r["target_acc"] for r in plain] != [r["target_acc"] for r in classic]
