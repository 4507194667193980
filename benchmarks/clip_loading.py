"""Clips per second of the full video pipeline: decode + window + transform + collate.

Synthetic EPIC-layout videos at EPIC's frame size (256x456, JPEG quality 90,
cmcl.data.synth_video) are written once to a temporary directory; then
``VideoPairData.train_batches`` (16 RGB frames at stride 2 + 16 flow u/v
frames per clip, multi-scale crop to 224, flip, scaling) is timed with 0 and
2 DataLoader workers, after one warm-up batch. Also timed in this process,
per clip: reading + decoding its 48 JPEG files alone, and the transforms alone.
The ratio is against 0 workers.

    python benchmarks/clip_loading.py [--batches 6] [--batch 8] [--workers 0,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cmcl.config import RunConfig
from cmcl.data import transforms
from cmcl.data.clips import ClipRequest
from cmcl.data.synth_video import write_synthetic_videos
from cmcl.data.video import build_video_pair_data


def clips_per_second(root: Path, workers: int, batches: int, batch: int) -> float:
    config = RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": "D2-D1",
            "model.backbone": "i3d",
            "data.root": str(root),
            "data.loader_workers": workers,
        }
    )
    data = build_video_pair_data(config)
    stream = data.train_batches("source_train", batch_size=batch, seed=0, stage=0, start_step=0)
    next(stream)  # start the workers, fill the prefetch queue
    started = time.perf_counter()
    for _ in range(batches):
        out = next(stream)
        assert out["rgb"].shape == (batch, 3, 16, 224, 224)
    elapsed = time.perf_counter() - started
    del stream
    return batches * batch / elapsed


def stage_rates(root: Path, clips: int) -> tuple[float, float]:
    """(decode-only, transform-only) clips/s in this process."""
    config = RunConfig.from_overrides(
        {"benchmark": "epic", "pair": "D2-D1", "model.backbone": "i3d", "data.root": str(root)}
    )
    dataset = build_video_pair_data(config).datasets["source_train"]
    decode = transform = 0.0
    for i in range(clips):
        request = ClipRequest(i % len(dataset), i, "train")
        start, stop = (
            int(dataset.segments.start[request.index]),
            int(dataset.segments.stop[request.index]),
        )
        frames = dataset.train_sampler(start, stop, torch.Generator().manual_seed(i))
        t0 = time.perf_counter()
        rgb, flow = dataset._read(request.index, frames.rgb, frames.flow)
        t1 = time.perf_counter()
        params = transforms.sample_spatial(torch.Generator().manual_seed(i))
        transforms.train_clip(rgb, params, size=224, flow=False)
        transforms.train_clip(flow, params, size=224, flow=True)
        t2 = time.perf_counter()
        decode += t1 - t0
        transform += t2 - t1
    return clips / decode, clips / transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--root", default=None, help="Reuse a tree written by an earlier run.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        if not (root / "splits").is_dir():
            started = time.perf_counter()
            write_synthetic_videos(
                root, height=256, width=456, train_per_class=2, segment_frames=(40, 90)
            )
            print(f"wrote 256x456 synthetic videos in {time.perf_counter() - started:.0f} s")
        print(f"torch threads in the main process: {torch.get_num_threads()}")
        decode, transform = stage_rates(root, 16)
        print(
            f"in-process, per clip: decode 48 JPEGs {decode:.1f} clips/s, transforms {transform:.1f} clips/s"
        )
        rates = {}
        for workers in [int(w) for w in args.workers.split(",")]:
            rates[workers] = clips_per_second(root, workers, args.batches, args.batch)
        base = rates[min(rates)]
        for workers, rate in rates.items():
            print(
                f"workers={workers}: {rate:.1f} clips/s (x{rate / base:.2f} vs workers={min(rates)})"
            )


if __name__ == "__main__":
    main()
