"""JPEG decode throughput per core of each installed decoder at EPIC's frame size.

Frames: synthetic 256x456 RGB frames (textured background, noise, a moving
square; cmcl.data.synth_video) and greyscale flow frames, JPEG quality 90.
Each decoder runs single-threaded in this process; the figure is frames/s
per core (best of ``--repeats`` timed loops of ``--frames`` decodes), and the
ratio is against PIL (``Image.open(...).convert(...)``), the baseline.

    python benchmarks/jpeg_decode.py [--frames 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import itertools
import time

import numpy as np
from PIL import Image

from cmcl.data.jpeg import FrameDecoder, available_decoders
from cmcl.data.synth_video import render_video

HEIGHT, WIDTH = 256, 456


def _encode(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def sample_frames(count: int, quality: int) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(0)
    segment = (1, 2 * count + 1, 3, np.array([100.0, 50.0]))
    rgb, flow = [], []
    for _, pixels, motion in render_video(
        [segment], 2 * count, shape=(HEIGHT, WIDTH), background=(110, 80, 70), rng=rng
    ):
        rgb.append(_encode(pixels, quality))
        if motion is not None:
            flow.append(_encode(motion[..., 0], quality))
    return rgb[:count], flow[:count]


def rate(decode, data: list[bytes], grey: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for blob in data:
            decode(blob, grey)
        best = min(best, time.perf_counter() - started)
    return len(data) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    rgb, flow = sample_frames(args.frames, args.quality)
    print(
        f"{args.frames} frames {HEIGHT}x{WIDTH}, quality {args.quality}: RGB "
        f"{np.mean([len(b) for b in rgb]) / 1024:.1f} KiB, flow {np.mean([len(b) for b in flow]) / 1024:.1f} KiB each"
    )
    decoders = available_decoders()
    rates = {}
    for name, decode in decoders.items():
        # Warm up (imports, codec tables) before timing.
        for blob, grey in itertools.product(rgb[:5], (False, True)):
            decode(blob, grey)
        rates[name] = (
            rate(decode, rgb, False, args.repeats),
            rate(decode, flow, True, args.repeats),
        )
    base_rgb, base_flow = rates["pil"]
    print(f"{'decoder':<12} {'RGB frames/s':>13} {'x PIL':>6} {'flow frames/s':>14} {'x PIL':>6}")
    for name, (r, f) in rates.items():
        print(f"{name:<12} {r:13.0f} {r / base_rgb:6.2f} {f:14.0f} {f / base_flow:6.2f}")
    chosen = FrameDecoder()
    print(f"chosen (auto): {chosen.name}")
    checked = rate(lambda b, g: chosen.decode(b, grey=g), rgb, False, args.repeats)
    print(f"chosen through FrameDecoder (with the end-marker check): {checked:.0f} RGB frames/s")


if __name__ == "__main__":
    main()
