"""Writers of results stores with known numbers, in the formats of docs/results-format.md.

Every adaptation stage has 12 evaluations; the last 9 target accuracies are
``level + OFFSETS``, whose mean is exactly ``level`` (rule last9), whose max is
``level + 4`` (rule best, at the 4th evaluation) and whose last is ``level``
(rule final). RGB is ``target_acc - 3`` and flow ``target_acc - 5`` everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from cmcl.config import RunConfig

OFFSETS = (-4.0, 4.0, -3.0, 3.0, -2.0, 2.0, -1.0, 1.0, 0.0)
EARLY = (-10.0, -9.0, -8.0)
WARMUP_EVALS = 2
STEPS = 1200  # the synthetic schedule's adaptation steps
EVERY = 100


@dataclass
class Run:
    benchmark: str
    pair: str
    method: str
    seed: int
    level: float
    settings: dict[str, Any] = field(default_factory=dict)
    finished: bool = True
    features: bool = False
    source_val: float = 70.0
    entropy: float = 0.5
    snd: float = 5.0

    @property
    def run_id(self) -> str:
        extra = "".join(f"-{k.split('.')[-1]}{v}" for k, v in sorted(self.settings.items()))
        return f"t-{self.method}{extra}-{self.pair}-s{self.seed}"

    def config(self) -> RunConfig:
        return RunConfig.from_overrides(
            {
                "data.benchmark": self.benchmark,
                "data.pair": self.pair,
                "method.name": self.method,
                "train.seed": self.seed,
                "train.steps": STEPS,
                "train.eval_every": EVERY,
                **self.settings,
            }
        )


def evals_frame(run: Run, config: RunConfig | None = None) -> pd.DataFrame:
    """Warm-up then adaptation evaluations with the accuracies described in the module doc."""
    config = config or run.config()
    warmup = config.train.warmup_steps
    rows = []
    for i in range(WARMUP_EVALS):
        rows.append(
            {
                "stage": "warmup",
                "step": (i + 1) * EVERY,
                "global_step": (i + 1) * EVERY,
                "acc": run.level - 20,
            }
        )
    adapt = [run.level + o for o in (*EARLY, *OFFSETS)]
    if not run.finished:
        adapt = adapt[:5]
    for i, acc in enumerate(adapt):
        step = (i + 1) * EVERY
        rows.append({"stage": "adapt", "step": step, "global_step": warmup + step, "acc": acc})
    frame = pd.DataFrame(rows)
    n = len(frame)
    position = np.arange(n, dtype=float)
    out = pd.DataFrame(
        {
            "stage": frame["stage"],
            "step": frame["step"].astype("int64"),
            "global_step": frame["global_step"].astype("int64"),
            "lr": 0.01,
            "target_acc": frame["acc"],
            "target_acc_rgb": frame["acc"] - 3.0,
            "target_acc_flow": frame["acc"] - 5.0,
            "target_mean_class_acc": frame["acc"] - 1.0,
            "pl_coverage": 50.0,
            "pl_acc": 60.0,
            # The criteria peak at different evaluations: source_val at the 2nd-last, entropy
            # lowest at the first adaptation evaluation, snd highest at the last.
            "target_entropy": run.entropy + np.abs(position - WARMUP_EVALS) * 0.01,
            "snd": run.snd + position * 0.01,
            "source_val_acc": run.source_val - np.abs(position - (n - 2)) * 0.1,
            "loss_total": 1.0,
            "elapsed_s": position * 2.0,
        }
    )
    return out


def _cfg_columns(config: RunConfig) -> dict[str, Any]:
    return {f"cfg.{k}": v for k, v in config.flat().items()}


def write_run_dir(
    path: Path, run: Run, *, summary: bool | None = None, config: RunConfig | None = None
) -> None:
    """A bare run directory (``cmcl train --out``) or a study's ``runs/<run_id>``."""
    path.mkdir(parents=True, exist_ok=True)
    config = config or run.config()
    config.save(path / "config.json")
    evals_frame(run, config).to_parquet(path / "metrics.parquet")
    if run.finished if summary is None else summary:
        (path / "summary.json").write_text(
            json.dumps({"rule": "last9", "target_acc": run.level, "wall_s": 10.0})
        )
    if run.features:
        write_features(path / "features.parquet", run.seed)


def run_names(run: Run, index: int, tune_id: str | None) -> tuple[str, str]:
    """(trial_id, run_id) of the ``index``-th run of a study (see :func:`write_study`)."""
    trial_id = f"{tune_id}_{index:05d}" if tune_id else f"trial-{run.run_id}"
    return trial_id, f"{trial_id}-{run.pair}-s{run.seed}" if tune_id else run.run_id


def write_study(
    root: Path,
    name: str,
    runs: Sequence[Run],
    *,
    meta: dict[str, Any] | None = None,
    run_dirs: bool = True,
    spec: dict[str, Any] | None = None,
    tune_id: str | None = None,
) -> Path:
    """A study directory: study.json, spec.yaml, results/evals-<run_id>.parquet, runs/<run_id>/.

    ``spec``: spec.yaml's keys besides the name (what the study planned).
    ``tune_id``: name runs as Tune does (``<tune_id>_<trial>-<pair>-s<seed>``, one trial
    per run) instead of after their settings.
    """
    study = root / name
    (study / "results").mkdir(parents=True, exist_ok=True)
    (study / "study.json").write_text(json.dumps({"name": name, **(meta or {})}))
    (study / "spec.yaml").write_text(yaml.safe_dump({"name": name, **(spec or {})}))
    for index, run in enumerate(runs):
        config = run.config()
        frame = evals_frame(run, config)
        trial_id, run_id = run_names(run, index, tune_id)
        identity = {
            "study": name,
            "trial_id": trial_id,
            "run_id": run_id,
            "benchmark": run.benchmark,
            "pair": run.pair,
            "method": run.method,
            "seed": run.seed,
        }
        extra = pd.DataFrame(
            {k: [v] * len(frame) for k, v in {**identity, **_cfg_columns(config)}.items()}
        )
        frame = pd.concat([frame, extra], axis=1)
        frame.to_parquet(study / "results" / f"evals-{run_id}.parquet")
        if run_dirs:
            write_run_dir(study / "runs" / run_id, run, config=config)
    return study


def write_features(
    path: Path, seed: int, *, per_domain: int = 24, classes: int = 4, dim: int = 16
) -> None:
    """features.parquet: class-clustered vectors, source and target, rgb and flow, two spaces."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3.0
    records = []
    for domain, shift in (("source", 0.0), ("target", 0.5)):
        labels = np.arange(per_domain) % classes
        for space in ("feature", "projection"):
            for modality in ("rgb", "flow"):
                vectors = centres[labels] + shift + rng.normal(size=(per_domain, dim))
                for i, (label, vector) in enumerate(zip(labels, vectors, strict=True)):
                    records.append(
                        {
                            "domain": domain,
                            "split": "train" if domain == "source" else "test",
                            "segment_index": i,
                            "label": int(label),
                            "modality": modality,
                            "space": space,
                            "vector": vector.astype(np.float32).tolist(),
                        }
                    )
    schema = pa.schema(
        [
            ("domain", pa.string()),
            ("split", pa.string()),
            ("segment_index", pa.int64()),
            ("label", pa.int32()),
            ("modality", pa.string()),
            ("space", pa.string()),
            ("vector", pa.list_(pa.float32())),
        ]
    )
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path)
