"""A directory on a local disk or in an object store, read and written as whole files.

A study directory (and a Ray Train run's directory) may be a local path, a
path every node mounts (NFS), or an object-store URI (``s3://bucket/prefix``,
``gs://bucket/prefix``, any URI ``pyarrow.fs`` understands). Everything cmcl
writes there is a whole file: on a local filesystem through a temporary name
and a rename, on an object store as one PUT (both atomic for a reader); no
file is appended to and no file lock is taken, which object stores do not have.

Credentials and endpoints come from each store's standard environment, as
pyarrow reads them (S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``).
No torch, no Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from cmcl.common import atomic_write_bytes, json_bytes


def is_uri(location: str) -> bool:
    """A URI other than ``file://`` (which names a local path)."""
    return "://" in location and not location.startswith("file://")


def resolve_location(location: str | Path) -> str:
    """An absolute local path, or the URI without a trailing slash."""
    text = str(location)
    if not text:
        raise ValueError("storage must be a directory path or a URI such as s3://bucket/prefix")
    if is_uri(text):
        return text.rstrip("/")
    text = text.removeprefix("file://")
    return str(Path(text).expanduser().resolve())


def _endpoint_environment() -> None:
    """pyarrow's S3 client reads ``AWS_ENDPOINT_URL`` but not yet the per-service
    ``AWS_ENDPOINT_URL_S3`` that boto and the AWS CLI prefer; take it when only it is set."""
    service = os.environ.get("AWS_ENDPOINT_URL_S3")
    if service and not os.environ.get("AWS_ENDPOINT_URL"):
        os.environ["AWS_ENDPOINT_URL"] = service


@dataclass(frozen=True)
class Entry:
    """A file under a store: its path relative to the store's root, and its size."""

    path: str
    size: int


class FileStore:
    """``root`` (a local directory or a URI) and whole-file operations under it.

    Paths given to the methods are relative to ``root`` and use ``/``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = resolve_location(root)
        self._fs: pafs.FileSystem | None = None
        self._base = self.root

    @property
    def remote(self) -> bool:
        """True for an object store (no rename, no local path)."""
        return is_uri(self.root)

    @property
    def fs(self) -> pafs.FileSystem:
        # Connected on first use: resolving an object-store URI may need the network.
        if self._fs is None:
            if self.remote:
                _endpoint_environment()
                self._fs, self._base = pafs.FileSystem.from_uri(self.root)
            else:
                self._fs = pafs.LocalFileSystem()
        return self._fs

    def child(self, relative: str) -> FileStore:
        """The store rooted at ``root/relative``."""
        return FileStore(self.uri(relative))

    def uri(self, relative: str = "") -> str:
        """Where a user finds ``relative``: a local path or ``scheme://.../relative``."""
        return f"{self.root}/{relative}".rstrip("/") if relative else self.root

    def local_path(self, relative: str = "") -> Path:
        """The local path of ``relative``; only for a local store."""
        if self.remote:
            raise ValueError(f"{self.root} is an object store, not a local directory")
        return Path(self.uri(relative))

    def _path(self, relative: str) -> str:
        self.fs  # noqa: B018 (connect, which sets the base path)
        return f"{self._base.rstrip('/')}/{relative}".rstrip("/") if relative else self._base

    def fs_path(self, relative: str = "") -> str:
        """``relative`` as a path on :attr:`fs` (no URI scheme): what pyarrow and Ray take."""
        return self._path(relative)

    # -- reading ----------------------------------------------------------------------
    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self._path(relative)).type != pafs.FileType.NotFound

    def is_dir(self, relative: str = "") -> bool:
        return self.fs.get_file_info(self._path(relative)).type == pafs.FileType.Directory

    def read_bytes(self, relative: str) -> bytes | None:
        """The file's bytes, or None when there is no such file."""
        try:
            with self.fs.open_input_stream(self._path(relative)) as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            # pyarrow says "not found" in an OSError on some stores and versions.
            if not self.exists(relative):
                return None
            raise OSError(f"{self.uri(relative)}: {error}") from None

    def read_json(self, relative: str) -> dict[str, Any] | None:
        """The file's JSON object, or None when it is missing or not JSON."""
        data = self.read_bytes(relative)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return value if isinstance(value, dict) else None

    def list(self, relative: str = "", *, recursive: bool = False) -> list[Entry]:
        """Files (not directories) under ``relative``, sorted by path; [] when it is absent."""
        base = self._path(relative)
        selector = pafs.FileSelector(base, allow_not_found=True, recursive=recursive)
        prefix = self._path("").rstrip("/") + "/"
        entries = [
            Entry(info.path.removeprefix(prefix), info.size or 0)
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        ]
        return sorted(entries, key=lambda e: e.path)

    def list_dirs(self, relative: str = "") -> list[str]:
        """Names of the directories directly under ``relative``."""
        selector = pafs.FileSelector(self._path(relative), allow_not_found=True)
        return sorted(
            info.base_name
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory
        )

    def open_input_file(self, relative: str):
        """A random-access file (what Parquet readers want)."""
        return self.fs.open_input_file(self._path(relative))

    # -- writing ----------------------------------------------------------------------
    def write_bytes(self, relative: str, data: bytes) -> None:
        """Replace ``relative`` whole (see the module docstring)."""
        if not self.remote:
            atomic_write_bytes(self.local_path(relative), data)
            return
        with self.fs.open_output_stream(self._path(relative)) as stream:
            stream.write(data)

    def write_json(self, relative: str, data: dict[str, Any]) -> None:
        self.write_bytes(relative, json_bytes(data))

    def upload(self, local: Path, relative: str) -> None:
        """Copy a local file to ``relative`` (a no-op when it is that very file)."""
        if not self.remote and self.local_path(relative).resolve() == Path(local).resolve():
            return
        self.write_bytes(relative, Path(local).read_bytes())

    def download(self, relative: str, local: Path) -> bool:
        """Copy ``relative`` to a local file; False when there is no such file."""
        data = self.read_bytes(relative)
        if data is None:
            return False
        atomic_write_bytes(local, data)
        return True

    def delete(self, relative: str) -> None:
        """Remove one file if it is there."""
        try:
            self.fs.delete_file(self._path(relative))
        except FileNotFoundError:
            pass
        except OSError:
            if self.exists(relative):
                raise

    def delete_dir(self, relative: str) -> None:
        """Remove a directory and everything under it, if it is there."""
        if self.fs.get_file_info(self._path(relative)).type == pafs.FileType.NotFound:
            return
        self.fs.delete_dir(self._path(relative))

    def walk_files(self, relative: str = "") -> Iterator[Entry]:
        yield from self.list(relative, recursive=True)
