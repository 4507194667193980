"""benchmarks/peer_step.py: the plain-PyTorch cmco step equals the project's in value.

Small sizes (32-d features, 60 and 40 bank rows) so that it runs in about a
second; the benchmark repeats the check at the EPIC sizes before it times.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peer_step.py"


@pytest.fixture(scope="module")
def peer_step():
    spec = importlib.util.spec_from_file_location("peer_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_step"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["peer_step"]


def small(peer_step):
    return peer_step.Sizes(
        source_rows=60, target_rows=40, in_dim=32, feature_dim=32, proj_hidden=48, proj_dim=16
    )


@pytest.mark.parametrize(("threshold", "seed"), [(0.3, 0), (0.25, 1), (0.8, 2)])
def test_one_step_equals_the_projects(peer_step, threshold, seed):
    check = peer_step.compare_one_step(small(peer_step), threshold=threshold, seed=seed)
    assert set(check.losses) == {"total", "src_ce", "mo_source", "mo_target", "do_rgb", "do_flow"}
    assert check.loss_rel < 1e-6, check.losses
    assert check.grad_rel < 1e-6
    assert check.param_rel < 1e-6
    assert check.buffer_rel < 1e-6
    assert check.bank_rel < 1e-6
    if threshold < 0.5:
        # the cross-domain term had anchors, and was not trivially all of them
        assert 0 < check.confident < 16
        assert check.losses["do_rgb"][0] > 0


def test_a_different_step_is_caught(peer_step, monkeypatch):
    # The comparison must be able to fail: a peer with another temperature differs.
    settings = peer_step.PeerSettings
    monkeypatch.setattr(peer_step, "PeerSettings", lambda **kw: settings(**{**kw, "tau": 0.11}))
    check = peer_step.compare_one_step(small(peer_step), threshold=0.3)
    assert check.loss_rel > 1e-3
    assert check.grad_rel > 1e-3


def test_the_peer_uses_nothing_from_cmcl(peer_step):
    for part in (peer_step.PeerSettings, peer_step.PeerModel, peer_step.PeerCMCo):
        assert "cmcl" not in inspect.getsource(part)
