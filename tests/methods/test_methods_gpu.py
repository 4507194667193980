"""Every method on CUDA with the default bf16 autocast: finite losses, AdaBN re-estimation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.engine import fit
from cmcl.methods import METHODS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_on_cuda_in_bf16(tiny_store, name):
    extra = {"train.device": "cuda", "train.precision": "auto"}
    result = fit(RunConfig.from_overrides(tiny_overrides(tiny_store, method=name, **extra)))
    for row in result.history:
        for key, value in row.items():
            if key.startswith("loss_"):
                assert math.isfinite(value), (name, row["stage"], row["step"], key)
    assert math.isfinite(result.summary["target_acc"])


def test_adabn_reestimation_on_cuda_leaves_training_unchanged(tiny_store):
    base = tiny_overrides(tiny_store, method="adabn", **{"train.device": "cuda"})
    plain = fit(RunConfig.from_overrides(base)).history
    classic = fit(RunConfig.from_overrides({**base, "method.adabn_reestimate": True})).history
    assert [r["loss_total"] for r in plain] == [r["loss_total"] for r in classic]
