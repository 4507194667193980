"""I3DBackbone: features for TwoStreamModel, channels-last, autocast, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmcl.models.i3d import InceptionI3d
from cmcl.models.i3d_backbone import I3DBackbone, two_stream_i3d_backbones
from cmcl.models.two_stream import TwoStreamModel

CLIP = (8, 32, 32)


def test_backbone_maps_clips_to_features_with_every_parameter_used():
    backbone = I3DBackbone(in_channels=2)
    assert backbone.in_channels == 2 and backbone.feature_dim == 1024
    assert not any(name.startswith("i3d.logits") for name, _ in backbone.named_parameters())
    features = backbone(torch.randn(2, 2, *CLIP))
    assert features.shape == (2, 1024)
    features.sum().backward()
    # DDP without find_unused_parameters needs a gradient for every parameter.
    assert all(p.grad is not None for p in backbone.parameters())


def test_backbone_equals_i3d_features():
    backbone = I3DBackbone(in_channels=3).eval()
    model = InceptionI3d(num_classes=400).eval()
    model.load_state_dict(backbone.i3d.state_dict(), strict=False)
    x = torch.randn(1, 3, *CLIP)
    with torch.no_grad():
        assert torch.equal(backbone(x), model.extract_features(x))


def test_two_stream_model_with_i3d_backbones_trains():
    model = TwoStreamModel(**two_stream_i3d_backbones(), num_classes=8)
    rgb, flow = torch.randn(2, 3, *CLIP), torch.randn(2, 2, *CLIP)
    out = model(rgb, flow)
    assert out.fused.shape == (2, 8)
    assert out.features["rgb"].shape == out.features["flow"].shape == (2, 1024)
    F.cross_entropy(out.fused, torch.tensor([1, 7])).backward()
    stem = model.streams["flow"].backbone.i3d.Conv3d_1a_7x7.conv3d.weight
    assert stem.shape[1] == 2 and stem.grad is not None


def test_backbone_from_checkpoint(tmp_path):
    source = InceptionI3d(num_classes=400, in_channels=2)
    path = tmp_path / "flow_imagenet.pt"
    torch.save(source.state_dict(), path)
    backbone = I3DBackbone(in_channels=2, checkpoint=path)
    for key, value in backbone.i3d.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_channels_last_gives_same_features():
    plain = I3DBackbone(in_channels=3).eval()
    fast = I3DBackbone(in_channels=3, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    stem = fast.i3d.Conv3d_1a_7x7.conv3d.weight
    assert stem.is_contiguous(memory_format=torch.channels_last_3d) and not stem.is_contiguous()
    x = torch.randn(2, 3, *CLIP)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


def calibrated(backbone: I3DBackbone, x: torch.Tensor) -> I3DBackbone:
    """Set every BatchNorm's running statistics to those of ``x``, then eval mode.

    A freshly initialised network in eval mode fades activations towards zero,
    and train mode on tiny clips normalises over a handful of values (so any
    rounding flips signs); calibrated statistics avoid both.
    """
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics
    with torch.no_grad():
        backbone.train()(x)
    return backbone.eval()


def test_backbone_under_bf16_autocast_matches_fp32():
    backbone = calibrated(I3DBackbone(in_channels=3), torch.randn(4, 3, *CLIP))
    dtypes = []
    backbone.i3d.Mixed_5c.b0.conv3d.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    x = torch.randn(2, 3, *CLIP)
    with torch.no_grad():
        reference = backbone(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = backbone(x)
    assert dtypes == [torch.float32, torch.bfloat16]
    assert torch.isfinite(low).all()
    cosine = F.cosine_similarity(low.float(), reference, dim=1)
    assert reference.norm(dim=1).min() > 1 and cosine.min() > 0.97


def test_backbone_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\)"):
        I3DBackbone(in_channels=3)(torch.randn(1, 2, *CLIP))
