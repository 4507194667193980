"""Feature extraction on tiny synthetic videos: the store, its values, resuming."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from cmcl.config import RunConfig
from cmcl.data import epic, store_parts, transforms
from cmcl.data.extract import ExtractSettings, Shard, extract_store, local_mapper, plan_extraction
from cmcl.data.feature_store import FeaturePairData, read_split
from cmcl.data.frames import LAYOUTS
from cmcl.engine import fit
from cmcl.models.i3d_extractor import random_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

# 32x32 frames; a 16-pixel crop keeps the CPU I3D cheap.
SMALL = {"windows": 2, "crop_size": 16, "random_seed": 0, "loader_workers": 0, "batch_size": 3}


def _settings(videos, **extra) -> ExtractSettings:
    return ExtractSettings(benchmark="epic", root=str(videos.root), **{**SMALL, **extra})


@pytest.fixture(scope="module")
def store(tiny_videos, tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "store"
    settings = _settings(tiny_videos, domains=("D1", "D2"), shard_size=5)
    report = extract_store(settings, path, progress=False)
    assert report.computed == report.shards == 8  # per domain: 8 train -> 2 shards, 8 test -> 2
    return path


def test_store_layout_and_meta(store, tiny_videos):
    assert sorted(p.name for p in store.iterdir()) == [
        "D1_test.parquet",
        "D1_train.parquet",
        "D2_test.parquet",
        "D2_train.parquet",
        "meta.json",
    ]  # parts/ is gone once the store is complete
    meta = json.loads((store / "meta.json").read_text())
    assert meta["benchmark"] == "epic" and meta["domains"] == ["D1", "D2"]
    assert meta["feature_dim"] == 1024 and meta["windows"] == 2
    assert meta["extracted_on"] == ["cpu:fp32"]
    assert meta["extraction"]["weights"]["rgb"] == {"random_seed": 0}
    frame = epic.load_domain_split(tiny_videos.splits, "D1", "train")
    split = read_split(store, "D1", "train")
    assert split.rgb.shape == split.flow.shape == (8, 2, 1024)
    assert list(split.segment_ids) == [str(u) for u in frame["uid"]]
    assert split.labels.tolist() == frame["verb_class"].tolist()
    extra = pq.read_table(store / "D1_train.parquet").to_pydict()
    assert extra["video_id"] == frame["video_id"].tolist()
    assert extra["start_frame"] == frame["start_frame"].tolist()
    assert extra["stop_frame"] == frame["stop_frame"].tolist()
    assert torch.isfinite(split.rgb).all() and torch.isfinite(split.flow).all()
    assert not torch.equal(split.rgb[:, 0], split.rgb[:, 1])  # two distinct windows


def _hand_clip(videos, row: dict, centre: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window at RGB frame ``centre`` by hand: frames c-16..c+14 step 2, flow n // 2, clamped."""
    layout = LAYOUTS["mmsada"]
    fields = {"participant": row["participant_id"], "video": row["video_id"]}
    start, stop = row["start_frame"], row["stop_frame"]
    rgb_numbers = [min(max(n, start), stop) for n in range(centre - 16, centre + 16, 2)]
    flow_numbers = [
        min(max(n // 2, start // 2), stop // 2) for n in range(centre - 16, centre + 16, 2)
    ]

    def load(path, mode):
        return np.asarray(Image.open(path).convert(mode))

    rgb = np.stack([load(layout.rgb_path(videos.root, fields, n), "RGB") for n in rgb_numbers])
    flow = np.stack(
        [
            np.stack(
                [load(layout.flow_path(videos.root, fields, n, uv), "L") for uv in ("u", "v")], -1
            )
            for n in flow_numbers
        ]
    )
    return (
        transforms.centre_clip(torch.from_numpy(rgb), size=size),
        transforms.centre_clip(torch.from_numpy(flow), size=size),
    )


@pytest.mark.parametrize(("split", "row", "window"), [("test", 5, 1), ("train", 0, 0)])
def test_feature_equals_i3d_on_the_clip(store, tiny_videos, split, row, window):
    frame = epic.load_domain_split(tiny_videos.splits, "D2", split)
    segment = frame.iloc[row].to_dict()
    stored = pq.read_table(store / f"D2_{split}.parquet").to_pydict()
    centre = stored["window_centres"][row][window]
    # Centres by hand: middles of 2 equal parts of [start + 16, stop + 1 - 16] (or [start, stop]).
    low, high = segment["start_frame"] + 16, segment["stop_frame"] + 1 - 16
    if low > high:
        low, high = segment["start_frame"], segment["stop_frame"]
    assert centre == low + ((high - low) * (2 * window + 1)) // 4
    rgb, flow = _hand_clip(tiny_videos, segment, centre, SMALL["crop_size"])
    with torch.no_grad():
        expected = {
            "rgb": random_backbone("rgb", 0).eval()(rgb[None])[0],
            "flow": random_backbone("flow", 0).eval()(flow[None])[0],
        }
    features = read_split(store, "D2", split)
    for modality in ("rgb", "flow"):
        got = getattr(features, modality)[row, window]
        scale = expected[modality].abs().max()
        assert scale > 0
        torch.testing.assert_close(got, expected[modality], rtol=1e-4, atol=1e-4 * float(scale))
    assert not torch.allclose(expected["rgb"], features.rgb[row, 1 - window], rtol=1e-3, atol=0)


def test_feature_mode_trains_on_the_store(store):
    data = FeaturePairData(store, benchmark="epic", source="D2", target="D1", synchronised=False)
    assert data.info.input_shapes == {"rgb": (1024,), "flow": (1024,)}
    assert data.info.class_names[:2] == ("take", "put")
    config = RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": "D2-D1",
            "method": "cmco",
            "data.features": str(store),
            "train.warmup_steps": 3,
            "train.steps": 3,
            "train.batch_source": 4,
            "train.batch_target": 4,
            "train.eval_every": 3,
            "train.dump_features": 0,
        }
    )
    result = fit(config)
    assert [r["stage"] for r in result.history] == ["warmup", "adapt"]
    assert all(math.isfinite(result.history[-1][k]) for k in result.history[-1] if "loss" in k)


