"""Progress lines on stderr while a report reads and builds: what, how many, time so far.

A report of thousands of runs takes minutes; these lines say where it is.
:meth:`Progress.stage` prints at once (a new step); :meth:`Progress.tick`
(a step's running count) at most every ``every_s`` seconds. Silent when the
stream is None (``cmcl report --quiet``, and callers of the Python API).
"""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None, *, every_s: float = 5.0) -> None:
        self.stream = stream
        self.every_s = every_s
        self.start = time.monotonic()
        self.last = self.start

    def _print(self, now: float, text: str) -> None:
        self.last = now
        print(f"[report {now - self.start:6.1f}s] {text}", file=self.stream, flush=True)

    def stage(self, text: str) -> None:
        if self.stream is not None:
            self._print(time.monotonic(), text)

    def tick(self, text: str) -> None:
        """A running count: printed when the last line is ``every_s`` old."""
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self._print(now, text)


def release_memory() -> None:
    """Hand memory freed by a finished step back to the system.

    Reading thousands of runs a batch at a time frees every batch, but the
    allocators keep the freed pages (Arrow's pool, glibc's arenas), so the
    process's resident size kept the high-water mark of every step: about
    100 MB more at 10,000 runs than at 15 (benchmarks/study_scale.py).
    """
    import ctypes
    import ctypes.util

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:  # not glibc (macOS, musl): nothing to trim
        trim = None
    if trim is not None:
        trim(0)
