"""Facts shared by the study layer and the report: no torch, no Ray, no pandas.

Each fact is written here once: the selection metrics and their direction,
the columns that identify a run, the spelling of a domain pair, how a file is
replaced atomically on a local filesystem, and the paper's numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

METRICS: dict[str, str] = {
    "target_acc": "max",
    "source_val_acc": "max",
    "target_entropy": "min",
    "snd": "max",
}
"""Selection metrics and their direction; ``target_acc`` reads target labels (the oracle)."""
ORACLE_METRICS = ("target_acc",)
METRIC_TEXT: dict[str, str] = {
    "target_acc": "target_acc (ORACLE: uses target labels)",
    "source_val_acc": "source_val_acc (held-out source accuracy, max)",
    "target_entropy": "target_entropy (mean target prediction entropy, min)",
    "snd": "snd (soft neighbourhood density, max)",
}

IDENTITY = ("study", "trial_id", "run_id", "benchmark", "pair", "method", "seed", "variant")
"""The columns that say which run a result row belongs to (``variant`` is ``""`` for none)."""


def normalise_pair(pair: str) -> str:
    """``"D2->D1"``, ``"D2-D1"`` and ``"d2→d1"`` all become ``"D2-D1"``."""
    text = str(pair).strip().replace("→", "-").replace("->", "-").replace(">", "-")
    parts = [p for p in text.split("-") if p]
    if len(parts) != 2:
        raise ValueError(f"pair must look like SOURCE-TARGET (e.g. D2-D1 or U-H); got {pair!r}")
    return f"{parts[0].upper()}-{parts[1].upper()}"


def pair_label(pair: str) -> str:
    """``"D2-D1"`` -> ``"D2→D1"`` for display."""
    return normalise_pair(pair).replace("-", "→")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader sees the old file or the new one, never half.

    The temporary name carries the pid, so two processes writing the same file
    never write into each other's temporary file; the last rename wins.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def json_bytes(data: Mapping[str, Any]) -> bytes:
    """The project's JSON form of a record: indented, keys sorted, paths as text."""
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def atomic_write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    atomic_write_bytes(path, json_bytes(data))


@lru_cache(maxsize=1)
def paper_numbers() -> dict[str, Any]:
    """The paper's Tables 2-8 (``cmcl/report/paper_tables.json``, a copy of
    shared/paper/tables.json), as parsed JSON."""
    text = resources.files("cmcl.report").joinpath("paper_tables.json").read_text()
    return json.loads(text)
