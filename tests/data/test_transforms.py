from __future__ import annotations

import pytest
import torch

from cmcl.data import transforms
from cmcl.data.transforms import SpatialParams, centre_clip, crop_box, sample_spatial, train_clip


def _frames(t=4, h=256, w=456, c=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, c), generator=generator, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("params", "box"),
    [
        (SpatialParams(0, 0, 0, False), (0, 100, 256, 256)),
        (SpatialParams(1, 1, 1, False), (0, 0, 224, 224)),
        (SpatialParams(2, 1, 4, False), (64, 232, 192, 224)),
        (SpatialParams(1, 2, 2, False), (0, 264, 224, 192)),
        (SpatialParams(2, 2, 3, True), (64, 0, 192, 192)),
        (SpatialParams(1, 0, 0, False), (16, 100, 224, 256)),
    ],
)
def test_crop_boxes_at_epic_size(params, box):
    # Sides 256, 224, 192 of EPIC's 256x456 frames, centre or a corner.
    assert crop_box(params, 256, 456) == box


def test_sampled_params_cover_the_choices():
    seen = {sample_spatial(torch.Generator().manual_seed(s)) for s in range(400)}
    assert {(p.height_scale, p.width_scale) for p in seen} == {
        (h, w) for h in range(3) for w in range(3) if abs(h - w) <= 1
    }
    assert {p.position for p in seen} == set(range(5))
    assert {p.flip for p in seen} == {False, True}
    a = sample_spatial(torch.Generator().manual_seed(11))
    assert a == sample_spatial(torch.Generator().manual_seed(11))


def test_train_clip_without_resize_is_an_exact_crop():
    frames = _frames()
    out = train_clip(frames, SpatialParams(1, 1, 4, False), size=224, flow=False)
    expected = frames[:, 32:256, 232:456].permute(3, 0, 1, 2).float() / 128 - 1
    assert out.shape == (3, 4, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_flip_negates_flow_u_only():
    frames = _frames(c=2)
    plain = train_clip(frames, SpatialParams(1, 1, 0, False), size=224, flow=True)
    flipped = train_clip(frames, SpatialParams(1, 1, 0, True), size=224, flow=True)
    torch.testing.assert_close(flipped[0], -plain[0].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(flipped[1], plain[1].flip(-1), rtol=0, atol=0)
    rgb = _frames()
    plain = train_clip(rgb, SpatialParams(1, 1, 0, False), size=224, flow=False)
    flipped = train_clip(rgb, SpatialParams(1, 1, 0, True), size=224, flow=False)
    torch.testing.assert_close(flipped, plain.flip(-1), rtol=0, atol=0)


def test_resize_to_crop_size():
    frames = torch.full((2, 256, 456, 3), 200, dtype=torch.uint8)
    out = train_clip(frames, SpatialParams(2, 1, 2, False), size=224, flow=False)
    assert out.shape == (3, 2, 224, 224)
    torch.testing.assert_close(out, torch.full_like(out, 200 / 128 - 1))
    small = train_clip(_frames(h=64, w=64), SpatialParams(0, 1, 0, True), size=56, flow=False)
    assert small.shape == (3, 4, 56, 56)


def test_scaling_range():
    values = (
        torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(1, 16, 16, 3).contiguous()
    )
    out = train_clip(values, SpatialParams(0, 0, 0, False), size=16, flow=False)
    assert out.min() == -1.0 and out.max() == 255 / 128 - 1 and out.max() < 1


def test_test_clip_is_the_centre_224_crop():
    frames = _frames()
    out = centre_clip(frames, size=224)
    expected = frames[:, 16:240, 116:340].permute(3, 0, 1, 2).float() / 128 - 1
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert centre_clip(frames, size=112).shape == (3, 4, 112, 112)
    assert transforms.TEST_SCALE * 256 == 224
