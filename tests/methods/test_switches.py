"""The ablation switches: each changes what it should, is recorded, and is settable from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import tiny_overrides

from cmcl.cli import cli
from cmcl.config import RunConfig
from cmcl.data.benchmarks import EPIC_CLASSES
from cmcl.data.build import build_pair_data
from cmcl.data.feature_store import write_meta, write_split
from cmcl.losses import CrossModalContrastiveLoss
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
    return config, data, m, source, target


def _encode(data, model):
    def encode(split):
        for batch in data.eval_batches(split, batch_size=16, windows="centre"):
            yield batch["index"], model(batch["rgb"], batch["flow"]).features

    return encode


# -- sampling (Table 5) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def window_store(tmp_path_factory):
    """Every feature of window k is k (RGB) or 100 + k (flow): a batch shows which window it got."""
    root = tmp_path_factory.mktemp("window_store")
    windows, n = 5, 40
    base = np.broadcast_to(np.arange(windows, dtype=np.float32)[None, :, None], (n, windows, 4))
    for domain in ("D1", "D2", "D3"):
        for split in ("train", "test"):
            write_split(
                root,
                domain=domain,
                split=split,
                segment_ids=[str(i) for i in range(n)],
                labels=np.arange(n) % len(EPIC_CLASSES),
                rgb=base,
                flow=base + 100,
            )
    write_meta(root, {"benchmark": "synthetic-epic", "class_names": list(EPIC_CLASSES)})
    return root


@pytest.mark.parametrize("sampling", ["independent", "synchronised"])
def test_synchronised_sampling_draws_one_window_for_both_modalities(window_store, sampling):
    config = RunConfig.from_overrides(tiny_overrides(window_store, sampling=sampling))
    assert config.data.sampling == sampling
    data = build_pair_data(config)
    same, total = 0, 0
    for split in ("source_train", "target_train"):
        batches = data.train_batches(split, batch_size=8, seed=0, stage=1, start_step=0)
        for _ in range(10):
            batch = next(batches)
            rgb_window, flow_window = batch["rgb"][:, 0], batch["flow"][:, 0] - 100
            same += int((rgb_window == flow_window).sum())
            total += len(rgb_window)
    if sampling == "synchronised":
        assert same == total
    else:  # independent draws coincide about 1 time in 5
        assert 0.1 * total < same < 0.35 * total


# -- projection head in the cross-modal term (Table 7) ---------------------------------------


def test_without_the_head_the_cross_modal_term_uses_normalised_features(tiny_store):
    config, data, method, source, target = _setup(
        tiny_store, "cmco", **{"method.head_in_modality": False}
    )
    dim = config.model.feature_dim
    assert set(method.banks) == {
        f"{d}_{m}_f" for d in ("source", "target") for m in ("rgb", "flow")
    }
    assert all(bank.dim == dim for bank in method.banks.values())
    method.eval()
    method.begin_adaptation(_encode(data, method.model))
    result = method(source, target, ADAPT)
    features = method.model(target["rgb"], target["flow"]).features
    loss = CrossModalContrastiveLoss(tau=config.method.tau)
    expected = (
        sum(
            loss(
                F.normalize(features[k], dim=1),
                method.banks[f"target_{other}_f"].memory,
                target["index"],
            )
            for k, other in (("rgb", "flow"), ("flow", "rgb"))
        )
        / 2
    )
    assert torch.allclose(result.losses["mo_target"], expected)
    method.zero_grad()
    result.total().backward()
    assert all(p.grad is None for p in method.model.head.parameters())


def test_with_the_head_the_cross_modal_banks_are_projected(tiny_store):
    config, _, method, _, _ = _setup(tiny_store, "cmco_modality")
    assert all(bank.dim == config.model.proj_dim for bank in method.banks.values())


# -- fusion, cross-modal positive, cross-domain form -----------------------------------------


@pytest.mark.parametrize(("fusion", "scale"), [("sum", 1.0), ("mean", 0.5)])
def test_fusion_sums_or_averages_the_stream_logits(tiny_store, fusion, scale):
    _, _, method, source, _ = _setup(tiny_store, "source_only", fusion=fusion)
    out = method.eval().model(source["rgb"], source["flow"])
    assert torch.allclose(out.fused, scale * (out.logits["rgb"] + out.logits["flow"]))


@pytest.mark.parametrize("positive", ["bank", "batch"])
def test_batch_positive_ignores_the_bank_row_of_the_positive(tiny_store, positive):
    _, data, method, source, target = _setup(
        tiny_store, "cmco_modality", **{"method.modality_positive": positive}
    )
    method.eval()
    method.begin_adaptation(_encode(data, method.model))
    # One source clip: its own bank rows are only ever its positive, never another's negative.
    source = {k: v[:1] if torch.is_tensor(v) else v for k, v in source.items()}
    before = method(source, target, ADAPT).losses["mo_source"]
    for key in ("source_rgb_z", "source_flow_z"):
        memory = method.banks[key].memory
        memory[source["index"]] = -memory[source["index"]]
    after = method(source, target, ADAPT).losses["mo_source"]
    assert torch.allclose(before, after) == (positive == "batch")


def test_batch_form_of_the_cross_domain_term_is_the_single_log_of_the_paper(tiny_store):
    config, data, method, source, target = _setup(
        tiny_store, "cmco_domain", T=0.01, **{"method.cross_domain_form": "batch"}
    )
    assert method.domain_loss.form == "batch"
    method.eval()
    method.begin_adaptation(_encode(data, method.model))
    result = method(source, target, ADAPT)
    out = method.model(target["rgb"], target["flow"])
    pseudo = out.fused.argmax(dim=1)
    labels = data.info.source_labels
    tau = config.method.tau
    for modality in ("rgb", "flow"):
        anchors = F.normalize(out.features[modality], dim=1).double()
        bank = method.banks[f"source_{modality}_f"].memory.double()
        positive, everything = 0.0, 0.0
        for i in range(len(anchors)):
            for j in range(len(bank)):
                value = float(torch.exp(anchors[i] @ bank[j] / tau).detach())
                everything += value
                positive += value if labels[j] == pseudo[i] else 0.0
        expected = -np.log(positive) + np.log(everything)
        assert result.losses[f"do_{modality}"].item() == pytest.approx(expected, rel=1e-4)


# -- CLI: settable, recorded, and invalid values listed --------------------------------------

SWITCHES = {
    "sampling": "synchronised",
    "fusion": "mean",
    "method.head_in_modality": False,
    "method.head_in_domain": True,
    "method.cross_domain_form": "batch",
    "method.modality_positive": "batch",
    "method.bank_init": "random",
}
RECORDED = {
    "sampling": ("data", "sampling"),
    "fusion": ("model", "fusion"),
}


def test_switches_set_from_the_cli_are_recorded_in_config_json(tiny_store, tmp_path):
    sets = []
    short = {"train.warmup_steps": 2, "train.steps": 2, "train.lr_step": 1}
    for key, value in {**tiny_overrides(tiny_store, **short), **SWITCHES}.items():
        if key not in ("benchmark", "pair"):
            sets += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    out = tmp_path / "run"
    args = ["train", "--method", "cmco", "--quiet", "--out", str(out), *sets]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"]["name"] == "cmco"
    for key, value in SWITCHES.items():
        section, name = RECORDED.get(key, tuple(key.split(".")))
        assert saved[section][name] == value, key


@pytest.mark.parametrize(
    ("args", "listed"),
    [
        (["--method", "mmsada"], "valid: source_only, supervised_target, cmco"),
        (["--set", "sampling=sometimes"], "independent, synchronised"),
        (["--set", "fusion=max"], "sum, mean"),
        (["--set", "method.cross_domain_form=pairwise"], "per_anchor, batch"),
        (["--set", "method.modality_positive=queue"], "bank, batch"),
        (["--set", "method.bank_init=zeros"], "pass, random"),
        (["--set", "method.head_in_modality=perhaps"], "expects bool"),
        (["--set", "method.head_in_everything=true"], "method has:"),
    ],
)
def test_invalid_methods_and_switch_values_are_errors_listing_the_valid_ones(
    tiny_store, tmp_path, args, listed
):
    base = ["train", "--features", str(tiny_store), "--out", str(tmp_path / "x"), "--quiet"]
    result = CliRunner().invoke(cli, base + args)
    assert result.exit_code != 0
    assert listed in result.output
    assert not (tmp_path / "x").exists()
