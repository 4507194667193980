"""A study in object storage against the same study on local disk: wall time and requests.

Runs one study file twice on a private local Ray: with ``--storage`` a local
directory, then an ``s3://`` URI on an S3-API server started here on
127.0.0.1 (moto's ThreadedMotoServer, the test extra's; every request goes
through HTTP as to a real store, without a network's latency). Prints both
wall times and their ratio, and the objects and bytes the S3 study holds.

    PYTHONPATH=. python benchmarks/object_store_pace.py --study benchmarks/studies/pace_3x3.yaml
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(study_file: str, storage: str, assignments: list[str]) -> tuple[float, str]:
    from cmcl.config import parse_assignments
    from cmcl.ray.study import run_new_study
    from cmcl.study.directory import command_line_overrides
    from cmcl.study.spec import load_spec

    spec = load_spec(study_file)
    overrides = command_line_overrides(spec, assignments=parse_assignments(assignments))
    started = time.perf_counter()
    location = run_new_study(spec, storage=storage, overrides=overrides, echo=False, num_cpus=2)
    return time.perf_counter() - started, location


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--set", dest="assignments", action="append", default=[])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from object_store_helpers import BUCKET, s3_server

    from cmcl.filestore import FileStore

    work = Path(tempfile.mkdtemp(prefix="object-store-pace-"))
    os.environ.setdefault("RAY_TMPDIR", str(work / "ray"))
    try:
        local, _ = _run(args.study, str(work / "local"), args.assignments)
        with s3_server() as endpoint:
            remote, location = _run(args.study, f"s3://{BUCKET}/studies", args.assignments)
            entries = FileStore(location).list(recursive=True)
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint)
            listed = client.list_objects_v2(Bucket=BUCKET, Prefix="studies/")
            assert listed.get("KeyCount", 0) == len(entries)
        size = sum(e.size for e in entries)
        print(
            f"local disk {local:.1f} s, s3 (moto on 127.0.0.1) {remote:.1f} s: ratio "
            f"{remote / local:.3f}; the S3 study holds {len(entries)} objects, "
            f"{size / 2**20:.1f} MiB"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
