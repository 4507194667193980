"""Batch norm over the global batch of all workers, on CPU as well as GPU.

``torch.nn.SyncBatchNorm`` only runs on accelerators. :class:`GlobalBatchNorm`
all-reduces per-channel sums (differentiably) so that a distributed step sees
exactly the statistics of the single-process step with the same global batch:
that is what makes a 2-worker CPU run reproduce the 1-process run.
"""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_fn
from torch import nn

from cmcl import dist


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are computed over every worker's batch.

    Any input rank works (channels in dim 1). Outside distributed training it
    is an ordinary batch norm.

    Shape:
        input (N, C, *) -> output (N, C, *)
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [d for d in range(input.dim()) if d != 1]
        x = input.float()
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float32)
        stats = torch.cat([x.sum(dim=dims), (x * x).sum(dim=dims), count])
        stats = dist_fn.all_reduce(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels : 2 * channels] / total - mean * mean
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var.detach() * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


@torch.no_grad()
def average_running_stats(module: nn.Module) -> None:
    """Set every BatchNorm's running mean and variance to their mean over the workers.

    Without cross-worker BN each worker updates its running statistics from
    its own share of the batch (DDP here does not broadcast buffers), so they
    drift apart. Evaluation, where each worker predicts its share of the test
    split, and checkpoints, which hold rank 0's buffers and are loaded by every
    worker, need one set. A no-op in one process.
    """
    if not dist.is_distributed():
        return
    buffers = [
        buffer
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats
        for buffer in (layer.running_mean, layer.running_var)
        if buffer is not None
    ]
    if not buffers:
        return
    flat = torch.cat([b.detach().float().flatten() for b in buffers])
    flat = dist.all_reduce_sum(flat) / dist.world_size()
    for buffer, part in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
        buffer.copy_(part.view_as(buffer))


def convert_batchnorm(module: nn.Module, *, device: torch.device) -> nn.Module:
    """Replace every BatchNorm with a cross-worker one (torch's SyncBatchNorm on GPU)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        replacement = GlobalBatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module


__all__ = ["GlobalBatchNorm", "average_running_stats", "convert_batchnorm"]
