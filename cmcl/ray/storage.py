"""Where a Ray Train run keeps its files: ``<storage>/<name>/``, a local path or a URI.

The run directory on storage has the layout of an in-process run directory
(docs/results-format.md) plus Ray's own bookkeeping::

    <storage>/<name>/
        config.json                    the run's settings (written by the driver first)
        metrics.parquet                one row per evaluation (rank 0 uploads it after each)
        summary.json, features.parquet written by rank 0 at the end
        checkpoints/step_XXXXXXX/      state.pt + meta.json, persisted by ray.train.report
        checkpoint_manager_snapshot.json, .validate_storage_marker   (Ray Train's)

so ``cmcl train --out <storage>/<name> --resume`` (one process) continues a
distributed run, and the report layer reads it like any run directory.

On a multi-node cluster ``storage`` must be reachable from every node: an NFS
path mounted at the same place everywhere, or an object-store URI
(``s3://bucket/prefix``, ``gs://bucket/prefix``). A local directory on the
head node is not: workers on other nodes would write checkpoints nobody can
read back after a restart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from cmcl.config import RunConfig
from cmcl.filestore import FileStore, resolve_location

RESULT_FILES = ("config.json", "metrics.parquet", "summary.json", "features.parquet", "model.pt")
CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")


def check_run_name(name: str) -> str:
    """A run name is one path component (it becomes a directory on every storage kind)."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"run name must be 1-200 characters of letters, digits and ._=+- starting with a "
            f"letter or digit (one directory name, no '/'); got {name!r}"
        )
    return name


def is_uri(storage: str) -> bool:
    return "://" in storage


def resolve_storage(storage: str | Path) -> str:
    """An absolute local path, or the URI unchanged (Ray Train needs one or the other)."""
    return resolve_location(storage)


class RunLocation:
    """``<storage>/<name>`` on its filesystem: a :class:`~cmcl.filestore.FileStore` with
    what Ray Train needs besides (its pyarrow filesystem and path, the checkpoint names).

    Args:
        storage: a local directory or a URI (resolved by :func:`resolve_storage`).
        name: the run name (one directory name, see :func:`check_run_name`).
    """

    def __init__(self, storage: str | Path, name: str) -> None:
        self.storage = resolve_storage(storage)
        self.name = check_run_name(name)
        self.store = FileStore(f"{self.storage}/{self.name}")

    @property
    def fs(self) -> pafs.FileSystem:
        return self.store.fs

    @property
    def fs_path(self) -> str:
        """The run directory as a path on :attr:`fs` (no URI scheme)."""
        return self.store.fs_path()

    @property
    def uri(self) -> str:
        """Where a user finds the run: a local path or ``scheme://.../name``."""
        return self.store.root

    def exists(self, relative: str) -> bool:
        return self.store.exists(relative)

    def read_bytes(self, relative: str) -> bytes | None:
        return self.store.read_bytes(relative)

    def read_json(self, relative: str) -> dict[str, Any] | None:
        """The file's JSON object, None when missing; a ValueError when it is not JSON."""
        data = self.read_bytes(relative)
        return None if data is None else json.loads(data)

    def remove(self, relative: str) -> None:
        """Delete one file if it is there."""
        self.store.delete(relative)

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Replace ``relative`` whole (readers never see half a file)."""
        self.store.write_bytes(relative, data)

    def upload(self, local: Path, relative: str | None = None) -> None:
        """Copy one local file to ``<storage>/<name>/<relative or its name>``."""
        self.store.upload(Path(local), relative or Path(local).name)

    def checkpoint_names(self) -> list[str]:
        """Complete checkpoints (``step_XXXXXXX`` holding state.pt), oldest first."""
        names = [n for n in self.store.list_dirs(CHECKPOINTS) if n.startswith("step_")]
        return sorted(n for n in names if self.exists(f"{CHECKPOINTS}/{n}/state.pt"))

    def download_results(self, target: Path) -> list[Path]:
        """Copy the result files that exist (not checkpoints) into a local directory."""
        target.mkdir(parents=True, exist_ok=True)
        return [target / n for n in RESULT_FILES if self.store.download(n, target / n)]


def record_config(location: RunLocation, config: RunConfig) -> None:
    """Write config.json, refusing to mix a different configuration into an existing run
    (the same check as a resumed run's, :func:`cmcl.engine.resume.check_resume_settings`)."""
    from cmcl.engine.resume import check_resume_settings, recorded_config

    record = config.replace({"out": location.uri, "resume": None}).to_dict()
    existing = location.read_json("config.json")
    if existing is not None:
        source = f"{location.uri}/config.json"
        check_resume_settings(recorded_config(existing, source=source), config, source=source)
        return
    location.write_bytes(
        "config.json", (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    )


def run_location(storage: str | Path, name: str) -> str:
    """Where :func:`cmcl.ray.train.fit_distributed` puts run ``name``: ``<storage>/<name>``."""
    return RunLocation(storage, name).uri
