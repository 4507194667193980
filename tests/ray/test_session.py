"""A private Ray session listens on the loopback interface only and asks for token auth."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

# Run in a fresh interpreter: Ray reads the settings when it is first imported,
# and this test process has imported it already.
SCRIPT = r"""
import json, os, socket, struct
from pathlib import Path
from cmcl.ray.session import ray_session

def tree(root):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found

def listening(pids):
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            words = struct.unpack(f"<{len(raw) // 4}I", raw)
            found.append(socket.inet_ntop(family, struct.pack(f">{len(words)}I", *words)))
    return found

with ray_session(num_cpus=1, log_to_driver=False) as resources:
    import ray
    print(json.dumps({
        "gcs": ray.get_runtime_context().gcs_address,
        "auth": os.environ.get("RAY_AUTH_MODE"),
        "listening": listening(tree(os.getpid())),
    }))
print(json.dumps({"auth_after": os.environ.get("RAY_AUTH_MODE")}))
"""


def test_a_private_session_binds_to_loopback_with_token_auth(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path), RAY_TMPDIR="/tmp/ray-cmcl-session-test")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    inside, after = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert inside["gcs"].startswith("127.0.0.1:")
    # GCS, raylet, agents, workers, the driver: at least these, every one on loopback.
    assert len(inside["listening"]) >= 5
    assert {a.removeprefix("::ffff:") for a in inside["listening"]} == {"127.0.0.1"}
    assert inside["auth"] == "token" and after["auth_after"] is None
    assert (tmp_path / ".ray" / "auth_token").read_text().strip()
