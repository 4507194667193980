"""The training loop: plain PyTorch, no Ray.

``fit(config, reporter)`` runs the two stages of SPEC section 7 (source-only
warm-up, then adaptation with the step counter restarted), evaluates every
``train.eval_every`` steps, checkpoints, and returns the summary. It runs the
same in a test, a notebook or a Ray Train worker: when ``torch.distributed``
is initialised it wraps the method in DistributedDataParallel, each worker
takes its shard of the global batch, and evaluation is gathered.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from cmcl import dist
from cmcl.config import RunConfig
from cmcl.data.base import PairData
from cmcl.data.build import build_pair_data
from cmcl.engine import checkpoint as ckpt
from cmcl.engine.evaluate import Predictions, accuracy, predict, target_metrics
from cmcl.engine.guards import (
    NonFiniteLossError,
    NonFiniteMetricError,
    refuse_empty_splits,
    refuse_non_finite,
)
from cmcl.engine.loss_log import LossAccumulator, LossReading
from cmcl.engine.reporting import (
    FAILURE_FILE,
    Reporter,
    summarise,
    write_failure,
    write_json,
    write_metrics,
)
from cmcl.methods.base import ADAPT, WARMUP, Method, StepContext
from cmcl.methods.registry import build_method
from cmcl.models.build import build_model
from cmcl.modules.sync_bn import average_running_stats, convert_batchnorm

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path | None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but CUDA is not available")
    return torch.device(name)


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def worker_seed(seed: int, rank: int, global_step: int) -> int:
    """The torch seed of DDP worker ``rank`` > 0 from ``global_step`` on (rank 0 keeps ``seed``'s stream).

    Workers share everything built from ``seed`` (parameters, banks) but draw
    their own dropout masks, as one process does over the whole global batch.
    """
    entropy = np.random.SeedSequence([seed, rank, global_step]).generate_state(2, np.uint32)
    return int(entropy[0]) << 31 ^ int(entropy[1])


def lr_factor(global_step: int, *, warmup: int, lr_step: int, gamma: float) -> float:
    """SPEC section 7: lr constant in warm-up, divided by 1/gamma at adaptation step ``lr_step``."""
    if lr_step <= 0:
        return 1.0
    return gamma if global_step >= warmup + lr_step else 1.0


class _Trainer:
    """State of one fit(); split into methods only to keep each piece readable."""

    def __init__(self, config: RunConfig, reporter: Reporter, data: PairData | None) -> None:
        self.config = config
        self.reporter = reporter
        self.chief = dist.rank() == 0
        self.device = resolve_device(config.train.device)
        if self.device.type == "cuda" and dist.is_distributed():
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.autocast = _autocast(config.train.precision, self.device)
        seed_everything(config.train.seed)
        self.owns_data = data is None
        self.data = data if data is not None else build_pair_data(config)
        self.info = self.data.info
        self._refuse_empty_splits()
        model = build_model(config.model, self.info)
        if self.device.type == "cuda" and config.model.backbone == "i3d":
            # Clip shapes are fixed, so cuDNN's autotuning pays off after the first
            # step of each shape (benchmarks/gpu_check.py measures with it on).
            torch.backends.cudnn.benchmark = True
            # channels-last 3-D convolutions are faster with cuDNN (benchmarks/RESULTS.md).
            for stream in model.streams.values():
                stream.backbone.channels_last = True
            model = model.to(memory_format=torch.channels_last_3d)
        method = build_method(model=model, config=config.method, info=self.info)
        if dist.is_distributed() and config.model.sync_bn:
            method = convert_batchnorm(method, device=self.device)
        self.method: Method = method.to(self.device)
        t = config.train
        # The fused kernel gives the same numbers as the per-parameter loop and is
        # several times faster on CPU (benchmarks/RESULTS.md).
        self.optimizer = torch.optim.SGD(
            self.method.parameters(),
            lr=t.lr,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),
        )
        # The fused kernel cannot mix parameters with and without a momentum buffer
        # (heads first used in the adaptation stage). A zero buffer is equivalent:
        # the first update gives buf = momentum * 0 + grad = grad, as a missing one does.
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                self.optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda it: lr_factor(it, warmup=t.warmup_steps, lr_step=t.lr_step, gamma=t.lr_gamma),
        )
        self.stages = [(s, n) for s, n in ((WARMUP, t.warmup_steps), (ADAPT, t.steps)) if n > 0]
        self.run_dir = Path(config.out) if config.out else None
        self.position = ckpt.Position(stage=self.stages[0][0], steps_done=0)
        self.learner: torch.nn.Module = self.method
        self.loss_sums: dict[str, float] = {}
        self.loss_steps = 0
        self.pending = LossAccumulator()
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        # train.source_val=last scores the source split only where the summary reads it.
        adapt_evals = t.evaluation_steps(t.steps)
        self.source_val_steps = set(adapt_evals[-t.eval_last_k :])

    # -- setup ---------------------------------------------------------------------------
    def _refuse_empty_splits(self) -> None:
        """Before any model or memory bank is sized from the data (a bank cannot have 0 rows)."""
        try:
            refuse_empty_splits(self.info, self.config)
        except ValueError:
            if self.owns_data:
                self.data.close()  # __init__ fails, so run() will not close it
            raise

    def restore(self) -> None:
        resume = self.config.resume
        if resume == "auto":
            resume = ckpt.latest_checkpoint(self.run_dir) if self.run_dir else None
        if resume is None:
            self.own_stream(restored=False)
            return
        self.position = ckpt.load_checkpoint(
            resume,
            method=self.method,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            rank=dist.rank(),
            world=dist.world_size(),
        )
        self.own_stream(restored=self.position.own_rng)
        if self.position.history:
            self.elapsed_before = float(self.position.history[-1].get("elapsed_s", 0.0))
        log.info("resumed from %s (%s step %d)", resume, *self._where())

    def own_stream(self, *, restored: bool) -> None:
        """Give DDP worker rank > 0 its own torch random stream (its dropout masks)."""
        if dist.rank() == 0 or restored:
            return
        torch.manual_seed(
            worker_seed(self.config.train.seed, dist.rank(), self.global_step(*self._where()))
        )

    def _where(self) -> tuple[str, int]:
        return self.position.stage, self.position.steps_done

    def wrap_distributed(self) -> None:
        if not dist.is_distributed():
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.learner = DistributedDataParallel(
            self.method, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False
        )

    def global_step(self, stage: str, steps_done: int) -> int:
        before = sum(n for s, n in self.stages[: [s for s, _ in self.stages].index(stage)])
        return before + steps_done

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> FitResult:
        try:
            return self._run()
        except NonFiniteLossError as error:
            if self.run_dir is not None and self.chief:
                write_failure(self.run_dir, error)
            raise
        finally:
            if self.owns_data:
                self.data.close()  # stops persistent DataLoader workers now, not at GC time

    def _run(self) -> FitResult:
        if self.run_dir and self.chief:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir / "config.json")
        self.restore()
        self.wrap_distributed()
        total = sum(n for _, n in self.stages)
        done = self.global_step(*self._where())
        self.reporter.on_start(total_steps=total, done_steps=done, is_chief=self.chief)
        names = [s for s, _ in self.stages]
        for index, (stage, steps) in enumerate(self.stages):
            current = names.index(self.position.stage)
            if index < current:
                continue
            start = self.position.steps_done if index == current else 0
            if start >= steps:
                continue
            self.run_stage(stage, steps, start)
        summary = self.finish()
        return FitResult(summary=summary, history=self.position.history, run_dir=self.run_dir)

    def batches(self, split: str, stage: str, start: int):
        t = self.config.train
        size = t.batch_source if split == "source_train" else t.batch_target
        return self.data.train_batches(
            split,
            batch_size=size,
            seed=t.seed,
            stage=[s for s, _ in self.stages].index(stage),
            start_step=start,
        )

    def _to_device(self, batch: dict, keep_label: bool = True) -> dict:
        moved = {}
        for key, value in batch.items():
            if key == "label" and not keep_label:
                continue
            moved[key] = (
                value.to(self.device, non_blocking=True) if torch.is_tensor(value) else value
            )
        return moved

    def run_stage(self, stage: str, steps: int, start: int) -> None:
        if stage == ADAPT and start == 0:
            self.share_bn_stats()
            self.method.begin_adaptation(self.encode)
            self.method.train()
        self.position = ckpt.Position(stage=stage, steps_done=start, history=self.position.history)
        source_iter = self.batches("source_train", stage, start)
        target_iter = self.batches("target_train", stage, start)
        needs_target = self.method.needs_target(stage)
        keep_target_label = self.method.uses_target_labels
        self.method.train()
        for step in range(start, steps):
            ctx = StepContext(stage=stage, step=step, stage_steps=steps)
            source = self._to_device(next(source_iter))
            target = (
                self._to_device(next(target_iter), keep_label=keep_target_label)
                if needs_target
                else None
            )
            with self.autocast:
                result = self.learner(source, target, ctx)
            total = result.total()
            self._take(
                self.pending.add({"total": total, **result.losses}, stage=stage, step=step + 1)
            )
            if (step + 1) % self.config.train.log_every == 0:
                self._read_losses()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.method.after_step(result, ctx)
            self.position.steps_done = step + 1
            self.reporter.on_step(global_step=self.global_step(stage, step + 1))
            self._maybe_evaluate(stage, step + 1, steps)
        self._read_losses()

    def _read_losses(self) -> None:
        """Bring the accumulated loss values to the host: the steps' only read, every
        ``train.log_every`` steps and before each evaluation; a non-finite one ends the run."""
        self._take(self.pending.read())

    def _take(self, read: LossReading | None) -> None:
        if read is None:
            return
        if read.non_finite is not None:
            name, value, stage, step = read.non_finite
            raise NonFiniteLossError(
                f"loss term {name!r} is {value} at {stage} step {step} "
                f"(method {self.config.method.name}, pair {self.config.data.pair}, "
                f"seed {self.config.train.seed})"
            )
        for name, value in read.sums.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + value
        self.loss_steps += read.steps
        self.reporter.on_losses(
            {name: value / read.steps for name, value in read.sums.items()},
            global_step=self.global_step(read.stage, read.last_step),
            is_chief=self.chief,
        )

    def _maybe_evaluate(self, stage: str, done: int, steps: int) -> None:
        t = self.config.train
        if not t.evaluates_after(done, steps):
            return
        checkpoint_now = t.checkpoints_after(done, steps)
        metrics = self.evaluate(stage, done)
        self.position.history.append(metrics)
        path = None
        if self.run_dir is not None:
            if self.chief:
                write_metrics(self.run_dir / "metrics.parquet", self.position.history)
            if checkpoint_now:
                path = self.save(stage, done)
        self.reporter.on_evaluation(metrics, checkpoint=path, is_chief=self.chief)

    # -- evaluation, checkpoints, end ----------------------------------------------------
    def encode(self, split: str):
        """Centre-window features of this worker's shard of ``split`` (bank initialisation)."""
        model = self.method.model
        model.eval()
        with torch.no_grad():
            for batch in self.data.eval_batches(
                split, batch_size=self.config.train.eval_batch, windows="centre"
            ):
                rgb = batch["rgb"].to(self.device, non_blocking=True)
                flow = batch["flow"].to(self.device, non_blocking=True)
                with self.autocast:
                    out = model(rgb, flow)
                features = {m: f.float() for m, f in out.features.items()}
                yield batch["index"].to(self.device), features
        model.train()

    def split_batches(self, split: str):
        """Every segment of ``split`` on every worker, test windows flattened (Method.evaluation)."""
        every = torch.arange(self.info.sizes[split])
        for batch in self.data.eval_batches(
            split, batch_size=self.config.train.eval_batch, windows="test", indices=every
        ):
            yield {
                "rgb": batch["rgb"].flatten(0, 1).to(self.device, non_blocking=True),
                "flow": batch["flow"].flatten(0, 1).to(self.device, non_blocking=True),
                "index": batch["index"].to(self.device),
            }

    def share_bn_stats(self) -> None:
        """Workers' own BN running statistics -> their mean, before the model runs in eval mode."""
        if not self.config.model.sync_bn:
            average_running_stats(self.method)

    def evaluate(self, stage: str, done: int) -> dict[str, Any]:
        self._read_losses()
        self.share_bn_stats()
        t = self.config.train
        model = self.method.model
        kwargs = {"batch_size": t.eval_batch, "device": self.device, "autocast": self.autocast}
        # Only the target prediction sits inside the method's evaluation hook: what
        # it may change (AdaBN's re-estimated statistics) belongs to the target.
        with self.method.evaluation(self.split_batches):
            target = predict(model, self.data, "target_test", **kwargs)
        self._refuse_non_finite(target, "target_test", stage, done)
        metrics: dict[str, Any] = {
            "stage": stage,
            "step": done,
            "global_step": self.global_step(stage, done),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        metrics.update(
            target_metrics(
                target, threshold=self.config.method.threshold, num_classes=self.info.num_classes
            )
        )
        policy = self.config.train.source_val
        scored = policy == "all" or (
            policy == "last" and stage == ADAPT and done in self.source_val_steps
        )
        if scored:
            source = predict(model, self.data, "source_val", **kwargs)
            self._refuse_non_finite(source, "source_val", stage, done)
            metrics["source_val_acc"] = accuracy(source.fused, source.label)
        else:
            metrics["source_val_acc"] = math.nan
        for name, value in self.loss_sums.items():
            metrics[f"loss_{name}"] = value / max(1, self.loss_steps)
        self.loss_sums, self.loss_steps = {}, 0
        metrics["elapsed_s"] = self.elapsed_before + time.perf_counter() - self.started
        return metrics

    def _refuse_non_finite(self, pred: Predictions, split: str, stage: str, done: int) -> None:
        c = self.config
        where = (
            f"at {stage} step {done} (method {c.method.name}, pair {c.data.pair}, "
            f"seed {c.train.seed})"
        )
        refuse_non_finite(pred, split, where)

    def save(self, stage: str, done: int) -> Path | None:
        assert self.run_dir is not None
        global_step = self.global_step(stage, done)
        path = self.run_dir / "checkpoints" / f"step_{global_step:07d}"
        workers = dist.all_gather_object(ckpt.rng_state()) if dist.is_distributed() else None
        if self.chief:
            ckpt.save_checkpoint(
                path,
                method=self.method,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                position=self.position,
                meta={"stage": stage, "step": done, "global_step": global_step},
                worker_rng=workers,
            )
            ckpt.prune_checkpoints(self.run_dir, self.config.train.keep_checkpoints)
        dist.barrier()
        return path if self.chief else None

    def finish(self) -> dict[str, Any]:
        history = self.position.history
        summary = summarise(history, last_k=self.config.train.eval_last_k)
        if not math.isfinite(summary.get("target_acc", math.nan)):
            raise NonFiniteMetricError(
                f"the reported target_acc is {summary.get('target_acc')} after "
                f"{summary['evaluations']} evaluations; a run reports a number or fails"
            )
        wall = self.elapsed_before + time.perf_counter() - self.started
        steps = sum(n for _, n in self.stages)
        summary.update(
            {
                "steps": steps,
                "wall_s": wall,
                "steps_per_s": steps / wall if wall > 0 else float("nan"),
                "config": self.config.flat(),
            }
        )
        if self.run_dir is not None and self.chief:
            if self.config.train.dump_features > 0:
                # Imported here: pyarrow is needed only by runs that write files.
                from cmcl.engine.features import dump_features

                dump_features(
                    self.method.model,
                    self.data,
                    self.run_dir / "features.parquet",
                    per_domain=self.config.train.dump_features,
                    seed=self.config.train.seed,
                    device=self.device,
                    autocast=self.autocast,
                )
            ckpt.save_weights(self.run_dir, self.method.model)
            write_json(self.run_dir / "summary.json", summary)
            (self.run_dir / FAILURE_FILE).unlink(missing_ok=True)  # from a failed earlier try
        self.reporter.on_end(summary, is_chief=self.chief)
        return summary


def fit(
    config: RunConfig, reporter: Reporter | None = None, *, data: PairData | None = None
) -> FitResult:
    """Train and evaluate one run; see the module docstring.

    Args:
        config: the run (``config.out`` None: nothing is written; ``config.resume``:
            a checkpoint directory, or ``"auto"`` for the newest one under ``out``).
        reporter: progress/metrics hooks (Ray adapter, console); default: silent.
        data: an already built :class:`PairData` (tests, sweeps reusing loaded data).
    """
    return _Trainer(config, reporter or Reporter(), data).run()
