"""The study lease: one live driver per study directory (cmcl/study/lease.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from cmcl.study import lease as lease_module
from cmcl.study.lease import (
    CONFIRM_S,
    LEASE_FILE,
    LEASE_TIMEOUT_S,
    StudyBusyError,
    StudyLease,
    live_holder,
    read_lease,
)


def _write_lease(study, **fields):
    data = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": None,
        "token": "theirs",
        "acquired": time.time(),
        "heartbeat": time.time(),
        **fields,
    }
    study.mkdir(parents=True, exist_ok=True)
    (study / LEASE_FILE).write_text(json.dumps(data))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path):
    study = tmp_path / "s"
    lease = StudyLease(study)
    assert lease.acquire() is None
    holder = read_lease(study)
    assert (holder.host, holder.pid, holder.token) == (
        socket.gethostname(),
        os.getpid(),
        lease.token,
    )
    assert live_holder(study) == holder
    lease.release()
    assert not (study / LEASE_FILE).exists() and read_lease(study) is None
    # No private files are left beside it.
    assert list(study.iterdir()) == []


def test_a_second_driver_is_refused_with_the_holders_host_pid_and_heartbeat(tmp_path):
    with StudyLease(tmp_path), pytest.raises(StudyBusyError) as caught:
        StudyLease(tmp_path).acquire()
    message = str(caught.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}, heartbeat 0 s ago" in message
    assert f"cmcl study status {tmp_path}" in message
    # Never advice to start a second driver while this one runs.
    assert "once it has ended" in message
    assert not (tmp_path / LEASE_FILE).exists()


def test_a_lease_whose_process_is_gone_is_taken_over_saying_so(tmp_path):
    pid = _dead_pid()
    _write_lease(tmp_path, pid=pid, heartbeat=time.time() - CONFIRM_S - 1)
    lease = StudyLease(tmp_path)
    note = lease.acquire()
    try:
        assert note == (
            f"took over the lease of pid {pid} on {socket.gethostname()}, heartbeat "
            f"{CONFIRM_S + 1:.0f} s ago: that process no longer runs"
        )
        assert read_lease(tmp_path).token == lease.token
    finally:
        lease.release()


def test_a_just_killed_holder_is_taken_over_once_its_heartbeat_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_module, "CONFIRM_S", 0.5)
    _write_lease(tmp_path, pid=_dead_pid())
    started = time.time()
    with StudyLease(tmp_path) as lease:
        assert read_lease(tmp_path).token == lease.token
    assert time.time() - started >= 0.4


def test_a_dead_looking_pid_whose_heartbeat_goes_on_keeps_its_lease(tmp_path, monkeypatch):
    # A holder in another pid namespace (a container with the host's name): its pid is
    # not in this /proc, but it beats.
    monkeypatch.setattr(lease_module, "CONFIRM_S", 0.5)
    pid, stop = _dead_pid(), threading.Event()

    def beat():
        while not stop.wait(0.05):
            _write_lease(tmp_path, pid=pid)

    _write_lease(tmp_path, pid=pid)
    beating = threading.Thread(target=beat)
    beating.start()
    try:
        with pytest.raises(StudyBusyError, match=f"pid {pid} on"):
            StudyLease(tmp_path).acquire()
    finally:
        stop.set()
        beating.join()


def test_a_reused_pid_does_not_keep_a_lease(tmp_path):
    # This process's pid, but another start: the pid was recycled after the holder died.
    _write_lease(tmp_path, start="another-boot:123", heartbeat=time.time() - CONFIRM_S - 1)
    with StudyLease(tmp_path) as lease:
        assert read_lease(tmp_path).token == lease.token


def test_a_live_process_on_this_host_keeps_its_lease_however_old_its_heartbeat(tmp_path):
    # A driver stopped with Ctrl-Z still runs; taking its lease would make two drivers.
    _write_lease(tmp_path, heartbeat=time.time() - 10 * LEASE_TIMEOUT_S)
    with pytest.raises(StudyBusyError, match=f"pid {os.getpid()} on"):
        StudyLease(tmp_path).acquire()


@pytest.mark.parametrize(
    ("age", "taken"), [(LEASE_TIMEOUT_S - 20, False), (LEASE_TIMEOUT_S + 20, True)]
)
def test_another_hosts_lease_expires_with_its_heartbeat(tmp_path, age, taken):
    _write_lease(tmp_path, host="node-7", pid=4242, heartbeat=time.time() - age)
    lease = StudyLease(tmp_path)
    if not taken:
        with pytest.raises(StudyBusyError, match=f"pid 4242 on node-7, heartbeat {age:.0f} s ago"):
            lease.acquire()
        assert read_lease(tmp_path).token == "theirs"
        return
    try:
        note = lease.acquire()
        assert f"its heartbeat is {age:.0f} s old (the timeout is {LEASE_TIMEOUT_S:.0f} s)" in note
    finally:
        lease.release()


def test_the_lease_is_released_when_the_driver_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt), StudyLease(tmp_path):
        assert (tmp_path / LEASE_FILE).exists()
        raise KeyboardInterrupt
    assert not (tmp_path / LEASE_FILE).exists()


def test_the_heartbeat_is_refreshed_and_a_lost_lease_is_reported(tmp_path):
    lost = threading.Event()
    seen = []
    lease = StudyLease(tmp_path, heartbeat_s=0.05, on_lost=lambda h: (seen.append(h), lost.set()))
    lease.acquire()
    first = read_lease(tmp_path).heartbeat
    time.sleep(0.3)
    assert read_lease(tmp_path).heartbeat > first
    # Another driver took it over (this one looked dead): the beat stops and says so.
    _write_lease(tmp_path, host="node-7", pid=4242)
    assert lost.wait(5)
    assert seen[0].host == "node-7"
    lease.release()
    assert read_lease(tmp_path).token == "theirs"  # not removed: it is not this holder's


def test_only_one_of_many_simultaneous_takers_wins(tmp_path):
    _write_lease(tmp_path, pid=_dead_pid(), heartbeat=time.time() - CONFIRM_S - 1)
    results = []

    def take():
        try:
            results.append(StudyLease(tmp_path, heartbeat_s=60).acquire() or "created")
        except StudyBusyError:
            results.append("refused")

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # In-process threads share a pid, so every later taker sees a live holder and is refused.
    assert len(results) == 6 and results.count("refused") == 5


def test_status_tells_a_live_driver_from_one_that_died_holding_the_lease(tmp_path):
    from cmcl.study.directory import create_study_dir
    from cmcl.study.spec import parse_spec
    from cmcl.study.status import format_status, study_status

    spec = parse_spec(
        {"name": "s", "benchmark": "synthetic-epic", "pairs": ["D2-D1"], "methods": ["cmco"]}
    )
    path = create_study_dir(spec, storage=tmp_path).path
    with StudyLease(path):
        text = format_status(study_status(path))
        assert "driver: running (pid" in text and "cmcl study resume" not in text
    pid = _dead_pid()
    _write_lease(path, pid=pid, heartbeat=time.time() - CONFIRM_S - 1)
    text = format_status(study_status(path))
    assert f"driver: not running (pid {pid} on {socket.gethostname()}" in text
    assert "ended without releasing its lease: that process no longer runs" in text
    assert f"continue with `cmcl study resume {path}`" in text
