"""Window samplers against hand-computed frame numbers (SPEC section 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcl.data.windows import (
    EPIC_WINDOW,
    UCF_HMDB_WINDOW,
    TestWindowSampler,
    TrainWindowSampler,
    WindowSpec,
    centre_bounds,
    flow_frames,
    reachable_frames,
    rgb_frames,
)


def frames(first, last, step=1):
    return list(range(first, last + 1, step))


def test_epic_long_segment():
    assert centre_bounds(EPIC_WINDOW, 100, 200) == (116, 185)
    # Lowest centre: c-16 .. c+14 at stride 2 starts at the segment's first frame.
    assert rgb_frames(EPIC_WINDOW, np.array(116), 100, 200).tolist() == frames(100, 130, 2)
    assert flow_frames(EPIC_WINDOW, np.array(116), 100, 200).tolist() == frames(50, 65)
    assert rgb_frames(EPIC_WINDOW, np.array(185), 100, 200).tolist() == frames(169, 199, 2)
    assert flow_frames(EPIC_WINDOW, np.array(185), 100, 200).tolist() == frames(84, 99)


def test_flow_half_rate_gives_16_consecutive_frames():
    # Odd centre: RGB 101, 103, ..., 131 -> flow 50, 51, ..., 65.
    assert rgb_frames(EPIC_WINDOW, np.array(117), 100, 200).tolist() == frames(101, 131, 2)
    assert flow_frames(EPIC_WINDOW, np.array(117), 100, 200).tolist() == frames(50, 65)


def test_epic_short_segment_falls_back_and_clamps():
    # 11 frames: [start+16, stop+1-16] is empty, so centres come from [start, stop].
    assert centre_bounds(EPIC_WINDOW, 100, 110) == (100, 110)
    # Centre 105: RGB 89, 91, ..., 119 clamped to [100, 110].
    expected_rgb = [100] * 6 + [101, 103, 105, 107, 109] + [110] * 5
    assert rgb_frames(EPIC_WINDOW, np.array(105), 100, 110).tolist() == expected_rgb
    assert flow_frames(EPIC_WINDOW, np.array(105), 100, 110).tolist() == (
        [50] * 6 + [50, 51, 52, 53, 54] + [55] * 5
    )
    # A one-frame segment repeats its frame.
    assert rgb_frames(EPIC_WINDOW, np.array(7), 7, 7).tolist() == [7] * 16
    assert flow_frames(EPIC_WINDOW, np.array(7), 7, 7).tolist() == [3] * 16


def test_segment_at_the_first_frames():
    # Frames are numbered from 1: frame 0 and flow frame 0 do not exist.
    assert centre_bounds(EPIC_WINDOW, 0, 40) == (16, 25)
    assert rgb_frames(EPIC_WINDOW, np.array(16), 0, 40).tolist() == [1, *frames(2, 30, 2)]
    assert flow_frames(EPIC_WINDOW, np.array(16), 0, 40).tolist() == [1, *frames(1, 15)]
    assert centre_bounds(EPIC_WINDOW, 1, 40) == (17, 25)
    assert rgb_frames(EPIC_WINDOW, np.array(17), 1, 40).tolist() == frames(1, 31, 2)
    assert flow_frames(EPIC_WINDOW, np.array(17), 1, 40).tolist() == [1, *frames(1, 15)]


def test_ucf_hmdb_consecutive_frames():
    assert centre_bounds(UCF_HMDB_WINDOW, 1, 100) == (9, 93)
    assert rgb_frames(UCF_HMDB_WINDOW, np.array(9), 1, 100).tolist() == frames(1, 16)
    assert rgb_frames(UCF_HMDB_WINDOW, np.array(93), 1, 100).tolist() == frames(85, 100)
    assert flow_frames(UCF_HMDB_WINDOW, np.array(93), 1, 100).tolist() == frames(85, 100)
    # A 10-frame video: centre 5 reads -3..12, clamped to 1..10.
    assert (
        rgb_frames(UCF_HMDB_WINDOW, np.array(5), 1, 10).tolist()
        == [1] * 5 + frames(2, 10) + [10] * 2
    )


def test_test_windows_are_equidistant():
    sampler = TestWindowSampler(EPIC_WINDOW, num_windows=5)
    # Range 116..185 (69 wide): centres of five equal parts, 116 + floor(69 * (2i+1) / 10).
    assert sampler.centres(100, 200).tolist() == [122, 136, 150, 164, 178]
    clips = sampler(100, 200)
    assert clips.rgb.shape == (5, 16) and clips.flow.shape == (5, 16)
    assert clips.rgb[2].tolist() == frames(134, 164, 2)
    assert clips.flow[2].tolist() == frames(67, 82)
    assert TestWindowSampler(EPIC_WINDOW, num_windows=1).centres(100, 200).tolist() == [150]
    assert TestWindowSampler(EPIC_WINDOW, num_windows=5).centres(100, 110).tolist() == [
        101,
        103,
        105,
        107,
        109,
    ]


def test_reachable_frames_cover_every_window():
    reach = reachable_frames(EPIC_WINDOW, 100, 200)
    assert reach.rgb.tolist() == frames(100, 199)
    assert reach.flow.tolist() == frames(50, 99)
    reach = reachable_frames(EPIC_WINDOW, 100, 110)
    assert reach.rgb.tolist() == frames(100, 110)
    assert reach.flow.tolist() == frames(50, 55)


def _draws(seed, low, high, count):
    generator = torch.Generator().manual_seed(seed)
    return [int(torch.randint(low, high + 1, (1,), generator=generator)) for _ in range(count)]


def test_independent_windows_use_two_draws():
    sampler = TrainWindowSampler(EPIC_WINDOW, synchronised=False)
    for seed in range(20):
        clip = sampler(100, 200, torch.Generator().manual_seed(seed))
        rgb_centre, flow_centre = _draws(seed, 116, 185, 2)
        assert clip.rgb.tolist() == frames(rgb_centre - 16, rgb_centre + 14, 2)
        assert clip.flow.tolist() == frames((flow_centre - 16) // 2, (flow_centre - 16) // 2 + 15)


def test_synchronised_windows_share_one_centre():
    sampler = TrainWindowSampler(EPIC_WINDOW, synchronised=True)
    differ = 0
    for seed in range(20):
        clip = sampler(100, 200, torch.Generator().manual_seed(seed))
        (centre,) = _draws(seed, 116, 185, 1)
        assert clip.rgb.tolist() == frames(centre - 16, centre + 14, 2)
        assert clip.flow.tolist() == (clip.rgb // 2).tolist()
        independent = TrainWindowSampler(EPIC_WINDOW, synchronised=False)(
            100, 200, torch.Generator().manual_seed(seed)
        )
        differ += independent.flow.tolist() != (independent.rgb // 2).tolist()
    assert differ >= 15


def test_training_centres_cover_the_range():
    sampler = TrainWindowSampler(UCF_HMDB_WINDOW, synchronised=True)
    generator = torch.Generator().manual_seed(0)
    firsts = {int(sampler(1, 30, generator).rgb[0]) for _ in range(400)}
    # Centres 9..23 -> first frames 1..15.
    assert firsts == set(range(1, 16))


def test_invalid():
    with pytest.raises(ValueError, match="stop frame 5 is before its start frame 9"):
        centre_bounds(EPIC_WINDOW, 9, 5)
    with pytest.raises(ValueError, match="must be >= 1"):
        WindowSpec(frames=0)
    with pytest.raises(ValueError, match="num_windows must be >= 1"):
        TestWindowSampler(EPIC_WINDOW, num_windows=0)
