"""One cmco adaptation step in feature mode: the project's against plain PyTorch.

The peer (``PeerModel`` and ``PeerCMCo`` below) is the same step written the
way one would write it without this project: one ``nn.Module``, two losses
inlined, masked arithmetic instead of boolean indexing, banks as a dict of
tensors, fused SGD with the step schedule, loss values summed on the device and
read every ``log_every`` steps. Nothing in that section imports from cmcl.

The project's step is driven through the trainer's own objects: a
``cmcl.engine.trainer._Trainer`` is built from a RunConfig (model, method,
fused SGD with its preset momentum buffers, LR schedule, loss accumulator),
and :func:`project_step` runs the body of ``_Trainer.run_stage`` for one step
(learner call, ``StepResult.total``, ``LossAccumulator.add`` and the read every
``train.log_every`` steps, zero_grad, backward, optimiser and scheduler step,
``after_step``'s bank updates, the reporter hook and the evaluation check).
That is the real step minus the data pipeline: both sides get the same
prepared batches, so neither side's timing includes loading.

Checks and measurements:

* :func:`compare_one_step`: same weights (the project's model state copied
  into the peer), batch, banks and dropout seed; every loss term, the
  parameters, their update, the BN running statistics and the banks after one
  step, as relative differences (tests/benchmarks/test_peer_step.py).
* the benchmark: both steps interleaved in one process (the order swaps every
  step), median process CPU time per step, one torch thread by default, at the
  EPIC sizes (source bank D3 3897 rows, target D1 1543, batch 16 + 16, 1024-d
  features, 128-d projection); the step's FLOPs (FlopCounterMode, matmuls
  only) against the core's float32 matmul peak measured in the same process.
* ``--profile``: torch.profiler over both steps, self CPU time per operator and
  step, sorted by the difference.

    python benchmarks/peer_step.py                      # check + interleaved timing
    python benchmarks/peer_step.py --steps 600 --profile
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# -- the peer: plain PyTorch, nothing from cmcl ----------------------------------------

MODALITIES = ("rgb", "flow")
Mark = Callable[[str], None] | None
"""Optional hook called at the end of each phase of a step (the benchmark's phase timing)."""


@dataclass(frozen=True)
class PeerSettings:
    lam: float = 1.25
    tau: float = 0.1
    threshold: float = 0.8
    delta: float = 0.5
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-7
    lr_step: int = 3000
    lr_gamma: float = 0.1
    log_every: int = 50


class PeerModel(nn.Module):
    """Per modality Linear -> BN -> ReLU -> dropout -> Linear; shared projection head."""

    def __init__(
        self, *, in_dim: int, dim: int, classes: int, hidden: int, proj: int, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict(
            {
                k: nn.Sequential(nn.Linear(in_dim, dim), nn.BatchNorm1d(dim), nn.ReLU())
                for k in MODALITIES
            }
        )
        self.classifier = nn.ModuleDict({k: nn.Linear(dim, classes) for k in MODALITIES})
        self.drop = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, proj))


