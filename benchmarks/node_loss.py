"""A node killed under a study, on a local multi-node cluster (cluster/local.sh), as a user sees it.

The study of the node-loss issue: a grid of 4 single-worker runs (2 lambda
values x 2 seeds, a short schedule, checkpoints every 400 steps) on a head
with no CPUs and two worker nodes of 1 CPU each. It runs twice with
``cmcl study run --address``: undisturbed, and with ``cluster/local.sh
kill-node 1`` once a run has passed a checkpoint (every process of that
node's session SIGKILLed, as a reclaimed spot instance) and ``add-node`` 20 s
later. Prints both wall times, the step each restarted run continued from,
whether the evaluations are equal to the undisturbed study's, and every line
the driver printed from the kill to the end.

    PYTHONPATH=. python benchmarks/node_loss.py [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "cluster" / "local.sh"


def _local(*args: str, state: Path) -> str:
    done = subprocess.run(
        ["bash", str(LOCAL), *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def _cluster_env(state: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for line in (state / "cluster.env").read_text().splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.strip("'\"")
    return env


def _study_file(work: Path, store: Path) -> Path:
    settings = {
        "data.features": str(store),
        "model.feature_dim": 32,
        "model.proj_hidden": 32,
        "model.proj_dim": 8,
        "train.warmup_steps": 20,
        "train.steps": 4000,
        "train.eval_every": 100,
        "train.checkpoint_every": 400,
        "train.lr_step": 2000,
        "train.batch_source": 8,
        "train.batch_target": 8,
        "train.eval_batch": 16,
        "train.dump_features": 5,
        "train.eval_last_k": 3,
    }
    path = work / "node_loss.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "node-loss",
                "benchmark": "synthetic-epic",
                "pairs": ["D2-D1"],
                "methods": ["source_only"],
                "settings": settings,
                "search": {"lambda": [1.0, 2.0]},
                "seeds": 2,
            }
        )
    )
    return path


def _run(file: Path, storage: Path, env: dict, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "cmcl.cli", "study", "run", str(file), "--address"]
    command += [env["RAY_ADDRESS"], "--storage", str(storage)]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="a directory to keep [default: a temporary one]")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="node-loss-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_tiny_store

    from cmcl.results import RESULTS_DIR, read_dataset
    from cmcl.study.directory import StudyDir

    store = write_tiny_store(work / "store")
    file = _study_file(work, store)
    state = work / "cluster"
    _local("up", "--workers", "2", "--cpus-per-worker", "1", state=state)
    try:
        env = _cluster_env(state)
        started = time.monotonic()
        plain = _run(file, work / "plain", env, work / "plain.log")
        assert plain.wait(900) == 0, (work / "plain.log").read_text()[-3000:]
        plain_wall = time.monotonic() - started

        started = time.monotonic()
        lost = _run(file, work / "lost", env, work / "lost.log")
        study = StudyDir(work / "lost" / "node-loss")
        while time.monotonic() - started < 600:
            records = study.read_state() if (study.path / "state.json").exists() else None
            runs = [r for t in (records.trials.values() if records else []) for r in t.runs]
            if any(r.state == "running" and r.evaluations >= 8 for r in runs):
                break
            time.sleep(0.2)
        mark = len((work / "lost.log").read_text())
        killed_at = time.monotonic() - started
        _local("kill-node", "1", state=state)
        time.sleep(20)
        _local("add-node", state=state)
        assert lost.wait(900) == 0, (work / "lost.log").read_text()[-3000:]
        wall = time.monotonic() - started
    finally:
        _local("down", state=state)

    runs = [r for t in study.read_state().trials.values() for r in t.runs]
    restarted = {r.run_id: r.resumed_from for r in runs if r.node_failures}
    columns = ["run_id", "global_step", "target_acc", "snd"]

    def evaluations(path: Path):
        frame = read_dataset(StudyDir(path).store, RESULTS_DIR, columns=columns).to_pandas()
        return frame.sort_values(["run_id", "global_step"]).reset_index(drop=True)

    equal = evaluations(work / "plain" / "node-loss").equals(evaluations(study.path))
    print(f"uninterrupted: {plain_wall:.1f} s; one node killed at {killed_at:.1f} s: {wall:.1f} s")
    print(f"restarted runs and the step each continued from: {restarted}")
    print(f"every run once, evaluations equal to the uninterrupted study's: {equal}")
    print("what the driver printed from the kill to the end:")
    print((work / "lost.log").read_text()[mark:])
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
