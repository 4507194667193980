"""The data side of benchmarks/gpu_check.py: real-size synthetic EPIC videos through the video path.

``start()`` writes synthetic EPIC-layout videos at EPIC's frame size (256x456,
JPEG quality 90; cmcl.data.synth_video) for D1 and D2, one background process
per domain, into a temporary directory, so that they are ready by the time
the GPU measurements end. Then:

- ``make_loader()``: training batches of ``VideoPairData`` (D2 source, 16 clips
  of 16x224x224 per batch, multi-scale crop and flip, DataLoader workers = CPU
  count): what ``measure_pipeline`` times.
- ``fit_check(device)``: a short end-to-end ``cmcl.engine.fit`` in video mode
  (cmco, batch 16+16, bf16 autocast and channels-last on CUDA, both stages,
  evaluations, bank initialisation), timed step by step.

Both need numpy, pandas (with python-dateutil and tzdata) and Pillow; simplejpeg
is optional (the faster decoder; PIL otherwise); pyarrow, tqdm and click are
not needed here. ``missing_packages()`` names what is absent so that gpu_check
can skip this part and say why instead of failing. On a machine with torch
alone and no network, wheels for its Python carried in a folder do it (35 MB
for CPython 3.12 manylinux x86_64), e.g. in the repository's ignored ``.whl/``:

    pip install --no-index --find-links .whl numpy pandas python-dateutil tzdata pillow simplejpeg

The state (videos root, scale) is per process: ``start()`` writes once.
"""

from __future__ import annotations

import atexit
import importlib.util
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REQUIRED = {"numpy": "numpy", "pandas": "pandas", "dateutil": "python-dateutil", "PIL": "pillow"}
OPTIONAL = {"simplejpeg": "simplejpeg", "pyarrow": "pyarrow", "tqdm": "tqdm"}
DOMAINS = ("D1", "D2")


@dataclass(frozen=True)
class Scale:
    videos: dict
    crop_size: int
    batch: int
    loader_workers: int
    fit_steps: int
    fit_batch: int


FULL = Scale(
    videos={
        "height": 256,
        "width": 456,
        "train_per_class": 2,  # 16 training segments per domain: one batch of 16
        "test_per_class": 1,
        "segment_frames": (34, 60),  # full 32-frame windows, a few seconds of writing per domain
    },
    crop_size=224,
    batch=16,
    loader_workers=os.cpu_count() or 1,
    fit_steps=12,
    fit_batch=16,
)
# CPU smoke run: everything tiny (a 16x16 crop keeps the CPU I3D to seconds).
SMOKE = Scale(
    videos={"height": 32, "width": 32, "train_per_class": 1, "segment_frames": (34, 40)},
    crop_size=16,
    batch=4,
    loader_workers=1,
    fit_steps=1,
    fit_batch=2,
)
_state: dict = {}


def missing_packages(optional: bool = False) -> list[str]:
    """pip names of the packages the data checks need (``optional``: the nice-to-have ones)."""
    wanted = OPTIONAL if optional else REQUIRED
    return [pip for module, pip in wanted.items() if importlib.util.find_spec(module) is None]


def _write(root: str, domain: str, videos: dict) -> None:
    from cmcl.data.synth_video import write_synthetic_videos

    write_synthetic_videos(root, domains=(domain,), seed=0, **videos)


def start(smoke: bool = False) -> None:
    """Begin writing the videos in the background (idempotent; no-op when packages are missing)."""
    if _state or missing_packages():
        return
    scale = SMOKE if smoke else FULL
    root = tempfile.mkdtemp(prefix="cmcl-gpu-check-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    # fork would copy a CUDA context into the writers; they never touch CUDA, but spawn is safe.
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_write, args=(root, d, scale.videos), daemon=True) for d in DOMAINS
    ]
    for writer in writers:
        writer.start()
    _state.update(root=Path(root), writers=writers, started=time.perf_counter(), scale=scale)


def videos() -> Path:
    """The videos' root, once written; raises RuntimeError naming missing packages or a failure."""
    missing = missing_packages()
    if missing:
        raise RuntimeError(f"missing Python packages {missing}: pip install {' '.join(missing)}")
    start()
    for writer in _state["writers"]:
        writer.join()
        if writer.exitcode != 0:
            raise RuntimeError(f"writing the synthetic videos failed (exit code {writer.exitcode})")
    _state.setdefault("write_s", time.perf_counter() - _state["started"])
    return _state["root"]


def _config(**extra):
    from cmcl.config import RunConfig

    root = videos()
    return RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": "D2-D1",
            "model.backbone": "i3d",
            "data.root": str(root),
            "data.crop_size": _state["scale"].crop_size,
            **extra,
        }
    )


def make_loader():
    """Endless training batches of the source split (FULL: 16 clips, workers = CPU count)."""
    from cmcl.data.video import build_video_pair_data

    config = _config()
    scale = _state["scale"]
    data = build_video_pair_data(config.replace({"data.loader_workers": scale.loader_workers}))
    return data.train_batches("source_train", batch_size=scale.batch, seed=0, stage=0, start_step=0)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fit_check(device: str = "cuda") -> dict:
    """Time a short video-mode cmco run (FULL: 12 warm-up + 12 adaptation steps of 16+16 clips)."""
    from cmcl.data.loaders import resolve_workers
    from cmcl.engine import Reporter, fit

    class Clock(Reporter):
        def __init__(self) -> None:
            self.steps: list[float] = []

        def on_step(self, *, global_step: int) -> None:
            self.steps.append(time.perf_counter())

    videos()
    scale = _state["scale"]
    n = scale.fit_steps
    config = _config(
        method="cmco",
        **{
            "train.device": device,
            "train.warmup_steps": n,
            "train.steps": n,
            "train.eval_every": n,
            "train.batch_source": scale.fit_batch,
            "train.batch_target": scale.fit_batch,
            "train.dump_features": 0,
        },
    )
    clock = Clock()
    began = time.perf_counter()
    result = fit(config, clock)
    total = time.perf_counter() - began
    # Gaps between steps inside each stage, without the first 3 (cuDNN autotuning, loader start);
    # the gap across the stage boundary holds an evaluation and the bank initialisation.
    gaps = [b - a for a, b in zip(clock.steps, clock.steps[1:], strict=False)]
    warmup, adapt = gaps[3 : n - 1], gaps[n + 3 :]
    losses = [v for row in result.history for k, v in row.items() if k.startswith("loss_")]
    return {
        "steps": 2 * n,
        "total_s": total,
        "first_step_s": clock.steps[0] - began if clock.steps else float("nan"),
        "warmup_step_s": _median(warmup),
        "adapt_step_s": _median(adapt),
        "adapt_clips_per_s": 2 * scale.fit_batch / _median(adapt) if adapt else float("nan"),
        "loader_workers": resolve_workers(config.data.loader_workers),
        "precision": config.train.precision,
        "finite_losses": all(v == v and abs(v) != float("inf") for v in losses),
        "target_acc": result.summary["target_acc"],
        "videos_write_s": _state.get("write_s", float("nan")),
    }
