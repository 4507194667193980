"""The study lease in an object store: a conditional create, a conditional heartbeat.

The same lease as cmcl/study/lease.py (one live driver per study, a
heartbeat, a documented takeover of an abandoned lease, the same messages),
for a study directory that is an object-store URI. An object store has no
rename and no link, but its conditional writes give the same guarantee:

* create: ``PUT driver.lease`` with ``If-None-Match: *`` succeeds for exactly
  one of several drivers (S3, and stores implementing its API; Google Cloud
  Storage: ``ifGenerationMatch=0``);
* heartbeat and takeover: a ``PUT`` with ``If-Match: <ETag>`` of the version
  read (GCS: the generation), so a driver never overwrites a lease it has not
  seen; a failed heartbeat means another driver took the lease: this one stops;
* release: a ``DELETE`` with ``If-Match``.

S3 goes through boto3 (``cmcl[s3]``), which reads the standard environment
(``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, credentials, region). GCS goes
through ``google-cloud-storage`` (``cmcl[gcs]``); it was written from GCS's
documented preconditions and is not exercised by the tests (no GCS here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from cmcl.filestore import FileStore
from cmcl.study.lease import (
    CONFIRM_S,
    HEARTBEAT_S,
    LEASE_FILE,
    Holder,
    StudyBusyError,
    _interrupt_main,
    _process_identity,
    busy_message,
    gone_reason,
    holder_from_json,
)

log = logging.getLogger(__name__)


class _Conflict(Exception):
    """A conditional write or delete did not hold."""


class _S3Objects:
    """Conditional operations on one S3 object (boto3)."""

    def __init__(self, uri: str) -> None:
        try:
            import boto3
        except ImportError:
            raise ValueError(
                f"a study in {uri.split('://')[0]}:// object storage needs boto3 for its lease "
                "(conditional writes): pip install 'cmcl[s3]'"
            ) from None
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        self.bucket, self.key = bucket, key
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = boto3.client("s3", endpoint_url=endpoint or None)

    def _call(self, method: str, **kwargs):
        from botocore.exceptions import ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                raise _Conflict(code) from None
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self.key}") from None
            raise

    def create(self, data: bytes) -> str:
        return self._call("put_object", Body=data, IfNoneMatch="*")["ETag"]

    def read(self) -> tuple[bytes, str] | None:
        try:
            reply = self._call("get_object")
        except FileNotFoundError:
            return None
        return reply["Body"].read(), reply["ETag"]

    def replace(self, data: bytes, version: str) -> str:
        return self._call("put_object", Body=data, IfMatch=version)["ETag"]

    def delete(self, version: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("delete_object", IfMatch=version)


class _GCSObjects:
    """Conditional operations on one GCS object (google-cloud-storage generations)."""

    def __init__(self, uri: str) -> None:
        try:
            from google.cloud import storage
        except ImportError:
            raise ValueError(
                "a study in gs:// object storage needs google-cloud-storage for its lease "
                "(conditional writes): pip install 'cmcl[gcs]'"
            ) from None
        bucket, _, key = uri.removeprefix("gs://").partition("/")
        self.blob = storage.Client().bucket(bucket).blob(key)

    def _guard(self, call: Callable[[], object]):
        from google.api_core import exceptions

        try:
            return call()
        except exceptions.PreconditionFailed:
            raise _Conflict("PreconditionFailed") from None

    def create(self, data: bytes) -> str:
        self._guard(lambda: self.blob.upload_from_string(data, if_generation_match=0))
        return str(self.blob.generation)

    def read(self) -> tuple[bytes, str] | None:
        from google.api_core import exceptions

        try:
            data = self.blob.download_as_bytes()
        except exceptions.NotFound:
            return None
        return data, str(self.blob.generation)

    def replace(self, data: bytes, version: str) -> str:
        self._guard(lambda: self.blob.upload_from_string(data, if_generation_match=int(version)))
        return str(self.blob.generation)

    def delete(self, version: str) -> None:
        from google.api_core import exceptions

        with contextlib.suppress(exceptions.NotFound):
            self._guard(lambda: self.blob.delete(if_generation_match=int(version)))


def _objects(uri: str):
    scheme = uri.split("://", 1)[0]
    if scheme == "s3":
        return _S3Objects(uri)
    if scheme == "gs":
        return _GCSObjects(uri)
    raise ValueError(
        f"{uri}: a study's lease needs conditional writes, which cmcl knows for s3:// (and "
        "S3-compatible stores) and gs://; for another store, keep the study directory on a "
        "filesystem every node mounts"
    )


class ObjectStudyLease:
    """The lease of a study directory in an object store (see the module docstring)."""

    def __init__(
        self,
        store: FileStore,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        on_lost: Callable[[Holder | None], None] | None = None,
    ) -> None:
        self.uri = store.uri(LEASE_FILE)
        self.study = store.root
        self.objects = _objects(self.uri)
        self.heartbeat_s = heartbeat_s
        self.on_lost = on_lost or _interrupt_main
        self.token = uuid.uuid4().hex
        self.acquired = 0.0
        self.version: str | None = None
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

    def read(self) -> tuple[Holder, str] | None:
        found = self.objects.read()
        if found is None:
            return None
        data, version = found
        return holder_from_json(data, fallback_time=time.time()), version

    def acquire(self) -> str | None:
        """Take the lease; returns a line saying whose abandoned lease was taken over, if any.

        Raises:
            StudyBusyError: another driver holds it.
        """
        self.acquired = time.time()
        for _ in range(5):
            try:
                self.version = self.objects.create(self._content())
                self._start_heartbeat()
                return None
            except _Conflict:
                pass
            found = self.read()
            if found is None:
                continue  # released just now
            holder, version = found
            reason = gone_reason(holder)
            if reason is None:
                raise StudyBusyError(busy_message(self.study, holder))
            wait = CONFIRM_S - (time.time() - holder.heartbeat)
            if wait > 0:
                time.sleep(wait)
                continue
            try:
                self.version = self.objects.replace(self._content(), version)
            except _Conflict:
                continue  # another driver took it over first, or the holder beat again
            self._start_heartbeat()
            note = f"took over the lease of {holder.describe()}: {reason}"
            log.warning("%s: %s", self.study, note)
            return note
        found = self.read()
        raise StudyBusyError(busy_message(self.study, found[0]) if found else f"{self.uri}: busy")

    def refresh(self) -> bool:
        """Rewrite the heartbeat; False if the lease is no longer this holder's."""
        assert self.version is not None
        try:
            self.version = self.objects.replace(self._content(), self.version)
            return True
        except _Conflict:
            return False

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="cmcl-study-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                held = self.refresh()
            except Exception as error:  # a storage hiccup: try again at the next beat
                log.warning("%s: heartbeat not written (%s)", self.uri, error)
                continue
            if not held:
                found = self.read()
                self.on_lost(found[0] if found else None)
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if self.version is not None:
            # A conflict: no longer ours; the new holder's lease stays.
            with contextlib.suppress(_Conflict):
                self.objects.delete(self.version)
            self.version = None

    def __enter__(self) -> ObjectStudyLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
