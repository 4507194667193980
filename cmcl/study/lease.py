"""One live driver per study directory: a lease file with a heartbeat.

``cmcl study run`` and ``cmcl study resume`` hold ``driver.lease`` while they
drive a study: host, pid, the process's start time, a random token and a
heartbeat time that a background thread rewrites every :data:`HEARTBEAT_S`
seconds. A second driver is refused while the holder lives. The lease of a
holder that is gone is taken over, and the new holder says so:

* same host: its pid no longer runs (or now runs another process: the start
  time differs; a zombie counts as gone);
* other host: its heartbeat is older than :data:`LEASE_TIMEOUT_S` (clocks are
  assumed to agree within a few seconds, as NTP keeps them).

The lease is created with ``link(2)`` of a complete private file, the
exclusive create that NFS honours (open(2) warns that ``O_EXCL`` may not be
atomic there; ``flock`` is not honoured reliably either), so a reader never
sees half a lease. No Ray, no torch: ``cmcl study status`` reads it too.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LEASE_FILE = "driver.lease"
HEARTBEAT_S = 5.0
"""How often the holder rewrites its heartbeat."""
LEASE_TIMEOUT_S = 60.0
"""A lease from another host whose heartbeat is older than this is taken to be abandoned."""
CONFIRM_S = 3 * HEARTBEAT_S
"""A dead pid's lease is taken over only once its heartbeat is this old: a holder in
another pid namespace (a container sharing the host's name) looks dead but still beats."""


class StudyBusyError(RuntimeError):
    """Another driver holds the study's lease; the message names it and what to do."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its file says."""

    host: str
    pid: int
    start: str | None
    """The process's identity on its host (boot id and start time), None where unknown."""
    token: str
    acquired: float
    heartbeat: float

    def describe(self, now: float | None = None) -> str:
        age = (now or time.time()) - self.heartbeat
        return f"pid {self.pid} on {self.host}, heartbeat {age:.0f} s ago"


def _process_identity(pid: int) -> str | None:
    """Boot id and start time of a running process; None if it is gone or a zombie.

    Where /proc is missing (not Linux) a running pid gives ``"?"``: alive, identity unknown.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot}:{fields[19]}"


def holder_from_json(data: bytes, *, fallback_time: float) -> Holder:
    """The holder a lease file's bytes name. An unreadable lease (a disk error, a hand-edited
    file) reads as a holder on host ``?`` whose heartbeat is ``fallback_time``."""
    try:
        item = json.loads(data)
        return Holder(
            host=str(item["host"]),
            pid=int(item["pid"]),
            start=item.get("start"),
            token=str(item["token"]),
            acquired=float(item["acquired"]),
            heartbeat=float(item["heartbeat"]),
        )
    except (ValueError, KeyError, TypeError):
        return Holder(
            host="?", pid=0, start=None, token="", acquired=fallback_time, heartbeat=fallback_time
        )


def read_lease(study: str | Path) -> Holder | None:
    """The holder of a local study's lease; None when the study has no lease."""
    path = Path(study) / LEASE_FILE
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        data, mtime = b"", time.time()
    return holder_from_json(data, fallback_time=mtime)


