"""The driver's Tune callback: trial records in the study directory, and progress lines.

Tune keeps its own state too, but a snapshot of it is written only every few
seconds; ``trials/<trial_id>.json`` is written at every trial event, so
``cmcl study status`` (which reads files only) is never behind, and an
errored trial's reason is there in one line.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ray.tune import Callback

from cmcl.study.naming import DRIVER_FILE, run_id, trial_file
from cmcl.study.plan import trial_plan
from cmcl.study.records import (
    new_record,
    read_json,
    read_trial_records,
    write_json,
    write_trial_record,
)
from cmcl.study.spec import StudySpec, parse_spec


class StudyCallback(Callback):
    """Writes trial records and driver.json; prints a line when the study's state changes.

    Args:
        study_dir: the study directory.
        spec: the study file as a dict (spec.yaml).
        expected: the number of trials the study asks for.
        echo: print progress lines to stderr.
    """

    def __init__(self, study_dir: str, spec: dict[str, Any], *, expected: int, echo: bool) -> None:
        self.study_dir = Path(study_dir)
        self.spec_dict = spec
        self.expected = expected
        self.echo = echo
        self._spec: StudySpec | None = None
        self._records: dict[str, dict[str, Any]] = {}
        self._last_line = ""

    @property
    def spec(self) -> StudySpec:
        if self._spec is None:
            self._spec = parse_spec(self.spec_dict, source="spec.yaml")
        return self._spec

    def setup(self, **info) -> None:
        # A resumed study: trials finished before the crash count from the start.
        for record in read_trial_records(self.study_dir):
            self._records.setdefault(record["trial_id"], record)
        write_driver_state(self.study_dir, "running")

    # -- records -----------------------------------------------------------------------
    def _record(self, trial) -> dict[str, Any]:
        tid = trial.trial_id
        if tid not in self._records:
            record = read_json(trial_file(self.study_dir, tid))
            if record is None:
                plan = trial_plan(self.spec, trial.config)
                info = {
                    "method": plan.method,
                    "variant": plan.variant,
                    "pairs": [p for _, p in plan.pairs],
                    "params": dict(plan.params),
                    "description": plan.describe(),
                }
                runs = [run_id(tid, r.pair, r.seed) for r in plan.runs()]
                record = new_record(tid, plan=info, runs=runs)
            self._records[tid] = record
        return self._records[tid]

    def _save(self, record: dict[str, Any]) -> None:
        write_trial_record(self.study_dir, record)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        record = self._record(trial)
        record.update(state="running", reason=None)
        self._save(record)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        record = self._record(trial)
        objective = _number(result.get("objective"))
        if result.get("final"):
            record.update(value=objective, per_pair=dict(result.get("pairs", {})))
            if "benchmarks" in result:
                record["per_benchmark"] = dict(result["benchmarks"])
        else:
            record.update(
                last=objective,
                evaluations=int(result.get("evaluation", 0)),
                adapt_evals=int(result.get("adapt_evals", 0)),
                last_pairs=dict(result.get("pairs", {})),
            )
        record["state"] = "running"
        self._save(record)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        record = self._record(trial)
        last = trial.last_result or {}
        if last.get("final"):
            record.update(state="done", reason=None)
        else:
            record.update(
                state="stopped",
                reason=f"stopped early by ASHA after {last.get('adapt_evals', 0)} adaptation "
                "evaluations",
            )
        self._save(record)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        from cmcl.ray.trial import describe_error

        record = self._record(trial)
        error = _trial_error(trial)
        reason = describe_error(error) if error is not None else "failed (no error recorded)"
        record.update(state="errored", reason=reason)
        self._save(record)
        if self.echo:
            print(f"[cmcl study] trial {trial.trial_id} errored: {reason}", file=sys.stderr)

    # -- progress (the driver's heartbeat is its lease's: cmcl/study/lease.py) ------------
    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        line = self._progress_line()
        if self.echo and line != self._last_line:
            self._last_line = line
            print(line, file=sys.stderr, flush=True)

    def _progress_line(self) -> str:
        counts = Counter(r["state"] for r in self._records.values())
        spec = self.spec
        line = (
            f"[cmcl study] {spec.name}: {counts['done']}/{self.expected} done, "
            f"{counts['running']} running, {counts['stopped']} stopped early, "
            f"{counts['errored']} errored"
        )
        done = [r for r in self._records.values() if r["state"] == "done" and _ok(r["value"])]
        pick = max if spec.mode == "max" else min
        if done and spec.objective == "mean":
            best = pick(done, key=lambda r: r["value"])
            line += f"; best {spec.metric_label} {best['value']:.2f} ({best['description']})"
        elif done:
            per_pair: dict[str, float] = {}
            for record in done:
                for pair, value in record["per_pair"].items():
                    if _ok(value):
                        per_pair[pair] = pick(value, per_pair.get(pair, value))
            order = [p for _, p in spec.pairs]
            shown = ", ".join(f"{p} {per_pair[p]:.1f}" for p in order if p in per_pair)
            line += f"; best {spec.metric_label} per pair: {shown}"
        return line


def write_driver_state(study_dir: Path, state: str) -> None:
    """driver.json: how the last driver stands: running, finished, interrupted or failed."""
    write_json(
        study_dir / DRIVER_FILE,
        {"pid": os.getpid(), "host": socket.gethostname(), "state": state, "time": time.time()},
    )


def _trial_error(trial) -> BaseException | None:
    """The trial's exception: from its local error file (storage gets a copy only later)."""
    import ray.cloudpickle as pickle

    try:
        local = trial.pickled_error_file
        if local and Path(local).exists():
            return pickle.loads(Path(local).read_bytes())
        return trial.get_pickled_error()
    except Exception:  # an unreadable error file must not stop the study
        return None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ok(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)