class PeerCMCo:
    """cmco's adaptation step: L = CE + lam * (L_mo^s + L_mo^t + L_do^rgb + L_do^flow).

    ``banks``: unit rows keyed ``{domain}_{modality}_{z|f}`` (z: projected, for the
    cross-modal term; f: normalised features of the source, for the cross-domain term),
    every row written by the initialisation pass (so no masks of unwritten rows).
    """

    def __init__(self, model: PeerModel, banks: dict, source_labels: torch.Tensor, s: PeerSettings):
        self.model, self.banks, self.labels, self.s = model, banks, source_labels, s
        classes = model.classifier["rgb"].out_features
        self.has_positive = torch.bincount(source_labels, minlength=classes) > 0
        self.opt = torch.optim.SGD(
            model.parameters(),
            lr=s.lr,
            momentum=s.momentum,
            weight_decay=s.weight_decay,
            fused=True,
        )
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, [s.lr_step], s.lr_gamma)
        self.loss_sum: torch.Tensor | None = None
        self.steps = 0

    def forward(self, src: dict, tgt: dict) -> tuple[dict, dict]:
        """Features F keyed (domain, modality) and fused logits per domain."""
        m = self.model
        feats, fused = {}, {}
        for d, batch in (("source", src), ("target", tgt)):
            logits = 0
            for k in MODALITIES:
                feats[d, k] = m.backbone[k](batch[k])
                logits = logits + m.classifier[k](m.drop(feats[d, k]))
            fused[d] = logits
        return feats, fused

    def embed(self, feats: dict) -> dict:
        """z = h(F), one head call for both domains and modalities."""
        keys = list(feats)
        z = F.normalize(self.model.head(torch.cat([feats[k] for k in keys])), dim=1)
        return dict(zip(keys, z.split([len(feats[k]) for k in keys]), strict=True))

    def modality_terms(self, z: dict, src_index: torch.Tensor, tgt_index: torch.Tensor) -> dict:
        tau = self.s.tau

        def info_nce(anchor, bank, index):
            logits = anchor @ bank.T / tau
            return (logits.logsumexp(1) - logits.gather(1, index[:, None]).squeeze(1)).mean()

        out = {}
        for d, index in (("source", src_index), ("target", tgt_index)):
            rgb_to_flow = info_nce(z[d, "rgb"], self.banks[f"{d}_flow_z"], index)
            flow_to_rgb = info_nce(z[d, "flow"], self.banks[f"{d}_rgb_z"], index)
            out[f"mo_{d}"] = (rgb_to_flow + flow_to_rgb) / 2
        return out

    def domain_terms(self, feats: dict, target_logits: torch.Tensor) -> dict:
        with torch.no_grad():
            pseudo, used = self.pseudo_labels(target_logits)
            # an unused anchor takes its whole row as positives: loss 0, finite gradient
            positive = (pseudo[:, None] == self.labels[None]) | ~used[:, None]
            weight = used.float() / used.sum().clamp_min(1)
        out = {}
        for k in MODALITIES:
            anchor = F.normalize(feats["target", k], dim=1)
            logits = anchor @ self.banks[f"source_{k}_f"].T / self.s.tau
            positives = logits.masked_fill(~positive, -1e30).logsumexp(1)
            out[f"do_{k}"] = ((logits.logsumexp(1) - positives) * weight).sum()
        return out

    def losses(self, src: dict, tgt: dict) -> tuple[dict, dict]:
        """Unweighted loss terms, and the new bank rows (attached; detached on use)."""
        feats, fused = self.forward(src, tgt)
        z = self.embed(feats)
        out = {"src_ce": F.cross_entropy(fused["source"], src["label"])}
        out.update(self.modality_terms(z, src["index"], tgt["index"]))
        out.update(self.domain_terms(feats, fused["target"]))
        new = {f"{d}_{k}_z": z[d, k] for d, k in feats}
        new.update({f"source_{k}_f": F.normalize(feats["source", k], dim=1) for k in MODALITIES})
        return out, new

    @torch.no_grad()
    def update_banks(self, src_index: torch.Tensor, tgt_index: torch.Tensor, new: dict) -> None:
        delta = self.s.delta
        for key, bank in self.banks.items():
            index = src_index if key.startswith("source") else tgt_index
            mixed = delta * bank[index] + (1 - delta) * new[key].detach()
            bank[index] = F.normalize(mixed, dim=1)

    def pseudo_labels(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """argmax of softmax, and which anchors count: confident, with a source row of the class."""
        confidence, pseudo = logits.softmax(1).max(1)
        return pseudo, (confidence >= self.s.threshold) & self.has_positive[pseudo]

    def step(self, src: dict, tgt: dict, mark: Mark = None) -> dict[str, torch.Tensor]:
        s = self.s
        out, new = self.losses(src, tgt)
        mark and mark("forward")
        total = out["src_ce"] + s.lam * (
            out["mo_source"] + out["mo_target"] + out["do_rgb"] + out["do_flow"]
        )
        values = torch.stack([total, *out.values()]).detach()
        self.loss_sum = values if self.loss_sum is None else self.loss_sum + values
        self.steps += 1
        if self.steps % s.log_every == 0:
            self.read_losses()
        mark and mark("loss log")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        mark and mark("backward")
        self.opt.step()
        self.sched.step()
        mark and mark("optimizer")
        self.update_banks(src["index"], tgt["index"], new)
        mark and mark("banks")
        return {"total": total.detach(), **{k: v.detach() for k, v in out.items()}}

    def read_losses(self) -> list[float]:
        sums = self.loss_sum.tolist() if self.loss_sum is not None else []
        if not all(math.isfinite(v) for v in sums):
            raise FloatingPointError(f"non-finite loss within the last {self.s.log_every} steps")
        self.loss_sum = None
        return sums


# -- the project's step, driven through its trainer ------------------------------------


class Sizes(NamedTuple):
    source_rows: int = 3897  # EPIC D3 train
    target_rows: int = 1543  # EPIC D1 train
    batch: int = 16
    in_dim: int = 1024
    feature_dim: int = 1024
    proj_hidden: int = 1024
    proj_dim: int = 128
    classes: int = 8


def build_project(sizes: Sizes, *, threshold: float = 0.8, seed: int = 0):
    """A ``_Trainer`` for an adaptation stage (no warm-up), without a data pipeline."""
    from cmcl.config import RunConfig
    from cmcl.data.base import DataInfo, PairData
    from cmcl.engine import Reporter
    from cmcl.engine.trainer import _Trainer

    class NoData(PairData):
        """Sizes and source labels only: the benchmark hands the batches to the step itself."""

        def __init__(self, info: DataInfo) -> None:
            self.info = info

        def train_batches(self, split, **kwargs):
            raise NotImplementedError

        def eval_batches(self, split, **kwargs):
            raise NotImplementedError

    labels = torch.randint(0, sizes.classes, (sizes.source_rows,), generator=_gen(seed))
    info = DataInfo(
        benchmark="epic",
        source="D3",
        target="D1",
        class_names=tuple(f"c{i}" for i in range(sizes.classes)),
        sizes={
            "source_train": sizes.source_rows,
            "target_train": sizes.target_rows,
            "target_test": 1,
            "source_val": 1,
        },
        source_labels=labels,
        input_shapes={"rgb": (sizes.in_dim,), "flow": (sizes.in_dim,)},
    )
    never = 20_000  # no evaluation or checkpoint within a benchmark's steps
    config = RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": "D3-D1",
            "method": "cmco",
            "method.threshold": threshold,
            "model.feature_dim": sizes.feature_dim,
            "model.proj_hidden": sizes.proj_hidden,
            "model.proj_dim": sizes.proj_dim,
            "train.seed": seed,
            "train.device": "cpu",
            "train.warmup_steps": 0,
            "train.steps": never,
            "train.eval_every": never,
            "train.checkpoint_every": never,
        }
    )
    trainer = _Trainer(config, Reporter(), NoData(info))
    generator = _gen(seed + 1)
    with torch.no_grad():
        for bank in trainer.method.banks.values():
            rows = torch.randn(bank.num_rows, bank.dim, generator=generator)
            bank.initialise(torch.arange(bank.num_rows), rows)
    trainer.method.train()
    return trainer


