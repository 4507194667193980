"""``cmcl study status``: a study's progress from its files alone (no Ray, no torch).

It reads study.json, the driver's records (state.json, cmcl/study/records.py),
the lease and driver.json: a handful of files however many runs the study has.
A study written by cmcl 0.1 on Ray Tune (one ``trials/<id>.json`` per trial)
is read too.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcl.study.directory import StudyDir, expected_runs
from cmcl.study.lease import gone_reason, read_lease
from cmcl.study.naming import LEGACY_TRIALS_DIR
from cmcl.study.records import RUN_STATES, TRIAL_STATES, TrialRecord, trial_from_dict


@dataclass
class StudyStatus:
    name: str
    path: str
    meta: dict[str, Any]
    counts: dict[str, int]
    """Trials by state (:data:`~cmcl.study.records.TRIAL_STATES`)."""
    expected: int
    best: dict[str, Any] | None
    """The best finished trial (for per-pair studies: over all pairs)."""
    best_per_pair: dict[str, dict[str, Any]] = field(default_factory=dict)
    errored: list[dict[str, Any]] = field(default_factory=list)
    driver: str = "not started"
    runs: dict[str, int] = field(default_factory=dict)
    """Runs by state (:data:`~cmcl.study.records.RUN_STATES`)."""
    expected_runs: int = 0
    failed_runs: list[dict[str, Any]] = field(default_factory=list)
    """Runs that failed for good: run_id, cause (code/node), reason."""
    lost: int = 0
    """Run attempts lost to the infrastructure so far (each restarted from a checkpoint)."""


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _records(study: StudyDir) -> list[TrialRecord]:
    state = study.read_state()
    if state is not None:
        return list(state.trials.values())
    records = []
    for entry in study.store.list(LEGACY_TRIALS_DIR):
        data = study.store.read_json(entry.path)
        if data is None:
            continue
        data.setdefault("number", len(records))
        data.setdefault("pairs", [])
        data["pairs"] = [p if isinstance(p, list) else ["", p] for p in data["pairs"]]
        data.setdefault("names", {})
        data["runs"] = []
        records.append(trial_from_dict(data))
    return sorted(records, key=lambda r: (r.created, r.trial_id))


def study_status(path: str | Path | StudyDir) -> StudyStatus:
    """Read a study directory's status (see the module docstring)."""
    study = path if isinstance(path, StudyDir) else StudyDir(path)
    meta = study.read_meta()
    records = _records(study)
    expected = int(meta.get("trials", 0))
    counts = Counter(r.state for r in records)
    counts["pending"] += max(0, expected - len(records))
    runs = Counter(run.state for r in records for run in r.runs)
    total_runs = int(meta.get("runs", 0)) or (
        expected_runs(study.read_spec()) if study.store.exists("spec.yaml") else 0
    )
    runs["pending"] += max(0, total_runs - sum(runs.values()))
    mode = meta.get("mode", "max")
    pick = max if mode == "max" else min
    done = [r for r in records if r.state == "done" and _finite(r.value)]
    best = pick(done, key=lambda r: r.value) if done else None
    per_pair: dict[str, dict[str, Any]] = {}
    if meta.get("objective") == "mean":
        if best is not None:
            per_pair = {
                p: {"value": v, "trial": best.trial_id, "description": best.description}
                for p, v in best.per_pair.items()
            }
    else:
        for record in done:
            for pair, value in record.per_pair.items():
                current = per_pair.get(pair)
                if _finite(value) and (current is None or pick(value, current["value"]) == value):
                    per_pair[pair] = {
                        "value": value,
                        "trial": record.trial_id,
                        "description": record.description,
                    }
    failed = [
        {"run_id": run.run_id, "cause": run.cause, "reason": run.reason, "trial": r.trial_id}
        for r in records
        for run in r.runs
        if run.state == "failed"
    ]
    return StudyStatus(
        name=str(meta.get("name", study.location.rsplit("/", 1)[-1])),
        path=study.location,
        meta=meta,
        counts={s: counts.get(s, 0) for s in TRIAL_STATES},
        expected=expected,
        best=None if best is None else _as_dict(best),
        best_per_pair=per_pair,
        errored=[_as_dict(r) for r in records if r.state == "errored"],
        driver=_driver_state(study),
        runs={s: runs.get(s, 0) for s in RUN_STATES},
        expected_runs=total_runs,
        failed_runs=failed,
        lost=sum(run.node_failures for r in records for run in r.runs),
    )


def _as_dict(record: TrialRecord) -> dict[str, Any]:
    return {
        "trial_id": record.trial_id,
        "value": record.value,
        "description": record.description,
        "reason": record.reason,
        "per_pair": record.per_pair,
    }


