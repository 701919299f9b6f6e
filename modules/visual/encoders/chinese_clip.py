"""Chinese-CLIP (OFA-Sys) through transformers: one joint text/image space.

``model`` is a model hub id (default ``OFA-Sys/chinese-clip-vit-base-patch16``)
or a local directory holding the same files (config.json, weights,
preprocessor_config.json, vocab.txt). Pre-processing and tokenisation are the
model's own ``ChineseCLIPProcessor``; the towers below are exactly what the
ONNX export (``onnx.py``) traces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from transformers import ChineseCLIPModel, ChineseCLIPProcessor

from .sources import ModelSource, from_pretrained, loading, resolve, torch_device
from .torch_clip import TorchClipEncoder

DEFAULT_MODEL = "OFA-Sys/chinese-clip-vit-base-patch16"


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5 returns a model output from ``get_*_features`` (4.x returned the tensor)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ImageTower(torch.nn.Module):
    def __init__(self, model: ChineseCLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixel_values))


class TextTower(torch.nn.Module):
    def __init__(self, model: ChineseCLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


class ChineseClipInputs:
    """Images -> ``pixel_values`` and texts -> ``input_ids``/``attention_mask`` (numpy), via the model's processor."""

    family: ClassVar[str] = "chinese-clip"
    image_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    text_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    #: texts are padded to the longest in the batch, so the text length axis is dynamic
    variable_text_length: ClassVar[bool] = True

    def __init__(self, processor: ChineseCLIPProcessor, max_length: int) -> None:
        self.processor = processor
        self.max_length = max_length

    def images(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        out = self.processor.image_processor(images=images, return_tensors="np")
        return {"pixel_values": np.asarray(out["pixel_values"], dtype=np.float32)}

    def texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        out = self.processor.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                       return_tensors="np")
        return {key: np.asarray(out[key], dtype=np.int64) for key in self.text_keys}

    # -- ONNX export directory -------------------------------------------------------------
    def save(self, out_dir: Path) -> dict[str, Any]:
        self.processor.save_pretrained(out_dir)
        return {"processor": type(self.processor).__name__, "max_length": self.max_length}

    @classmethod
    def from_export(cls, export_dir: Path, info: dict[str, Any]) -> ChineseClipInputs:
        source = ModelSource(str(export_dir), local=True)
        processor = from_pretrained(ChineseCLIPProcessor.from_pretrained, source, "Chinese-CLIP processor")
        return cls(processor, int(info["max_length"]))


class ChineseClipEncoder(TorchClipEncoder):
    """Chinese-CLIP ViT (any size) with its RoBERTa-wwm text tower; space ``joint``."""

    name = "chinese-clip"
    default_model: ClassVar[str] = DEFAULT_MODEL

    def _load(self) -> None:
        device = torch_device(self.config.device)
        source = resolve(self.config.model or DEFAULT_MODEL)
        model = from_pretrained(ChineseCLIPModel.from_pretrained, source, "Chinese-CLIP model")
        processor = from_pretrained(ChineseCLIPProcessor.from_pretrained, source, "Chinese-CLIP processor")
        with loading(source):
            model = model.to(device).eval()
        self.inputs = ChineseClipInputs(processor, max_length=model.config.text_config.max_position_embeddings)
        self.image_tower = ImageTower(model).eval()
        self.text_tower = TextTower(model).eval()
        self._device = device
        self._dim = int(model.config.projection_dim)
