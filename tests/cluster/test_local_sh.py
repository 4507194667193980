"""cluster/local.sh for real: a head and two 1-CPU worker nodes on this machine.

The cluster test is slow (about a minute on 2 cores); the option checks are fast.
"""

from __future__ import annotations

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


@pytest.mark.slow
@needs_setsid
def test_up_status_job_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = run_local_sh("up", "--workers", "2", "--cpus-per-worker", "1", state=state)
    ray_tmp = (state / "ray_tmp").read_text().strip() if (state / "ray_tmp").exists() else ""
    leaders: list[str] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        leaders = [line.split()[1] for line in (state / "pids").read_text().splitlines()]
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
    assert ray_tmp and processes_mentioning(ray_tmp) == []
    assert not state.exists() and not Path(ray_tmp).exists()


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    bad = run_local_sh("up", "--workers", "two", state=tmp_path / "s", timeout=30)
    assert bad.returncode == 2
    assert "--workers must be an integer >= 0, got 'two'" in bad.stderr
    unknown = run_local_sh("restart", state=tmp_path / "s", timeout=30)
    assert unknown.returncode == 2 and "valid: up, down, status" in unknown.stderr
    assert not (tmp_path / "s").exists()


@needs_setsid
def test_down_after_a_crash_signals_nothing_and_cleans_up(tmp_path: Path) -> None:
    # State left by a cluster whose processes are gone; the pid now belongs to
    # an unrelated process (this test's sleep), which must survive `down`.
    state = tmp_path / "state"
    ray_tmp = tmp_path / "cmcl-lc.dead"
    (ray_tmp / "n0").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        state.mkdir()
        (state / "pids").write_text(f"head {bystander.pid}\n")
        (state / "ray_tmp").write_text(f"{ray_tmp}\n")
        down = run_local_sh("down", state=state, timeout=30)
        assert down.returncode == 0, down.stderr
        assert bystander.poll() is None, "down signalled a process that is not part of the cluster"
        assert not ray_tmp.exists() and not state.exists()
    finally:
        bystander.kill()
        bystander.wait()
