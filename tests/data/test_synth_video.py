from __future__ import annotations

import numpy as np
from PIL import Image

from cmcl.data import epic
from cmcl.data.synth_video import write_synthetic_videos


def test_epic_layout_and_schema(tiny_videos):
    root = tiny_videos.root
    assert tiny_videos.sizes == {
        f"{d}_{s}": 8 for d in ("D1", "D2", "D3") for s in ("train", "test")
    }
    for (domain, _split), frame in epic.load_splits(tiny_videos.splits).items():
        assert len(frame) == 8 and sorted(frame["verb_class"]) == list(range(8))
        participant = epic.DOMAIN_PARTICIPANTS[domain]
        for video, rows in frame.groupby("video_id"):
            folder = root / "rgb" / participant / video
            rgb = sorted(p.name for p in folder.iterdir())
            # Frames 1..N, and flow at half rate: 1..N // 2 for each of u and v.
            assert rgb == [f"frame_{n:010d}.jpg" for n in range(1, len(rgb) + 1)]
            assert rows["stop_frame"].max() <= len(rgb)
            for uv in ("u", "v"):
                flow = sorted(p.name for p in (root / "flow" / participant / video / uv).iterdir())
                assert flow == [f"frame_{n:010d}.jpg" for n in range(1, len(rgb) // 2 + 1)]
    image = Image.open(root / "rgb" / "P08" / "P08_01" / "frame_0000000001.jpg")
    assert image.size == (32, 32) and image.mode == "RGB"
    flow = Image.open(root / "flow" / "P08" / "P08_01" / "u" / "frame_0000000001.jpg")
    assert flow.mode == "L"


def test_flow_shows_the_class_direction(tiny_videos):
    frame = epic.load_domain_split(tiny_videos.splits, "D1", "train")
    for label, (u_sign, v_sign) in {0: (1, 0), 2: (0, 1), 4: (-1, 0), 6: (0, -1)}.items():
        row = frame[frame["verb_class"] == label].iloc[0]
        middle = (row["start_frame"] + row["stop_frame"]) // 4  # a flow frame inside the segment
        folder = tiny_videos.root / "flow" / "P08" / row["video_id"]
        u, v = (
            np.asarray(Image.open(folder / c / f"frame_{middle:010d}.jpg"), dtype=float) - 128
            for c in ("u", "v")
        )
        strongest = lambda x: x.flat[np.abs(x).argmax()]  # noqa: E731
        # Square moving at 1.5 px/frame over 2 frames, gain 8: |displacement| = 24.
        for component, sign in ((u, u_sign), (v, v_sign)):
            if sign:
                assert np.sign(strongest(component)) == sign and abs(strongest(component)) > 18
            else:
                assert abs(strongest(component)) < 10


def test_deterministic_for_a_seed(tmp_path):
    options = {"height": 16, "width": 16, "train_per_class": 1, "segment_frames": (1, 2)}
    trees = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_synthetic_videos(tmp_path / name, seed=seed, **options)
        files = sorted(p for p in (tmp_path / name).rglob("*") if p.is_file())
        trees.append({p.relative_to(tmp_path / name): p.read_bytes() for p in files})
    assert trees[0] == trees[1]
    assert trees[0] != trees[2]
