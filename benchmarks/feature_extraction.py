"""CPU cost of feature extraction per clip: `cmcl features extract`'s shard worker at full size.

Synthetic EPIC-layout videos at 256x456 (written once to a temporary
directory, or --root) go through ``ShardWorker.run`` (cmcl.data.extract): 5
equidistant windows per segment, centre crop 224, RGB and flow I3D (random
weights: the cost does not depend on them), fp32 on CPU. Reported per window
(one RGB + one flow clip of 16x224x224) and per segment; baseline in the same
run: the two I3D forwards alone on random clips of the same shape, so the
ratio shows what reading and decoding the frames add.

    PYTHONPATH=. python benchmarks/feature_extraction.py [--segments 2] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cmcl.data.extract import ExtractSettings, ShardWorker, plan_extraction
from cmcl.data.synth_video import write_synthetic_videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=2, help="segments timed (x5 windows)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--root", default=None, help="a 256x456 tree from benchmarks/clip_loading")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        if not (root / "splits").is_dir():
            write_synthetic_videos(
                root, height=256, width=456, train_per_class=2, domains=("D1", "D2")
            )
        settings = ExtractSettings(
            benchmark="epic",
            root=str(root),
            domains=("D1",),
            random_seed=0,
            shard_size=args.segments,
            batch_size=1,
            loader_workers=0,
            device="cpu",
        )
        plan = plan_extraction(settings)
        shard = plan.shards[0]
        windows = (shard.stop - shard.start) * settings.windows
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            worker = ShardWorker(settings)
            worker.run(plan.shards[1], plan.segments(plan.shards[1]))  # warm-up
            start = time.perf_counter()
            worker.run(shard, plan.segments(shard))
            full = (time.perf_counter() - start) / windows
            rgb = torch.rand(settings.batch_size * 5, 3, 16, 224, 224) * 2 - 1
            flow = torch.rand(settings.batch_size * 5, 2, 16, 224, 224) * 2 - 1
            start = time.perf_counter()
            for _ in range(windows // 5):
                worker.model.features(rgb, flow)
            forward = (time.perf_counter() - start) / windows
            print(
                f"threads={threads}: extraction {full:.2f} s per window (RGB+flow clip), "
                f"{5 * full:.1f} s per segment of 5 windows; I3D forwards alone {forward:.2f} "
                f"s per window; extraction / forwards x{full / forward:.2f}"
            )


if __name__ == "__main__":
    main()
