"""What every tracker backend provides, and the step filter that makes logging idempotent."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcl.tracking.identity import RunIdentity

FINISHED, FAILED, KILLED = "finished", "failed", "killed"
STATUSES = (FINISHED, FAILED, KILLED)


class Backend:
    """One tracked run in one tracker; :class:`~cmcl.tracking.session.TrackingSession` calls
    these in order on its own thread, and any exception turns tracking off.

    A backend reopens the run of an earlier attempt (found by ``identity.run_key``)
    instead of creating a second one, and reports what that attempt already
    logged, so that nothing is logged twice.
    """

    name = ""

    def open(
        self, identity: RunIdentity, params: Mapping[str, Any], *, resume_step: int | None
    ) -> dict[str, int]:
        """Find or create the run, record ``params`` it lacks; per metric, the last step
        already logged (``{}`` for a new run).

        ``resume_step``: the global step a resumed run continues after (points
        beyond it from an earlier attempt will be logged again); None when the
        caller re-logs a finished run (sync).
        """
        raise NotImplementedError

    def log_metrics(self, values: Mapping[str, float], *, step: int) -> None:
        """Points at global ``step``."""
        raise NotImplementedError

    def log_points(self, points: list[tuple[int, dict[str, float]]]) -> None:
        """Several steps' points, in step order, in as few calls as the tracker allows."""
        for step, values in points:
            self.log_metrics(values, step=step)

    def log_summary(self, values: Mapping[str, float], *, step: int) -> None:
        """The run's final numbers; by default points at its last step."""
        self.log_metrics(values, step=step)

    def close(self, status: str) -> None:
        """Mark the run :data:`FINISHED`, :data:`FAILED` or :data:`KILLED` and let it go."""
        raise NotImplementedError

    def attach(self, paths: list[Path], *, group: str) -> None:
        """Files (a report's tables, plots) kept with ``group`` rather than with one run."""
        raise ValueError(f"tracking {self.name!r} cannot keep files beside its runs")


class StepFilter:
    """Per metric, the last step logged; passes only points after it.

    Points are logged in step order, so a point at or before a metric's last
    step was logged by an earlier attempt of the run (the engine resumes
    bit for bit, so it is the same value).
    """

    def __init__(self, last: Mapping[str, int] | None = None) -> None:
        self.last = dict(last or {})

    def new(self, values: Mapping[str, float], *, step: int) -> dict[str, float]:
        """The points not logged yet; they count as logged from here on."""
        floor = self.last.get("*", -1)  # a tracker that knows one last step for all metrics
        fresh = {k: v for k, v in values.items() if step > self.last.get(k, floor)}
        for key in fresh:
            self.last[key] = step
        return fresh
