"""One line instead of a page when Ray reports a lost node to the driver.

When a node dies, Ray's driver-side error listener prints the raylet's
messages ("Raylet is terminated ... Last 20 lines of the Raylet logs", twenty
``[state-dump]`` lines, "has been marked dead because the detector has missed
too many heartbeats") straight to ``sys.stdout``, whatever ``log_to_driver``
and the logging level say (shared/RAY_NOTES.md). :func:`quiet_raylet_messages`
puts a filter in front of ``sys.stdout`` for as long as cmcl drives Ray: each
such message becomes one line on stderr, and everything else passes through
unchanged. ``--verbose`` (no filter) shows Ray's messages in full.
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

    def __init__(self, target, notes) -> None:
        self.target = target
        self.notes = notes
        self.lock = threading.Lock()
        self.pending = ""
        self.message: list[str] | None = None

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
        self.target.write(line + "\n")

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
    original = sys.stdout
    sys.stdout = RayletFilter(original, sys.stderr)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stdout = original
