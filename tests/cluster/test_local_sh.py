"""cluster/local.sh for real: a head and two 1-CPU worker nodes on this machine.

The cluster tests are slow (up to about a minute and a half each on 2 cores); the
option and argument checks are fast and start no Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SH = ROOT / "cluster" / "local.sh"

needs_setsid = pytest.mark.skipif(
    shutil.which("setsid") is None, reason="local.sh needs Linux setsid"
)

# Run in a subprocess so this pytest process never holds a Ray connection.
DRIVER = """
import ray
ray.init(logging_level="ERROR", log_to_driver=False)
alive = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def node_id():
    return ray.get_runtime_context().get_node_id()

used = set(ray.get([node_id.remote() for _ in range(4)]))
print(f"ALIVE={len(alive)} USED={len(used)}")
"""


# Ray's node table as seen by a driver of the cluster. `place PORT`: a detached
# actor on the node with that node-manager port, printing its pid. `wait WANTED S`:
# until each port of WANTED ({port: alive}) shows that liveness (a live node wins
# over a dead one on the same port) or S seconds pass, then print the table.
NODE_TABLE = """
import json, os, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(logging_level="ERROR", log_to_driver=False)
mode, arg = sys.argv[1], sys.argv[2]
if mode == "place":
    node = next(n for n in ray.nodes() if n["Alive"] and n["NodeManagerPort"] == int(arg))

    @ray.remote(num_cpus=1)
    class Resident:
        def pid(self):
            return os.getpid()

    strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
    actor = Resident.options(lifetime="detached", scheduling_strategy=strategy).remote()
    print("PID", ray.get(actor.pid.remote(), timeout=60))
