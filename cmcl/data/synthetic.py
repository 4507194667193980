"""The synthetic feature benchmarks ``synthetic-epic`` and ``synthetic-ucf-hmdb``.

They stand in for I3D window features of EPIC-Kitchens and UCF/HMDB, built on
the paper's premise: appearance (RGB) carries the action *and* its scene, and
each data set films actions in its own scenes, while motion (flow) carries the
action alone, seen less cleanly but with little domain shift. The latent model
is described in :mod:`cmcl.data.synthetic_world`. Class counts per domain and
split are the real ones: the verb-class counts of the MM-SADA EPIC split
pickles, and TA3N's UCF-HMDB_full sizes with near-balanced classes.

    store = synthetic_store("synthetic-epic")       # cached under $CMCL_CACHE
    generate_store("synthetic-ucf-hmdb", "out/", seed=1)

The generator's parameters were calibrated once, with ``source_only`` and
``supervised_target`` only (benchmarks/calibrate_synthetic.py and the
"Synthetic benchmark calibration" section of benchmarks/RESULTS.md), and then
frozen; they must not be tuned to favour any adaptation method. Changing any
default or the sampling code means bumping :data:`GENERATOR_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from cmcl.data.benchmarks import get_benchmark
from cmcl.data.feature_store import write_meta, write_split
from cmcl.data.synthetic_world import SyntheticParams, make_world, rng_for, sample_split

__all__ = [
    "EPIC_CLASS_COUNTS",
    "GENERATOR_VERSION",
    "UCF_HMDB_SIZES",
    "SyntheticParams",
    "class_counts",
    "generate_store",
    "store_key",
    "synthetic_store",
]

GENERATOR_VERSION = 1
SPLITS = ("train", "test")

# verb_class counts of the MM-SADA split pickles (../shared/data/epic_mmsada/D*_*.pkl).
EPIC_CLASS_COUNTS: dict[str, dict[str, tuple[int, ...]]] = {
    "D1": {
        "train": (421, 383, 231, 128, 223, 71, 42, 44),
        "test": (124, 104, 52, 34, 66, 13, 20, 22),
    },
    "D2": {
        "train": (715, 692, 245, 214, 298, 89, 113, 129),
        "test": (208, 217, 68, 56, 136, 14, 26, 25),
    },
    "D3": {
        "train": (919, 1121, 450, 367, 808, 110, 53, 69),
        "test": (241, 280, 102, 71, 245, 29, 1, 5),
    },
}

# TA3N UCF-HMDB_full (split 1) videos per domain: UCF 1438 train / 571 val, HMDB 840 / 360
# (70 / 30 per class); 3209 in all. TA3N's validation lists are the test splits here.
UCF_HMDB_SIZES: dict[str, dict[str, int]] = {
    "U": {"train": 1438, "test": 571},
    "H": {"train": 840, "test": 360},
}


def balanced_counts(total: int, num_classes: int) -> tuple[int, ...]:
    """``total`` segments over ``num_classes`` classes, the first ``total % C`` one larger."""
    base, extra = divmod(total, num_classes)
    return tuple(base + (1 if c < extra else 0) for c in range(num_classes))


def class_counts(benchmark: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """Segments per class, per domain and split, of a synthetic benchmark."""
    bench = get_benchmark(benchmark)
    if bench.name == "synthetic-epic":
        return {d: dict(splits) for d, splits in EPIC_CLASS_COUNTS.items()}
    if bench.name == "synthetic-ucf-hmdb":
        return {
            d: {s: balanced_counts(n, bench.num_classes) for s, n in sizes.items()}
            for d, sizes in UCF_HMDB_SIZES.items()
        }
    raise ValueError(
        f"benchmark {benchmark!r} is not synthetic; valid: synthetic-epic, synthetic-ucf-hmdb"
    )


def generate_store(
    benchmark: str, out: str | Path, *, seed: int = 0, params: SyntheticParams | None = None
) -> Path:
    """Write every domain's ``train`` and ``test`` split and meta.json of ``benchmark`` to ``out``.

    Deterministic: the same (benchmark, seed, params) gives the same feature
    bytes (on the same numpy). Each (domain, split) has its own random stream,
    so the splits do not depend on the order they are written in.
    """
    bench = get_benchmark(benchmark)
    counts = class_counts(bench.name)
    params = params or SyntheticParams()
    out = Path(out)
    world = make_world(params, seed, bench.domains, bench.num_classes)
    for d, domain in enumerate(bench.domains):
        for s, split in enumerate(SPLITS):
            data = sample_split(
                world, params, rng_for(seed, 1 + d, s), domain, counts[domain][split]
            )
            write_split(
                out,
                domain=domain,
                split=split,
                segment_ids=[f"{domain}_{split}_{i:05d}" for i in range(len(data.labels))],
                labels=data.labels,
                rgb=data.rgb,
                flow=data.flow,
            )
    write_meta(
        out,
        {
            "benchmark": bench.name,
            "class_names": list(bench.class_names),
            "domains": list(bench.domains),
            "feature_dim": params.feature_dim,
            "windows": params.windows,
            "class_counts": {d: {s: list(c) for s, c in sp.items()} for d, sp in counts.items()},
            "generator": {"version": GENERATOR_VERSION, "seed": seed, "params": params.to_dict()},
        },
    )
    return out


def store_key(benchmark: str, *, seed: int = 0, params: SyntheticParams | None = None) -> str:
    """Short hash naming a cached store: benchmark, generator version, seed and parameters."""
    body = {
        "benchmark": get_benchmark(benchmark).name,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "params": (params or SyntheticParams()).to_dict(),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """``$CMCL_CACHE`` if set, else ``~/.cache/cmcl``."""
    env = os.environ.get("CMCL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cmcl"


def synthetic_store(
    benchmark: str,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    params: SyntheticParams | None = None,
) -> Path:
    """The cached store of ``benchmark``, generated on first use; prints nothing.

    Lives at ``<cache_dir>/synthetic/<benchmark>-<store_key>``. A store is
    generated into a private temporary directory and renamed into place, so
    processes asking at the same time never see a partial store: the first
    rename wins and the others discard their copy.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = (
        root
        / "synthetic"
        / f"{get_benchmark(benchmark).name}-{store_key(benchmark, seed=seed, params=params)}"
    )
    if _complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        generate_store(benchmark, tmp, seed=seed, params=params)
        try:
            tmp.rename(final)
        except OSError:
            if not _complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _complete(root: Path) -> bool:
    if not root.exists():
        return False
    if not (root / "meta.json").is_file():
        raise FileExistsError(
            f"{root}: exists but holds no meta.json (an incomplete synthetic store?); delete it"
        )
    try:
        json.loads((root / "meta.json").read_text())
    except ValueError as error:
        raise ValueError(
            f"{root / 'meta.json'}: cannot be read ({error}); {root} is a cached synthetic "
            "store: delete that directory and it is generated again on next use"
        ) from None
    return True
