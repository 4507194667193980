"""InceptionI3d against a naive, independently written reference of the pytorch-i3d conventions.

The reference below walks a state dict by the port's key names with an
architecture table written from the I3D paper, and does each step the slow,
explicit way: TensorFlow SAME padding found by search, F.pad with zeros, an
unpadded convolution, BatchNorm as (x - mean) / sqrt(var + 1e-3) * w + b, and
max / average pooling over unfolded windows.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmcl.models.i3d import ConvUnit, InceptionI3d, SameMaxPool3d, same_pad_arg, same_padding

# (size, kernel, stride) -> (before, after), worked out by hand from TensorFlow's
# rule: ceil(size / stride) outputs, total padding split with the extra at the end.
HAND_PADDING = [
    ((224, 7, 2), (2, 3)),
    ((16, 7, 2), (2, 3)),
    ((193, 7, 2), (3, 3)),
    ((1, 7, 2), (3, 3)),
    ((112, 3, 2), (0, 1)),
    ((97, 3, 2), (1, 1)),
    ((8, 3, 2), (0, 1)),
    ((5, 3, 2), (1, 1)),
    ((2, 3, 2), (0, 1)),
    ((1, 3, 2), (1, 1)),
    ((14, 2, 2), (0, 0)),
    ((13, 2, 2), (0, 1)),
    ((3, 2, 2), (0, 1)),
    ((7, 3, 1), (1, 1)),
    ((8, 1, 1), (0, 0)),
    ((8, 1, 2), (0, 0)),
]


def searched_total_padding(size: int, kernel: int, stride: int) -> int:
    """Smallest total padding giving ceil(size / stride) valid windows."""
    wanted = -(-size // stride)
    for total in range(kernel + stride + 1):
        if size + total >= kernel and (size + total - kernel) // stride + 1 == wanted:
            return total
    raise AssertionError("no padding found")


def ref_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    arg: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride, strict=True))):
        total = searched_total_padding(size, k, s)
        arg += [total // 2, total - total // 2]
    return F.pad(x, arg)


def windows(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """(N, C, T, H, W) -> (N, C, T', H', W', kt * kh * kw) of unfolded windows."""
    for dim, (k, s) in enumerate(zip(kernel, stride, strict=True)):
        x = x.unfold(2 + dim, k, s)
    return x.flatten(start_dim=5)


def ref_unit(sd, prefix, x, kernel=(1, 1, 1), stride=(1, 1, 1), *, bn=True, relu=True):
    y = F.conv3d(
        ref_pad(x, kernel, stride),
        sd[f"{prefix}.conv3d.weight"],
        sd.get(f"{prefix}.conv3d.bias"),
        stride,
    )
    if bn:
        shape = (1, -1, 1, 1, 1)
        mean, var = sd[f"{prefix}.bn.running_mean"], sd[f"{prefix}.bn.running_var"]
        weight, bias = sd[f"{prefix}.bn.weight"], sd[f"{prefix}.bn.bias"]
        y = (y - mean.view(shape)) / torch.sqrt(var.view(shape) + 1e-3) * weight.view(
            shape
        ) + bias.view(shape)
    return y.clamp_min(0) if relu else y


def ref_max_pool(x, kernel, stride):
    return windows(ref_pad(x, kernel, stride), kernel, stride).amax(dim=-1)


def ref_mixed(sd, name, x):
    b0 = ref_unit(sd, f"{name}.b0", x)
    b1 = ref_unit(sd, f"{name}.b1b", ref_unit(sd, f"{name}.b1a", x), (3, 3, 3))
    b2 = ref_unit(sd, f"{name}.b2b", ref_unit(sd, f"{name}.b2a", x), (3, 3, 3))
    b3 = ref_unit(sd, f"{name}.b3b", ref_max_pool(x, (3, 3, 3), (1, 1, 1)))
    return torch.cat([b0, b1, b2, b3], dim=1)


def ref_mixed_5c(sd, x):
    """Conv1a 7^3/2, pool 1x3x3/1x2x2, Conv2b 1^3, Conv2c 3^3, pool 1x3x3/1x2x2,
    Mixed 3b 3c, pool 3^3/2, Mixed 4b-4f, pool 2^3/2, Mixed 5b 5c (I3D paper, Fig. 3)."""
    x = ref_unit(sd, "Conv3d_1a_7x7", x, (7, 7, 7), (2, 2, 2))
    x = ref_max_pool(x, (1, 3, 3), (1, 2, 2))
    x = ref_unit(sd, "Conv3d_2b_1x1", x)
    x = ref_unit(sd, "Conv3d_2c_3x3", x, (3, 3, 3))
    x = ref_max_pool(x, (1, 3, 3), (1, 2, 2))
    for name in ("Mixed_3b", "Mixed_3c"):
        x = ref_mixed(sd, name, x)
    x = ref_max_pool(x, (3, 3, 3), (2, 2, 2))
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = ref_mixed(sd, name, x)
    x = ref_max_pool(x, (2, 2, 2), (2, 2, 2))
    for name in ("Mixed_5b", "Mixed_5c"):
        x = ref_mixed(sd, name, x)
    return x


def randomised(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Give every tensor a random value of a sane scale (so BN is far from identity)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
        elif key.endswith("conv3d.weight"):
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif key.endswith("running_var") or key.endswith("bn.weight"):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
    model.load_state_dict(state)
    return state


def mixed_5c_of(model: InceptionI3d, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.Mixed_5c.register_forward_hook(lambda m, i, o: seen.append(o))
    model.extract_features(x)
    handle.remove()
    return seen[0]


def assert_close_relative(actual, expected, tol=1e-4):
    scale = expected.abs().max().clamp_min(1e-12)
    assert (actual - expected).abs().max() / scale < tol


@pytest.mark.parametrize(("args", "expected"), HAND_PADDING)
def test_same_padding_hand_values(args, expected):
    assert same_padding(*args) == expected
    assert sum(expected) == searched_total_padding(*args)


@pytest.mark.parametrize(("kernel", "stride"), [(7, 2), (3, 2), (2, 2), (3, 1), (1, 1), (1, 2)])
def test_same_padding_matches_search(kernel, stride):
    for size in range(1, 300):
        before, after = same_padding(size, kernel, stride)
        assert before + after == searched_total_padding(size, kernel, stride), size
        assert before == (before + after) // 2
        assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


def test_same_pad_arg_orders_last_dimension_first():
    assert same_pad_arg((16, 224, 193), (7, 7, 7), (2, 2, 2)) == (3, 3, 2, 3, 2, 3)


def test_same_padding_rejects_bad_sizes():
    with pytest.raises(ValueError, match="got 0"):
        same_padding(0, 3, 1)


@pytest.mark.parametrize("shape", [(8, 64, 64), (7, 31, 30), (5, 9, 12), (1, 1, 1), (2, 3, 5)])
@pytest.mark.parametrize(
    ("kernel", "stride"), [((7, 7, 7), (2, 2, 2)), ((3, 3, 3), (1, 1, 1)), ((1, 1, 1), (1, 1, 1))]
)
def test_conv_unit_matches_explicit_pad_conv_bn(shape, kernel, stride):
    unit = ConvUnit(3, 5, kernel, stride).eval()
    sd = {f"u.{k}": v for k, v in randomised(unit).items()}
    x = torch.randn(2, 3, *shape)
    expected = ref_unit(sd, "u", x, kernel, stride)
    assert unit(x).shape == (2, 5, *(math.ceil(s / t) for s, t in zip(shape, stride, strict=True)))
    assert_close_relative(unit(x), expected, 1e-5)


def test_conv_unit_batch_norm_settings_and_running_update():
    unit = ConvUnit(2, 4, 3).train()
    assert unit.bn.eps == 1e-3 and unit.bn.momentum == 0.01
    before_mean = unit.bn.running_mean.clone()
    before_var = unit.bn.running_var.clone()
    x = torch.randn(3, 2, 4, 5, 6)
    y = unit.conv3d(x)
    unit(x)
    batch_mean = y.mean(dim=(0, 2, 3, 4))
    batch_var = y.var(dim=(0, 2, 3, 4), unbiased=True)
    torch.testing.assert_close(unit.bn.running_mean, 0.99 * before_mean + 0.01 * batch_mean)
    torch.testing.assert_close(unit.bn.running_var, 0.99 * before_var + 0.01 * batch_var)


def test_logits_unit_has_bias_and_no_bn_or_relu():
    model = InceptionI3d(num_classes=7)
    assert model.logits.bn is None and not model.logits.relu
    assert model.logits.conv3d.bias is not None
    assert model.Conv3d_1a_7x7.conv3d.bias is None


@pytest.mark.parametrize("shape", [(8, 64, 64), (7, 31, 30), (3, 5, 6), (1, 2, 2)])
@pytest.mark.parametrize(
    ("kernel", "stride"),
    [
        ((1, 3, 3), (1, 2, 2)),
        ((3, 3, 3), (2, 2, 2)),
        ((2, 2, 2), (2, 2, 2)),
        ((3, 3, 3), (1, 1, 1)),
    ],
)
def test_max_pool_pads_with_zeros_like_the_port(shape, kernel, stride):
    # Negative inputs make zero padding visible: a padded window of negatives gives 0.
    x = torch.randn(2, 3, *shape) - 1.0
    assert torch.equal(SameMaxPool3d(kernel, stride)(x), ref_max_pool(x, kernel, stride))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((16, 224, 224), (2, 7, 7)), ((8, 64, 64), (1, 2, 2)), ((9, 193, 193), (2, 7, 7))],
)
def test_mixed_5c_shape(shape, expected):
    model = InceptionI3d(num_classes=None).eval()
    if shape[1] > 100:
        # Shapes only: run on a meta device so the big input costs nothing.
        model = model.to("meta")
        x = torch.empty(1, 3, *shape, device="meta")
    else:
        x = torch.randn(1, 3, *shape)
    assert mixed_5c_of(model, x).shape == (1, 1024, *expected)


@pytest.mark.parametrize("shape", [(8, 64, 64), (7, 45, 66)])
def test_network_matches_reference_up_to_mixed_5c(shape):
    model = InceptionI3d(num_classes=None, in_channels=2).eval()
    sd = randomised(model)
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        assert_close_relative(mixed_5c_of(model, x), ref_mixed_5c(sd, x))


def test_features_match_reference_with_full_average_pool():
    # 10x194x193 is about the smallest clip whose Mixed_5c covers the whole
    # 2x7x7 pool (as 16x224x224 does); even and odd sizes take both padding paths.
    model = InceptionI3d(num_classes=None).eval()
    sd = randomised(model, seed=1)
    x = torch.randn(1, 3, 10, 194, 193)
    with torch.no_grad():
        features = model.extract_features(x)
        mixed = ref_mixed_5c(sd, x)
    assert mixed.shape == (1, 1024, 2, 7, 7)
    expected = windows(mixed, (2, 7, 7), (1, 1, 1)).mean(dim=-1).flatten(start_dim=1)
    assert features.shape == (1, 1024)
    assert_close_relative(features, expected)


def test_extract_features_16x224_shape():
    model = InceptionI3d().eval()
    with torch.no_grad():
        assert model.extract_features(torch.randn(1, 3, 16, 224, 224)).shape == (1, 1024)


def test_forward_is_logits_layer_on_time_averaged_features():
    model = InceptionI3d(num_classes=5).eval()
    randomised(model, seed=2)
    # 24 frames leave 2 time positions after the 2x7x7 pool; the logits are their mean.
    x = torch.randn(2, 3, 24, 32, 32)
    with torch.no_grad():
        assert model.pooled(x).shape == (2, 1024, 2, 1, 1)
        logits = model(x)
        features = model.extract_features(x)
    weight = model.logits.conv3d.weight.view(5, 1024)
    assert logits.shape == (2, 5)
    assert_close_relative(logits, F.linear(features, weight, model.logits.conv3d.bias))


def test_features_are_taken_before_dropout():
    model = InceptionI3d(num_classes=5, in_channels=2).train()
    x = torch.randn(2, 2, 8, 32, 32)
    assert torch.equal(model.extract_features(x), model.extract_features(x))
    torch.manual_seed(0)
    first = model(x)
    assert not torch.equal(first, model(x))  # dropout 0.5 before the logits layer


def test_reset_logits_and_no_logits_model():
    model = InceptionI3d(num_classes=400)
    model.reset_logits(8)
    assert model.num_classes == 8 and model.logits.conv3d.weight.shape == (8, 1024, 1, 1, 1)
    headless = InceptionI3d(num_classes=None)
    assert not any(k.startswith("logits.") for k in headless.state_dict())
    with pytest.raises(RuntimeError, match="no logits layer"):
        headless(torch.randn(1, 3, 4, 16, 16))


def test_rejects_wrong_input_shape():
    model = InceptionI3d(in_channels=2)
    with pytest.raises(ValueError, match=r"\(N, 2, T, H, W\), got \(1, 3, 4, 16, 16\)"):
        model.extract_features(torch.randn(1, 3, 4, 16, 16))
