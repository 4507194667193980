"""Where the time of a short video-mode run goes, before and after the video-mode changes.

One ``cmcl.engine.fit`` (cmco, EPIC layout synthetic videos, D2->D1, I3D from
random weights) is timed by phase: training steps, evaluations (target test
and source val, 5 windows each), the bank-initialisation pass, the feature
dump, and the time spent waiting for DataLoader batches. Two settings run in
the same process, same data:

- baseline: ``train.source_val=all`` and DataLoader workers started afresh for
  every pass (what video mode did before ReusableLoader);
- current: the video-mode defaults (``train.source_val=last``, persistent workers).

    PYTHONPATH=. python benchmarks/video_run_profile.py [--crop 64] [--steps 2] [--root DIR]

Same results either way: the script checks that the target accuracies agree.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import torch

import cmcl.engine.evaluate as evaluate_module
import cmcl.engine.features as features_module
import cmcl.engine.trainer as trainer_module
from cmcl.config import RunConfig
from cmcl.data.loaders import ReusableLoader
from cmcl.data.synth_video import write_synthetic_videos
from cmcl.engine import fit


class Timings(dict):
    def add(self, name: str, seconds: float) -> None:
        self[name] = self.get(name, 0.0) + seconds


def _timed(timings: Timings, name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings.add(name, time.perf_counter() - start)

    return wrapper


def _timed_iter(timings: Timings, name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        iterator = fn(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                timings.add(name, time.perf_counter() - start)
            yield item

    return wrapper


def profile(config: RunConfig, *, fresh_workers: bool) -> tuple[Timings, dict]:
    timings = Timings()
    saved = (
        trainer_module.predict,
        trainer_module._Trainer.encode,
        features_module.dump_features,
        ReusableLoader.iterate,
    )
    iterate = ReusableLoader.iterate

    def iterate_fresh(self, batches):
        # The old behaviour: every pass starts its own worker processes.
        try:
            yield from iterate(self, batches)
        finally:
            self.close()

    trainer_module.predict = _timed(timings, "evaluation passes", evaluate_module.predict)
    trainer_module._Trainer.encode = _timed_iter(
        timings, "bank initialisation pass", trainer_module._Trainer.encode
    )
    features_module.dump_features = _timed(timings, "feature dump", features_module.dump_features)
    ReusableLoader.iterate = _timed_iter(
        timings, "waiting for batches (all passes)", iterate_fresh if fresh_workers else iterate
    )
    try:
        start = time.perf_counter()
        result = fit(config)
        timings["total"] = time.perf_counter() - start
    finally:
        (
            trainer_module.predict,
            trainer_module._Trainer.encode,
            features_module.dump_features,
            ReusableLoader.iterate,
        ) = saved
    return timings, result.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="warm-up and adaptation steps each")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per loader")
    parser.add_argument("--root", default=None, help="videos from `cmcl data synth-video`")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        if not (root / "splits").is_dir():
            write_synthetic_videos(root)  # the `cmcl data synth-video` defaults: 64x64
        base = {
            "benchmark": "epic",
            "pair": "D2-D1",
            "method": "cmco",
            "model.backbone": "i3d",
            "data.root": str(root),
            "data.crop_size": args.crop,
            "data.loader_workers": args.workers,
            "train.warmup_steps": args.steps,
            "train.steps": args.steps,
        }
        runs = {}
        for name, extra, fresh in (
            ("baseline", {"train.source_val": "all"}, True),
            ("current", {}, False),
        ):
            config = RunConfig.from_overrides({**base, **extra, "out": str(Path(tmp) / name)})
            runs[name] = profile(config, fresh_workers=fresh)
    assert runs["baseline"][1]["target_acc"] == runs["current"][1]["target_acc"]
    phases = ("evaluation passes", "bank initialisation pass", "feature dump")
    for timings, _ in runs.values():
        timings["rest: steps, setup, checkpoints"] = timings["total"] - sum(
            timings.get(p, 0.0) for p in phases
        )
    names = [
        *phases,
        "rest: steps, setup, checkpoints",
        "waiting for batches (all passes)",
        "total",
    ]
    print(f"{'seconds':<36}" + "".join(f"{n:>10}" for n in runs))
    for name in names:
        print(f"{name:<36}" + "".join(f"{runs[r][0].get(name, 0.0):>10.1f}" for r in runs))
    base, current = runs["baseline"][0]["total"], runs["current"][0]["total"]
    print(f"current / baseline total: {current / base:.2f}")


if __name__ == "__main__":
    main()
