"""One line per event instead of pages when Ray reports lost nodes and failed workers.

When a node dies, Ray's driver-side error listener prints the raylet's
messages ("Raylet is terminated ... Last 20 lines of the Raylet logs", twenty
``[state-dump]`` lines, "has been marked dead because the detector has missed
too many heartbeats") straight to ``sys.stdout``, whatever ``log_to_driver``
and the logging level say (shared/RAY_NOTES.md). And with ``log_to_driver``
(which ``cmcl train --workers N`` needs for rank 0's progress lines), every
line a Ray Train worker or controller writes reaches the terminal too: a
worker's traceback when its peer's node is lost, the controller's traceback
every 60 s while it waits for resources to restart the worker group.

:func:`quiet_raylet_messages` puts a filter in front of ``sys.stdout`` and
``sys.stderr`` for as long as cmcl drives Ray: a raylet message becomes one
line; of the lines Ray forwards from its workers (``(Name pid=N) ...``), cmcl's
own (``[cmcl] ...``) pass, without Ray's prefix, a failed Ray Train worker and a
worker group waiting for resources become one line each, and the rest is
dropped. Lines that are not Ray's pass unchanged. ``--verbose`` (no filter)
shows everything.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
from collections.abc import Iterator

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAYLET = "(raylet)"
_DEAD = re.compile(r"node id: (\w+) and address: ([\w.:-]+)")
_WORKER = re.compile(r"^\((?:[\w.:-]+ )?pid=[\w]+(?:, ip=[\w.:-]+)?\) ?(.*)$")
_WAITING = re.compile(r"startup timed out after ([\d.]+) seconds waiting for (\d+) workers")
REPEAT_S = 300.0
"""A worker-side event already said is said again after this long at the soonest."""


def worker_event(text: str) -> str | None:
    """The one line for a forwarded worker line that starts an event, else None."""
    waiting = _WAITING.search(text)
    if waiting:
        return (
            f"waiting for the cluster to hold {waiting[2]} Ray Train workers (Ray Train "
            "retries every minute; nodes that join are used)"
        )
    if text.startswith("Error in training function"):
        return (
            "a Ray Train worker failed (a lost node or process, or an error in the run); "
            "its worker group restarts from the newest checkpoint within train.restarts"
        )
    return None


def summarise(message: str) -> str:
    """One line for a raylet message."""
    text = " ".join(message.split())
    dead = _DEAD.search(text)
    if "marked dead" in text and dead:
        return f"Ray marked node {dead[1][:8]} ({dead[2]}) dead: it stopped answering"
    if text.startswith("Raylet is terminated"):
        return "a node's raylet ended unexpectedly (its node was lost or killed)"
    first = text.split(". ")[0]
    return first if len(first) <= 160 else first[:157] + "..."


class RayletFilter(io.TextIOBase):
    """A text stream that passes lines to ``target`` except raylet messages, which it
    replaces with one line on ``notes`` (see the module docstring)."""

    def __init__(self, target, notes, *, clock=None) -> None:
        import time

        self.target = target
        self.notes = notes
        self.clock = clock or time.monotonic
        self.lock = threading.Lock()
        self.pending = ""
        self.message: list[str] | None = None
        self.said: dict[str, float] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        plain = _ANSI.sub("", line)
        if plain.startswith(_RAYLET):
            self._end_message()
            self.message = [plain[len(_RAYLET) :].strip()]
            return
        if self.message is not None and (plain[:1].isspace() or not plain):
            self.message.append(plain)
            return
        self._end_message()
        worker = _WORKER.match(plain)
        if worker is None:
            self.target.write(line + "\n")
            return
        text = worker[1]
        if text.startswith("[cmcl"):
            self.target.write(text + "\n")
            return
        event = worker_event(text)
        if event is not None:
            now = self.clock()
            if now - self.said.get(event, -REPEAT_S) >= REPEAT_S:
                self.said[event] = now
                self.notes.write(f"[cmcl] {event} (--verbose: Ray's output)\n")
                self.notes.flush()

    def _end_message(self) -> None:
        if self.message is None:
            return
        self.notes.write(f"[cmcl] {summarise(' '.join(self.message))} (--verbose: Ray's message)\n")
        self.notes.flush()
        self.message = None

    def flush(self) -> None:
        with self.lock:
            self._end_message()
            self.target.flush()

    def __getattr__(self, name: str):
        return getattr(self.target, name)


@contextlib.contextmanager
def quiet_raylet_messages(enabled: bool = True) -> Iterator[None]:
    """Filter Ray's raylet messages from ``sys.stdout`` for the block (see the module)."""
    if not enabled or isinstance(sys.stdout, RayletFilter):
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout = RayletFilter(out, err)
    sys.stderr = RayletFilter(err, err)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = out, err