def test_resume_computes_only_missing_shards(tiny_videos, tmp_path):
    settings = _settings(tiny_videos, domains=("D1",), windows=1, shard_size=4)
    first: dict[str, object] = {}

    def crashing(plan, shards):
        for shard, table in local_mapper(plan, shards[:3]):
            first[shard.name] = table
            yield shard, table
        raise KeyboardInterrupt  # the run is killed after three shards

    path = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        extract_store(settings, path, mapper=crashing, progress=False)
    parts = sorted(p.relative_to(path).as_posix() for p in (path / "parts").rglob("*.parquet"))
    assert parts == ["parts/D1_test/00000.parquet", "parts/D1_train/00000.parquet",
                     "parts/D1_train/00001.parquet"]  # fmt: skip
    assert not (path / "meta.json").exists()
    with pytest.raises(FileNotFoundError, match=r"no meta\.json"):  # not trainable yet
        FeaturePairData(path, benchmark="epic", source="D1", target="D1", synchronised=False)
    mtimes = {p: (path / p).stat().st_mtime_ns for p in parts}
    second: list[Shard] = []

    def counting(plan, shards):
        assert {p: (path / p).stat().st_mtime_ns for p in parts} == mtimes  # untouched
        second.extend(shards)
        yield from local_mapper(plan, shards)

    report = extract_store(settings, path, mapper=counting, progress=False)
    assert [s.name for s in second] == ["D1_test-00001"]
    assert (report.computed, report.skipped, report.shards) == (1, 3, 4)
    train = pq.read_table(path / "D1_train.parquet")
    assert train["rgb"].to_pylist()[:4] == first["D1_train-00000"]["rgb"].to_pylist()
    # Complete: nothing to do; other settings: refused, naming what changed.
    again = extract_store(settings, path, mapper=counting, progress=False)
    assert (again.computed, again.skipped) == (0, 4) and len(second) == 1
    with pytest.raises(ValueError, match="windows: 1 -> 2"):
        extract_store(settings.replace(windows=2), path, progress=False)


def test_partial_store_refuses_other_settings(tiny_videos, tmp_path):
    settings = _settings(tiny_videos, domains=("D3",), shard_size=100)
    plan = plan_extraction(settings)
    assert store_parts.begin(plan, tmp_path) is False
    with pytest.raises(
        ValueError, match=r"a partial extraction made with other settings.*crop_size"
    ):
        store_parts.begin(plan_extraction(settings.replace(crop_size=24)), tmp_path)
    assert [s.name for s in store_parts.pending(plan, tmp_path)] == [
        "D3_train-00000",
        "D3_test-00000",
    ]


def test_settings_errors(tiny_videos, tmp_path):
    with pytest.raises(ValueError, match="no rgb I3D checkpoint"):
        ExtractSettings(benchmark="epic", root=str(tiny_videos.root))
    with pytest.raises(FileNotFoundError, match="no such file"):
        ExtractSettings(benchmark="epic", root="x", i3d_rgb=str(tmp_path / "a.pt"), random_seed=0)
    with pytest.raises(ValueError, match="unknown domain 'D9'"):
        ExtractSettings(benchmark="epic", root="x", domains=("D9",), random_seed=0)
    with pytest.raises(ValueError, match="no frames to extract"):
        ExtractSettings(benchmark="synthetic-epic", root="x", random_seed=0)
    with pytest.raises(ValueError, match="windows must be >= 1"):
        ExtractSettings(benchmark="epic", root="x", windows=0, random_seed=0)
