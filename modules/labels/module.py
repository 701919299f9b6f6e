"""The ``labels`` module: what ImageNet's 1000 classes see in each frame, as time-stamped tags.

extract   frames -> the classes MobileNetV2 (the bundled encoder's network) gives at least
          ``min_probability``, at most ``top_k`` per frame
write     each class's run of consecutive frames -> one unit whose text is the class's Chinese
          and English names ("虎斑猫 tabby cat"), its confidence the run's best probability
rewrite   text -> a text search over label names; an image -> the names of the image's own
          top classes, so a photo also finds frames showing the same kind of thing
recall    text-index matches, weighted by each label's confidence
aggregate touching units merge into segments (search/segments.py)

With the bundled visual encoder on too, each frame is classified once for both
(``BundledEncoder.forward`` remembers recent batches).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from zhaopian.modules.base import Query
from zhaopian.modules.text_module import TextModule, TextModuleConfig, TextSpan
from zhaopian.modules.visual.encoders.base import EncoderConfig, to_pil
from zhaopian.modules.visual.encoders.bundled import (
    BundledEncoder,
    class_names_en,
    class_names_zh,
    split_synonyms,
)
from zhaopian.modules.visual.encoders.registry import create_encoder
from zhaopian.search.stores.text import TextHit, TextQuery
from zhaopian.search.types import Frame, MediaInfo


class LabelsConfig(TextModuleConfig):
    #: classes kept per frame, most probable first
    top_k: int = Field(default=3, ge=1, le=20)
    #: a class is kept when its softmax probability reaches this
    min_probability: float = Field(default=0.2, gt=0, le=1)
    #: an image query searches for the names of its own classes above this probability
    query_min_probability: float = Field(default=0.15, gt=0, le=1)


@dataclass
class FrameLabels:
    times: list[float]
    labels: list[list[tuple[int, float]]]  # per frame: (class, probability)


@functools.cache
def label_text(index: int) -> str:
    """A class's searchable text: its Chinese synonyms and English name."""
    return " ".join([*split_synonyms(class_names_zh()[index]), class_names_en()[index]])


def runs(times: list[float], labels: list[list[tuple[int, float]]], step: float, duration: float) -> list[TextSpan]:
    """One span per class per run of consecutive frames showing it (a gap of one sample is bridged)."""
    spans: list[TextSpan] = []
    open_runs: dict[int, dict] = {}

    def close(cls: int) -> None:
        r = open_runs.pop(cls)
        end = r["last"] + step
        spans.append(TextSpan(r["start"], min(end, duration) if duration > 0 else r["last"], label_text(cls),
                              thumb=r["best_t"], data={"class": cls, "score": round(r["best"], 4)}))

    for t, frame in zip(times, labels):
        for cls in [c for c, r in open_runs.items() if t - r["last"] > 2 * step + 1e-6]:
            close(cls)
        for cls, p in frame:
            r = open_runs.setdefault(cls, {"start": t, "last": t, "best": p, "best_t": t})
            r["last"] = t
            if p > r["best"]:
                r["best"], r["best_t"] = p, t
    for cls in list(open_runs):
        close(cls)
    return sorted(spans, key=lambda s: (s.start, -s.data["score"]))


class LabelsModule(TextModule):
    name = "labels"
    Config = LabelsConfig

    @functools.cached_property
    def classifier(self) -> BundledEncoder:
        encoder = create_encoder(EncoderConfig(backend="bundled"))
        assert isinstance(encoder, BundledEncoder)
        return encoder

    def classify(self, images: Sequence) -> np.ndarray:
        """Softmax ImageNet probabilities (n, 1000), in the bundled encoder's batches."""
        pil = [to_pil(im) for im in images]
        bs = self.classifier.config.batch_size
        logits = np.concatenate([self.classifier.forward(pil[i : i + bs])[0] for i in range(0, len(pil), bs)])
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def top(self, probs: np.ndarray, min_probability: float) -> list[list[tuple[int, float]]]:
        order = np.argsort(-probs, axis=1)[:, : self.config.top_k]
        return [[(int(c), float(row[c])) for c in idx if row[c] >= min_probability] for row, idx in zip(probs, order)]

    # ingestion ---------------------------------------------------------------------------------
    def extract(self, media: MediaInfo, frames: Sequence[Frame]) -> FrameLabels:
        if not frames:
            return FrameLabels([], [])
        probs = self.classify([f.image for f in frames])
        return FrameLabels([f.t for f in frames], self.top(probs, self.config.min_probability))

    def write(self, media: MediaInfo, features: list[FrameLabels]) -> int:
        times = [t for f in features for t in f.times]
        labels = [lab for f in features for lab in f.labels]
        step = 0.0 if media.kind == "image" else media.sample_step
        return self.store(media, runs(times, labels, step, media.duration))

    # search ------------------------------------------------------------------------------------
    def rewrite(self, query: Query) -> TextQuery | None:
        if query.image is not None:
            [classes] = self.top(self.classify([query.image]), self.config.query_min_probability)
            if not classes:
                return None
            return self.text_query(" ".join(class_names_en()[c] for c, _ in classes), [], query, from_image=True)
        return super().rewrite(query)

    def score(self, hit: TextHit) -> float:
        return hit.score * float(hit.data.get("score", 1.0))
