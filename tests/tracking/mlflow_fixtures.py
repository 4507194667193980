"""A real MLflow server for the tests (the full mlflow package), started and stopped here."""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tracking_helpers import free_port

SERVER_EXTRA = "pip install -e '.[test-tracking]' (the full mlflow package)"


def has_mlflow_server() -> bool:
    """The full ``mlflow`` distribution (the server), not only ``mlflow-skinny``."""
    try:
        importlib.metadata.distribution("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def start_server(root: Path, *, timeout_s: float = 120.0):
    """``mlflow server`` on a free loopback port with a sqlite store under ``root``."""
    port = free_port()
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its uvicorn and job-runner children go with it
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return process, uri
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"mlflow server did not answer at {uri} within {timeout_s:g} s")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


_SHARED: dict[str, str] = {}


def shared_server(tmp_path_factory) -> str:
    """One server for every test module of the session (it takes a minute to start on
    2 cores); stopped when the test process exits."""
    if "uri" not in _SHARED:
        process, uri = start_server(tmp_path_factory.mktemp("mlflow-server"))
        atexit.register(stop_server, process)
        _SHARED["uri"] = uri
    return _SHARED["uri"]
