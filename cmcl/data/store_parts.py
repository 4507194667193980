"""A feature store under construction: finished shards as part files, merged at the end.

While `cmcl features extract` runs, the store directory holds::

    parts/extract.json                          the extraction's settings (its fingerprint)
    parts/{domain}_{split}/{number:05d}.parquet one finished shard: rows start..stop-1 of the
                                                split, in the split-file schema
                                                (cmcl.data.feature_store)

Each part is written atomically, so a part that exists is complete: a re-run
with the same settings skips it. When every shard is done, each split's parts
are concatenated in order into ``{domain}_{split}.parquet``, ``meta.json`` is
written last (a store without it is not readable, so a half-made store is
never trained on), and ``parts/`` is removed. A re-run with other settings
(weights, windows, crop, frame layout, annotations, shard size) is refused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from cmcl.data.benchmarks import get_benchmark
from cmcl.data.feature_store import split_path, write_meta, write_table
from cmcl.data.store_errors import DamagedFileError
from cmcl.models.i3d import FEATURE_DIM

if TYPE_CHECKING:
    from cmcl.data.extract import Plan, Shard

MANIFEST = "extract.json"


def parts_dir(store: Path) -> Path:
    return store / "parts"


def part_path(store: Path, shard: Shard) -> Path:
    return parts_dir(store) / f"{shard.domain}_{shard.split}" / f"{shard.number:05d}.parquet"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(plan: Plan) -> dict[str, Any]:
    """Everything that decides the stored numbers; a resumed extraction must match it."""
    s = plan.settings
    weights = {}
    for modality, path in (("rgb", s.i3d_rgb), ("flow", s.i3d_flow)):
        if path is None:
            weights[modality] = {"random_seed": s.random_seed}
        else:
            weights[modality] = {"file": Path(path).name, "sha256": file_sha256(path)}
    segments = {
        f"{domain}_{split}": {
            "segments": len(table),
            "ids_sha256": hashlib.sha256("\n".join(table.ids).encode()).hexdigest(),
        }
        for (domain, split), table in plan.tables.items()
    }
    layout = s.layout
    return {
        "benchmark": s.benchmark,
        "domains": list(s.domain_list),
        "windows": s.windows,
        "crop_size": s.crop_size,
        "window": {"frames": s.window_spec.frames, "stride": s.window_spec.stride},
        "rgb_template": layout.rgb,
        "flow_template": layout.flow,
        "weights": weights,
        "precision": s.precision,
        "shard_size": s.shard_size,
        "splits": segments,
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _refuse(store: Path, what: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    changes = "; ".join(_differences(old, new))
    raise ValueError(
        f"{store} holds {what} made with other settings ({changes}); "
        "use another output directory, or delete it to start over"
    )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except ValueError as error:
        raise DamagedFileError(path, f"not JSON: {error}") from None
    if not isinstance(meta, dict):
        raise DamagedFileError(path, f"expected a JSON object, got {type(meta).__name__}")
    return meta


def begin(plan: Plan, store: Path) -> bool:
    """Check ``store`` against ``plan``; True when it is already complete.

    A fresh store gets the manifest; a partial one must have been begun with the same
    settings. A finished store missing split files is partial: those splits are redone.
    """
    new = json.loads(json.dumps(fingerprint(plan)))  # as it reads back from JSON
    meta_path = store / "meta.json"
    if meta_path.is_file():
        old = _read_meta(meta_path).get("extraction", {})
        if old != new:
            _refuse(store, "a finished feature store", old, new)
        # A split file deleted since (the remedy for a damaged one) is computed again.
        if all(split_path(store, domain, split).is_file() for domain, split in plan.tables):
            return True
    manifest = parts_dir(store) / MANIFEST
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        if old != new:
            _refuse(store, "a partial extraction", old, new)
    else:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_name(MANIFEST + ".tmp")
        tmp.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
        tmp.replace(manifest)
    return False


def pending(plan: Plan, store: Path) -> list[Shard]:
    """Shards with neither a part file nor a merged split file."""
    return [
        shard
        for shard in plan.shards
        if not split_path(store, shard.domain, shard.split).is_file()
        and not part_path(store, shard).is_file()
    ]


def write_part(store: Path, shard: Shard, table: pa.Table) -> Path:
    rows = shard.stop - shard.start
    if table.num_rows != rows:
        raise ValueError(f"shard {shard.name} came back with {table.num_rows} rows, not {rows}")
    return write_table(table, part_path(store, shard))


def _merge_split(plan: Plan, store: Path, domain: str, split: str) -> set[str]:
    """Concatenate one split's parts into its split file; the devices that computed them."""
    shards = [s for s in plan.shards if (s.domain, s.split) == (domain, split)]
    missing = [s.name for s in shards if not part_path(store, s).is_file()]
    if missing:
        raise RuntimeError(
            f"{store}: shards {missing[:5]} of {domain}_{split} have no part file; run the "
            "extraction again to compute them"
        )
    tables = [pq.read_table(part_path(store, s)) for s in shards]
    devices = {
        (t.schema.metadata or {}).get(b"cmcl.extracted_on", b"unknown").decode() for t in tables
    }
    merged = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    if tuple(merged["segment_id"].to_pylist()) != tuple(plan.tables[(domain, split)].ids):
        raise RuntimeError(f"{store}: the parts of {domain}_{split} do not match its annotations")
    write_table(merged, split_path(store, domain, split))
    shutil.rmtree(parts_dir(store) / f"{domain}_{split}", ignore_errors=True)
    return devices


def finish(plan: Plan, store: Path) -> Path:
    """Merge every split whose file is not there yet, write meta.json, drop parts/."""
    meta_path = store / "meta.json"
    # Splits redone after a repair keep the devices that computed the others.
    devices = set(_read_meta(meta_path).get("extracted_on", [])) if meta_path.is_file() else set()
    for domain, split in plan.tables:
        if not split_path(store, domain, split).is_file():
            devices |= _merge_split(plan, store, domain, split)
    benchmark = get_benchmark(plan.settings.benchmark)
    meta = write_meta(
        store,
        {
            "benchmark": benchmark.name,
            "class_names": list(benchmark.class_names),
            "domains": list(plan.settings.domain_list),
            "feature_dim": FEATURE_DIM,
            "windows": plan.settings.windows,
            "extracted_on": sorted(devices),
            "extraction": fingerprint(plan),
        },
    )
    shutil.rmtree(parts_dir(store), ignore_errors=True)
    return meta
