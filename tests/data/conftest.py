"""Fixtures of the data tests: one tiny synthetic EPIC video tree per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmcl.data.synth_video import SyntheticVideos, write_synthetic_videos

TINY_VIDEOS = {
    "height": 32,
    "width": 32,
    "train_per_class": 1,
    "test_per_class": 1,
    "segment_frames": (10, 40),
    "seed": 3,
}


def write_tiny_videos(out: Path) -> SyntheticVideos:
    return write_synthetic_videos(out, **TINY_VIDEOS)


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory) -> SyntheticVideos:
    """Read-only: tests that damage frames work on a copy."""
    return write_tiny_videos(tmp_path_factory.mktemp("tiny_videos"))
