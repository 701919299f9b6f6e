"""A tiny deterministic encoder for testing the core's mechanics without model weights.

It embeds an image by its mean colour (centred on grey) and a text naming a
colour ("red", "红色", ...) by that colour, so which segment should win is
known exactly. Used through the encoder registry's dotted-path form.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from zhaopian.modules.visual.encoders.base import Encoder

COLOURS = {
    "red": (255, 0, 0), "红色": (255, 0, 0),
    "green": (0, 255, 0), "绿色": (0, 255, 0),
    "blue": (0, 0, 255), "蓝色": (0, 0, 255),
    "yellow": (255, 255, 0), "黄色": (255, 255, 0),
}


def _embed_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, np.float32) / 255.0
    return np.concatenate([rgb - rgb.mean(), [0.05]])  # small constant keeps grey non-zero


class ColorEncoder(Encoder):
    name = "color"
    text_space = "joint"
    image_query_space = "joint"

    def _load(self) -> None:
        pass

    @property
    def spaces(self) -> dict[str, int]:
        return {"joint": 4}

    def _encode_images(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        return {"joint": np.stack([_embed_rgb(np.asarray(im).reshape(-1, 3).mean(axis=0)) for im in images])}

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            colour = next((rgb for name, rgb in COLOURS.items() if name in text.lower()), (128, 128, 128))
            out.append(_embed_rgb(colour))
        return np.stack(out)
