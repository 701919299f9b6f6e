"""What the text modules (meta, labels, ocr, asr) share: units of text in the library's text index.

A text module's ``write`` turns its features into :class:`TextSpan` s. Each
span becomes a unit in the catalog (its id) and a :class:`TextDoc` in the
library's text index, tagged with the module's name. Search is the same for
all of them:

rewrite   the parsed query's free text and exact phrases, restricted to this module's units
          (and to the media the query's filters allow)
recall    the text index's best units that contain enough of the query (``min_coverage``),
          kept only if their medium is ready; each hit carries the matched text and its
          highlight, so results can say why they were found
aggregate touching units merge into segments (search/segments.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from pydantic import Field

from zhaopian.modules.base import Module, ModuleConfig, Query
from zhaopian.search.catalog import Unit
from zhaopian.search.segments import merge_hits
from zhaopian.search.stores.text import TextDoc, TextHit, TextQuery
from zhaopian.search.stores.text_analysis import coverage
from zhaopian.search.types import Hit, MediaInfo, Segment


class TextModuleConfig(ModuleConfig):
    #: a unit must contain at least this share of the query's words and CJK bigrams (stop words
    #: aside), so one shared word does not make a sentence match a long description; 0 keeps all
    min_coverage: float = Field(default=0.5, ge=0, le=1)
    #: segments: units at most this many seconds apart can merge
    merge_gap: float = Field(default=1.0, ge=0)
    #: segments: a neighbour joins when its score is within spread × (score range) of the seed
    merge_spread: float = Field(default=0.25, ge=0, le=1)


@dataclass(frozen=True)
class TextSpan:
    """A piece of text a module found in a medium, with the time span it covers."""

    start: float
    end: float
    text: str
    thumb: float | None = None  # representative instant; default: start
    field: str = "text"
    lang: str = ""
    data: dict[str, Any] = dc_field(default_factory=dict)


@dataclass(frozen=True)
class ImageTextQuery(TextQuery):
    """A text query read off a query image (its labels, its on-screen text): any part of it may match."""


class TextModule(Module):
    Config = TextModuleConfig

    # ingestion ---------------------------------------------------------------------------------
    def store(self, media: MediaInfo | int, spans: list[TextSpan]) -> int:
        """Add spans as units of this module (catalog + text index); returns how many."""
        spans = [s for s in spans if s.text.strip()]
        if not spans:
            return 0
        media_id = media if isinstance(media, int) else media.media_id
        ids = self.context.media.add_units(
            media_id, self.name, [(s.start, s.end, s.start if s.thumb is None else s.thumb) for s in spans])
        self.context.text.add([TextDoc(unit_id=i, media_id=media_id, module=self.name, start=s.start, end=s.end,
                                       text=s.text, field=s.field, lang=s.lang, data=s.data)
                               for i, s in zip(ids, spans)])
        return len(spans)

    def remove(self, media_ids: list[int]) -> None:
        self.context.text.remove(media_ids, self.name)

    def flush(self) -> None:
        self.context.text.flush()

    # search ------------------------------------------------------------------------------------
    def rewrite(self, query: Query) -> TextQuery | None:
        parsed = query.parsed
        if parsed is None or not parsed.search_text:
            return None
        return self.text_query(parsed.text, parsed.phrases, query)

    def text_query(self, text: str, phrases: list[str], query: Query, from_image: bool = False) -> TextQuery:
        allowed = None if query.media_ids is None else tuple(sorted(query.media_ids))
        kind = ImageTextQuery if from_image else TextQuery
        return kind(text=text, phrases=tuple(phrases), modules=(self.name,), media_ids=allowed)

    def score(self, hit: TextHit) -> float:
        """A unit's score from its text match; modules weigh in their own confidence."""
        return hit.score

    def recall(self, module_query: TextQuery, k: int) -> list[Hit]:
        found = self.context.text.search(module_query, k)
        if module_query.text.strip() and (floor := self.min_coverage(module_query)) > 0:
            found = [h for h in found if coverage(module_query.text, h.text) >= floor]
        units = self.context.media.ready_units([h.unit_id for h in found])
        return [self.hit(h, unit, module_query) for h in found if (unit := units.get(h.unit_id))]

    def min_coverage(self, query: TextQuery) -> float:
        """How much of the query a unit must contain (see ``TextModuleConfig.min_coverage``)."""
        return 0.0 if isinstance(query, ImageTextQuery) else self.config.min_coverage

    def hit(self, found: TextHit, unit: Unit, query: TextQuery) -> Hit:
        """A recalled unit as a hit that carries its matched text and highlight."""
        return Hit(found.media_id, found.start, found.end, self.score(found), unit.thumb,
                   detail={"text": found.text, "highlight": found.highlight, "field": found.field})

    def aggregate(self, hits: list[Hit], module_query: Any) -> list[Segment]:
        return merge_hits(hits, self.name, max_gap=self.config.merge_gap, spread=self.config.merge_spread)
