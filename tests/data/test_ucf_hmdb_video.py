"""The UCF <-> HMDB video path: TA3N list files + TSN-style frame folders."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cmcl.config import RunConfig
from cmcl.data.check import check_frames
from cmcl.data.video import build_video_pair_data

LISTS = {("ucf101", "train"), ("ucf101", "val"), ("hmdb51", "train"), ("hmdb51", "val")}


def _jpeg(value: int, shape) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ta3n_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ta3n")
    rgb, grey = _jpeg(90, (16, 16, 3)), _jpeg(128, (16, 16))
    for dataset, split in LISTS:
        lines = []
        for label in range(4):
            folder = f"{dataset}/{split}/video_{label}"
            frames = 12 + label
            (root / folder).mkdir(parents=True)
            for n in range(1, frames + 1):
                (root / folder / f"img_{n:05d}.jpg").write_bytes(rgb)
                for xy in "xy":
                    (root / folder / f"flow_{xy}_{n:05d}.jpg").write_bytes(grey)
            lines.append(f"{folder} {frames} {label * 3}")
        splits = root / "lists"
        splits.mkdir(exist_ok=True)
        # CRLF and a trailing blank line, as such files come.
        (splits / f"list_{dataset}_{split}_hmdb_ucf.txt").write_text(
            "\r\n".join(lines) + "\r\n\r\n"
        )
    return root


def test_check_ucf_hmdb(ta3n_tree, tmp_path):
    report = check_frames("ucf-hmdb", ta3n_tree, ta3n_tree / "lists")
    assert report.passed and report.total.segments == 16
    # Stride 1, flow at the RGB rate: every frame of every video, img + flow_x + flow_y.
    assert report.frames_checked == 4 * sum(3 * (12 + label) for label in range(4))
    missing = ta3n_tree / "hmdb51" / "val" / "video_2" / "flow_y_00014.jpg"
    data = missing.read_bytes()
    missing.unlink()
    try:
        report = check_frames("ucf-hmdb", ta3n_tree, ta3n_tree / "lists")
        assert report.missing == [str(missing)]
        assert report.counts["H test"].missing == 1
    finally:
        missing.write_bytes(data)


def test_ucf_to_hmdb_batches(ta3n_tree):
    config = RunConfig.from_overrides(
        {
            "benchmark": "ucf-hmdb",
            "pair": "U-H",
            "model.backbone": "i3d",
            "data.root": str(ta3n_tree),
            "data.splits": str(ta3n_tree / "lists"),
            "data.crop_size": 14,
            "data.loader_workers": 0,
        }
    )
    data = build_video_pair_data(config)
    assert (data.info.source, data.info.target, data.info.num_classes) == ("U", "H", 12)
    assert data.info.source_labels.tolist() == [0, 3, 6, 9]
    batch = next(data.train_batches("source_train", batch_size=4, seed=0, stage=0, start_step=0))
    assert batch["rgb"].shape == (4, 3, 16, 14, 14) and batch["flow"].shape == (4, 2, 16, 14, 14)
    # Uniform frames: RGB 90 and flow 128 (no motion) whatever the crop and flip.
    torch.testing.assert_close(
        batch["rgb"], torch.full_like(batch["rgb"], 90 / 128 - 1), atol=2 / 128, rtol=0
    )
    torch.testing.assert_close(batch["flow"], torch.zeros_like(batch["flow"]), atol=2 / 128, rtol=0)
    test = next(data.eval_batches("target_test", batch_size=4))
    assert test["rgb"].shape == (4, 5, 3, 16, 14, 14) and test["label"].tolist() == [0, 3, 6, 9]
