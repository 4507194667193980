from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cmcl.config import RunConfig
from cmcl.data import clips, epic
from cmcl.data.video import ClipDataset, ClipRequest, build_video_pair_data


def _config(videos, **extra):
    return RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": "D2-D1",
            "model.backbone": "i3d",
            "data.root": str(videos.root),
            "data.crop_size": 28,
            "data.loader_workers": 0,
            **extra,
        }
    )


@pytest.fixture(scope="module")
def pair(tiny_videos):
    return build_video_pair_data(_config(tiny_videos))


def _first(data, split="source_train", *, seed=0, steps=2, start=0, batch=4):
    batches = data.train_batches(split, batch_size=batch, seed=seed, stage=0, start_step=start)
    return [next(batches) for _ in range(steps)]


def test_info(pair, tiny_videos):
    info = pair.info
    assert (info.benchmark, info.source, info.target) == ("epic", "D2", "D1")
    assert info.num_classes == 8
    assert info.sizes == {"source_train": 8, "target_train": 8, "target_test": 8, "source_val": 8}
    assert info.input_shapes == {"rgb": (3, 16, 28, 28), "flow": (2, 16, 28, 28)}
    labels = epic.load_domain_split(tiny_videos.splits, "D2", "train")["verb_class"].tolist()
    assert info.source_labels.tolist() == labels


def test_training_batches(pair):
    batch = _first(pair, steps=1)[0]
    assert batch["rgb"].shape == (4, 3, 16, 28, 28) and batch["rgb"].dtype == torch.float32
    assert batch["flow"].shape == (4, 2, 16, 28, 28) and batch["flow"].dtype == torch.float32
    assert batch["rgb"].min() >= -1 and batch["rgb"].max() < 1
    # A flipped u channel is negated, so +1 is reachable for flow.
    assert batch["flow"].abs().max() <= 1
    assert batch["label"].dtype == torch.long and batch["index"].dtype == torch.long
    assert batch["domain"] == "source"
    assert batch["label"].tolist() == [int(pair.info.source_labels[i]) for i in batch["index"]]
    assert len(set(batch["index"].tolist())) == 4


def test_deterministic_for_a_seed_and_resumable(pair, tiny_videos):
    a, b = _first(pair), _first(pair)
    for x, y in zip(a, b, strict=True):
        for key in ("rgb", "flow", "index"):
            assert torch.equal(x[key], y[key])
    other = _first(pair, seed=1)
    assert not torch.equal(a[0]["rgb"], other[0]["rgb"])
    resumed = _first(pair, start=1, steps=1)[0]
    assert torch.equal(resumed["rgb"], a[1]["rgb"]) and torch.equal(resumed["flow"], a[1]["flow"])
    # Worker processes read the same clips as the main process.
    workers = build_video_pair_data(_config(tiny_videos, **{"data.loader_workers": 2}))
    for x, y in zip(a, _first(workers), strict=True):
        assert torch.equal(x["rgb"], y["rgb"]) and torch.equal(x["flow"], y["flow"])


def test_global_rng_untouched(tiny_videos):
    data = build_video_pair_data(_config(tiny_videos, **{"data.loader_workers": 1}))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _first(data, steps=1)
    next(data.eval_batches("target_test", batch_size=2, windows="centre"))
    assert torch.equal(torch.rand(3), expected)


def test_evaluation_batches(pair):
    batches = list(pair.eval_batches("target_test", batch_size=3))
    assert [len(b["index"]) for b in batches] == [3, 3, 2]
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(8))
    first = batches[0]
    assert first["rgb"].shape == (3, 5, 3, 16, 28, 28) and first["flow"].shape == (
        3,
        5,
        2,
        16,
        28,
        28,
    )
    assert first["domain"] == "target"
    centre = next(pair.eval_batches("target_test", batch_size=3, windows="centre"))
    assert centre["rgb"].shape == (3, 3, 16, 28, 28)
    # The centre window is the middle one of the five test windows.
    assert torch.equal(centre["rgb"], first["rgb"][:, 2]) and torch.equal(
        centre["flow"], first["flow"][:, 2]
    )
    chosen = list(
        pair.eval_batches(
            "source_train", batch_size=8, windows="centre", indices=torch.tensor([1, 6])
        )
    )
    assert [b["index"].tolist() for b in chosen] == [[1, 6]]
    again = next(pair.eval_batches("target_test", batch_size=3))
    assert torch.equal(again["rgb"], first["rgb"])
    with pytest.raises(ValueError, match="windows must be 'test' or 'centre'"):
        next(pair.eval_batches("target_test", batch_size=3, windows="train"))


class _Recorder:
    """Stands in for frame decoding and the crop, recording what the dataset asks for."""

    def __init__(self, monkeypatch):
        self.frames, self.params = [], []
        monkeypatch.setattr(ClipDataset, "_read", self.read)
        original = clips.transforms.train_clip

        def train_clip(frames, params, *, size, flow):
            self.params.append(params)
            return original(frames, params, size=size, flow=flow)

        monkeypatch.setattr(clips.transforms, "train_clip", train_clip)

    def read(self, index, rgb, flow):
        self.frames.append((rgb.copy(), flow.copy()))
        return (
            torch.zeros((*rgb.shape, 32, 32, 3), dtype=torch.uint8),
            torch.zeros((*flow.shape, 32, 32, 2), dtype=torch.uint8),
        )


@pytest.mark.parametrize("synchronised", [True, False])
def test_synchronised_shares_window_crop_and_flip(tiny_videos, monkeypatch, synchronised):
    sampling = "synchronised" if synchronised else "independent"
    data = build_video_pair_data(_config(tiny_videos, sampling=sampling))
    dataset = data.datasets["source_train"]
    # The longest segment, so that flow = rgb // 2 holds only for a shared centre.
    row = int(np.argmax(dataset.segments.stop - dataset.segments.start))
    recorder = _Recorder(monkeypatch)
    for seed in range(12):
        dataset[ClipRequest(row, seed, "train")]
    same_window = [np.array_equal(f, r // 2) for r, f in recorder.frames]
    same_params = [recorder.params[i] == recorder.params[i + 1] for i in range(0, 24, 2)]
    if synchronised:
        assert all(same_window) and all(same_params)
    else:
        assert sum(same_window) < 12 and sum(same_params) <= 3


def test_missing_and_odd_frames(tiny_videos, tmp_path):
    import shutil

    root = tmp_path / "videos"
    shutil.copytree(tiny_videos.root, root)
    data = build_video_pair_data(_config(tiny_videos, **{"data.root": str(root)}))
    dataset = data.datasets["target_test"]
    table = dataset.segments
    fields = table.fields[0]
    start = int(table.start[0])
    path = dataset.layout.rgb_path(root, fields, start)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"missing frame of segment {table.ids[0]}"):
        dataset[ClipRequest(0, 0, "test")]
    Image.new("RGB", (20, 32)).save(path)
    with pytest.raises(
        ValueError, match=r"differ in size \(H, W\): .* is \(32, 20\), .* is \(32, 32\)"
    ):
        dataset[ClipRequest(0, 0, "test")]


def test_build_errors(tiny_videos, tmp_path):
    with pytest.raises(ValueError, match=r"needs data\.root"):
        build_video_pair_data(_config(tiny_videos, **{"data.root": None}))
    with pytest.raises(FileNotFoundError, match="no annotation directory"):
        build_video_pair_data(_config(tiny_videos, **{"data.root": str(tmp_path)}))
    with pytest.raises(ValueError, match="crop_size must be > 0"):
        _config(tiny_videos, **{"data.crop_size": 0})
