"""Shared fixtures: a tiny random feature store and paths to ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmcl.data.benchmarks import EPIC_CLASSES
from cmcl.data.feature_store import write_meta, write_split

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    # Many tests read the real files in ../shared; without it they would fail one by
    # one (some at import), so say once what is missing instead.
    if not (SHARED / "data").is_dir() or not (SHARED / "paper" / "tables.json").is_file():
        raise pytest.UsageError(
            f"the tests read the shared files at {SHARED} (data/ and paper/tables.json), "
            "which are not there: run them from a checkout that sits beside shared/"
        )


def write_tiny_store(root: Path, *, dim: int = 16, windows: int = 3, seed: int = 0) -> Path:
    """Three EPIC-like domains with class-dependent random features (learnable, small)."""
    rng = np.random.default_rng(seed)
    classes = len(EPIC_CLASSES)
    prototypes = rng.normal(size=(classes, dim))
    sizes = {"train": 48, "test": 24}
    for d, domain in enumerate(("D1", "D2", "D3")):
        shift = rng.normal(scale=0.5, size=dim) * d
        for split, n in sizes.items():
            labels = np.arange(n) % classes
            base = prototypes[labels] + shift
            noise = rng.normal(scale=0.7, size=(n, windows, dim))
            rgb = np.maximum(base[:, None, :] + noise, 0)
            flow = np.maximum(base[:, None, :] + rng.normal(scale=0.7, size=(n, windows, dim)), 0)
            write_split(
                root,
                domain=domain,
                split=split,
                segment_ids=[f"{domain}-{split}-{i}" for i in range(n)],
                labels=labels,
                rgb=rgb,
                flow=flow,
            )
    write_meta(
        root,
        {
            "benchmark": "synthetic-epic",
            "class_names": list(EPIC_CLASSES),
            "domains": ["D1", "D2", "D3"],
            "feature_dim": dim,
        },
    )
    return root


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    return write_tiny_store(tmp_path_factory.mktemp("tiny_store"))


def tiny_overrides(store: Path, **extra) -> dict:
    """A seconds-long run on the tiny store."""
    return {
        "benchmark": "synthetic-epic",
        "pair": "D2-D1",
        "data.features": str(store),
        "model.feature_dim": 32,
        "model.proj_hidden": 32,
        "model.proj_dim": 8,
        "train.warmup_steps": 6,
        "train.steps": 8,
        "train.lr_step": 4,
        "train.eval_every": 2,
        "train.checkpoint_every": 4,
        "train.batch_source": 8,
        "train.batch_target": 8,
        "train.eval_batch": 16,
        "train.dump_features": 5,
        "train.eval_last_k": 3,
        **extra,
    }


# -- video mode (tests/data): one tiny synthetic EPIC video tree per session --------------
TINY_VIDEOS = {
    "height": 32,
    "width": 32,
    "train_per_class": 1,
    "test_per_class": 1,
    "segment_frames": (10, 40),
    "seed": 3,
}


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory):
    """Frames + split pickles in the MM-SADA layout; read-only (damage a copy)."""
    from cmcl.data.synth_video import write_synthetic_videos

    return write_synthetic_videos(tmp_path_factory.mktemp("tiny_videos"), **TINY_VIDEOS)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny-convolution tests (I3D on 16x16 clips).

    On a shared 2-core machine OpenMP barriers between two threads can stall far
    longer than such small kernels take; one thread was several times faster.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
