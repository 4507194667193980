"""What the study driver says: the plan, progress, what it waits for, and a failed study.

One line per event on stderr, each starting ``[cmcl study]``; the counts of
runs and trials at every change of the trials' counts or of the best value,
at most every :data:`COUNTS_EVERY_S` seconds otherwise; a run that waits for
resources (or a cluster that holds no run) after :data:`WAIT_NOTICE_S`, again
every :data:`WAIT_REPEAT_S` or when what it waits for changes. No Ray.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cmcl.study.records import TrialRecord
from cmcl.study.spec import StudySpec

WAIT_NOTICE_S = 30.0
"""A run queued this long for resources is reported (and the study's plan with it)."""
WAIT_REPEAT_S = 300.0
COUNTS_EVERY_S = 30.0


@dataclass(frozen=True)
class Capacity:
    """What the cluster offers this study now."""

    runs: int
    """Runs of this study the live nodes hold at once."""
    cluster: str
    """The live nodes' resources in words: ``4 CPU, 1 GPU on 3 node(s)``."""
    per_run: str
    """What one run asks: ``1 CPU + 0.25 GPU (1 worker)``."""


class StudyWaitTimeout(RuntimeError):
    """The cluster could not start a run within ``resources.wait_timeout_s``."""


class Voice:
    """The driver's lines (see the module docstring)."""

    def __init__(self, spec: StudySpec, *, echo: bool, clock: Callable[[], float]) -> None:
        self.spec, self.echo, self.clock = spec, echo, clock
        self.last_line, self.last_key, self.said_at = "", "", -math.inf
        self.blocked_since: float | None = None
        self.wait_said: tuple[str, float] | None = None

    def say(self, text: str) -> None:
        if self.echo:
            print(f"[cmcl study] {text}", file=sys.stderr, flush=True)

    def capacity_changed(self, capacity: Capacity, *, first: bool) -> None:
        lead = "" if first else "the cluster changed: "
        if capacity.runs > 0:
            self.say(
                f"{lead}{capacity.runs} run(s) at once, each {capacity.per_run} "
                f"(cluster: {capacity.cluster})"
            )
        elif not first:
            self.say(
                f"{lead}it holds no run of this study now (each needs {capacity.per_run}, "
                f"the cluster has {capacity.cluster}); runs in flight wait for resources"
            )

    def counts(self, trials: Iterable[TrialRecord], *, running: int, queued: int, expected: int):
        trials = list(trials)
        runs = [r for t in trials for r in t.runs]
        count = {s: sum(t.state == s for t in trials) for s in ("done", "stopped", "errored")}
        line = (
            f"{self.spec.name}: runs {sum(r.state == 'done' for r in runs)} done, "
            f"{running} running, {queued} queued; trials {count['done']}/{expected} done, "
            f"{count['stopped']} stopped early, {count['errored']} errored"
        )
        best = self.best(trials)
        if best:
            line += f"; {best}"
        key = line.split("; trials ", 1)[-1]
        now = self.clock()
        if line != self.last_line and (
            key != self.last_key or now - self.said_at >= COUNTS_EVERY_S
        ):
            self.last_line, self.last_key, self.said_at = line, key, now
            self.say(line)

    def best(self, trials: Iterable[TrialRecord]) -> str:
        spec = self.spec
        pick = max if spec.mode == "max" else min
        done = [t for t in trials if t.state == "done" and t.value is not None]
        if not done:
            return ""
        if spec.objective == "mean" or len(spec.pairs) == 1:
            best = pick(done, key=lambda t: t.value)
            return f"best {spec.metric} {best.value:.2f} ({best.description})"
        per_pair: dict[str, float] = {}
        for trial in done:
            for pair, value in trial.per_pair.items():
                per_pair[pair] = pick(value, per_pair.get(pair, value))
        order = [p for _, p in spec.pairs]
        return f"best {spec.metric} per pair: " + ", ".join(
            f"{p} {per_pair[p]:.1f}" for p in order if p in per_pair
        )

    def waiting(
        self, capacity: Capacity, *, queued_since: list[float], running: int, blocked: bool
    ) -> None:
        """Say what the study waits for (see the module docstring); raises
        :class:`StudyWaitTimeout` past ``resources.wait_timeout_s``."""
        now = self.clock()
        if blocked and self.blocked_since is None:
            self.blocked_since = now
        elif not blocked:
            self.blocked_since = None
        since = min(queued_since, default=None)
        if self.blocked_since is not None:
            since = self.blocked_since if since is None else min(since, self.blocked_since)
        if since is None or now - since < WAIT_NOTICE_S:
            return
        what = (
            "no run can start: the cluster holds none"
            if blocked
            else f"{len(queued_since)} run(s) queued for resources"
        )
        message = (
            f"waiting: {what} for {now - since:.0f} s; each run needs {capacity.per_run}, the "
            f"cluster has {capacity.cluster} ({running} run(s) of this study running). Runs "
            "start as soon as resources free up or nodes join (a cloud cluster's autoscaler "
            "adds them; locally: cluster/local.sh add-node); or stop with Ctrl-C and resume "
            "with smaller --cpus-per-worker/--workers"
        )
        key = what + capacity.cluster
        said = self.wait_said
        if said is None or said[0] != key or now - said[1] >= WAIT_REPEAT_S:
            self.wait_said = (key, now)
            self.say(message)
        timeout = self.spec.resources.wait_timeout_s
        if timeout is not None and now - since > timeout:
            raise StudyWaitTimeout(
                f"{message} (waited more than resources.wait_timeout_s = {timeout:g} s)"
            )


def failure_message(spec: StudySpec, trials: Iterable[TrialRecord], *, expected: int, study) -> str:
    errored = [t for t in trials if t.state == "errored"]
    first = errored[0]
    reason = str(first.reason or "no reason recorded").splitlines()[0]
    return (
        f"study {spec.name}: no trial finished ({len(errored)} of {expected} errored); the "
        f"first, trial {first.trial_id}: {reason} (`cmcl study status {study}` lists every "
        "failed run)"
    )
