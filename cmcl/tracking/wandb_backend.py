"""Weights & Biases: one run per cmcl run, its id derived from the run key, in a W&B group.

Configured as W&B users expect: ``WANDB_PROJECT`` (else ``cmcl``),
``WANDB_ENTITY``, ``WANDB_MODE`` (``offline`` writes the run under
``wandb/offline-run-*`` for ``wandb sync`` later, with no network),
``--tracking-dir``, else ``WANDB_DIR``, else the run's folder (W&B's ``dir``). The run id is
a hash of the run key, so every attempt of a run, and a later sync, is the
same W&B run (``resume="allow"``).

W&B's history is one row per step, committed when a later step is logged;
the step of the last committed row is kept in a small ledger beside the W&B
files (``cmcl-<id>.json``), because an offline run cannot ask a server what
an earlier attempt logged. An online resumed run also knows W&B's own step.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcl.tracking.base import FINISHED, Backend
from cmcl.tracking.identity import RUN_KEY_TAG, RunIdentity

DEFAULT_PROJECT = "cmcl"
INIT_TIMEOUT_S = 30.0
"""W&B's own default (90 s) would hold the tracking thread, not the run; shorter still says
sooner that tracking is off."""


def wandb_id(run_key: str) -> str:
    """A W&B run id (letters and digits) that is the same for every attempt of the run."""
    return hashlib.sha1(run_key.encode()).hexdigest()[:20]


def _tag(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."  # W&B's limit on a tag


class WandbBackend(Backend):
    """Args:
    directory: where W&B writes (its ``dir``); None: W&B's default (the working directory).
    """

    name = "wandb"

    def __init__(self, *, directory: Path | None) -> None:
        self.directory = directory
        self.run: Any = None
        self.ledger: Path | None = None
        self.committed = -1
        self.current = -1

    def _init(self, identity: RunIdentity, config: Mapping[str, Any], **extra: Any):
        import wandb

        # Read here and passed on: W&B takes its environment once per process, and a
        # process may train several runs (tests, sweeps) with other settings.
        root = self.directory
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            mode=os.environ.get("WANDB_MODE") or None,
            group=identity.group,
            name=identity.name,
            id=wandb_id(identity.run_key),
            resume="allow",
            config=dict(config),
            tags=[
                _tag(f"{k.removeprefix('cmcl.')}:{v}")
                for k, v in identity.tags.items()
                if k != "cmcl.run_dir"
            ],
            dir=None if root is None else str(root),
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, init_timeout=INIT_TIMEOUT_S),
            **extra,
        )

    def open(
        self, identity: RunIdentity, params: Mapping[str, Any], *, resume_step: int | None
    ) -> dict[str, int]:
        config = {**params, RUN_KEY_TAG: identity.run_key}
        self.run = self._init(identity, config, job_type="train")
        self.ledger = Path(self.run.dir).parents[1] / f"cmcl-{self.run.id}.json"
        if self.ledger.exists():
            self.committed = int(json.loads(self.ledger.read_text()).get("committed", -1))
        if self.run.resumed:
            self.committed = max(self.committed, int(self.run.step) - 1)
        self.current = self.committed
        # One last step for every metric: W&B cannot add to a committed row.
        return {"*": self.committed}

    def log_metrics(self, values: Mapping[str, float], *, step: int) -> None:
        if step > self.current >= 0 and self.current > self.committed:
            self._commit(self.current)  # logging a later step commits the row before it
        self.run.log(dict(values), step=step)
        self.current = max(self.current, step)

    def log_summary(self, values: Mapping[str, float], *, step: int) -> None:
        self.run.summary.update(dict(values))

    def _commit(self, step: int) -> None:
        self.committed = step
        if self.ledger is not None:
            tmp = self.ledger.with_name(self.ledger.name + ".tmp")
            tmp.write_text(json.dumps({"committed": step}) + "\n")
            tmp.replace(self.ledger)

    def close(self, status: str) -> None:
        if self.run is None:
            return
        self.run.finish(exit_code=0 if status == FINISHED else 1)
        if self.current > self.committed:
            self._commit(self.current)
        self.run = None

    def attach(self, paths: list[Path], *, group: str) -> None:
        """As an artifact of a ``report`` run in the group (id from ``<group>/report``)."""
        import wandb

        identity = RunIdentity(run_key=f"{group}/report", name="report", group=group)
        run = self._init(identity, {RUN_KEY_TAG: identity.run_key}, job_type="report")
        artifact = wandb.Artifact(name=f"{wandb_id(identity.run_key)}-report", type="report")
        for path in paths:
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            else:
                artifact.add_file(str(path))
        run.log_artifact(artifact)
        run.finish()
