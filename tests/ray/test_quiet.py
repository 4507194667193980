"""Ray's messages about lost nodes and failed workers become one line each (cmcl/ray/quiet.py)."""

from __future__ import annotations

import io
import sys

from cmcl.ray.quiet import RayletFilter, quiet_raylet_messages

RAYLET = (
    "\x1b[33m(raylet)\x1b[0m Raylet is terminated. Termination is unexpected. Possible reasons "
    "include: (1) SIGKILL. Last 20 lines of the Raylet logs:\n"
    "    [state-dump] \tNodeManager.deadline_timer.spill_objects - 1 total (1 active)\n"
    "    [state-dump] DebugString() time ms: 0\n"
    "    [2026-12-08 02:19:52,337 I 22269 22269] (raylet) accessor.cc:475: notification\n"
    "\n"
    "\x1b[33m(raylet)\x1b[0m The node with node id: 25c62538e63d51aca663 and address: "
    "192.0.2.2 and node name: 192.0.2.2 has been marked dead because the detector has missed "
    "too many heartbeats from it. This can happen when a \t(1) raylet crashes\n"
    "\t(2) raylet has lagging heartbeats.\n"
)
WORKERS = (
    "\x1b[36m(RayTrainWorker pid=5707)\x1b[0m [cmcl] adapt step 300 (320/1620) [checkpoint]\n"
    "\x1b[36m(RayTrainWorker pid=5707)\x1b[0m Error in training function:\n"
    "\x1b[36m(RayTrainWorker pid=5707)\x1b[0m Traceback (most recent call last):\n"
    '\x1b[36m(RayTrainWorker pid=5707)\x1b[0m   File "x.py", line 1, in f\n'
    "\x1b[36m(RayTrainWorker pid=5707)\x1b[0m RuntimeError: Connection reset by peer.\n"
    "\x1b[36m(TrainController pid=5632)\x1b[0m Error in control loop iteration: The worker "
    "group startup timed out after 60.0 seconds waiting for 2 workers. Potential causes\n"
    "\x1b[36m(TrainController pid=5632)\x1b[0m Traceback (most recent call last):\n"
    "\x1b[36m(pid=gcs_server)\x1b[0m [2026-12-08 02:51:39] Failed to remove 1 bundle(s)\n"
    "\x1b[36m(RayTrainWorker pid=5801, ip=10.0.0.2)\x1b[0m [cmcl] resuming at step 320 of 1620\n"
)


def _filtered(text: str, clock=lambda: 0.0) -> tuple[str, str]:
    out, notes = io.StringIO(), io.StringIO()
    stream = RayletFilter(out, notes, clock=clock)
    # In pieces, as print() writes them: lines are cut anywhere.
    for start in range(0, len(text), 37):
        stream.write(text[start : start + 37])
    stream.flush()
    return out.getvalue(), notes.getvalue()


def test_a_raylet_message_is_one_line_and_other_lines_pass():
    out, notes = _filtered("before\n" + RAYLET + "after\n")
    assert out == "before\nafter\n"
    assert notes.splitlines() == [
        "[cmcl] a node's raylet ended unexpectedly (its node was lost or killed) "
        "(--verbose: Ray's message)",
        "[cmcl] Ray marked node 25c62538 (192.0.2.2) dead: it stopped answering "
        "(--verbose: Ray's message)",
    ]


def test_of_the_workers_lines_cmcls_own_pass_and_events_are_one_line_each():
    out, notes = _filtered(WORKERS + WORKERS)
    assert (
        out.splitlines()
        == [
            "[cmcl] adapt step 300 (320/1620) [checkpoint]",
            "[cmcl] resuming at step 320 of 1620",
        ]
        * 2
    )
    lines = notes.splitlines()
    # Each event once: said again only after a while.
    assert len(lines) == 2
    assert lines[0].startswith("[cmcl] a Ray Train worker failed")
    assert lines[1].startswith("[cmcl] waiting for the cluster to hold 2 Ray Train workers")
    assert "Traceback" not in out + notes


def test_an_event_is_said_again_after_a_while():
    times = iter([0.0, 400.0])
    waiting = WORKERS.splitlines(keepends=True)[5]
    _, notes = _filtered(waiting + waiting, clock=lambda: next(times))
    assert notes.count("waiting for the cluster") == 2


def test_the_filter_is_in_place_only_for_the_block():
    out, err = sys.stdout, sys.stderr
    with quiet_raylet_messages():
        assert isinstance(sys.stdout, RayletFilter) and isinstance(sys.stderr, RayletFilter)
        with quiet_raylet_messages():  # nested sessions share the outer filter
            pass
        assert isinstance(sys.stdout, RayletFilter)
    assert (sys.stdout, sys.stderr) == (out, err)
    with quiet_raylet_messages(enabled=False):
        assert sys.stdout is out
