"""Real servers the tests start on 127.0.0.1: an S3-API server (moto) and PostgreSQL (pgserver).

Both come from the registry as test extras (pyproject.toml ``test``): moto's
``ThreadedMotoServer`` is what Ray's own storage tests use; ``pgserver`` ships
PostgreSQL's binaries and runs a private server on a unix socket. Each helper
sets what a real user's environment would hold (AWS_ENDPOINT_URL_S3 and
credentials; a postgresql:// URL) and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

BUCKET = "cmcl-test"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with bucket :data:`BUCKET`; yields its endpoint URL.

    The environment holds the endpoint and credentials while it runs, as
    AWS_ENDPOINT_URL_S3 (what boto3 and the AWS CLI read) and AWS_ENDPOINT_URL
    (what pyarrow reads), so child processes (Ray workers, a driver) reach it too.
    """
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = dict(os.environ)
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL_S3=endpoint, AWS_ENDPOINT_URL=endpoint)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL (pgserver) for the block; yields an SQLAlchemy URL for Optuna."""
    import pgserver

    with tempfile.TemporaryDirectory(prefix="cmcl-pg-") as data:
        server = pgserver.get_server(data, cleanup_mode="stop")
        try:
            yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
        finally:
            server.cleanup()
