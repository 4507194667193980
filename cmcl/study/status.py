"""``cmcl study status``: a study's progress from its files alone (no Ray, no torch)."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcl.study.lease import gone_reason, read_lease
from cmcl.study.naming import DRIVER_FILE
from cmcl.study.records import TRIAL_STATES, read_json, read_study, read_trial_records


@dataclass
class StudyStatus:
    name: str
    path: Path
    meta: dict[str, Any]
    counts: dict[str, int]
    expected: int
    best: dict[str, Any] | None
    """The best finished trial (for per-pair studies: over all pairs)."""
    best_per_pair: dict[str, dict[str, Any]] = field(default_factory=dict)
    errored: list[dict[str, Any]] = field(default_factory=list)
    driver: str = "not started"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def study_status(path: str | Path) -> StudyStatus:
    """Read study.json, trials/*.json, driver.lease and driver.json of a study directory."""
    path = Path(path)
    meta = read_study(path)
    records = read_trial_records(path)
    expected = int(meta.get("trials", 0))
    counts = Counter(r.get("state", "pending") for r in records)
    counts["pending"] += max(0, expected - len(records))
    mode = meta.get("mode", "max")
    pick = max if mode == "max" else min
    done = [r for r in records if r.get("state") == "done" and _finite(r.get("value"))]
    best = pick(done, key=lambda r: r["value"]) if done else None
    per_pair: dict[str, dict[str, Any]] = {}
    if meta.get("objective") == "mean":
        if best is not None:
            per_pair = {
                p: {"value": v, "trial": best["trial_id"], "description": best["description"]}
                for p, v in best.get("per_pair", {}).items()
            }
    else:
        for record in done:
            for pair, value in record.get("per_pair", {}).items():
                current = per_pair.get(pair)
                if _finite(value) and (current is None or pick(value, current["value"]) == value):
                    per_pair[pair] = {
                        "value": value,
                        "trial": record["trial_id"],
                        "description": record["description"],
                    }
    return StudyStatus(
        name=str(meta.get("name", path.name)),
        path=path,
        meta=meta,
        counts={s: counts.get(s, 0) for s in TRIAL_STATES},
        expected=expected,
        best=best,
        best_per_pair=per_pair,
        errored=[r for r in records if r.get("state") == "errored"],
        driver=_driver_state(path),
    )


def _driver_state(path: Path) -> str:
    # The lease says whether a driver lives (cmcl/study/lease.py); driver.json how the last one ended.
    holder = read_lease(path)
    if holder is not None:
        reason = gone_reason(holder)
        if reason is None:
            return f"running ({holder.describe()})"
        return f"not running ({holder.describe()}, ended without releasing its lease: {reason})"
    driver = read_json(path / DRIVER_FILE)
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
    if status.best is None:
        lines.append("  best so far: none finished yet")
    else:
        best = status.best
        several = meta.get("objective") == "per_pair" and len(meta.get("pairs", [])) > 1
        lines.append(
            f"  best so far{' (any pair)' if several else ''}: {label} {best['value']:.2f}  "
            f"trial {best['trial_id']}: "
            f"{best['description']}"
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
    unfinished = status.counts["running"] + status.counts["pending"]
    if unfinished and not status.driver.startswith("running"):
        lines.append(
            f"  {unfinished} trials unfinished: continue with `cmcl study resume {status.path}`"
        )
    return "\n".join(lines)
