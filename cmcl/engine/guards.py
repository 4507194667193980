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

from cmcl.config import DataConfig, RunConfig
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
    """ValueError naming every split of ``info`` without segments and the file it came from."""
    empty = [name for name, size in info.sizes.items() if size == 0]
    if not empty:
        return
    d = config.data
    video = config.model.backbone == "i3d"
    found = []
    for name in empty:
        domain = info.source if name.startswith("source") else info.target
        kind = "train" if name.endswith("train") else "test"
        where = _annotation_file(config, domain, kind) if video else _store_file(d, domain, kind)
        found.append(f"{name} ({domain} {kind}) has no segments in {where}")
    check = (
        f"--benchmark {d.benchmark} --root {d.root}"
        if video
        else f"--features {d.features or 'STORE'}"
    )
    raise ValueError(
        f"{'; '.join(found)}: a run needs segments in every split to train and to report a "
        f"number (check the data with `cmcl data check {check}`)"
    )


def _store_file(data: DataConfig, domain: str, kind: str) -> str:
    if data.features is None:
        return "the synthetic store"
    return str(Path(data.features) / f"{domain}_{kind}.parquet")


def _annotation_file(config: RunConfig, domain: str, kind: str) -> str:
    """The annotation file of (domain, kind) where the benchmark's naming is known."""
    d = config.data
    directory = Path(d.splits) if d.splits else Path(str(d.root)) / "splits"
    try:
        if d.benchmark == "epic":
            from cmcl.data.epic import split_path

            return str(split_path(directory, domain, kind))
        if d.benchmark == "ucf-hmdb":
            from cmcl.data.ucf_hmdb import list_file_path

            return str(list_file_path(directory, domain, kind))
    except (OSError, ValueError):
        pass  # the name alone cannot be worked out; the directory still points the way
    return f"the annotations in {directory}"


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
