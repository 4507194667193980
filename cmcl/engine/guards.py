"""Refusals that keep a run from reporting a number it does not have.

A run either reports finite metrics or fails saying why: a split with no
segments is refused before anything is built from the data, a loss that is
NaN or inf ends the run at that step (the trainer checks every step), and an
evaluation whose predictions are not finite ends it rather than averaging NaN
into the summary.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cmcl.config import RunConfig
from cmcl.data.base import DataInfo
from cmcl.engine.evaluate import Predictions


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the message names the stage, step and term."""


class NonFiniteMetricError(NonFiniteLossError):
    """An evaluation would report NaN: predictions are not finite, or a split gave none.

    A subclass of NonFiniteLossError so that every caller that ends a run on a
    non-finite loss (``cmcl train``, Ray Train workers, study trials) ends it on this
    too, with the reason, and does not retry it: it is as deterministic.
    """


def refuse_empty_splits(info: DataInfo, config: RunConfig) -> None:
    """ValueError naming every split of ``info`` without segments and where the data came from."""
    empty = [name for name, size in info.sizes.items() if size == 0]
    if not empty:
        return
    d = config.data
    if config.model.backbone == "i3d":
        where = f"the annotations in {d.splits or Path(str(d.root)) / 'splits'}"
        check = f"cmcl data check --benchmark {d.benchmark} --root {d.root}"
    else:
        where = f"the feature store {d.features or '(synthetic cache)'}"
        check = f"cmcl data check --features {d.features or 'STORE'}"
    named = ", ".join(
        f"{name} ({info.source if name.startswith('source') else info.target} "
        f"{'train' if name.endswith('train') else 'test'})"
        for name in empty
    )
    raise ValueError(
        f"{named} has no segments in {where}: a run needs segments in every split to "
        f"train and to report a number (check the data with `{check}`)"
    )


def refuse_non_finite(pred: Predictions, split: str, where: str) -> None:
    """NonFiniteMetricError when metrics from ``pred`` would be NaN; ``where``: stage, step, run."""
    if len(pred.label) == 0:
        raise NonFiniteMetricError(f"{split} has no segments to evaluate {where}")
    finite = torch.stack([torch.isfinite(p).all(dim=1) for p in (pred.rgb, pred.flow, pred.fused)])
    finite = finite.all(dim=0)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten()
        raise NonFiniteMetricError(
            f"the model's {split} predictions are NaN or inf for {len(bad)} of {len(finite)} "
            f"segments (first: row {int(pred.index[bad[0]])}) {where}; its metrics would be NaN"
        )
