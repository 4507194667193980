"""Video mode: an empty annotation split is refused before any model or bank is built."""

from __future__ import annotations

import shutil

import pytest

from cmcl.config import RunConfig
from cmcl.data import epic
from cmcl.engine import fit


@pytest.mark.parametrize(
    ("domain", "split", "name"), [("D1", "train", "target_train"), ("D1", "test", "target_test")]
)
def test_an_empty_annotation_split_is_refused_in_video_mode(
    tiny_videos, tmp_path, domain, split, name
):
    root = tmp_path / "videos"
    shutil.copytree(tiny_videos.root / "splits", root / "splits")
    pickle = root / "splits" / f"{domain}_{split}.pkl"
    epic.load_split(pickle).iloc[:0].to_pickle(pickle)
    config = RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": "D2-D1",
            "method": "cmco",
            "model.backbone": "i3d",
            "data.root": str(root),
            "data.loader_workers": 0,
        }
    )
    with pytest.raises(ValueError) as info:
        fit(config)
    message = str(info.value)
    pickle_path = root / "splits" / f"{domain}_{split}.pkl"
    assert message.startswith(f"{name} ({domain} {split}) has no segments in {pickle_path}: ")
    assert f"cmcl data check --benchmark epic --root {root}" in message