else:
    wanted = {int(port): alive for port, alive in json.loads(arg).items()}
    deadline = time.monotonic() + float(sys.argv[3])
    while True:
        seen = {}
        for n in ray.nodes():
            seen[n["NodeManagerPort"]] = seen.get(n["NodeManagerPort"], False) or n["Alive"]
        if all(seen.get(p) == a for p, a in wanted.items()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    print("NODES", json.dumps(seen))
"""


def run_local_sh(*args: str, state: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(LOCAL_SH), *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=client_env(),
    )


def client_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any Ray address/auth it may carry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def cluster_env(state: Path) -> dict[str, str]:
    values = dict(
        re.findall(r"^export (\w+)=(.*)$", (state / "cluster.env").read_text(), flags=re.M)
    )
    return client_env(values)


def live_nodes(ray_status: str) -> int:
    """Nodes `ray status` lists as active or idle (a dead one is under "Recent failures")."""
    listed = ray_status.split("Active:")[1].split("Pending:")[0]
    return len(re.findall(r"^\s*1 node_[0-9a-f]+", listed, flags=re.M))


def node_logs(state: Path, ray_tmp: str) -> str:
    """The tails of the nodes' logs, for a failure message (`down` deletes them)."""
    logs = sorted((state / "logs").glob("*.log*"))
    if ray_tmp:
        logs += sorted(Path(ray_tmp).glob("*/session_latest/logs/raylet.out"))
    return "".join(
        f"\n--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        for log in logs
    )


def processes_mentioning(text: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", "--", text], capture_output=True, text=True)
    return found.stdout.split()


def session_members(session: int) -> list[int]:
    """Live (not zombie) processes of a session: what a node's leader started."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        # After "pid (comm)": state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(stat.parent.name))
    return members


def is_live(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def recorded_nodes(state: Path) -> dict[int, dict[str, str]]:
    """The state dir's nodes file: index -> role, pid, node-manager port, state."""
    nodes = {}
    for line in (state / "nodes").read_text().splitlines():
        index, role, pid, port, status = line.split()
        nodes[int(index)] = {"role": role, "pid": pid, "port": port, "state": status}
    return nodes


def node_table(env: dict[str, str], *args: str) -> str:
    driver = subprocess.run(
        [sys.executable, "-c", NODE_TABLE, *args],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
    )
    assert driver.returncode == 0, driver.stdout + driver.stderr
    return driver.stdout


def wait_for_liveness(env: dict[str, str], wanted: dict[str, bool], within: float) -> dict:
    """Ray's node table ({node-manager port: alive}) once it shows `wanted`."""
    out = node_table(env, "wait", json.dumps(wanted), str(within))
    seen = json.loads(out.split("NODES", 1)[1])
    return {port: alive for port, alive in seen.items() if port in wanted}


@pytest.mark.slow
@needs_setsid
def test_up_status_job_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = run_local_sh("up", "--workers", "2", "--cpus-per-worker", "1", state=state)
    ray_tmp = (state / "ray_tmp").read_text().strip() if (state / "ray_tmp").exists() else ""
    leaders: list[str] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        leaders = [node["pid"] for node in recorded_nodes(state).values()]
        assert len(leaders) == 3
        env = cluster_env(state)
        assert f"address:    {env['RAY_ADDRESS']}" in up.stdout
        assert env["RAY_ADDRESS"].startswith("127.0.0.1:")

        status = run_local_sh("status", state=state, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "total: CPU=2 GPU=0" in status.stdout

        # `ray status` reads the autoscaler's view, which can trail the GCS node
        # table that `up` waited on: give it a little time, then say what it showed.
        deadline = time.monotonic() + 60
        while True:
            ray_status = subprocess.run(
                ["ray", "status"], capture_output=True, text=True, timeout=120, env=env
            )
            assert ray_status.returncode == 0, ray_status.stderr
            live = live_nodes(ray_status.stdout)
            if live == 3 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert live == 3, ray_status.stdout + node_logs(state, ray_tmp)

        driver = subprocess.run(
            [sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=180, env=env
        )
        assert "ALIVE=3 USED=2" in driver.stdout, (
            driver.stdout + driver.stderr + node_logs(state, ray_tmp)
        )

        # Token auth is on: the same address without the token is refused.
        no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.run(
            ["ray", "status", "--address", env["RAY_ADDRESS"]],
            capture_output=True,
            text=True,
            timeout=120,
            env=no_token,
        )
        assert refused.returncode != 0
        assert "auth" in (refused.stdout + refused.stderr).lower()
    finally:
        down = run_local_sh("down", state=state, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    for leader in leaders:
        group = subprocess.run(["pgrep", "-g", leader], capture_output=True, text=True)
        assert group.stdout.split() == [], f"process group {leader} survived down"
        assert session_members(int(leader)) == [], f"session {leader} survived down"
    assert ray_tmp and processes_mentioning(ray_tmp) == []
    assert not state.exists() and not Path(ray_tmp).exists()


@pytest.mark.slow
@needs_setsid
def test_kill_add_and_stop_nodes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = run_local_sh("up", "--workers", "2", "--cpus-per-worker", "1", state=state)
    ray_tmp = (state / "ray_tmp").read_text().strip() if (state / "ray_tmp").exists() else ""
    leaders: list[int] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env = cluster_env(state)
        nodes = recorded_nodes(state)
        assert [(i, n["role"], n["state"]) for i, n in nodes.items()] == [
            (0, "head", "alive"),
            (1, "worker", "alive"),
            (2, "worker", "alive"),
        ]
        head, one, two = (nodes[i]["port"] for i in range(3))
        leaders = [int(n["pid"]) for n in nodes.values()]

        # A Ray worker process on node 1 (in a process group of its own, but in the
        # node's session) must die with the node.
        resident = int(node_table(env, "place", one).split("PID", 1)[1])
        assert os.getsid(resident) == leaders[1]

        kill = run_local_sh("kill-node", "1", state=state, timeout=60)
        assert kill.returncode == 0, kill.stdout + kill.stderr
        assert "Worker node 1 killed" in kill.stdout
        assert session_members(leaders[1]) == [], "kill-node left processes of node 1"
        assert not is_live(resident), "the Ray worker process on node 1 survived kill-node"
        assert session_members(leaders[0]) and session_members(leaders[2])
        seen = wait_for_liveness(env, {head: True, one: False, two: True}, within=60)
        assert seen == {head: True, one: False, two: True}, f"{seen}{node_logs(state, ray_tmp)}"

        add = run_local_sh("add-node", state=state, timeout=150)
        assert add.returncode == 0, add.stdout + add.stderr
        index = int(re.search(r"Worker node (\d+) joined", add.stdout).group(1))
        assert index == 3  # numbers are never reused
        three = recorded_nodes(state)[3]["port"]
        leaders.append(int(recorded_nodes(state)[3]["pid"]))
        seen = wait_for_liveness(env, {one: False, two: True, three: True}, within=60)
        assert seen == {one: False, two: True, three: True}, seen

        stop = run_local_sh("stop-node", "2", state=state, timeout=60)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert session_members(leaders[2]) == []
        seen = wait_for_liveness(env, {head: True, two: False, three: True}, within=60)
        assert seen == {head: True, two: False, three: True}, seen

        status = run_local_sh("status", state=state, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {
            line.split()[0]: line.split()[:3]
            for line in status.stdout.splitlines()
            if re.match(r"^\d+ ", line)
        }
        assert rows == {
            "0": ["0", "head", "alive"],
            "1": ["1", "worker", "killed"],
            "2": ["2", "worker", "stopped"],
            "3": ["3", "worker", "alive"],
        }, status.stdout
        assert "total: CPU=1 GPU=0" in status.stdout

        again = run_local_sh("kill-node", "2", state=state, timeout=30)
        assert again.returncode == 2
        assert again.stderr == "local.sh: worker node 2 is already stopped\n"
        head_refused = run_local_sh("kill-node", "0", state=state, timeout=30)
        assert head_refused.returncode == 2 and "node 0 is the head" in head_refused.stderr
    finally:
        down = run_local_sh("down", state=state, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    for leader in leaders:
        assert session_members(leader) == [], f"session {leader} survived down"
    assert ray_tmp and processes_mentioning(ray_tmp) == []
    assert not state.exists() and not Path(ray_tmp).exists()


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    bad = run_local_sh("up", "--workers", "two", state=tmp_path / "s", timeout=30)
    assert bad.returncode == 2
    assert "--workers must be an integer >= 0, got 'two'" in bad.stderr
    unknown = run_local_sh("restart", state=tmp_path / "s", timeout=30)
    assert unknown.returncode == 2
    assert "valid: up, down, status, add-node, stop-node, kill-node" in unknown.stderr
    assert not (tmp_path / "s").exists()
    # An option without its value, last on the line (it used to exit 1 silently).
    for last in ("--state-dir", "--cpus", "--workers"):
        missing = subprocess.run(
            ["bash", str(LOCAL_SH), "add-node", last],
            capture_output=True,
            text=True,
            timeout=30,
            env=client_env(),
        )
        assert missing.returncode == 2 and missing.stderr == f"local.sh: {last} needs a value\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["kill-node"],
            "kill-node needs a worker node number, e.g. 'cluster/local.sh kill-node 1'",
        ),
        (["stop-node", "x"], "node number must be a whole number (1, 2, ...), got 'x'"),
        (["kill-node", "-1"], "node number must be a whole number (1, 2, ...), got '-1'"),
        (["kill-node", "1.5"], "node number must be a whole number (1, 2, ...), got '1.5'"),
        (["stop-node", "0"], "node 0 is the head, which cannot be stopped or killed on its own"),
        (["kill-node", "00"], "node 0 is the head"),
        (["kill-node", "1", "2"], "unexpected argument '2' for 'kill-node'"),
        (["add-node", "--cpus", "0"], "--cpus must be an integer >= 1, got '0'"),
        (["add-node", "3"], "unexpected argument '3' for 'add-node'"),
        (["kill-node", "1"], "no local cluster running from"),
        (["stop-node", "2"], "no local cluster running from"),
        (["add-node"], "no local cluster running from"),
    ],
)
def test_node_commands_reject_bad_input(args: list[str], expected: str, tmp_path: Path) -> None:
    result = run_local_sh(*args, state=tmp_path / "s", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("local.sh: ") and result.stderr.count("\n") == 1
    assert expected in result.stderr
    assert not (tmp_path / "s").exists()


@needs_setsid
def test_node_commands_on_a_recorded_cluster_refuse_what_is_not_a_running_worker(
    tmp_path: Path,
) -> None:
    # A "head" that counts as this cluster's (its command line names the cluster's
    # temp dir), a worker stopped earlier, and a worker whose pid now belongs to an
    # unrelated process: nothing here may be signalled.
    state = tmp_path / "state"
    ray_tmp = tmp_path / "cmcl-lc.fake"
    (ray_tmp / "n0").mkdir(parents=True)
    head = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(ray_tmp / "n0")]
    )
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        state.mkdir()
        (state / "ray_tmp").write_text(f"{ray_tmp}\n")
        (state / "nodes").write_text(
            f"0 head {head.pid} 40001 alive\n"
            f"1 worker {bystander.pid} 40002 stopped\n"
            f"2 worker {bystander.pid} 40003 alive\n"
        )
        before = (state / "nodes").read_text()
        for args, expected in [
            (["stop-node", "3"], "no worker node 3 in this cluster (workers: 1 2)"),
            (["kill-node", "1"], "worker node 1 is already stopped"),
            (["kill-node", "2"], f"worker node 2 is not running (its process {bystander.pid}"),
            (["stop-node", "0"], "node 0 is the head"),
        ]:
            result = run_local_sh(*args, state=state, timeout=30)
            assert result.returncode == 2, (args, result.stdout, result.stderr)
            assert result.stderr.startswith("local.sh: ") and expected in result.stderr, args
        assert head.poll() is None and bystander.poll() is None
        assert (state / "nodes").read_text() == before
    finally:
        for process in (head, bystander):
            process.kill()
            process.wait()


@needs_setsid
@pytest.mark.parametrize(
    ("record", "line"),
    [("nodes", "0 head {pid} 40001 alive\n"), ("pids", "head {pid}\n")],  # pids: older local.sh
)
def test_down_after_a_crash_signals_nothing_and_cleans_up(
    record: str, line: str, tmp_path: Path
) -> None:
    # State left by a cluster whose processes are gone; the pid now belongs to
    # an unrelated process (this test's sleep), which must survive `down`.
    state = tmp_path / "state"
    ray_tmp = tmp_path / "cmcl-lc.dead"
    (ray_tmp / "n0").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        state.mkdir()
        (state / record).write_text(line.format(pid=bystander.pid))
        (state / "ray_tmp").write_text(f"{ray_tmp}\n")
        down = run_local_sh("down", state=state, timeout=30)
        assert down.returncode == 0, down.stderr
        assert bystander.poll() is None, "down signalled a process that is not part of the cluster"
        assert not ray_tmp.exists() and not state.exists()
    finally:
        bystander.kill()
        bystander.wait()
