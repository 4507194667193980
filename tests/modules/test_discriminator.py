"""Discriminator and correspondence head: layer sizes and input checks."""

from __future__ import annotations

import pytest
import torch

from cmcl.modules import CorrespondenceHead, Discriminator


def test_discriminator_layers():
    d = Discriminator(in_dim=1024)
    shapes = [tuple(p.shape) for p in d.parameters()]
    assert shapes == [(100, 1024), (100,), (2, 100), (2,)]
    assert d(torch.randn(3, 1024)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"\(N, 1024\)"):
        d(torch.randn(3, 128))
    with pytest.raises(ValueError, match="hidden"):
        Discriminator(in_dim=4, hidden=0)


def test_correspondence_head_concatenates_rgb_then_flow():
    head = CorrespondenceHead(feature_dim=1024)
    first = head.classifier.net[0]
    assert tuple(first.weight.shape) == (100, 2048)
    rgb, flow = torch.randn(5, 1024), torch.randn(5, 1024)
    expected = head.classifier(torch.cat([rgb, flow], dim=1))
    assert torch.equal(head(rgb, flow), expected)
    assert not torch.allclose(head(rgb, flow), head(flow, rgb))
    with pytest.raises(ValueError, match="same shape"):
        head(rgb, flow[:3])
