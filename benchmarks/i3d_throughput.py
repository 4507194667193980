"""I3D clips per second on CPU: forward and forward+backward, default vs channels-last-3d memory format.

One I3D stream (RGB, 3 channels, no logits layer) as used in video-mode
training. Forward is timed in eval mode under ``torch.no_grad()`` (feature
extraction); forward+backward in train mode with a sum loss (a training step
without the optimiser). Both memory formats are timed in alternation inside
each case, so that load from other processes on the machine hits both alike;
the figure is the median over repeats after one warm-up call.

    PYTHONPATH=. python benchmarks/i3d_throughput.py [--repeats 3] [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from cmcl.models.i3d_backbone import I3DBackbone

# (frames, height, width, batch): the training clip size at batch 1-2, and a smaller one.
CASES = ((16, 224, 224, 1), (16, 224, 224, 2), (8, 112, 112, 4))
MODES = ("forward", "forward+backward")


def run_once(model: I3DBackbone, clip: torch.Tensor, mode: str) -> float:
    start = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            model(clip)
    else:
        model.zero_grad(set_to_none=True)
        model(clip).sum().backward()
    return time.perf_counter() - start


def measure_case(frames: int, height: int, width: int, batch: int, mode: str, repeats: int) -> dict:
    torch.manual_seed(0)
    base = I3DBackbone(in_channels=3)
    last = I3DBackbone(in_channels=3, channels_last=True)
    last.load_state_dict(base.state_dict())
    for model in (base, last):
        model.train(mode != "forward")
    clip = torch.randn(batch, 3, frames, height, width)
    times: dict[str, list[float]] = {"default": [], "channels_last": []}
    for model in (base, last):
        run_once(model, clip, mode)  # warm-up: oneDNN primitive creation, allocator
    for _ in range(repeats):
        times["default"].append(run_once(base, clip, mode))
        times["channels_last"].append(run_once(last, clip, mode))
    rates = {name: batch / statistics.median(values) for name, values in times.items()}
    # The fastest repeat is the least disturbed by other processes on a shared machine.
    best = {name: batch / min(values) for name, values in times.items()}
    return {
        "clip": f"{frames}x{height}x{width}",
        "batch": batch,
        "mode": mode,
        "default_clips_per_s": rates["default"],
        "channels_last_clips_per_s": rates["channels_last"],
        "ratio_channels_last": rates["channels_last"] / rates["default"],
        "ratio_channels_last_best": best["channels_last"] / best["default"],
        "seconds": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print("clips/s (median of repeats); ratio = channels-last / default (median, best repeat)")
    print(
        f"{'clip':>12} {'batch':>5} {'mode':>17} {'default':>10} {'ch-last':>10} {'ratio':>6} {'best':>6}"
    )
    results = []
    for frames, height, width, batch in CASES:
        for mode in MODES:
            row = measure_case(frames, height, width, batch, mode, args.repeats)
            results.append(row)
            print(
                f"{row['clip']:>12} {batch:>5} {mode:>17} {row['default_clips_per_s']:>10.3f} "
                f"{row['channels_last_clips_per_s']:>10.3f} {row['ratio_channels_last']:>6.2f} "
                f"{row['ratio_channels_last_best']:>6.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "results": results,
                },
                handle,
                indent=1,
            )


if __name__ == "__main__":
    main()