def _driver_state(study: StudyDir) -> str:
    # The lease says whether a driver lives (cmcl/study/lease.py); driver.json how the last one ended.
    if study.remote:
        from cmcl.study.object_lease import ObjectStudyLease

        try:
            found = ObjectStudyLease(study.store).read()
        except ValueError:  # no client for this store's conditional writes: no lease there
            found = None
        holder = found[0] if found else None
    else:
        holder = read_lease(study.path)
    if holder is not None:
        reason = gone_reason(holder)
        if reason is None:
            return f"running ({holder.describe()})"
        return f"not running ({holder.describe()}, ended without releasing its lease: {reason})"
    driver = study.read_driver()
    if driver is None:
        return "not started"
    if driver.get("state") in ("finished", "interrupted", "failed"):
        return str(driver["state"])
    age = time.time() - float(driver.get("time", 0))
    return f"not running (last seen {age / 60:.0f} min ago)"


def format_status(status: StudyStatus) -> str:
    """The report ``cmcl study status`` prints."""
    meta = status.meta
    metric = meta.get("selection_metric", "target_acc")
    label = f"{metric} (oracle: uses target labels)" if meta.get("oracle") else metric
    goal = "higher" if meta.get("mode", "max") == "max" else "lower"
    lines = [
        f"study {status.name} ({status.path})",
        f"  {meta.get('searcher', '?')} search, objective {meta.get('objective', '?')}, "
        f"selection metric {label}, {goal} is better",
        f"  driver: {status.driver}",
        "  trials: "
        + ", ".join(f"{status.counts[s]} {s}" for s in TRIAL_STATES)
        + f" (of {status.expected})",
    ]
    if status.expected_runs:
        shown = [s for s in RUN_STATES if status.runs.get(s) or s in ("pending", "done")]
        line = "  runs: " + ", ".join(f"{status.runs.get(s, 0)} {s}" for s in shown)
        line += f" (of {status.expected_runs})"
        if status.lost:
            line += f"; {status.lost} attempt(s) lost to the infrastructure and restarted"
        lines.append(line)
    if status.best is None:
        lines.append("  best so far: none finished yet")
    else:
        best = status.best
        several = meta.get("objective") == "per_pair" and len(meta.get("pairs", [])) > 1
        lines.append(
            f"  best so far{' (any pair)' if several else ''}: {label} {best['value']:.2f}  "
            f"trial {best['trial_id']}: {best['description']}"
        )
    if status.best_per_pair:
        title = "of the best trial" if meta.get("objective") == "mean" else "best trial per pair"
        lines.append(f"  per pair ({title}):")
        order = [p for p in meta.get("pairs", []) if p in status.best_per_pair]
        for pair in order or list(status.best_per_pair):
            entry = status.best_per_pair[pair]
            lines.append(
                f"    {pair:<7} {entry['value']:7.2f}  trial {entry['trial']}: {entry['description']}"
            )
    for record in status.errored:
        lines.append(
            f"  errored {record['trial_id']} ({record.get('description', '')}): {record['reason']}"
        )
    for run in status.failed_runs:
        if run["cause"] == "node":
            what, how = "lost to the infrastructure", f"cmcl study resume {status.path}"
        else:
            what, how = "its code raised", f"cmcl study resume {status.path} --retry-errored"
        lines.append(f"  failed run {run['run_id']} ({what}): {run['reason']}; retry: `{how}`")
    unfinished = status.counts["running"] + status.counts["pending"]
    if unfinished and not status.driver.startswith("running"):
        lines.append(
            f"  {unfinished} trials unfinished: continue with `cmcl study resume {status.path}`"
        )
    return "\n".join(lines)


def describe_study(path: str | Path) -> str:
    """What ``cmcl study status`` prints: one study's status, or each stage's of a
    two-fidelity study (its screen, then its confirm stage once the screen has ended)."""
    study = StudyDir(path)
    meta = study.read_meta()
    fidelity = meta.get("fidelity")
    if not fidelity:
        return format_status(study_status(study))
    lines = [
        f"two-fidelity study {meta.get('name')} ({study}): screen in feature mode, then the "
        f"top {fidelity.get('top_k')} again in video mode"
        + (f" with {', '.join(fidelity['also_confirm'])}" if fidelity.get("also_confirm") else "")
    ]
    for name, what in zip(fidelity["stages"], ("screen", "confirm"), strict=True):
        stage = StudyDir(study.store.uri(name))
        if not stage.is_study():
            after = " (made when the screen has ended)" if what == "confirm" else ""
            lines.append(f"{what}: not started{after}")
            continue
        lines.append(f"{what}:")
        lines += ["  " + line for line in format_status(study_status(stage)).splitlines()]
    return "\n".join(lines)
