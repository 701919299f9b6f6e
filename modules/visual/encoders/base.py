"""The one base class every visual encoder fills in.

An encoder maps frames and text queries into one or more named embedding
*spaces*. A CLIP-style model has a single joint space in which text and images
are compared. The bundled offline encoder has two: a ``semantic`` space shared
by text and images, and an ``appearance`` space used for image-to-image search.

Loading is lazy and lock-guarded (the first ``encode_*`` call loads), so a
process can create encoders cheaply and pay for the weights only when used.
Every output is float32 and L2-normalised, so inner product is cosine.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from .backends import BACKENDS

ImageLike = np.ndarray | Image.Image


class EncoderConfig(BaseModel):
    """How a library's visual encoder is chosen and loaded.

    ``backend`` names a registered encoder (``bundled``, ``chinese-clip``,
    ``open-clip``, ``onnx``) or a dotted path ``package.module:Class``.
    ``model`` is a model hub id or a local directory (open_clip: an
    architecture name or ``hf-hub:<id>``); ``pretrained`` is open_clip's
    pretrained tag or a checkpoint file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = "bundled"
    model: str | None = None
    pretrained: str | None = None
    device: str = "cpu"
    batch_size: int = Field(default=16, ge=1, le=1024)
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse_spec(cls, spec: str) -> EncoderConfig:
        """``backend[:model[@pretrained]]``, e.g. ``chinese-clip:OFA-Sys/chinese-clip-vit-base-patch16``
        or ``open-clip:xlm-roberta-base-ViT-B-32@laion5b_s13b_b90k``. A third-party backend is
        given as ``package.module:Class[:model[@pretrained]]``."""
        backend, _, rest = spec.partition(":")
        if backend not in BACKENDS and rest:  # a dotted path: the class name is part of the backend
            cls_name, _, rest = rest.partition(":")
            backend = f"{backend}:{cls_name}"
        model, _, pretrained = rest.partition("@")
        return cls(backend=backend.strip(), model=model.strip() or None, pretrained=pretrained.strip() or None)

    def spec(self) -> str:
        out = self.backend
        if self.model:
            out += f":{self.model}"
            if self.pretrained:
                out += f"@{self.pretrained}"
        return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


class Encoder(ABC):
    """Base of every visual encoder: lazy load, batching, normalisation."""

    name: ClassVar[str]

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._loaded = False

    # -- what a concrete encoder fills in ------------------------------------------------
    @abstractmethod
    def _load(self) -> None:
        """Load weights and pre-processing; raise ``ModelUnavailable`` with a clear message."""

    @property
    @abstractmethod
    def spaces(self) -> dict[str, int]:
        """Embedding spaces this encoder writes for each frame: name -> dimension (after load)."""

    @abstractmethod
    def _encode_images(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        """One batch of RGB images -> {space: (n, dim)}; normalisation is done by the caller."""

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """One batch of query texts -> (n, dim) in ``text_space``."""

    #: the space text queries are compared in
    text_space: ClassVar[str] = "joint"
    #: the space image queries are compared in
    image_query_space: ClassVar[str] = "joint"

    # -- what callers use -----------------------------------------------------------------
    def load(self) -> Encoder:
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def fingerprint(self) -> str:
        """Identity of the embedding spaces; vectors from different fingerprints never mix."""
        return self.config.spec()

    def encode_images(self, images: Sequence[ImageLike]) -> dict[str, np.ndarray]:
        self.load()
        if not images:
            return {name: np.zeros((0, dim), np.float32) for name, dim in self.spaces.items()}
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.spaces}
        bs = self.config.batch_size
        for i in range(0, len(images), bs):
            out = self._encode_images([to_pil(im) for im in images[i : i + bs]])
            for name in parts:
                parts[name].append(l2_normalize(out[name]))
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        dim = self.spaces[self.text_space]
        if not texts:
            return np.zeros((0, dim), np.float32)
        bs = self.config.batch_size
        return np.concatenate([l2_normalize(self._encode_texts(list(texts[i : i + bs]))) for i in range(0, len(texts), bs)])
