"""ONNX Runtime int8 export of the CLIP-family encoders, on tiny random-weight models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tiny_models import CHINESE_QUERY, TEXTS, make_tiny_chinese_clip, make_tiny_open_clip, photos, tiny_vocab
from zhaopian.modules.visual.encoders.base import EncoderConfig
from zhaopian.modules.visual.encoders.onnx import MANIFEST, OnnxClipEncoder, export_onnx
from zhaopian.modules.visual.encoders.registry import create_encoder, encoder_class
from zhaopian.search.errors import ConfigError, ModelUnavailable

# Dynamic 8-bit quantisation rounds weights (per tensor) and activations (per batch) to 256 levels, a step
# of range/255: about 0.1-0.5% relative error per MatMul. Through a few layers that leaves a cosine to the
# float model of ~0.9999 (measured on these tiny models: image towers >= 0.99984, text towers 0.998-0.99998;
# with random weights of the real shapes, bench/encoder_speed.py: ViT image towers 0.9998). 0.999 allows
# several times the image towers' error and still fails a broken export: a lost attention mask, a wrong
# pre-processing or int8 saturation (signed weights on AVX2 without VNNI measured 0.91 on a BERT tower).
INT8_COSINE = 0.999
# A float32 graph (the text tower by default) differs from torch only by the order of float operations.
FP32_COSINE = 0.99999

FAMILIES = ["chinese-clip", "open-clip", "open-clip-hf"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torch_config(family: str, model_dir: Path) -> EncoderConfig:
    return EncoderConfig(backend="open-clip" if family.startswith("open-clip") else "chinese-clip", model=str(model_dir))


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """Each family exported to int8, with the torch encoder's reference vectors; the torch weights are then deleted."""
    out: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}
    for family in FAMILIES:
        root = tmp_path_factory.mktemp(family)
        if family == "chinese-clip":
            model_dir = make_tiny_chinese_clip(root / "model")
        else:
            model_dir = make_tiny_open_clip(root / "model", text="hf" if family == "open-clip-hf" else "clip")
        config = torch_config(family, model_dir)
        encoder = encoder_class(config.backend)(config)
        reference = {"images": encoder.encode_images(photos(4))["joint"], "texts": encoder.encode_texts(TEXTS)}
        export_dir = export_onnx(config, root / "onnx")
        shutil.rmtree(model_dir)  # the ONNX directory must stand alone
        out[family] = (export_dir, reference)
    return out


