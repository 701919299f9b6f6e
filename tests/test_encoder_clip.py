"""Chinese-CLIP and open_clip encoders, on tiny random-weight models loaded through the real loading code."""

from __future__ import annotations

import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import ChineseCLIPProcessor

from tiny_models import (CHINESE_QUERY, IMAGE_SIZE, TEXTS, make_tiny_chinese_clip, make_tiny_open_clip, photos,
                         register_tiny_open_clip, tiny_chinese_clip_config, tiny_vocab)
from zhaopian.modules.visual.encoders import open_clip as open_clip_backend
from zhaopian.modules.visual.encoders.base import EncoderConfig
from zhaopian.modules.visual.encoders.chinese_clip import ChineseClipEncoder
from zhaopian.modules.visual.encoders.open_clip import OpenClipEncoder
from zhaopian.modules.visual.encoders.registry import create_encoder
from zhaopian.search.errors import ConfigError, ModelUnavailable

def bordered_image() -> Image.Image:
    """128x64 grey with red and blue 24-pixel side bands: shortest-edge resize to 32 then a centre crop drops both."""
    pixels = np.full((64, 128, 3), 128, np.uint8)
    pixels[:, :24] = (255, 0, 0)
    pixels[:, -24:] = (0, 0, 255)
    return Image.fromarray(pixels)


def normalised(rgb: tuple[int, int, int], mean: list[float], std: list[float]) -> np.ndarray:
    return ((np.array(rgb) / 255.0 - np.array(mean)) / np.array(std)).reshape(3, 1, 1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_chinese_clip(tmp_path_factory.mktemp("chinese-clip"))


@pytest.fixture(scope="module")
def oc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_open_clip(tmp_path_factory.mktemp("open-clip"))


@pytest.fixture(scope="module")
def oc_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_open_clip(tmp_path_factory.mktemp("open-clip-hf"), text="hf")


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network waits and an empty hub cache, whatever this machine has downloaded before."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def fetch_message(model_id: str) -> str:
    return (f"could not fetch {model_id} from the model hub (offline?); "
            f"download it on a machine with internet or point model to a local directory")


# -- Chinese-CLIP ---------------------------------------------------------------------------------
def test_chinese_clip_preprocessing_is_the_processors(cc_dir: Path) -> None:
    encoder = ChineseClipEncoder(EncoderConfig(backend="chinese-clip", model=str(cc_dir))).load()
    processor = ChineseCLIPProcessor.from_pretrained(cc_dir)
    image = photos(1)[0]
    ours = encoder.inputs.images([image])["pixel_values"]
    assert ours.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, processor(images=[image], return_tensors="np")["pixel_values"])


def test_chinese_clip_preprocessing_resizes_crops_and_normalises(cc_dir: Path) -> None:
    encoder = ChineseClipEncoder(EncoderConfig(backend="chinese-clip", model=str(cc_dir))).load()
    mean, std = encoder.inputs.processor.image_processor.image_mean, encoder.inputs.processor.image_processor.image_std
    uniform = encoder.inputs.images([Image.new("RGB", (50, 40), (200, 100, 50))])["pixel_values"][0]
    np.testing.assert_allclose(uniform, np.broadcast_to(normalised((200, 100, 50), mean, std), uniform.shape), atol=1e-5)
    cropped = encoder.inputs.images([bordered_image()])["pixel_values"][0]
    assert cropped.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_allclose(cropped, np.broadcast_to(normalised((128, 128, 128), mean, std), cropped.shape), atol=1e-4)


def test_chinese_clip_tokenises_chinese_per_character(cc_dir: Path) -> None:
    encoder = ChineseClipEncoder(EncoderConfig(backend="chinese-clip", model=str(cc_dir))).load()
    vocab = tiny_vocab()
    ids = encoder.inputs.texts([CHINESE_QUERY, "a cat"])
    tokens = [vocab[i] for i, keep in zip(ids["input_ids"][0], ids["attention_mask"][0]) if keep]
    assert tokens == ["[CLS]", *CHINESE_QUERY, "[SEP]"]
    assert "[UNK]" not in tokens
    assert ids["input_ids"].shape[1] == len(CHINESE_QUERY) + 2  # padded to the longest text
    assert ids["attention_mask"][1].sum() == 4  # [CLS] a cat [SEP]