def project_step(
    trainer, source: dict, target: dict, step: int, mark: Mark = None
) -> dict[str, torch.Tensor]:
    """The body of ``_Trainer.run_stage`` for adaptation step ``step`` (0-based)."""
    from cmcl.methods.base import ADAPT, StepContext

    t = trainer.config.train
    ctx = StepContext(stage=ADAPT, step=step, stage_steps=t.steps)
    source = trainer._to_device(source)
    target = trainer._to_device(target, keep_label=trainer.method.uses_target_labels)
    with trainer.autocast:
        result = trainer.learner(source, target, ctx)
    mark and mark("forward")
    total = result.total()
    losses = {"total": total, **result.losses}
    trainer._take(trainer.pending.add(losses, stage=ADAPT, step=step + 1))
    if (step + 1) % t.log_every == 0:
        trainer._read_losses()
    mark and mark("loss log")
    trainer.optimizer.zero_grad(set_to_none=True)
    total.backward()
    mark and mark("backward")
    trainer.optimizer.step()
    trainer.scheduler.step()
    mark and mark("optimizer")
    trainer.method.after_step(result, ctx)
    trainer.position.steps_done = step + 1
    trainer.reporter.on_step(global_step=trainer.global_step(ADAPT, step + 1))
    trainer._maybe_evaluate(ADAPT, step + 1, t.steps)
    mark and mark("banks")
    return {name: value.detach() for name, value in losses.items()}


def peer_from_project(trainer) -> PeerCMCo:
    """The peer with the project's weights, BN statistics, banks, labels and settings."""
    model = trainer.method.model
    peer_model = PeerModel(
        in_dim=model.streams["rgb"].backbone.net[0].in_features,
        dim=model.feature_dim,
        classes=model.num_classes,
        hidden=model.head.net[0].out_features,
        proj=model.proj_dim,
        dropout=model.streams["rgb"].dropout.p,
    )
    peer_model.load_state_dict({_peer_key(k): v.clone() for k, v in model.state_dict().items()})
    peer_model.train()
    m, t = trainer.config.method, trainer.config.train
    settings = PeerSettings(
        lam=m.lam,
        tau=m.tau,
        threshold=m.threshold,
        delta=m.delta,
        lr=t.lr,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        lr_step=t.lr_step,
        lr_gamma=t.lr_gamma,
        log_every=t.log_every,
    )
    banks = {key: bank.memory.clone() for key, bank in trainer.method.banks.items()}
    return PeerCMCo(peer_model, banks, trainer.method.source_labels.clone(), settings)


