from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cmcl.data.jpeg import CorruptFrameError, FrameDecoder, available_decoders, decode_pil


def _jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:80]
    rgb = np.stack([xx * 3, yy * 5, (xx + yy) * 2], -1) + rng.normal(0, 10, (48, 80, 3))
    grey = 128 + 40 * np.sin(xx / 6.0) + rng.normal(0, 4, (48, 80))
    return _jpeg(np.clip(rgb, 0, 255).astype(np.uint8)), _jpeg(
        np.clip(grey, 0, 255).astype(np.uint8)
    )


@pytest.mark.parametrize("name", list(available_decoders()))
def test_every_decoder_agrees_with_pil(images, name):
    rgb, grey = images
    decoder = FrameDecoder(name)
    for data, is_grey, shape in ((rgb, False, (48, 80, 3)), (grey, True, (48, 80))):
        out = decoder.decode(data, grey=is_grey)
        reference = decode_pil(data, is_grey)
        assert out.shape == shape and out.dtype == np.uint8
        # Same libjpeg-turbo IDCT in every backend; colour conversion may round differently.
        assert np.abs(out.astype(int) - reference.astype(int)).max() <= 2
    # Cross-mode: a colour file asked for as grey and a grey file as colour.
    assert decoder.decode(rgb, grey=True).shape == (48, 80)
    assert decoder.decode(grey, grey=False).shape == (48, 80, 3)


@pytest.mark.parametrize("name", list(available_decoders()))
def test_truncated_and_garbage_are_corrupt(images, name, tmp_path):
    rgb, _ = images
    decoder = FrameDecoder(name)
    for data in (rgb[: len(rgb) // 2], rgb[:-2], b"", b"not a jpeg at all", rgb[2:]):
        with pytest.raises(CorruptFrameError, match=r"frame\.jpg"):
            decoder.decode(data, grey=False, source="frame.jpg")
    path = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError):
        decoder.read(path, grey=False)


def test_damaged_scan_with_end_marker_is_caught_without_fallback(images):
    rgb, _ = images
    # Keep the end marker but cut the middle of the entropy-coded scan out: simplejpeg
    # rejects it; PIL pads it with grey, so the fallback decodes it.
    damaged = rgb[: len(rgb) // 2] + rgb[-2:]
    with pytest.raises(CorruptFrameError, match=r"x\.jpg: cannot decode JPEG \(simplejpeg\)"):
        FrameDecoder("simplejpeg", fallback=False).decode(damaged, grey=False, source="x.jpg")
    assert FrameDecoder("simplejpeg").decode(damaged, grey=False).shape == (48, 80, 3)


def test_auto_picks_the_fastest_installed():
    assert FrameDecoder().name == next(iter(available_decoders()))
    with pytest.raises(ValueError, match="JPEG decoder 'nvjpeg' is not available"):
        FrameDecoder("nvjpeg")
