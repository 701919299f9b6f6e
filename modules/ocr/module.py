"""The ``ocr`` module: text on screen (titles, subtitles, signs, captions), as time-stamped lines.

extract   each chunk of frames -> frames whose text may have changed are read with RapidOCR
          (Chinese and English), while no text is on screen at most one every ``idle_seconds``;
          the others reuse the last read (modules/ocr/reader.py)
write     the medium's reads -> each line tracked over consecutive frames becomes one unit:
          its text, time span, box and confidence
rewrite   the parsed query's text and exact phrases (shared text-module search); an image
          query by the text in the image
recall    text-index matches, weighted by the line's OCR confidence
aggregate touching lines merge into segments (search/segments.py)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from zhaopian.modules.base import Query
from zhaopian.modules.text_module import TextModule, TextModuleConfig, TextSpan
from zhaopian.search.stores.text import TextHit, TextQuery
from zhaopian.search.stores.text_analysis import CJK_RE
from zhaopian.search.types import Frame, MediaInfo

from .reader import FrameText, OcrConfig, ReadPolicy, TextReader, scan_frames, track_lines


class OcrModuleConfig(TextModuleConfig, OcrConfig):
    #: a line continues over frames when its text is at least this similar (OCR jitters by a character)
    line_similarity: float = Field(default=0.8, ge=0, le=1)
    #: a line survives frames that miss it for up to this many seconds
    line_gap: float = Field(default=1.0, ge=0)


#: at most this many distinct readings of one line are indexed (a counter ticking on screen)
MAX_READINGS = 5


def _text(line) -> str:
    """A line's text; when OCR read it differently over time, the other readings too (``a / b``)."""
    readings = list(dict.fromkeys([line.text, *line.readings]))[:MAX_READINGS]
    return " / ".join(readings)


class OcrModule(TextModule):
    name = "ocr"
    Config = OcrModuleConfig

    def __init__(self, config: OcrModuleConfig, context) -> None:
        super().__init__(config, context)
        self.reader = TextReader(OcrConfig(**{k: getattr(config, k) for k in OcrConfig.model_fields}))
        self._policies: dict[int, ReadPolicy] = {}  # per medium being indexed
        self._lock = threading.Lock()

    def _policy(self, media_id: int) -> ReadPolicy:
        with self._lock:
            if media_id not in self._policies:
                self._policies[media_id] = ReadPolicy(self.config.detector(), self.config.idle_seconds)
            return self._policies[media_id]

    # ingestion ---------------------------------------------------------------------------------
    def extract(self, media: MediaInfo, frames: Sequence[Frame]) -> list[FrameText]:
        step = 0.0 if media.kind == "image" else media.sample_step
        return scan_frames(frames, step, self.reader, self._policy(media.media_id))

    def write(self, media: MediaInfo, features: list[list[FrameText]]) -> int:
        with self._lock:
            self._policies.pop(media.media_id, None)
        reads = [read for chunk in features for read in chunk]
        if not reads:
            return 0
        lines = track_lines(reads, similarity=self.config.line_similarity, max_gap=self.config.line_gap)
        end_limit = media.duration if media.duration > 0 else None
        return self.store(media, [
            TextSpan(line.start, min(line.end, end_limit) if end_limit else line.end, _text(line),
                     lang="zh" if CJK_RE.search(line.text) else "en",
                     data={"box": [round(v, 4) for v in line.box], "score": line.score})
            for line in lines])

    def remove(self, media_ids: list[int]) -> None:
        with self._lock:
            for media_id in media_ids:
                self._policies.pop(media_id, None)
        super().remove(media_ids)

    # search ------------------------------------------------------------------------------------
    def rewrite(self, query: Query) -> TextQuery | None:
        """Text queries as usual; an image query (a screenshot, a photo of a sign) by the text it shows."""
        if query.image is not None:
            lines = self.reader.read(np.asarray(query.image.convert("RGB")))
            text = " ".join(line.text for line in lines)
            return self.text_query(text, [], query, from_image=True) if text.strip() else None
        return super().rewrite(query)

    def score(self, hit: TextHit) -> float:
        return hit.score * float(hit.data.get("score", 1.0))