def _peer_key(key: str) -> str:
    for pattern, replacement in (
        (r"streams\.(\w+)\.backbone\.net\.", r"backbone.\1."),
        (r"streams\.(\w+)\.classifier\.", r"classifier.\1."),
        (r"head\.net\.", "head."),
    ):
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(f"no peer parameter for the project's {key!r}")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_batches(sizes: Sizes, count: int, seed: int = 2) -> list[tuple[dict, dict]]:
    """(source, target) pairs of window features (non-negative, as pooled I3D features are)."""
    g = _gen(seed)
    pairs = []
    for _ in range(count):
        source = {
            "rgb": torch.rand(sizes.batch, sizes.in_dim, generator=g),
            "flow": torch.rand(sizes.batch, sizes.in_dim, generator=g),
            "label": torch.randint(0, sizes.classes, (sizes.batch,), generator=g),
            "index": torch.randperm(sizes.source_rows, generator=g)[: sizes.batch],
        }
        target = {
            "rgb": torch.rand(sizes.batch, sizes.in_dim, generator=g),
            "flow": torch.rand(sizes.batch, sizes.in_dim, generator=g),
            "index": torch.randperm(sizes.target_rows, generator=g)[: sizes.batch],
        }
        pairs.append((source, target))
    return pairs


# -- equality in value -----------------------------------------------------------------


class Comparison(NamedTuple):
    losses: dict[str, tuple[float, float]]
    """Per term: (project, peer)."""
    loss_rel: float
    param_rel: float
    """max over tensors of |project - peer|_inf / |project|_inf after the step."""
    grad_rel: float
    """The same for the gradients of the step, except the biases before batch norm, whose
    exact gradient is 0 (both sides hold rounding noise of about 1e-9 there)."""
    buffer_rel: float
    """BN running statistics after the step."""
    bank_rel: float
    confident: int
    """Target anchors counted by the cross-domain term (so that it was exercised)."""


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b|_inf / |a|_inf (0 for two zeros)."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


def compare_one_step(sizes: Sizes, *, threshold: float = 0.8, seed: int = 0) -> Comparison:
    """One step of each side from identical state; relative differences of everything."""
    trainer = build_project(sizes, threshold=threshold, seed=seed)
    peer = peer_from_project(trainer)
    source, target = random_batches(sizes, 1, seed=seed + 2)[0]
    model = trainer.method.model
    used = []
    pseudo_labels = peer.pseudo_labels

    def recorded(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pseudo, mask = pseudo_labels(logits)
        used.append(mask)
        return pseudo, mask

    peer.pseudo_labels = recorded
    torch.manual_seed(seed)  # the same dropout masks: both sides draw them in the same order
    ours = project_step(trainer, source, target, 0)
    torch.manual_seed(seed)
    theirs = peer.step(source, target)
    after = {_peer_key(k): v for k, v in model.state_dict().items()}
    peer_state = peer.model.state_dict()
    buffers = [k for k in after if k.endswith(("running_mean", "running_var"))]
    grads = {_peer_key(k): v.grad for k, v in model.named_parameters()}
    peer_grads = {k: v.grad for k, v in peer.model.named_parameters()}
    before_bn = re.compile(r"backbone\.\w+\.0\.bias")
    return Comparison(
        losses={k: (float(ours[k]), float(theirs[k])) for k in ours},
        loss_rel=max(_rel(ours[k], theirs[k]) for k in ours),
        param_rel=max(_rel(after[k], peer_state[k]) for k in grads),
        grad_rel=max(_rel(grads[k], peer_grads[k]) for k in grads if not before_bn.match(k)),
        buffer_rel=max(_rel(after[k], peer_state[k]) for k in buffers),
        bank_rel=max(_rel(b.memory, peer.banks[k]) for k, b in trainer.method.banks.items()),
        confident=int(used[0].sum()),
    )


# -- timing, FLOPs, peak, profile ------------------------------------------------------

Step = Callable[..., object]
"""``step(source, target, i, mark=None)``: one training step of a side."""


class Timings(NamedTuple):
    total: list[float]
    """CPU ms of each timed step."""
    phases: dict[str, list[float]]
    """CPU ms of each phase of each timed step (see :data:`Mark`)."""


def interleaved_cpu_ms(
    steps: dict[str, Step], batches: list[tuple[dict, dict]], count: int, warmup: int
) -> dict[str, Timings]:
    """Per side, process CPU ms of each of ``count`` steps after ``warmup``; sides alternate,
    and which goes first swaps every step, so that load changes hit both alike."""
    names = list(steps)
    times = {name: Timings([], {}) for name in names}
    for i in range(warmup + count):
        source, target = batches[i % len(batches)]
        for name in names if i % 2 == 0 else names[::-1]:
            marks = [("start", time.process_time())]

            def mark(phase: str, record=marks.append) -> None:
                record((phase, time.process_time()))

            steps[name](source, target, i, mark)
            if i < warmup:
                continue
            times[name].total.append(1000.0 * (marks[-1][1] - marks[0][1]))
            for (_, before), (phase, after) in itertools.pairwise(marks):
                times[name].phases.setdefault(phase, []).append(1000.0 * (after - before))
    return times


def step_flops(step: Step, source: dict, target: dict, i: int) -> tuple[int, dict[str, int]]:
    """Matmul FLOPs of one step, forward and backward (FlopCounterMode counts mm/addmm/bmm)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(source, target, i)
    per_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), per_op


def matmul_peak_gflops(n: int = 2048, repeats: int = 7) -> tuple[float, float]:
    """(best, median) float32 GFLOP/s of an n x n x n matmul, in process CPU time."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    rates = []
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b, out=out)
        rates.append(2 * n**3 / (time.process_time() - start) / 1e9)
    return max(rates), statistics.median(rates)


