"""Host reads of device values per training step, per method (what a GPU step would wait on).

Counts calls that read a tensor's value on the host (``item``, ``tolist``,
``bool``/``int``/``float`` of a tensor, ``numpy``, ``nonzero``) and boolean-mask
indexing during the training steps of a short feature-mode run (evaluations,
checkpoints and the bank initialisation pass excluded; the loss reads every
``train.log_every`` steps included), and prints them per step with where they
come from. Runs on any checkout of the project (before and after a change):

    python benchmarks/step_reads.py [--methods cmco,mm_sada] [--steps 20]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import traceback
from pathlib import Path

import torch
from tune_overhead import write_store  # benchmarks/: the same small EPIC-like store

from cmcl.config import RunConfig
from cmcl.engine import fit
from cmcl.engine import trainer as trainer_module
from cmcl.methods import METHODS

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "nonzero")


class Counter:
    def __init__(self) -> None:
        self.on = False
        self.where: collections.Counter = collections.Counter()
        for name in READS:
            self._wrap(name)
        getitem = torch.Tensor.__getitem__

        def masked(tensor, key):
            keys = key if isinstance(key, tuple) else (key,)
            if any(torch.is_tensor(k) and k.dtype == torch.bool for k in keys):
                self._seen("mask indexing")
            return getitem(tensor, key)

        torch.Tensor.__getitem__ = masked

    def _wrap(self, name: str) -> None:
        original = getattr(torch.Tensor, name)

        def spy(tensor, *args, **kwargs):
            self._seen(name)
            return original(tensor, *args, **kwargs)

        setattr(torch.Tensor, name, spy)

    def _seen(self, name: str) -> None:
        if self.on:
            frame = traceback.extract_stack(limit=4)[0]
            self.where[(name, frame.filename.split("cmcl/")[-1], frame.lineno)] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="all")
    parser.add_argument("--steps", type=int, default=20, help="adaptation steps (warm-up: half)")
    args = parser.parse_args()
    methods = sorted(METHODS) if args.methods == "all" else args.methods.split(",")
    store = write_store(Path(tempfile.mkdtemp()))
    counter = Counter()
    Trainer = trainer_module._Trainer
    steps = {"n": 0}
    run_stage, evaluate = Trainer.run_stage, Trainer._maybe_evaluate

    def counted_stage(self, stage, n, start):
        # The bank initialisation pass runs at the start of the adaptation stage: not a step.
        begin = self.method.begin_adaptation

        def quiet_begin(*a, **k):
            counter.on = False
            try:
                return begin(*a, **k)
            finally:
                counter.on = True

        self.method.begin_adaptation = quiet_begin
        counter.on = True
        steps["n"] += n - start
        try:
            return run_stage(self, stage, n, start)
        finally:
            counter.on = False

    def quiet_evaluate(self, *a, **k):
        was, counter.on = counter.on, False
        try:
            return evaluate(self, *a, **k)
        finally:
            counter.on = was

    Trainer.run_stage, Trainer._maybe_evaluate = counted_stage, quiet_evaluate
    print(
        f"torch {torch.__version__}; host reads per training step over "
        f"{args.steps // 2} warm-up + {args.steps} adaptation steps"
    )
    for method in methods:
        counter.where.clear()
        steps["n"] = 0
        overrides = {
            "benchmark": "synthetic-epic",
            "pair": "D2-D1",
            "method": method,
            "T": 0.01,
            "data.features": str(store),
            "model.feature_dim": 64,
            "model.proj_hidden": 32,
            "model.proj_dim": 8,
            "train.warmup_steps": args.steps // 2,
            "train.steps": args.steps,
            "train.lr_step": args.steps // 2,
            "train.eval_every": 1000,
            "train.checkpoint_every": 1000,
            "train.batch_source": 8,
            "train.batch_target": 8,
            "train.dump_features": 0,
            "train.eval_last_k": 1,
        }
        fit(RunConfig.from_overrides(overrides))
        total = sum(counter.where.values())
        top = ", ".join(
            f"{n} {what} at {f}:{line}" for (what, f, line), n in counter.where.most_common(4)
        )
        print(f"{method:<18} {total / max(1, steps['n']):6.2f} per step  {top}")


if __name__ == "__main__":
    main()