def test_chinese_clip_outputs_unit_vectors_in_one_joint_space(cc_dir: Path) -> None:
    encoder = ChineseClipEncoder(EncoderConfig(backend="chinese-clip", model=str(cc_dir)))
    assert encoder.spaces == {"joint": tiny_chinese_clip_config().projection_dim}
    images = encoder.encode_images(photos(3))
    texts = encoder.encode_texts(TEXTS)
    assert set(images) == {"joint"}
    assert images["joint"].shape == (3, 16) and texts.shape == (len(TEXTS), 16)
    assert images["joint"].dtype == np.float32 and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images["joint"], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert encoder.encode_texts([]).shape == (0, 16)


def test_chinese_clip_batch_equals_one_by_one(cc_dir: Path) -> None:
    encoder = ChineseClipEncoder(EncoderConfig(backend="chinese-clip", model=str(cc_dir), batch_size=3))
    images = photos(5)
    batched = encoder.encode_images(images)["joint"]
    single = np.concatenate([encoder.encode_images([image])["joint"] for image in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    # texts of different lengths: padding must not change a text's vector
    np.testing.assert_allclose(encoder.encode_texts(TEXTS),
                               np.concatenate([encoder.encode_texts([text]) for text in TEXTS]), atol=1e-5)


def test_chinese_clip_hub_id_offline(offline_hub: None) -> None:
    encoder = ChineseClipEncoder(EncoderConfig(backend="chinese-clip", model="zhaopian-test/no-such-model"))
    with pytest.raises(ModelUnavailable) as caught:
        encoder.load()
    assert str(caught.value) == fetch_message("zhaopian-test/no-such-model")


def test_chinese_clip_missing_directory() -> None:
    encoder = ChineseClipEncoder(EncoderConfig(backend="chinese-clip", model="/nonexistent/chinese-clip"))
    with pytest.raises(ModelUnavailable, match="does not exist"):
        encoder.load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device_is_a_config_error(cc_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not available"):
        ChineseClipEncoder(EncoderConfig(backend="chinese-clip", model=str(cc_dir), device="cuda")).load()


# -- open_clip ------------------------------------------------------------------------------------
def test_open_clip_module_gets_the_real_library() -> None:
    assert open_clip_backend.open_clip is sys.modules["open_clip"]
    assert hasattr(open_clip_backend.open_clip, "create_model_and_transforms")


def test_open_clip_preprocessing_is_open_clips(oc_dir: Path) -> None:
    encoder = OpenClipEncoder(EncoderConfig(backend="open-clip", model=str(oc_dir))).load()
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{oc_dir}")
    image = photos(1)[0]
    ours = encoder.inputs.images([image])["pixel_values"]
    assert ours.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_array_equal(ours[0], preprocess(image).numpy())
    # mean/std from open_clip_config.json, shortest-edge resize then centre crop
    config = encoder.inputs.preprocess_config
    uniform = encoder.inputs.images([Image.new("RGB", (50, 40), (200, 100, 50))])["pixel_values"][0]
    np.testing.assert_allclose(uniform, np.broadcast_to(normalised((200, 100, 50), config["mean"], config["std"]),
                                                        uniform.shape), atol=1e-5)
    cropped = encoder.inputs.images([bordered_image()])["pixel_values"][0]
    np.testing.assert_allclose(cropped, np.broadcast_to(normalised((128, 128, 128), config["mean"], config["std"]),
                                                        cropped.shape), atol=1e-4)


def test_open_clip_hf_text_tower_tokenises_chinese_per_character(oc_hf_dir: Path) -> None:
    encoder = OpenClipEncoder(EncoderConfig(backend="open-clip", model=str(oc_hf_dir))).load()
    vocab = tiny_vocab()
    ids = encoder.inputs.texts([CHINESE_QUERY])["input_ids"][0]
    assert ids.shape == (24,)  # open_clip pads to the context length
    assert [vocab[i] for i in ids if vocab[i] != "[PAD]"] == ["[CLS]", *CHINESE_QUERY, "[SEP]"]


@pytest.mark.parametrize("variant", ["clip", "hf"])
def test_open_clip_outputs_unit_vectors_and_batches_consistently(variant: str, oc_dir: Path, oc_hf_dir: Path) -> None:
    model_dir = oc_dir if variant == "clip" else oc_hf_dir
    encoder = OpenClipEncoder(EncoderConfig(backend="open-clip", model=str(model_dir), batch_size=2))
    assert encoder.spaces == {"joint": 16}
    images = photos(5)
    batched = encoder.encode_images(images)["joint"]
    texts = encoder.encode_texts(TEXTS)
    assert batched.shape == (5, 16) and texts.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(batched, np.concatenate([encoder.encode_images([im])["joint"] for im in images]), atol=1e-5)
    np.testing.assert_allclose(texts, np.concatenate([encoder.encode_texts([text]) for text in TEXTS]), atol=1e-5)


def test_open_clip_architecture_name_with_checkpoint_file(tmp_path: Path) -> None:
    name, checkpoint = register_tiny_open_clip(tmp_path)
    encoder = OpenClipEncoder(EncoderConfig(backend="open-clip", model=name, pretrained=str(checkpoint))).load()
    state = encoder.image_tower.model.state_dict()
    saved = load_file(str(checkpoint))
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[key], state[key]) for key in saved)
    assert encoder.encode_texts(["a cat"]).shape == (1, 16)


def test_open_clip_local_dir_prefix(oc_dir: Path) -> None:
    encoder = OpenClipEncoder(EncoderConfig(backend="open-clip", model=f"local-dir:{oc_dir}"))
    assert encoder.spaces == {"joint": 16}


@pytest.mark.parametrize(("model", "pretrained"), [
    ("hf-hub:zhaopian-test/no-such-model", None),
    ("ViT-B-32", "laion2b_s34b_b79k"),
])
def test_open_clip_hub_offline(offline_hub: None, model: str, pretrained: str | None) -> None:
    encoder = OpenClipEncoder(EncoderConfig(backend="open-clip", model=model, pretrained=pretrained))
    with pytest.raises(ModelUnavailable) as caught:
        encoder.load()
    model_id = "zhaopian-test/no-such-model" if pretrained is None else f"{model}@{pretrained}"
    assert str(caught.value) == fetch_message(model_id)


@pytest.mark.parametrize(("model", "pretrained", "error", "message"), [
    ("ViT-B-32", None, ConfigError, "needs pretrained"),
    ("no-such-architecture", "x", ConfigError, "unknown open_clip architecture"),
    ("hf-hub:org/repo", "laion2b_s34b_b79k", ConfigError, "remove pretrained"),
    ("ViT-B-32", "/nonexistent/checkpoint.pt", ModelUnavailable, "does not exist"),
    ("/nonexistent/open-clip-dir", None, ModelUnavailable, "does not exist"),
])
def test_open_clip_config_errors(model: str, pretrained: str | None, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        OpenClipEncoder(EncoderConfig(backend="open-clip", model=model, pretrained=pretrained)).load()


def test_open_clip_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not an open_clip model directory"):
        OpenClipEncoder(EncoderConfig(backend="open-clip", model=str(tmp_path))).load()


# -- registry -------------------------------------------------------------------------------------
def test_registry_creates_each_backend_by_name(cc_dir: Path, oc_dir: Path) -> None:
    chinese = create_encoder(EncoderConfig(backend="chinese-clip", model=str(cc_dir)))
    opened = create_encoder(EncoderConfig.parse_spec(f"open-clip:{oc_dir}"))
    assert isinstance(chinese, ChineseClipEncoder) and chinese.name == "chinese-clip"
    assert isinstance(opened, OpenClipEncoder) and opened.name == "open-clip"
    assert create_encoder(EncoderConfig(backend="chinese-clip", model=str(cc_dir))) is chinese
    assert opened.encode_texts([CHINESE_QUERY]).shape == (1, 16)
