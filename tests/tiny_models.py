"""Tiny random-weight CLIP-family models, saved in the same layout as the real ones on the model hub.

The encoders load them through their real loading code (a local directory),
so pre-processing, tokenisation and the forward pass are exercised without
downloading anything, the way open_clip and transformers test themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import BertConfig, ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel

#: a query in Chinese, every character of which is in the tiny vocabulary
CHINESE_QUERY = "一只猫趴在键盘上"
_CHINESE_CHARS = CHINESE_QUERY + "一个人在海边看日落红色的汽车停在路上狗跑"
_WORDS = ["a", "cat", "dog", "on", "the", "keyboard", "photo", "of", "sleeping", "red", "car", "sunset"]

#: queries of different lengths (so batches pad), Chinese and English
TEXTS = [CHINESE_QUERY, "a cat", "红色的汽车停在路上", "a photo of a dog sleeping on the keyboard", "日落"]

IMAGE_SIZE = 32
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_vocab() -> list[str]:
    """A BERT WordPiece vocabulary: special tokens, ASCII characters, a few words and some Chinese characters."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ascii_chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    chinese = list(dict.fromkeys(_CHINESE_CHARS))
    return special + ascii_chars + _WORDS + chinese


def _write_bert_tokenizer(out: Path) -> None:
    """vocab.txt + tokenizer_config.json, as in OFA-Sys/chinese-clip-* (no tokenizer.json)."""
    (out / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def tiny_chinese_clip_config() -> ChineseCLIPConfig:
    text = dict(vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  image_size=IMAGE_SIZE, patch_size=8)
    return ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def chinese_clip_vit_b16_config() -> ChineseCLIPConfig:
    """The shapes of OFA-Sys/chinese-clip-vit-base-patch16 (ViT-B/16 + RoBERTa-wwm-ext-base), for benchmarks."""
    return ChineseCLIPConfig(text_config=dict(vocab_size=21128), vision_config=dict(patch_size=16), projection_dim=512)


def make_tiny_chinese_clip(out: Path, config: ChineseCLIPConfig | None = None, seed: int = 0) -> Path:
    """A ChineseCLIPModel with random weights + its processor files, laid out like the hub repository."""
    config = config or tiny_chinese_clip_config()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    ChineseCLIPModel(config).eval().save_pretrained(out)
    size = config.vision_config.image_size
    processor = ChineseCLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                          image_mean=CLIP_MEAN, image_std=CLIP_STD)
    processor.save_pretrained(out)
    _write_bert_tokenizer(out)
    return out


_TINY_VISION = {"image_size": IMAGE_SIZE, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8}
_TINY_CLIP_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
_TINY_PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic", "resize_mode": "shortest"}


def make_tiny_open_clip(out: Path, text: Literal["clip", "hf"] = "clip", seed: int = 0) -> Path:
    """An open_clip model directory like an ``hf-hub:`` repository: open_clip_config.json + open_clip_model.safetensors.

    ``text="clip"``: open_clip's own text transformer and CLIP BPE tokenizer.
    ``text="hf"``: a Hugging Face text tower and tokenizer (how the multilingual xlm-roberta models are
    built), here a tiny BERT whose config lives in ``hf_text/`` and whose vocabulary includes Chinese.
    """
    out.mkdir(parents=True, exist_ok=True)
    if text == "clip":
        text_cfg: dict[str, object] = dict(_TINY_CLIP_TEXT)
    else:
        hf_dir = out / "hf_text"
        BertConfig(vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=64).save_pretrained(hf_dir)
        _write_bert_tokenizer(out)  # local-dir models keep their tokenizer files beside the config
        text_cfg = {"hf_model_name": str(hf_dir), "hf_tokenizer_name": str(hf_dir), "hf_pooler_type": "mean_pooler",
                    "hf_proj_type": "linear", "context_length": 24}
    model_cfg = {"embed_dim": 16, "vision_cfg": dict(_TINY_VISION), "text_cfg": text_cfg}
    config = {"model_cfg": model_cfg, "preprocess_cfg": dict(_TINY_PREPROCESS)}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{out}", pretrained_text=False)
    save_file(model.state_dict(), str(out / "open_clip_model.safetensors"))
    return out


def register_tiny_open_clip(out: Path, name: str = "zp-tiny-ViT", seed: int = 0) -> tuple[str, Path]:
    """A tiny built-in architecture (``open_clip.add_model_config``) and a checkpoint file to pass as ``pretrained``."""
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / f"{name}.json"
    config_file.write_text(json.dumps({"embed_dim": 16, "vision_cfg": _TINY_VISION, "text_cfg": _TINY_CLIP_TEXT}))
    open_clip.add_model_config(config_file)
    torch.manual_seed(seed)
    checkpoint = out / f"{name}.safetensors"
    save_file(open_clip.create_model(name).state_dict(), str(checkpoint))
    return name, checkpoint


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    """Random smooth images of varied sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        out.append(Image.fromarray(small).resize((48 + 16 * i, 40 + 8 * (i % 3)), Image.Resampling.BILINEAR))
    return out
