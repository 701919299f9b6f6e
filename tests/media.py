"""Media made in tests: short videos of solid colours with known spans, and bad files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def write_video(path: Path, shots: list[tuple[tuple[int, int, int] | np.ndarray, float]], fps: int = 10,
                size: tuple[int, int] = (64, 48)) -> Path:
    """Write an H.264 (or MPEG-4) video of shots: [(rgb or an HxWx3 picture, seconds), ...] with light noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(shots))
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for rgb, seconds in shots:
            if isinstance(rgb, np.ndarray):
                rgb = np.asarray(Image.fromarray(rgb).convert("RGB").resize(size), np.int16)
            for _ in range(int(round(seconds * fps))):
                img = np.clip(np.array(rgb, np.int16) + rng.integers(-6, 7, (size[1], size[0], 3)), 0, 255)
                frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_image(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


RED, GREEN, BLUE, YELLOW = (230, 20, 20), (20, 220, 30), (20, 30, 230), (235, 230, 20)