def busy_message(study: str | Path, holder: Holder) -> str:
    """Why a second driver is refused, whose lease it is and what the user can do."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.acquired))
    where = "this machine" if holder.host == socket.gethostname() else holder.host
    return (
        f"{study} is being run by another driver ({holder.describe()}, since "
        f"{since}); a study has one driver at a time. Follow it with `cmcl study status "
        f"{study}`. To stop it, press Ctrl-C in its terminal (or `kill -INT "
        f"{holder.pid}` on {where}); once it has ended, `cmcl study resume {study}` "
        f"continues the study. A driver whose machine is down loses its lease "
        f"{LEASE_TIMEOUT_S:.0f} s after its last heartbeat."
    )


def gone_reason(holder: Holder, *, now: float | None = None) -> str | None:
    """Why ``holder`` no longer drives the study, or None while it may still."""
    now = now or time.time()
    if holder.host == socket.gethostname():
        identity = _process_identity(holder.pid)
        if identity is None:
            return "that process no longer runs"
        if holder.start not in (None, "?") and identity not in ("?", holder.start):
            return "that pid now belongs to another process"
        return None
    age = now - holder.heartbeat
    if age > LEASE_TIMEOUT_S:
        return f"its heartbeat is {age:.0f} s old (the timeout is {LEASE_TIMEOUT_S:.0f} s)"
    return None


def live_holder(study: str | Path) -> Holder | None:
    """The holder of the study's lease if it still drives the study."""
    holder = read_lease(study)
    return holder if holder is not None and gone_reason(holder) is None else None


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; True if this call created it."""
    private = path.with_name(
        f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"
    )
    private.write_bytes(data)
    try:
        os.link(private, path)
        return True
    except FileExistsError:
        # NFS: a retried LINK whose first reply was lost says EEXIST although it worked.
        return private.stat().st_nlink == 2
    except OSError:  # no hard links on this filesystem (some FUSE or SMB mounts)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return True
    finally:
        private.unlink(missing_ok=True)


class StudyLease:
    """The lease of one study directory, held from :meth:`acquire` to :meth:`release`.

    Args:
        study: the study directory (created if missing).
        on_lost: called from the heartbeat thread if another driver took the
            lease over (this one's heartbeat stalled past the timeout). The
            default interrupts the main thread as Ctrl-C does, so the driver
            stops instead of running beside the new one.
    """

    def __init__(
        self,
        study: str | Path,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        on_lost: Callable[[Holder | None], None] | None = None,
    ) -> None:
        self.study = Path(study)
        self.path = self.study / LEASE_FILE
        self.heartbeat_s = heartbeat_s
        self.on_lost = on_lost or _interrupt_main
        self.token = uuid.uuid4().hex
        self.acquired = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> bytes:
        data = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": _process_identity(os.getpid()),
            "token": self.token,
            "acquired": self.acquired,
            "heartbeat": time.time(),
        }
        return (json.dumps(data, indent=2) + "\n").encode()

    def acquire(self) -> str | None:
        """Take the lease; returns a line saying whose abandoned lease was taken over, if any.

        Raises:
            StudyBusyError: another driver holds it.
        """
        self.study.mkdir(parents=True, exist_ok=True)
        self.acquired = time.time()
        note = None
        for _ in range(5):
            if _create_exclusive(self.path, self._content()):
                self._start_heartbeat()
                return note
            holder = read_lease(self.study)
            if holder is None:
                continue  # released just now
            reason = gone_reason(holder)
            if reason is None:
                raise StudyBusyError(self._busy_message(holder))
            wait = CONFIRM_S - (time.time() - holder.heartbeat)
            if wait > 0:
                time.sleep(wait)
                again = read_lease(self.study)
                beating = again is not None and again.token == holder.token
                if beating and again.heartbeat > holder.heartbeat:
                    raise StudyBusyError(self._busy_message(again))
                continue
            if self._remove_abandoned(holder):
                note = f"took over the lease of {holder.describe()}: {reason}"
                log.warning("%s: %s", self.study, note)
            else:
                time.sleep(0.2)  # another driver is taking it over right now
        holder = read_lease(self.study)
        raise StudyBusyError(self._busy_message(holder) if holder else f"{self.path}: busy")

    def _remove_abandoned(self, holder: Holder) -> bool:
        """Remove the abandoned lease unless someone else is replacing it at the same moment."""
        guard = self.path.with_name(self.path.name + ".takeover")
        if not _create_exclusive(guard, self.token.encode()):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > LEASE_TIMEOUT_S:
                    guard.unlink()  # left by a driver killed while taking over
            return False
        try:
            current = read_lease(self.study)
            if current is not None and current.token != holder.token:
                return False  # no longer the abandoned lease: another driver's new one
            self.path.unlink(missing_ok=True)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def _busy_message(self, holder: Holder) -> str:
        return busy_message(self.study, holder)

    # -- heartbeat -----------------------------------------------------------------------
    def refresh(self) -> bool:
        """Rewrite the heartbeat; False if the lease is no longer this holder's."""
        current = read_lease(self.study)
        if current is None or current.token != self.token:
            return False
        private = self.path.with_name(f".{self.path.name}.{self.token}.tmp")
        private.write_bytes(self._content())
        private.replace(self.path)
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="cmcl-study-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                held = self.refresh()
            except OSError as error:  # a storage hiccup: try again at the next beat
                log.warning("%s: heartbeat not written (%s)", self.path, error)
                continue
            if not held:
                self.on_lost(read_lease(self.study))
                return

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still this holder's."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        current = read_lease(self.study)
        if current is not None and current.token == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> StudyLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _interrupt_main(holder: Holder | None) -> None:
    who = holder.describe() if holder else "nobody (the lease file was removed)"
    log.error("the study's lease is now held by %s: stopping this driver", who)
    _thread.interrupt_main()
