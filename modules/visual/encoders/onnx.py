"""ONNX Runtime 8-bit export of a CLIP-family encoder, for CPU speed.

``export_onnx`` loads a torch encoder (``chinese-clip`` or ``open-clip``), traces
its image and text towers to ``visual.onnx`` and ``text.onnx`` (dynamic batch
axis), quantises the image tower to 8-bit integers (dynamic quantisation:
weights stored as uint8, activations quantised per batch at run time; the text
tower stays float32 unless asked, see ``export_onnx``), and writes the model's
own pre-processing and tokenizer files plus ``manifest.json``. The ``onnx``
encoder then runs from that directory alone, without the torch weights::

    python -m zhaopian.modules.visual.encoders.onnx chinese-clip:OFA-Sys/chinese-clip-vit-base-patch16 models/cn-clip-int8

The vectors are close to, not equal to, the torch encoder's; the fingerprint
differs (``onnx:<dir>``), so an index built with one is never searched with the other.
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import onnxruntime as ort
from PIL import Image

from zhaopian.search.errors import ConfigError, ModelUnavailable

from .base import Encoder, EncoderConfig
from .sources import resolve

MANIFEST = "manifest.json"
FORMAT = "zhaopian-onnx-clip/1"
IMAGE_FILE = "visual.onnx"
TEXT_FILE = "text.onnx"
OPSET = 17

#: encoder family -> the class that reads its pre-processing/tokenizer files back from an export directory
INPUTS = {
    "chinese-clip": "zhaopian.modules.visual.encoders.chinese_clip:ChineseClipInputs",
    "open-clip": "zhaopian.modules.visual.encoders.open_clip:OpenClipInputs",
}


class ClipInputs(Protocol):
    """What ``ChineseClipInputs`` and ``OpenClipInputs`` provide."""

    family: ClassVar[str]
    image_keys: ClassVar[tuple[str, ...]]
    text_keys: ClassVar[tuple[str, ...]]
    variable_text_length: ClassVar[bool]

    def images(self, images: list[Image.Image]) -> dict[str, np.ndarray]: ...
    def texts(self, texts: list[str]) -> dict[str, np.ndarray]: ...
    def save(self, out_dir: Path) -> dict[str, Any]: ...


def _inputs_class(family: str) -> Any:
    module_name, _, attr = INPUTS[family].partition(":")
    return getattr(importlib.import_module(module_name), attr)


# -- export ---------------------------------------------------------------------------------------
def _export_tower(tower: Any, feed: dict[str, np.ndarray], keys: tuple[str, ...], path: Path,
                  dynamic_length: bool) -> None:
    import torch

    tower.eval()  # the exporter restores the module's mode afterwards: keep it in eval (no dropout)
    axes: dict[str, dict[int, str]] = {key: {0: "batch", 1: "length"} if dynamic_length else {0: "batch"}
                                       for key in keys}
    axes["embeds"] = {0: "batch"}
    args = tuple(torch.from_numpy(feed[key]) for key in keys)
    with warnings.catch_warnings():
        # shape checks frozen at trace time are expected (the tests compare the graphs with torch), and
        # the TorchScript exporter is deprecated but needs no onnxscript (the dynamo exporter does)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(tower, args, str(path), dynamo=False, opset_version=OPSET, input_names=list(keys),
                          output_names=["embeds"], dynamic_axes=axes)


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # MatMul/Gemm hold nearly all the weights and time; the ViT patch-embedding convolution stays float.
    # Unsigned weights: signed ones saturate ONNX Runtime's u8s8 kernels on x86 CPUs without VNNI (AVX2):
    # cosine to float 0.995 on a ViT-B/32 image tower and 0.91 on a small BERT text tower here, against
    # 0.9998 and 0.99997 with uint8 weights, which were also no slower (7-bit signed weights: 0.9995).
    quantize_dynamic(src, dst, weight_type=QuantType.QUInt8, op_types_to_quantize=["MatMul", "Gemm"])


def export_onnx(source: EncoderConfig, out_dir: Path, quantize: bool = True, quantize_text: bool = False) -> Path:
    """Export ``source`` (a ``chinese-clip`` or ``open-clip`` config) to ``out_dir``; returns ``out_dir``.

    ``quantize`` makes the image tower 8-bit: it encodes every indexed frame, in batches of many tokens,
    where int8 kernels gain most. The text tower encodes one short query at a time: there int8 saved only
    4-10% of the time (ViT-B text towers, 2-core AVX2 CPU) while its cosine to float fell to 0.9991-0.9995,
    against 0.9998 for the image tower, so it stays float32 unless ``quantize_text`` (a quarter of the size).
    """
    from .registry import encoder_class

    if source.backend not in INPUTS:
        raise ConfigError(f"ONNX export supports the {' and '.join(INPUTS)} backends, not {source.backend!r}")
    # ChineseClipEncoder / OpenClipEncoder: .inputs, .image_tower and .text_tower once loaded
    encoder: Any = encoder_class(source.backend)(source.model_copy(update={"device": "cpu"}))
    encoder.load()
    inputs: ClipInputs = encoder.inputs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # the example batch pads its texts, so the traced graph keeps the attention-mask path
    example_images = [Image.new("RGB", (64, 48), (120, 80, 40)), Image.new("RGB", (48, 64), (10, 200, 30))]
    example_texts = ["一只猫", "a photo of a cat sleeping on a keyboard"]
    towers = {
        "image": (encoder.image_tower, inputs.images(example_images), inputs.image_keys, False, IMAGE_FILE,
                  quantize),
        "text": (encoder.text_tower, inputs.texts(example_texts), inputs.text_keys, inputs.variable_text_length,
                 TEXT_FILE, quantize and quantize_text),
    }
    manifest: dict[str, Any] = {"format": FORMAT, "source": source.spec(), "family": inputs.family,
                                "dim": encoder.spaces["joint"]}
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        for tower_name, (tower, feed, keys, dynamic_length, file_name, to_int8) in towers.items():
            traced = Path(tmp) / file_name if to_int8 else out_dir / file_name
            _export_tower(tower, feed, keys, traced, dynamic_length)
            if to_int8:
                _quantize(traced, out_dir / file_name)
            manifest[tower_name] = {"file": file_name, "inputs": list(keys),
                                    "quantization": "dynamic-uint8" if to_int8 else None}
    manifest["inputs"] = inputs.save(out_dir)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return out_dir


# -- runtime --------------------------------------------------------------------------------------
class OnnxClipEncoder(Encoder):
    """Runs an ``export_onnx`` directory with ONNX Runtime on the CPU; space ``joint``.

    Options: ``threads`` (intra-op threads per session; 0 or unset: ONNX Runtime's default).
    """

    name = "onnx"

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        self.inputs: ClipInputs | None = None
        self.manifest: dict[str, Any] = {}
        self._image_session: ort.InferenceSession | None = None
        self._text_session: ort.InferenceSession | None = None

    def _session_options(self) -> ort.SessionOptions:
        threads = self.config.options.get("threads", 0)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ConfigError(f"onnx option threads must be a whole number >= 0, not {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options

    def _load(self) -> None:
        if self.config.device != "cpu":
            raise ConfigError(f"the onnx backend runs on the CPU (device: cpu); for {self.config.device} "
                              f"use the chinese-clip or open-clip backend")
        if not self.config.model:
            raise ConfigError("the onnx backend needs model: a directory written by export_onnx")
        source = resolve(self.config.model)
        export_dir = Path(source.ref)
        if not source.local or not (export_dir / MANIFEST).is_file():
            raise ModelUnavailable(f"{self.config.model} is not an ONNX export directory (no {MANIFEST}); create it with "
                                   f"python -m zhaopian.modules.visual.encoders.onnx <backend:model[@pretrained]> <dir>")
        manifest = json.loads((export_dir / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("family") not in INPUTS:
            raise ModelUnavailable(f"{export_dir / MANIFEST} is not a {FORMAT} manifest; export the model again")
        options = self._session_options()
        try:
            self._image_session = ort.InferenceSession(str(export_dir / manifest["image"]["file"]), options,
                                                       providers=["CPUExecutionProvider"])
            self._text_session = ort.InferenceSession(str(export_dir / manifest["text"]["file"]), options,
                                                      providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelUnavailable(f"could not load the ONNX models in {export_dir}: {exc}".splitlines()[0]) from exc
        self.inputs = _inputs_class(manifest["family"]).from_export(export_dir, manifest["inputs"])
        self.manifest = manifest

    @property
    def spaces(self) -> dict[str, int]:
        self.load()
        return {"joint": int(self.manifest["dim"])}

    def _encode_images(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        assert self.inputs is not None and self._image_session is not None
        feed = self.inputs.images(images)
        return {"joint": self._image_session.run(None, {key: feed[key] for key in self.manifest["image"]["inputs"]})[0]}

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        assert self.inputs is not None and self._text_session is not None
        feed = self.inputs.texts(texts)
        return self._text_session.run(None, {key: feed[key] for key in self.manifest["text"]["inputs"]})[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a CLIP-family encoder to ONNX Runtime (int8) for the onnx backend.")
    parser.add_argument("spec", help="backend:model[@pretrained], e.g. chinese-clip:OFA-Sys/chinese-clip-vit-base-patch16")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--no-quantize", action="store_true", help="keep float32 weights in both towers")
    parser.add_argument("--quantize-text", action="store_true", help="make the text tower 8-bit too (smaller, less exact)")
    args = parser.parse_args(argv)
    out = export_onnx(EncoderConfig.parse_spec(args.spec), args.out_dir, quantize=not args.no_quantize,
                      quantize_text=args.quantize_text)
    print(f"wrote {out}; use it with  backend: onnx  model: {out}")


if __name__ == "__main__":
    main()
