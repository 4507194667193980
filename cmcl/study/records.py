"""The driver's records of a study: each trial and each of its runs, in ``state.json``.

The driver that holds the study's lease keeps these records in memory and
writes them whole (one atomic write or PUT) at most about once a second and
when it stops; ``cmcl study status`` reads the file and nothing else. The
records are the driver's view, not the only copy of any result: an ended
run's numbers are in ``results/`` and ``summaries/`` (cmcl/results.py), the
search's trials in the Optuna storage. A driver starting on a study rebuilds
from those whatever the file lacks (a driver killed between two writes), so
the file is never a second truth that must be kept in step. No torch, no Ray.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

TRIAL_STATES = ("pending", "running", "done", "stopped", "errored")
"""done: every run finished; stopped: ended early by ASHA; errored: a run failed for good."""
RUN_STATES = ("pending", "queued", "running", "done", "stopped", "failed", "cancelled")
"""queued: submitted, waiting for resources; failed: its code raised (or its node was lost) more often than the study allows;
cancelled: its trial ended (stopped or errored) before the run did."""
CAUSES = ("code", "node")
"""Why a run attempt failed: its training code raised, or the infrastructure lost it
(node, worker process or placement died)."""
STATE_VERSION = 1


@dataclass
class RunRecord:
    run_id: str
    benchmark: str
    pair: str
    seed: int
    state: str = "pending"
    attempts: int = 0
    """Times the run was started."""
    node_failures: int = 0
    code_failures: int = 0
    cause: str | None = None
    """Of the last failure: ``code`` or ``node``."""
    reason: str | None = None
    evaluations: int = 0
    resumed_from: int | None = None
    """Global step the last attempt continued from (None: from the start)."""
    saved: bool = False
    """Its results are in results/ and summaries/ (set once they are written)."""
    slot_s: float = 0.0
    """Seconds it held a slot, from its start on a worker to its end, over its attempts."""
    began_at: float | None = None
    """Unix time its last attempt started on a worker (``host``/``pid``: where)."""
    ended_at: float | None = None
    host: str | None = None
    pid: int | None = None

    @property
    def ended(self) -> bool:
        return self.state in ("done", "stopped", "failed", "cancelled")


@dataclass
class TrialRecord:
    trial_id: str
    number: int
    method: str
    variant: str | None
    pairs: list[list[str]]
    """[benchmark, pair] of every pair the trial runs on."""
    params: dict[str, Any]
    """Searched settings by dotted key (``method.lam``)."""
    names: dict[str, str]
    """Dotted key -> the study file's name for it (``method.lam`` -> ``lambda``)."""
    description: str
    runs: list[RunRecord]
    state: str = "pending"
    value: float | None = None
    per_pair: dict[str, float] = field(default_factory=dict)
    per_benchmark: dict[str, float] = field(default_factory=dict)
    last: float | None = None
    """The selection metric at the latest complete round (mean over runs)."""
    rounds: int = 0
    adapt_evals: int = 0
    rungs: dict[str, float] = field(default_factory=dict)
    """ASHA: adaptation evaluations (as text) -> the value recorded at that rung."""
    reason: str | None = None
    told: bool = False
    """The searcher (Optuna) has been told how the trial ended."""
    created: float = field(default_factory=time.time)
    ended_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.state in ("done", "stopped", "errored")

    def run(self, run_id: str) -> RunRecord:
        for run in self.runs:
            if run.run_id == run_id:
                return run
        raise KeyError(f"trial {self.trial_id} has no run {run_id!r}")

    def pair_names(self) -> list[str]:
        return [pair for _, pair in self.pairs]


def _record(cls, data: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def trial_from_dict(data: dict[str, Any]) -> TrialRecord:
    runs = [_record(RunRecord, r) for r in data.get("runs", [])]
    return _record(TrialRecord, {**data, "runs": runs})


@dataclass
class StudyState:
    """Every trial the driver has created, in creation order, and the driver's bookkeeping."""

    trials: dict[str, TrialRecord] = field(default_factory=dict)
    sessions: int = 0
    """Drivers that have run the study so far (this one included)."""
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "sessions": self.sessions,
            "updated": time.time(),
            "trials": [asdict(t) for t in self.trials.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyState:
        state = cls(sessions=int(data.get("sessions", 0)), updated=float(data.get("updated", 0)))
        for item in data.get("trials", []):
            record = trial_from_dict(item)
            state.trials[record.trial_id] = record
        return state

    def run_owner(self, run_id: str) -> TrialRecord:
        trial = run_id.partition("-")[0]
        return self.trials[trial]
