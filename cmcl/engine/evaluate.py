"""Evaluation: softmax averaged over test windows, gathered across workers, and the metrics.

Every metric here is computed from the gathered predictions, so each worker
gets the same numbers and every test segment counts exactly once.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import NamedTuple

import torch

from cmcl import dist
from cmcl.data.base import PairData
from cmcl.models.two_stream import TwoStreamModel

SND_TEMPERATURE = 0.05


class Predictions(NamedTuple):
    """Window-averaged softmax of every segment of a split, ordered by segment index.

    Shape:
        index, label: (N,); rgb, flow, fused: (N, C)
    """

    index: torch.Tensor
    label: torch.Tensor
    rgb: torch.Tensor
    flow: torch.Tensor
    fused: torch.Tensor


def _to(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        batch["rgb"].to(device, non_blocking=True),
        batch["flow"].to(device, non_blocking=True),
    )


@torch.no_grad()
def predict(
    model: TwoStreamModel,
    data: PairData,
    split: str,
    *,
    batch_size: int,
    device: torch.device,
    autocast: AbstractContextManager,
) -> Predictions:
    """Run ``model`` (in eval mode) over this worker's shard of ``split`` and gather all shards."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in Predictions._fields}
    for batch in data.eval_batches(split, batch_size=batch_size, windows="test"):
        rgb, flow = _to(batch, device)
        n, w = rgb.shape[:2]
        with autocast:
            out = model(rgb.flatten(0, 1), flow.flatten(0, 1))
        for name, logits in (*out.logits.items(), ("fused", out.fused)):
            parts[name].append(torch.softmax(logits.float(), dim=1).view(n, w, -1).mean(dim=1))
        parts["index"].append(batch["index"].to(device))
        parts["label"].append(batch["label"].to(device))
    model.train(was_training)
    classes = model.num_classes
    local = {
        name: torch.cat(values)
        if values
        else torch.empty((0, classes) if name in ("rgb", "flow", "fused") else 0, device=device)
        for name, values in parts.items()
    }
    local["index"], local["label"] = local["index"].long(), local["label"].long()
    gathered = {name: dist.all_gather_varlen(value) for name, value in local.items()}
    order = torch.argsort(gathered["index"])
    return Predictions(**{name: value[order].cpu() for name, value in gathered.items()})


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 in percent."""
    if len(labels) == 0:
        return math.nan
    return 100.0 * (probs.argmax(dim=1) == labels).float().mean().item()


def per_class_accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy (%) per class; NaN for classes absent from ``labels``."""
    correct = probs.argmax(dim=1) == labels
    result = []
    for c in range(num_classes):
        mask = labels == c
        result.append(100.0 * correct[mask].float().mean().item() if mask.any() else math.nan)
    return result


def mean_entropy(probs: torch.Tensor) -> float:
    """Mean Shannon entropy (nats) of the rows of ``probs``."""
    if len(probs) == 0:
        return math.nan
    return (-(probs * probs.clamp_min(1e-12).log()).sum(dim=1)).mean().item()


def soft_neighbourhood_density(probs: torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """SND (Saito et al., ICCV 2021): mean entropy of each sample's softmax over its neighbours.

    Rows of ``probs`` are L2-normalised, cosine similarities to every other
    sample (self excluded) are scaled by 1/temperature and turned into a
    distribution by softmax; SND is the mean entropy of those distributions.
    Higher means denser neighbourhoods (a better-clustered target).
    """
    n = len(probs)
    if n < 2:
        return math.nan
    unit = torch.nn.functional.normalize(probs.double(), dim=1)
    sims = unit @ unit.t() / temperature
    sims.fill_diagonal_(float("-inf"))
    neighbours = torch.softmax(sims, dim=1)
    logs = torch.log_softmax(sims, dim=1).masked_fill(torch.eye(n, dtype=torch.bool), 0.0)
    return (-(neighbours * logs).sum(dim=1)).mean().item()


def target_metrics(pred: Predictions, *, threshold: float, num_classes: int) -> dict[str, float]:
    """Accuracies, per-class accuracy, pseudo-label quality and unsupervised criteria."""
    fused, labels = pred.fused, pred.label
    confidence, pseudo = fused.max(dim=1)
    confident = confidence >= threshold
    per_class = per_class_accuracy(fused, labels, num_classes)
    present = [a for a in per_class if not math.isnan(a)]
    metrics = {
        "target_acc": accuracy(fused, labels),
        "target_acc_rgb": accuracy(pred.rgb, labels),
        "target_acc_flow": accuracy(pred.flow, labels),
        "target_mean_class_acc": sum(present) / len(present) if present else math.nan,
        "pl_coverage": 100.0 * confident.float().mean().item() if len(labels) else math.nan,
        "pl_acc": 100.0 * (pseudo[confident] == labels[confident]).float().mean().item()
        if confident.any()
        else math.nan,
        "target_entropy": mean_entropy(fused),
        "snd": soft_neighbourhood_density(fused),
    }
    metrics.update({f"class_acc_{c}": value for c, value in enumerate(per_class)})
    return metrics
