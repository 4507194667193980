"""JPEG decoding for video frames: the fastest robust decoder that is installed, PIL otherwise.

Every decoder turns the bytes of one JPEG file into a uint8 numpy array:
``(H, W, 3)`` RGB for colour frames, ``(H, W)`` for greyscale flow frames
(a colour JPEG asked for as grey is converted, and vice versa).

The order of preference comes from ``benchmarks/jpeg_decode.py`` (results in
benchmarks/RESULTS.md): simplejpeg (libjpeg-turbo, decodes straight into the
requested colour space) is the fastest, then OpenCV, then PIL. A decoder
that is not installed, or that fails on a file, falls back to PIL, which also
gives the most helpful error for a truncated or corrupt file.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

Decoder = Callable[[bytes, bool], np.ndarray]
"""``decode(data, grey) -> (H, W) uint8 if grey else (H, W, 3) uint8``."""


class CorruptFrameError(ValueError):
    """A frame file exists but does not decode to a complete image."""


def decode_pil(data: bytes, grey: bool) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        # load() raises on truncated data (PIL's default refuses truncated images).
        image.load()
        converted = image.convert("L" if grey else "RGB")
    return np.asarray(converted)


def decode_pil_draft(data: bytes, grey: bool) -> np.ndarray:
    """PIL asking libjpeg for the target colour space up front (skips a conversion pass)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L" if grey else "RGB", image.size)
        image.load()
        mode = "L" if grey else "RGB"
        converted = image if image.mode == mode else image.convert(mode)
    return np.asarray(converted)


def decode_simplejpeg(data: bytes, grey: bool) -> np.ndarray:
    """libjpeg-turbo through simplejpeg, decoding straight into RGB or greyscale."""
    import simplejpeg

    array = simplejpeg.decode_jpeg(data, colorspace="GRAY" if grey else "RGB", fastdct=False)
    return array[..., 0] if grey else array


def decode_opencv(data: bytes, grey: bool) -> np.ndarray:
    """OpenCV's imdecode (libjpeg-turbo), single-threaded."""
    import cv2

    cv2.setNumThreads(1)
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR_RGB
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if array is None:
        raise CorruptFrameError("OpenCV could not decode the data")
    return array


_CANDIDATES: dict[str, tuple[str | None, Decoder]] = {
    "simplejpeg": ("simplejpeg", decode_simplejpeg),
    "opencv": ("cv2", decode_opencv),
    "pil_draft": (None, decode_pil_draft),
    "pil": (None, decode_pil),
}


def available_decoders() -> dict[str, Decoder]:
    """Installed decoders by name, fastest first (the order measured by the benchmark)."""
    found: dict[str, Decoder] = {}
    for name, (module, decoder) in _CANDIDATES.items():
        if module is not None and importlib.util.find_spec(module) is None:
            continue
        found[name] = decoder
    return found


def _chosen(name: str = "auto") -> tuple[str, Decoder]:
    decoders = available_decoders()
    if name == "auto":
        name = next(iter(decoders))
    if name not in decoders:
        raise ValueError(
            f"JPEG decoder {name!r} is not available; installed: {', '.join(decoders)}"
        )
    return name, decoders[name]


class FrameDecoder:
    """Reads and decodes frame files with one backend.

    Truncated files are caught even by backends that tolerate them (PIL and
    OpenCV pad a truncated scan with grey): a JPEG must end with the EOI
    marker. With ``fallback`` (training), a frame the backend rejects is
    retried with PIL, which accepts some damaged scans; without it (``cmcl data
    check``) any backend error makes the frame corrupt. simplejpeg is the
    strictest backend: it also rejects a scan that ends early but keeps its end marker.
    """

    def __init__(self, backend: str = "auto", *, fallback: bool = True) -> None:
        self.name, self._decode = _chosen(backend)
        self.fallback = fallback

    def decode(self, data: bytes, *, grey: bool, source: str = "<bytes>") -> np.ndarray:
        # In entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so
        # FF D9 near the end can only be the end-of-image marker.
        if len(data) < 4 or data[:2] != b"\xff\xd8" or b"\xff\xd9" not in data[-32:]:
            raise CorruptFrameError(f"{source}: not a complete JPEG (missing start or end marker)")
        try:
            return self._decode(data, grey)
        except Exception as error:
            if not self.fallback or self._decode is decode_pil:
                raise CorruptFrameError(
                    f"{source}: cannot decode JPEG ({self.name}): {error}"
                ) from None
        try:
            return decode_pil(data, grey)
        except Exception as error:
            raise CorruptFrameError(f"{source}: cannot decode JPEG: {error}") from None

    def read(self, path: str | Path, *, grey: bool) -> np.ndarray:
        """Decode the frame at ``path`` (FileNotFoundError if it is missing)."""
        data = Path(path).read_bytes()
        return self.decode(data, grey=grey, source=str(path))
