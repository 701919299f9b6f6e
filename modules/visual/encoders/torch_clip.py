"""What the two PyTorch CLIP backends share: one joint space, towers run under inference mode.

A subclass's ``_load`` sets ``inputs`` (pre-processing and tokenisation, with
``image_keys``/``text_keys`` naming the tensors each tower takes), the two
towers, the device and the joint dimension. The same towers are what the
ONNX export traces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from .base import Encoder, EncoderConfig


class TorchClipEncoder(Encoder):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        self.inputs: Any = None
        self.image_tower: torch.nn.Module | None = None
        self.text_tower: torch.nn.Module | None = None
        self._device = torch.device("cpu")
        self._dim = 0

    @property
    def spaces(self) -> dict[str, int]:
        self.load()
        return {"joint": self._dim}

    def _run(self, tower: torch.nn.Module, feed: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
        with torch.inference_mode():
            out = tower(*(torch.from_numpy(feed[key]).to(self._device) for key in keys))
        return out.float().cpu().numpy()

    def _encode_images(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        assert self.inputs is not None and self.image_tower is not None
        return {"joint": self._run(self.image_tower, self.inputs.images(images), self.inputs.image_keys)}

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        assert self.inputs is not None and self.text_tower is not None
        return self._run(self.text_tower, self.inputs.texts(texts), self.inputs.text_keys)
