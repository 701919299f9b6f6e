"""OpenCLIP models (English and multilingual) through open_clip: one joint space.

``model`` is one of:

* a built-in architecture with ``pretrained`` set to an open_clip tag or a
  checkpoint file, e.g. ``xlm-roberta-base-ViT-B-32`` @ ``laion5b_s13b_b90k``
  (the default: multilingual, reads Chinese queries);
* ``hf-hub:<org>/<repo>``, an open_clip repository on the model hub;
* a local directory laid out like such a repository (open_clip_config.json,
  open_clip_model.safetensors and, for Hugging Face text towers, the tokenizer
  files), also written ``local-dir:<path>``.

Pre-processing and tokenisation are open_clip's own (transforms and
``get_tokenizer``); the towers below are exactly what the ONNX export traces.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# This file is zhaopian.modules.visual.encoders.open_clip; imports are absolute, so these are the library's.
import open_clip
import torch
from open_clip.factory import parse_model_name
from open_clip.pretrained import download_pretrained_from_hf
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from zhaopian.search.errors import ConfigError, ModelUnavailable

from .sources import ModelSource, loading, looks_like_path, resolve, torch_device
from .torch_clip import TorchClipEncoder

DEFAULT_MODEL = "xlm-roberta-base-ViT-B-32"
DEFAULT_PRETRAINED = "laion5b_s13b_b90k"

_CONFIG_FILE = "open_clip_config.json"


class ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


class TextTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids)


class OpenClipInputs:
    """Images -> ``pixel_values`` and texts -> ``input_ids`` (numpy), via open_clip's transform and tokenizer."""

    family: ClassVar[str] = "open-clip"
    image_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    text_keys: ClassVar[tuple[str, ...]] = ("input_ids",)
    #: open_clip pads every text to the model's context length
    variable_text_length: ClassVar[bool] = False

    def __init__(self, preprocess: Callable[[Image.Image], torch.Tensor], tokenizer: Any,
                 model_config: dict[str, Any], preprocess_config: dict[str, Any]) -> None:
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.preprocess_config = preprocess_config

    def images(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        return {"pixel_values": torch.stack([self.preprocess(image) for image in images]).numpy().astype(np.float32)}

    def texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {"input_ids": self.tokenizer(texts).numpy().astype(np.int64)}

    # -- ONNX export directory: laid out so that open_clip's ``local-dir:`` loader reads it back ---------
    def save(self, out_dir: Path) -> dict[str, Any]:
        kind = type(self.tokenizer).__name__
        if isinstance(self.tokenizer, HFTokenizer):
            self.tokenizer.save_pretrained(out_dir)
        elif not isinstance(self.tokenizer, SimpleTokenizer):
            raise ConfigError(f"ONNX export supports open_clip models with the CLIP or a Hugging Face tokenizer, not {kind}")
        config = {"model_cfg": self.model_config, "preprocess_cfg": self.preprocess_config}
        (out_dir / _CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        return {"config": _CONFIG_FILE, "tokenizer": kind}

    @classmethod
    def from_export(cls, export_dir: Path, info: dict[str, Any]) -> OpenClipInputs:
        source = ModelSource(str(export_dir), local=True)
        with loading(source, "open_clip tokenizer and pre-processing"):
            config = json.loads((export_dir / info["config"]).read_text(encoding="utf-8"))
            preprocess = image_transform_v2(PreprocessCfg(**config["preprocess_cfg"]), is_train=False)
            tokenizer = open_clip.get_tokenizer(f"local-dir:{export_dir}")
        return cls(preprocess, tokenizer, config["model_cfg"], config["preprocess_cfg"])


def _model_spec(model: str | None, pretrained: str | None) -> tuple[str, str | None, ModelSource]:
    """Config ``model``/``pretrained`` -> (open_clip model name, open_clip pretrained, source for messages)."""
    if model is None:
        model, pretrained = DEFAULT_MODEL, pretrained or DEFAULT_PRETRAINED
    schema, identifier = parse_model_name(model)
    if schema is None and looks_like_path(model):
        schema, identifier = "local-dir", model
    if schema is not None and pretrained:
        raise ConfigError(f"open-clip model {model} carries its own weights; remove pretrained ({pretrained})")
    if schema == "local-dir":
        source = resolve(identifier)
        if not source.local:
            raise ModelUnavailable(f"model directory {identifier} does not exist")
        if not (Path(source.ref) / _CONFIG_FILE).is_file():
            raise ModelUnavailable(f"{source.ref} is not an open_clip model directory (no {_CONFIG_FILE})")
        return f"local-dir:{source.ref}", None, source
    if schema == "hf-hub":
        return model, None, ModelSource(identifier, local=False)
    if model not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture {model!r}; use a name from open_clip.list_models(), "
                          f"hf-hub:<org>/<repo> or a local model directory")
    if not pretrained:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none published"
        raise ConfigError(f"open-clip model {model} needs pretrained: a tag ({tags}) or a checkpoint file")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return model, str(path.resolve()), ModelSource(str(path.resolve()), local=True)
    if looks_like_path(pretrained):
        raise ModelUnavailable(f"checkpoint file {pretrained} does not exist")
    return model, pretrained, ModelSource(f"{model}@{pretrained}", local=False)


def _model_config(name: str) -> dict[str, Any]:
    """The open_clip model config (architecture and tokenizer settings) behind a model name."""
    schema, identifier = parse_model_name(name)
    if schema is None:
        return open_clip.get_model_config(name)
    if schema == "local-dir":
        path = Path(identifier) / _CONFIG_FILE
    else:  # hf-hub: already in the hub cache once the model has loaded
        path = Path(download_pretrained_from_hf(identifier, filename=_CONFIG_FILE))
    return json.loads(path.read_text(encoding="utf-8"))["model_cfg"]


class OpenClipEncoder(TorchClipEncoder):
    """Any open_clip CLIP model (ViT or ResNet image tower, CLIP or Hugging Face text tower); space ``joint``."""

    name = "open-clip"

    def _load(self) -> None:
        device = torch_device(self.config.device)
        name, pretrained, source = _model_spec(self.config.model, self.config.pretrained)
        with loading(source, "open_clip model"):
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device, require_pretrained=True)
            tokenizer = open_clip.get_tokenizer(name)
            model_config = _model_config(name)
        model.eval()
        preprocess_config = open_clip.get_model_preprocess_cfg(model)
        self.inputs = OpenClipInputs(preprocess, tokenizer, model_config, dict(preprocess_config))
        self.image_tower = ImageTower(model).eval()
        self.text_tower = TextTower(model).eval()
        self._device = device
        self._dim = int(self._run(self.text_tower, self.inputs.texts([""]), self.inputs.text_keys).shape[1])
