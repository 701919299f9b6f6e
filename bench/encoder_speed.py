"""CPU speed of the CLIP-family encoders: torch versus the ONNX Runtime int8 export.

    /tmp/venv/bin/python bench/encoder_speed.py                       # ~4 min the first time
    /tmp/venv/bin/python bench/encoder_speed.py --workdir /tmp/zp-speed  # keep the models; reruns take ~1 min

No weights can be downloaded here, so the models have random weights of the real shapes:
Chinese-CLIP ViT-B/16 (the config of OFA-Sys/chinese-clip-vit-base-patch16, RoBERTa-wwm-base text
tower, saved with a small tokenizer) and open_clip ViT-B-32. Speed does not depend on the weight
values. Each model goes through the real code: saved to disk, loaded by its encoder, exported by
``export_onnx`` and run by the ``onnx`` encoder.

Measured, for 1 and 2 threads (``torch.set_num_threads`` / the onnx ``threads`` option): images/s of
``encode_images`` (pre-processing included) on 640x360 frames in batches of ``--batch``, and ms per
single query of ``encode_texts``; and the cosine between the ONNX (int8 image tower, float32 text
tower: the default export) and the torch vectors on the same frames and queries (random weights, so
this checks the export's numerics at real sizes, not retrieval quality).
Other processes on the machine slow every figure: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import chinese_clip_vit_b16_config, make_tiny_chinese_clip  # noqa: E402

from zhaopian.modules.visual.encoders.base import Encoder, EncoderConfig  # noqa: E402
from zhaopian.modules.visual.encoders.onnx import MANIFEST, export_onnx  # noqa: E402
from zhaopian.modules.visual.encoders.registry import encoder_class  # noqa: E402

QUERIES = ["一只猫趴在键盘上", "a red car parked by the road", "海边的日落"]


def frames(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)).resize((640, 360)) for _ in range(n)]


def sources(workdir: Path) -> dict[str, EncoderConfig]:
    cc_dir, oc_file = workdir / "chinese-clip-vit-b16", workdir / "open-clip-vit-b-32.safetensors"
    if not (cc_dir / "model.safetensors").exists():
        make_tiny_chinese_clip(cc_dir, chinese_clip_vit_b16_config())
    if not oc_file.exists():
        save_file(open_clip.create_model("ViT-B-32").state_dict(), str(oc_file))
    return {
        "Chinese-CLIP ViT-B/16": EncoderConfig(backend="chinese-clip", model=str(cc_dir)),
        "open_clip ViT-B-32": EncoderConfig(backend="open-clip", model="ViT-B-32", pretrained=str(oc_file)),
    }


def images_per_second(encoder: Encoder, images: list[Image.Image], repeats: int) -> float:
    encoder.encode_images(images[:2])  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode_images(images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def ms_per_query(encoder: Encoder, repeats: int = 5) -> float:
    encoder.encode_texts(QUERIES[:1])  # warm up
    best = float("inf")
    for _ in range(repeats):
        for query in QUERIES:
            start = time.perf_counter()
            encoder.encode_texts([query])
            best = min(best, time.perf_counter() - start)
    return 1000 * best


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep models and exports here (default: a temporary directory)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed batches per setting (best is reported)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # open_clip/onnxruntime chatter

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        images = frames(args.batch)
        rows = []
        for label, config in sources(workdir).items():
            config = config.model_copy(update={"batch_size": args.batch})
            export_dir = workdir / f"onnx-{config.backend}"
            if not (export_dir / MANIFEST).exists():
                start = time.perf_counter()
                export_onnx(config, export_dir)
                print(f"{label}: exported to int8 in {time.perf_counter() - start:.0f} s", flush=True)
            torch_encoder = encoder_class(config.backend)(config)
            onnx_config = EncoderConfig(backend="onnx", model=str(export_dir), batch_size=args.batch)
            check = encoder_class("onnx")(onnx_config)
            image_cos = cosine(torch_encoder.encode_images(images)["joint"], check.encode_images(images)["joint"])
            text_cos = cosine(torch_encoder.encode_texts(QUERIES), check.encode_texts(QUERIES))
            for threads in args.threads:
                torch.set_num_threads(threads)
                torch_speed = images_per_second(torch_encoder, images, args.repeats)
                onnx_encoder = encoder_class("onnx")(onnx_config.model_copy(update={"options": {"threads": threads}}))
                onnx_speed = images_per_second(onnx_encoder, images, args.repeats)
                torch_query, onnx_query = ms_per_query(torch_encoder), ms_per_query(onnx_encoder)
                rows.append((label, threads, torch_speed, onnx_speed, torch_query, onnx_query, image_cos, text_cos,
                             os.getloadavg()[0]))
                print(f"{label}: {threads} thread(s) torch {torch_speed:.1f} img/s, onnx {onnx_speed:.1f} img/s; "
                      f"query torch {torch_query:.0f} ms, onnx {onnx_query:.0f} ms", flush=True)

    print(f"\nbatch {args.batch}, 640x360 frames, pre-processing included, best of {args.repeats}; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'model':22} {'threads':>7} {'torch img/s':>11} {'onnx img/s':>10} {'speed-up':>8} "
          f"{'torch ms/q':>10} {'onnx ms/q':>9} {'cos img':>8} {'cos text':>8} {'load':>5}")
    for label, threads, torch_speed, onnx_speed, torch_query, onnx_query, image_cos, text_cos, load in rows:
        print(f"{label:22} {threads:>7} {torch_speed:>11.1f} {onnx_speed:>10.1f} {onnx_speed / torch_speed:>7.1f}x "
              f"{torch_query:>10.0f} {onnx_query:>9.0f} {image_cos:>8.4f} {text_cos:>8.4f} {load:>5.1f}")


if __name__ == "__main__":
    main()
