"""Two-stream I3D training step on one GPU: fp32 vs bf16 autocast, default vs channels-last.

The video-mode step of SPEC section 7 at full size: TwoStreamModel with an RGB
(3-channel) and a flow (2-channel) I3D backbone, a source batch of 16 and a
target batch of 16 clips of 16x224x224 forwarded separately, cross-entropy on
the fused source logits, SGD (momentum 0.9, weight decay 1e-7). Weights are
random and clips are random tensors already on the GPU: the speed does not
depend on their values. One variant adds a stand-in for the target-side
contrastive terms (entropy of the fused target softmax plus RGB/flow agreement
of the projected target features) so that backward also runs through the
target streams, as the cmco method's does.

Each variant: a fresh model, warm-up steps (cuDNN autotuning), then timed
steps between torch.cuda.synchronize() calls; steps/s, clips/s (32 per step)
and peak allocated / reserved memory. Then the forward-only rate of a frozen
I3D (feature extraction) and, when a loader is given, the data pipeline's rate.
A time budget skips the variants left once it is spent, so a run ends in
under 6 minutes on an H100.

    python3 benchmarks/gpu_check.py                      # GPU, full size
    python3 benchmarks/gpu_check.py --loader pkg.mod:fn  # plus the pipeline rate
    python3 benchmarks/gpu_check.py --smoke              # CPU, tiny sizes, seconds

Everything is printed; the results also go to gpu_check.json in --out, or in
$OUT when that is set.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

# The GPU machine runs this from a bare copy of the repository, with no install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmcl.models.i3d_backbone import I3DBackbone, two_stream_i3d_backbones
from cmcl.models.two_stream import StreamOutput, TwoStreamModel

NUM_CLASSES = 8  # EPIC-Kitchens verbs


@dataclass(frozen=True)
class Sizes:
    batch_source: int
    batch_target: int
    frames: int
    side: int
    warmup: int
    steps: int
    extract_batch: int
    budget_s: float


FULL = Sizes(
    batch_source=16,
    batch_target=16,
    frames=16,
    side=224,
    warmup=3,
    steps=10,
    extract_batch=32,
    budget_s=240,
)
# Batch 2 per domain: train-mode BatchNorm needs more than one value per channel
# where the tiny clips leave Mixed_5c at 1x1x1.
SMOKE = Sizes(
    batch_source=2,
    batch_target=2,
    frames=8,
    side=32,
    warmup=1,
    steps=1,
    extract_batch=2,
    budget_s=120,
)


@dataclass(frozen=True)
class Variant:
    name: str
    bf16: bool
    channels_last: bool
    target_loss: bool = False
    tf32: bool = True  # PyTorch's default for cuDNN convolutions


# Most informative first: the time budget drops the tail.
VARIANTS = (
    Variant("fp32", bf16=False, channels_last=False),
    Variant("bf16", bf16=True, channels_last=False),
    Variant("bf16+channels_last", bf16=True, channels_last=True),
    Variant("fp32+channels_last", bf16=False, channels_last=True),
    Variant("bf16+channels_last+target_loss", bf16=True, channels_last=True, target_loss=True),
    Variant("fp32-no-tf32", bf16=False, channels_last=False, tf32=False),  # strict fp32 convs
)


def environment(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    return info


def clips(sizes: Sizes, batch: int, channels: int, device: torch.device) -> torch.Tensor:
    return torch.rand(batch, channels, sizes.frames, sizes.side, sizes.side, device=device) * 2 - 1


def target_stand_in(model: TwoStreamModel, out: StreamOutput) -> torch.Tensor:
    """A loss on the target outputs with the backward footprint of cmco's target terms."""
    probs = out.fused.float().softmax(dim=1)
    entropy = -(probs * probs.clamp_min(1e-8).log()).sum(dim=1).mean()
    z_rgb = model.project(out.features["rgb"].float())
    z_flow = model.project(out.features["flow"].float())
    return entropy + (1 - (z_rgb * z_flow).sum(dim=1)).mean()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training(variant: Variant, sizes: Sizes, device: torch.device) -> dict:
    # cuDNN convolutions use TF32 by default ("fp32" is then TF32 for the convs);
    # matmuls keep PyTorch's default (full fp32), they are a tiny part of I3D.
    torch.backends.cudnn.allow_tf32 = variant.tf32
    torch.manual_seed(0)
    model = TwoStreamModel(
        **two_stream_i3d_backbones(channels_last=variant.channels_last), num_classes=NUM_CLASSES
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-7)
    source_rgb, source_flow = (
        clips(sizes, sizes.batch_source, 3, device),
        clips(sizes, sizes.batch_source, 2, device),
    )
    target_rgb, target_flow = (
        clips(sizes, sizes.batch_target, 3, device),
        clips(sizes, sizes.batch_target, 2, device),
    )
    labels = torch.randint(0, NUM_CLASSES, (sizes.batch_source,), device=device)
    dtype = torch.bfloat16 if variant.bf16 else torch.float32

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=variant.bf16):
            source = model(source_rgb, source_flow)
            target = model(target_rgb, target_flow)
            loss = F.cross_entropy(source.fused.float(), labels)
            if variant.target_loss:
                loss = loss + target_stand_in(model, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(sizes.warmup):
        loss = step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(sizes.steps):
        loss = step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    steps_per_s = sizes.steps / elapsed
    result = {
        "variant": asdict(variant),
        "warmup_s": warmup_s,
        "steps_per_s": steps_per_s,
        "clips_per_s": steps_per_s * (sizes.batch_source + sizes.batch_target),
        "last_loss": float(loss),
    }
    if device.type == "cuda":
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return result


def measure_extraction(bf16: bool, channels_last: bool, sizes: Sizes, device: torch.device) -> dict:
    """Forward-only clips/s of one frozen RGB I3D (what `cmcl features extract` runs)."""
    backbone = I3DBackbone(in_channels=3, channels_last=channels_last).to(device).eval()
    batch = clips(sizes, sizes.extract_batch, 3, device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for _ in range(sizes.warmup):
            backbone(batch)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(sizes.steps):
            backbone(batch)
        synchronize(device)
    elapsed = time.perf_counter() - start
    return {
        "bf16": bf16,
        "channels_last": channels_last,
        "clips_per_s": sizes.steps * sizes.extract_batch / elapsed,
    }


def measure_pipeline(
    make_loader: Callable[[], Iterable] | None, device: torch.device, *, batches: int = 20
) -> dict:
    """Clips/s that a data loader delivers onto ``device``; skipped when there is no loader.

    ``make_loader()`` returns an iterable of clip dicts with at least ``rgb``
    (N, 3, T, H, W) and ``flow`` (N, 2, T, H, W). The first batch (worker
    start-up) is not timed; each timed batch is copied to the device.
    """
    if make_loader is None:
        return {"skipped": "no loader given (--loader module:function)"}
    iterator = iter(make_loader())
    next(iterator)
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        rgb = batch["rgb"].to(device, non_blocking=True)
        batch["flow"].to(device, non_blocking=True)
        count += rgb.shape[0]
    synchronize(device)
    elapsed = time.perf_counter() - start
    if count == 0:
        return {"skipped": "the loader gave one batch or none"}
    return {"clips": count, "seconds": elapsed, "clips_per_s": count / elapsed}


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_guarded(fn: Callable[[], dict], device: torch.device) -> dict:
    """Run one measurement; an out-of-memory or other error is recorded, not fatal."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError as error:
        return {"error": f"out of memory: {str(error).splitlines()[0]}"}
    except Exception as error:  # a broken variant must not lose the others' figures
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        release(device)


def load_callable(spec: str | None) -> Callable[[], Iterable] | None:
    if spec is None:
        return None
    module, sep, name = spec.partition(":")
    if not sep:
        raise SystemExit(f"--loader must be module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)


def run_checks(
    sizes: Sizes,
    device: torch.device,
    make_loader: Callable[[], Iterable] | None = None,
    variants: tuple[Variant, ...] = VARIANTS,
) -> dict:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed clip sizes: autotune once per shape
    report: dict = {
        "environment": environment(device),
        "sizes": asdict(sizes),
        "training": [],
        "extraction": [],
    }
    print(json.dumps(report["environment"]), flush=True)
    began = time.perf_counter()

    def over_budget() -> bool:
        return time.perf_counter() - began > sizes.budget_s

    for variant in variants:
        if over_budget():
            result = {"variant": asdict(variant), "skipped": f"time budget {sizes.budget_s}s spent"}
        else:
            result = run_guarded(lambda v=variant: measure_training(v, sizes, device), device)
            result.setdefault("variant", asdict(variant))
        report["training"].append(result)
        print(f"train {variant.name:>32}: {format_result(result)}", flush=True)
    torch.backends.cudnn.allow_tf32 = True
    # Extraction in the precisions the chosen training variants use (fp32 and bf16+channels_last by default).
    settings = {(v.bf16, v.channels_last) for v in variants}
    for bf16, channels_last in [p for p in ((False, False), (True, True)) if p in settings]:
        if over_budget():
            result = {"bf16": bf16, "channels_last": channels_last, "skipped": "time budget spent"}
        else:
            result = run_guarded(
                lambda b=bf16, c=channels_last: measure_extraction(b, c, sizes, device), device
            )
            result |= {"bf16": bf16, "channels_last": channels_last}
        report["extraction"].append(result)
        print(
            f"extract bf16={bf16} channels_last={channels_last}: {format_result(result)}",
            flush=True,
        )
    report["pipeline"] = run_guarded(lambda: measure_pipeline(make_loader, device), device)
    print(f"pipeline: {format_result(report['pipeline'])}", flush=True)
    report["ratios"] = ratios(report["training"])
    report["total_s"] = time.perf_counter() - began
    return report


def format_result(result: dict) -> str:
    if "error" in result or "skipped" in result:
        return result.get("error") or f"skipped ({result['skipped']})"
    parts = [f"{key}={value:.3f}" for key, value in result.items() if isinstance(value, float)]
    return " ".join(parts)


def ratios(training: list[dict]) -> dict:
    """Each variant's steps/s and peak memory relative to fp32, measured in the same run."""
    by_name = {r["variant"]["name"]: r for r in training if "steps_per_s" in r}
    base = by_name.get("fp32")
    if base is None:
        return {}
    out = {}
    for name, r in by_name.items():
        out[name] = {"speed_vs_fp32": r["steps_per_s"] / base["steps_per_s"]}
        if "peak_allocated_gib" in r:
            out[name]["memory_vs_fp32"] = r["peak_allocated_gib"] / base["peak_allocated_gib"]
    return out


def main(argv: list[str] | None = None, make_loader: Callable[[], Iterable] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, tiny clips, 1+2 steps: checks the script runs"
    )
    parser.add_argument(
        "--loader", default=None, help="module:function returning an iterable of clip dicts"
    )
    parser.add_argument(
        "--out", default=os.environ.get("OUT"), help="folder for gpu_check.json (default $OUT)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop starting variants after this many seconds",
    )
    parser.add_argument(
        "--variants",
        default=",".join(v.name for v in VARIANTS),
        help="comma-separated training variants to run, in order (default: all)",
    )
    args = parser.parse_args(argv)
    known = {v.name: v for v in VARIANTS}
    unknown = [name for name in args.variants.split(",") if name not in known]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; valid: {', '.join(known)}")
    variants = tuple(known[name] for name in args.variants.split(","))
    sizes = SMOKE if args.smoke else FULL
    if args.budget_s is not None:
        sizes = Sizes(**(asdict(sizes) | {"budget_s": args.budget_s}))
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        raise SystemExit("no CUDA device: run with --smoke to check the script on CPU")
    threads = torch.get_num_threads()
    if args.smoke:
        # Tiny ops on a shared CPU: one thread avoids OpenMP barrier stalls that
        # made a 2-thread smoke run ten times slower on a loaded machine.
        torch.set_num_threads(1)
    try:
        report = run_checks(sizes, device, make_loader or load_callable(args.loader), variants)
    finally:
        torch.set_num_threads(threads)
    print(json.dumps(report, indent=1), flush=True)
    if args.out:
        path = Path(args.out) / "gpu_check.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
