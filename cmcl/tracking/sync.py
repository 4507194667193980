"""``cmcl track sync``: results already on disk -> a tracker, adding only what it lacks.

Reads run and study directories with :func:`cmcl.report.store.load_results`
(no torch), and gives each finished run the identity live tracking would have
given it, so a run tracked while it trained is found again and a second sync
adds nothing: every point at or before the last step the tracker holds for
its metric is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcl.tracking.base import FINISHED, StepFilter
from cmcl.tracking.identity import (
    AXIS_COLUMNS,
    RunIdentity,
    evaluation_values,
    run_identity,
    run_params,
    summary_step,
    summary_values,
)


@dataclass
class SyncCounts:
    """What one sync did."""

    runs: int = 0
    points: int = 0
    """Metric points added (0 when everything was there already)."""
    unfinished: list[str] = field(default_factory=list)
    """Run keys left out: without summary.json and short of their steps."""


def _identity(run: dict[str, Any]) -> RunIdentity:
    from cmcl.report.store import SINGLE_RUNS

    if run["study"] == SINGLE_RUNS or not run.get("run_id"):
        return run_identity(run_dir=run["run_dir"])
    return run_identity(
        study=str(run["study"]),
        trial_id=str(run.get("trial_id") or "") or None,
        run_id=str(run["run_id"]),
        run_dir=run.get("run_dir"),
    )


def _metric_columns(columns: Sequence[str]) -> list[str]:
    from cmcl.report.store import IDENTITY

    skip = {*IDENTITY, *AXIS_COLUMNS, "run_key", "variant"}
    return [c for c in columns if c not in skip and not c.startswith("cfg.")]


def _summary(run_dir: str | None) -> dict[str, Any] | None:
    if not run_dir:
        return None
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def sync_results(
    dirs: Sequence[str | Path],
    *,
    tracking: str,
    directory: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> SyncCounts:
    """Upload the finished runs of ``dirs`` to ``tracking``; errors propagate (an explicit
    upload should say it failed, unlike live tracking)."""
    from cmcl.report.store import load_results
    from cmcl.tracking import build_backend, check_tracking

    check_tracking(tracking)
    results = load_results(dirs)
    for problem in results.problems:
        echo(f"note: {problem}")
    counts = SyncCounts()
    metrics = _metric_columns(list(results.evals.columns))
    for run in results.runs.to_dict("records"):
        if not run["finished"]:
            counts.unfinished.append(str(run["run_key"]))
            continue
        identity = _identity(run)
        rows = results.evals[results.evals["run_key"] == run["run_key"]]
        params = run_params({k: v for k, v in run.items() if str(k).startswith("cfg.")})
        backend = build_backend(tracking, identity, run_dir=run.get("run_dir"), directory=directory)
        steps = StepFilter(backend.open(identity, params, resume_step=None))
        added = 0
        for row in rows.sort_values("global_step").to_dict("records"):
            step = int(row["global_step"])
            fresh = steps.new(evaluation_values({k: row[k] for k in metrics}), step=step)
            if fresh:
                backend.log_metrics(fresh, step=step)
                added += len(fresh)
        summary = _summary(run.get("run_dir"))
        if summary is not None:
            last = int(rows["global_step"].max()) if len(rows) else 0
            step = summary_step(summary, last)
            fresh = steps.new(summary_values(summary), step=step)
            if fresh:
                backend.log_summary(fresh, step=step)
                added += len(fresh)
        backend.close(FINISHED)
        counts.runs += 1
        counts.points += added
        echo(f"{identity.run_key}: {added} new points")
    return counts
