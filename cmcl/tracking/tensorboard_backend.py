"""TensorBoard: event files in the run's folder (``<run dir>/tensorboard/``) or under a log root.

A resumed run opens a new event file with ``purge_step`` just after its
checkpoint: TensorBoard's reader then drops what the interrupted attempt
wrote beyond it, and the resumed run writes those steps again (the engine
resumes bit for bit). What is on disk at or before the checkpoint is read
back once, so that nothing there is written a second time (``cmcl track
sync`` relies on the same reading).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcl.tracking.base import Backend
from cmcl.tracking.identity import RunIdentity

STATUS_TAG = "cmcl/status"
PARAMS_TAG = "cmcl/params"


def log_dir(root: Path, identity: RunIdentity) -> Path:
    """``root/<group>/<name>`` (one TensorBoard run per cmcl run, side by side per study)."""
    parts = [identity.group, identity.name] if identity.group else [identity.name]
    return root.joinpath(*(re.sub(r"[^\w.=+-]", "_", part) for part in parts))


def logged_steps(directory: Path) -> dict[str, int]:
    """Per scalar and text tag, the last step in the event files of ``directory``."""
    if not any(directory.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    reader = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    last: dict[str, int] = {}
    tags = reader.Tags()
    for tag in tags.get("scalars", []):
        last[tag] = max(event.step for event in reader.Scalars(tag))
    for tag in tags.get("tensors", []):  # text summaries
        last[tag.removesuffix("/text_summary")] = max(e.step for e in reader.Tensors(tag))
    return last


class TensorBoardBackend(Backend):
    """Args:
    directory: the event files' folder, as chosen by the caller (see :func:`log_dir`).
    """

    name = "tensorboard"

    def __init__(self, *, directory: Path) -> None:
        self.directory = Path(directory)
        self.writer: Any = None
        self.last_step = 0
        self.status_written = False

    def open(
        self, identity: RunIdentity, params: Mapping[str, Any], *, resume_step: int | None
    ) -> dict[str, int]:
        from torch.utils.tensorboard import SummaryWriter

        self.directory.mkdir(parents=True, exist_ok=True)
        last = logged_steps(self.directory)
        purge = None
        if resume_step is not None and resume_step > 0:
            purge = resume_step + 1
            last = {k: min(v, resume_step) for k, v in last.items()}
        self.writer = SummaryWriter(log_dir=str(self.directory), purge_step=purge)
        self.last_step = max(last.values(), default=0)
        self.status_written = STATUS_TAG in last and last[STATUS_TAG] >= self.last_step
        if PARAMS_TAG not in last:
            rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
            lines = [f"run key `{identity.run_key}`", "", "| key | value |", "|---|---|", rows]
            self.writer.add_text(PARAMS_TAG, "\n".join(lines), global_step=0)
        return last

    def log_metrics(self, values: Mapping[str, float], *, step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)
        if values and step >= self.last_step:
            self.last_step, self.status_written = step, False

    def close(self, status: str) -> None:
        if self.writer is None:
            return
        # TensorBoard has no run status; a text entry at the last step says how it ended
        # (once: a sync that added nothing adds no second entry).
        if not self.status_written:
            self.writer.add_text(STATUS_TAG, status, global_step=self.last_step)
        self.writer.close()
        self.writer = None