def onnx_encoder(export_dir: Path, **kwargs: object) -> OnnxClipEncoder:
    options = {"threads": 1}
    return OnnxClipEncoder(EncoderConfig(backend="onnx", model=str(export_dir), options=options, **kwargs))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_directory_layout(exports: dict, family: str) -> None:
    export_dir, _ = exports[family]
    names = {path.name for path in export_dir.iterdir()}
    assert {"visual.onnx", "text.onnx", MANIFEST} <= names
    assert not any(name.endswith((".safetensors", ".bin", ".pth", ".pt")) for name in names)
    manifest = json.loads((export_dir / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["format"] == "zhaopian-onnx-clip/1"
    assert manifest["family"] == ("chinese-clip" if family == "chinese-clip" else "open-clip")
    assert manifest["dim"] == 16
    assert manifest["source"].startswith(f"{manifest['family']}:")
    assert manifest["image"]["quantization"] == "dynamic-uint8" and manifest["text"]["quantization"] is None
    for tower in ("image", "text"):
        graph = onnx.load(str(export_dir / manifest[tower]["file"]), load_external_data=False).graph
        assert [inp.name for inp in graph.input] == manifest[tower]["inputs"]
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        int8 = any(node.op_type == "MatMulInteger" for node in graph.node)
        assert int8 == (tower == "image")
    if family == "chinese-clip":
        assert {"processor_config.json", "tokenizer_config.json"} <= names
        assert manifest["text"]["inputs"] == ["input_ids", "attention_mask"]
    else:
        assert "open_clip_config.json" in names
        assert manifest["inputs"]["tokenizer"] == ("HFTokenizer" if family == "open-clip-hf" else "SimpleTokenizer")


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_vectors_are_close_to_torch(exports: dict, family: str) -> None:
    export_dir, reference = exports[family]
    encoder = onnx_encoder(export_dir)
    assert encoder.spaces == {"joint": 16}
    images = encoder.encode_images(photos(4))["joint"]
    texts = encoder.encode_texts(TEXTS)
    assert images.shape == (4, 16) and texts.shape == (len(TEXTS), 16) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert cosines(images, reference["images"]).min() > INT8_COSINE
    assert cosines(texts, reference["texts"]).min() > FP32_COSINE


@pytest.mark.parametrize("family", ["chinese-clip", "open-clip-hf"])
def test_onnx_tokenises_chinese_from_its_own_files(exports: dict, family: str) -> None:
    encoder = onnx_encoder(exports[family][0]).load()
    vocab = tiny_vocab()
    ids = encoder.inputs.texts([CHINESE_QUERY])["input_ids"][0]
    assert [vocab[i] for i in ids if vocab[i] != "[PAD]"] == ["[CLS]", *CHINESE_QUERY, "[SEP]"]


def test_batches_consistently(exports: dict) -> None:
    encoder = onnx_encoder(exports["chinese-clip"][0], batch_size=3)
    images = photos(5)
    batched = encoder.encode_images(images)["joint"]
    single = np.concatenate([encoder.encode_images([image])["joint"] for image in images])
    # activations are quantised per batch, so batch companions move a vector slightly: close, not equal
    assert cosines(batched, single).min() > INT8_COSINE
    texts = encoder.encode_texts(TEXTS)  # padded to different lengths in different batches
    np.testing.assert_allclose(texts, np.concatenate([encoder.encode_texts([text]) for text in TEXTS]), atol=1e-5)


def test_float32_export_matches_torch(tmp_path: Path) -> None:
    config = torch_config("chinese-clip", make_tiny_chinese_clip(tmp_path / "model"))
    torch_encoder = encoder_class(config.backend)(config)
    export_dir = export_onnx(config, tmp_path / "onnx", quantize=False)
    manifest = json.loads((export_dir / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["image"]["quantization"] is None and manifest["text"]["quantization"] is None
    encoder = onnx_encoder(export_dir, batch_size=2)
    assert cosines(encoder.encode_texts(TEXTS), torch_encoder.encode_texts(TEXTS)).min() > FP32_COSINE
    assert cosines(encoder.encode_images(photos(3))["joint"],
                   torch_encoder.encode_images(photos(3))["joint"]).min() > FP32_COSINE


def test_text_tower_can_be_quantised_too(tmp_path: Path) -> None:
    config = torch_config("chinese-clip", make_tiny_chinese_clip(tmp_path / "model"))
    reference = encoder_class(config.backend)(config).encode_texts(TEXTS)
    export_dir = export_onnx(config, tmp_path / "onnx", quantize_text=True)
    manifest = json.loads((export_dir / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["text"]["quantization"] == "dynamic-uint8"
    assert cosines(onnx_encoder(export_dir).encode_texts(TEXTS), reference).min() > INT8_COSINE


def test_threads_option_sets_intra_op_threads(exports: dict) -> None:
    encoder = onnx_encoder(exports["open-clip"][0]).load()
    assert encoder._image_session.get_session_options().intra_op_num_threads == 1
    assert encoder._text_session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ConfigError, match="threads"):
        OnnxClipEncoder(EncoderConfig(backend="onnx", model=str(exports["open-clip"][0]),
                                      options={"threads": "many"})).load()


def test_registry_creates_onnx_backend(exports: dict) -> None:
    encoder = create_encoder(EncoderConfig(backend="onnx", model=str(exports["chinese-clip"][0])))
    assert isinstance(encoder, OnnxClipEncoder) and encoder.name == "onnx"
    assert encoder.encode_texts([CHINESE_QUERY]).shape == (1, 16)


def test_onnx_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        onnx_encoder(tmp_path / "missing").load()
    with pytest.raises(ModelUnavailable, match="not an ONNX export directory"):
        onnx_encoder(tmp_path).load()
    with pytest.raises(ConfigError, match="CPU"):
        onnx_encoder(tmp_path, device="cuda").load()
    with pytest.raises(ConfigError, match="supports"):
        export_onnx(EncoderConfig(backend="bundled"), tmp_path / "out")