def profile_per_op(steps: dict[str, Step], batches, first: int, count: int) -> dict[str, dict]:
    """Per side and operator: (median self CPU ms per step, calls per step), from one
    torch.profiler run over interleaved steps, each step inside a range naming its side."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(first, first + count):
            for name in steps if i % 2 == 0 else list(steps)[::-1]:
                with torch.profiler.record_function(f"side:{name}"):
                    steps[name](*batches[i % len(batches)], i)
    per_step: dict[str, list[dict[str, float]]] = {name: [] for name in steps}
    calls: dict[str, dict[str, int]] = {name: {} for name in steps}
    for event in prof.events():
        if not event.name.startswith("side:"):
            continue
        side, ms = event.name[5:], {"(whole step, range total)": event.cpu_time_total / 1000.0}
        pending = list(event.cpu_children)
        while pending:
            child = pending.pop()
            ms[child.name] = ms.get(child.name, 0.0) + child.self_cpu_time_total / 1000.0
            calls[side][child.name] = calls[side].get(child.name, 0) + 1
            pending.extend(child.cpu_children)
        per_step[side].append(ms)
    table = {}
    for side, rows in per_step.items():
        names = {op for row in rows for op in row}
        table[side] = {
            op: (
                statistics.median(row.get(op, 0.0) for row in rows),
                calls[side].get(op, 0) / len(rows),
            )
            for op in names
        }
    return table


def print_profile(steps: dict[str, Step], batches, first: int, count: int, rows: int) -> None:
    table = profile_per_op(steps, batches, first, count)
    whole = "(whole step, range total)"
    step = {side: ops.pop(whole)[0] for side, ops in table.items()}
    ours, theirs = table["project"], table["peer"]
    total = {side: sum(ms for ms, _ in ops.values()) for side, ops in table.items()}
    calls = {side: sum(n for _, n in ops.values()) for side, ops in table.items()}
    print(
        f"\nprofile, {count} interleaved steps per side (medians of CPU ms per step, profiler "
        f"overhead included): project {step['project']:.2f}, peer {step['peer']:.2f}; in "
        f"operators (self time) project {total['project']:.2f} ({calls['project']:.0f} calls), "
        f"peer {total['peer']:.2f} ({calls['peer']:.0f} calls); outside operators (Python, "
        f"autograd bookkeeping) project {step['project'] - total['project']:.2f}, "
        f"peer {step['peer'] - total['peer']:.2f}"
    )
    print(f"{'operator':<40} {'project':>8} {'peer':>8} {'diff':>8} {'calls':>9}")
    ranked = sorted(
        set(ours) | set(theirs),
        key=lambda op: -abs(ours.get(op, (0.0, 0))[0] - theirs.get(op, (0.0, 0))[0]),
    )
    for op in ranked[:rows]:
        (a, n), (b, m) = ours.get(op, (0.0, 0)), theirs.get(op, (0.0, 0))
        print(f"{op[:40]:<40} {a:8.3f} {b:8.3f} {a - b:+8.3f} {f'{n:.0f}/{m:.0f}':>9}")
    extra = sorted(
        ((ours.get(op, (0, 0))[1] - theirs.get(op, (0, 0))[1], op) for op in ranked), reverse=True
    )
    print(
        "op calls per step, project minus peer: "
        + ", ".join(f"{op} {n:+.0f}" for n, op in extra if n != 0)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per side first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.8, help="pseudo-label T, timing")
    parser.add_argument(
        "--check-threshold",
        type=float,
        default=0.3,
        help="T of the equality check (lower, so that the cross-domain term has anchors)",
    )
    parser.add_argument("--profile", action="store_true", help="also profile both steps")
    parser.add_argument("--profile-steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = Sizes()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); sizes {sizes}")

    check = compare_one_step(sizes, threshold=args.check_threshold)
    print(f"one step from identical state, project vs peer (T={args.check_threshold}):")
    for name, (a, b) in check.losses.items():
        print(f"  {name:<10} {a:.9g}  {b:.9g}")
    print(
        f"  max relative difference: losses {check.loss_rel:.1e}, parameters {check.param_rel:.1e}, "
        f"gradients {check.grad_rel:.1e}, BN statistics {check.buffer_rel:.1e}, "
        f"banks {check.bank_rel:.1e}; {check.confident}/{sizes.batch} target anchors confident"
    )

    trainer = build_project(sizes, threshold=args.threshold)
    peer = peer_from_project(trainer)
    batches = random_batches(sizes, 64)
    steps: dict[str, Step] = {
        "project": lambda s, t, i, mark=None: project_step(trainer, s, t, i, mark),
        "peer": lambda s, t, i, mark=None: peer.step(s, t, mark),
    }
    flops = {name: step_flops(step, *batches[0], 0) for name, step in steps.items()}
    peak_before, _ = matmul_peak_gflops()
    start = time.perf_counter()
    times = interleaved_cpu_ms(steps, batches, args.steps, args.warmup)
    wall = time.perf_counter() - start
    peak_after, peak_median = matmul_peak_gflops()
    # the core's speed drifts with the machine's load: the higher of two measurements
    peak = max(peak_before, peak_after)
    median = {name: statistics.median(timing.total) for name, timing in times.items()}
    ratio = median["project"] / median["peer"]
    # the ratio in five interleaved sub-samples of the run: its spread under the machine's load
    subsamples = [
        statistics.median(times["project"].total[j::5])
        / statistics.median(times["peer"].total[j::5])
        for j in range(5)
    ]
    print(f"\ninterleaved: {args.steps} steps per side after {args.warmup}, {wall:.0f} s wall")
    for name in steps:
        q = statistics.quantiles(times[name].total, n=4)
        total, _ = flops[name]
        rate = total / median[name] / 1e6
        print(
            f"  {name:<8} median {median[name]:6.2f} CPU ms/step "
            f"(quartiles {q[0]:.2f}-{q[2]:.2f}); {total / 1e9:.3f} GFLOP/step, "
            f"{rate:.1f} GFLOP/s = {rate / peak:.0%} of peak"
        )
    print(
        f"  project / peer: {ratio:.3f}x (sub-samples: {', '.join(f'{r:.3f}' for r in subsamples)})"
    )
    print(
        f"  matmul peak (2048^3 float32, best of 7): {peak_before:.1f} GFLOP/s before the "
        f"steps, {peak_after:.1f} after (median {peak_median:.1f}); fractions use {peak:.1f}"
    )
    print("  phases, median CPU ms per step (project / peer, difference):")
    for phase, ours in times["project"].phases.items():
        a, b = statistics.median(ours), statistics.median(times["peer"].phases[phase])
        print(f"    {phase:<10} {a:7.3f} {b:7.3f} {a - b:+7.3f}")
    if flops["project"][1] != flops["peer"][1]:
        print(f"  FLOPs by op differ: project {flops['project'][1]}, peer {flops['peer'][1]}")
    if args.profile:
        print_profile(steps, batches, args.warmup + args.steps, args.profile_steps, 30)


if __name__ == "__main__":
    main()
