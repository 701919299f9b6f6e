"""The ``asr`` module: what is said, transcribed by Whisper into time-stamped sentences.

extract   once per medium, in a thread beside the frame modules: the audio track -> sentence
          units with word timings, Chinese in simplified characters (modules/asr/transcribe.py)
write     each sentence -> one unit (its words and their times kept with it)
rewrite   the parsed query's text and exact phrases (shared text-module search)
recall    text-index matches; a long sentence is narrowed to the words that matched
aggregate touching sentences merge into segments (search/segments.py)

A medium without an audio track has nothing to say; one whose audio cannot be
decoded is still indexed by the other modules, with a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ConfigDict

from zhaopian.modules.text_module import TextModule, TextModuleConfig, TextSpan
from zhaopian.search.catalog import Unit
from zhaopian.search.errors import MediaError
from zhaopian.search.stores.text import TextHit, TextQuery
from zhaopian.search.stores.text_analysis import normalize, stem, words
from zhaopian.search.types import Frame, Hit, MediaInfo

from .transcribe import Transcript, WhisperConfig, transcribe

log = logging.getLogger(__name__)

#: a matched sentence is narrowed to its matched words, padded by this many seconds on each side
WORD_PAD = 1.0


class AsrConfig(TextModuleConfig, WhisperConfig):
    model_config = ConfigDict(extra="forbid", frozen=False)


def matched_span(word_times: list[list], query_text: str, phrases: Sequence[str]) -> tuple[float, float] | None:
    """The time span of the words of a sentence that the query matched (None if none can be told)."""
    wanted = {stem(w) for w in words(query_text, query=True)} | {normalize(p) for p in phrases}
    times = []
    for start, end, text in word_times:
        token = normalize(text).strip(" ,.!?;:，。！？；：")
        if token and (stem(token) in wanted or any(token in w or w in token for w in wanted if len(w) > 1)):
            times.append((start, end))
    if not times:
        return None
    return min(t[0] for t in times), max(t[1] for t in times)


class AsrModule(TextModule):
    name = "asr"
    Config = AsrConfig
    reads = "file"

    @property
    def whisper(self) -> WhisperConfig:
        return WhisperConfig(**{k: getattr(self.config, k) for k in WhisperConfig.model_fields})

    # ingestion ---------------------------------------------------------------------------------
    def extract(self, media: MediaInfo, frames: Sequence[Frame]) -> Transcript | None:
        if media.kind != "video":
            return None
        try:
            return transcribe(media.path, self.whisper)
        except MediaError as exc:
            log.warning("speech not indexed: %s", exc.message)
            return None

    def write(self, media: MediaInfo, features: list[Transcript | None]) -> int:
        spans = []
        for transcript in filter(None, features):
            for unit in transcript.units:
                spans.append(TextSpan(unit.start, unit.end, unit.text.strip(), lang=unit.language, data={
                    "confidence": round(unit.confidence, 4),
                    "words": [[round(w.start, 2), round(w.end, 2), w.text] for w in unit.words]}))
        return self.store(media, spans)

    # search ------------------------------------------------------------------------------------
    def score(self, hit: TextHit) -> float:
        return hit.score * (0.5 + 0.5 * float(hit.data.get("confidence", 1.0)))

    def hit(self, found: TextHit, unit: Unit, query: TextQuery) -> Hit:
        hit = super().hit(found, unit, query)
        span = matched_span(found.data.get("words", []), query.text, query.phrases)
        if span and span[1] - span[0] + 2 * WORD_PAD < hit.end - hit.start:  # narrow a long sentence
            hit.start, hit.end = max(hit.start, span[0] - WORD_PAD), min(hit.end, span[1] + WORD_PAD)
            hit.thumb = min(max(hit.thumb, hit.start), hit.end)
        return hit
