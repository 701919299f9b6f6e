"""Tiny random-weight Qwen-VL models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), saved like the hub repositories.

Each is a real ``*ForConditionalGeneration`` with one or two layers of a few dozen
dimensions, and a real processor: the family's image and video processors
constructed in code, a byte-level BPE tokenizer trained here with the ``tokenizers``
library (Qwen's pre-tokenizer, the special tokens ``<|im_start|>``, ``<|vision_start|>``,
``<|video_pad|>``, ...; "yes" and "no" are single tokens) and Qwen2-VL's chat template.
The reranker loads them through ``AutoProcessor`` / ``AutoModelForImageTextToText`` from
the directory, as it loads a real model, so pre-processing and scoring run for real; the
scores mean nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

Family = Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
#: what the tokenizer is trained on: the reranker's prompt, both answers, some queries in both languages
_CORPUS = ["Does this clip show: a cat on a keyboard? Answer yes or no.", "yes", "no", "Yes", "No",
           "system", "You are a helpful assistant.", "user", "assistant", "一只猫趴在键盘上", "海边的日落",
           "a red car parked on the road", "a dog running on the beach", "a rocket on the launch pad"] * 4

#: Qwen2-VL-Instruct's chat template (video and image parts), as in its hub repository
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: pixels per frame: small, so a tiny test clip has a few dozen vision tokens
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16 * 28 * 28


def train_tokenizer(out: Path) -> Path:
    """A byte-level BPE ``tokenizer.json`` with Qwen2's normaliser, pre-tokenizer and decoder."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer)
    path = out / "tokenizer.json"
    tok.save(str(path))
    return path


def _text_config(family: Family, vocab: int, ids: dict[str, int]) -> dict:
    common = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
              "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
              "pad_token_id": ids["<|endoftext|>"]}
    if family == "qwen3_vl":  # head_dim 8: 4 rotary frequencies, interleaved t/h/w
        return {**common, "head_dim": 8,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                    "mrope_interleaved": True}}
    return {**common, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}}


def _vision_config(family: Family) -> dict:
    if family == "qwen2_vl":
        return {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14}
    common = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32}
    if family == "qwen2_5_vl":  # one windowed and one full-attention block
        return {**common, "patch_size": 14, "window_size": 56, "fullatt_block_indexes": [1]}
    return {**common, "patch_size": 16, "num_position_embeddings": 64, "deepstack_visual_indexes": [1]}


def make_tiny_qwen_vl(out: Path, family: Family = "qwen2_vl", seed: int = 0) -> Path:
    """Write a tiny ``family`` model and its processor to ``out`` (config.json, model.safetensors,
    tokenizer.json, processor_config.json, chat_template.jinja, ...)."""
    import transformers as tf

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tf.Qwen2Tokenizer(tokenizer_file=str(train_tokenizer(out)), model_max_length=8192)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    patch = 16 if family == "qwen3_vl" else 14
    factor = patch * 2
    pixels = {"min_pixels": MIN_PIXELS * factor**2 // 28**2, "max_pixels": MAX_PIXELS * factor**2 // 28**2}
    image_processor = tf.Qwen2VLImageProcessor(patch_size=patch, **pixels)
    if family == "qwen3_vl":
        size = {"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"] * 16}
        video_processor = tf.Qwen3VLVideoProcessor(size=size, patch_size=patch)
        processor_cls, config_cls, model_cls = tf.Qwen3VLProcessor, tf.Qwen3VLConfig, tf.Qwen3VLForConditionalGeneration
    else:
        video_processor = tf.Qwen2VLVideoProcessor(patch_size=patch, **pixels)
        if family == "qwen2_vl":
            processor_cls, config_cls = tf.Qwen2VLProcessor, tf.Qwen2VLConfig
            model_cls = tf.Qwen2VLForConditionalGeneration
        else:
            processor_cls, config_cls = tf.Qwen2_5_VLProcessor, tf.Qwen2_5_VLConfig
            model_cls = tf.Qwen2_5_VLForConditionalGeneration
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                              chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    config = config_cls(text_config=_text_config(family, len(tokenizer), ids), vision_config=_vision_config(family),
                        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model_cls(config).eval().save_pretrained(out)
    return out
