"""The ``meta`` module: what people wrote about a medium, searchable like its content.

extract   the medium's catalog record -> one text span per field (title, description, tags,
          file name, each custom field), all covering the whole medium
write     spans -> units in the text index
rewrite   the parsed query's text and phrases (shared text-module search)
aggregate every matching field of a medium adds up to one whole-medium segment, which fusion
          uses to strengthen the moments other routes find in that medium

Editing a medium's metadata re-indexes its fields (``metadata_changed``).
Filtering by tags, duration and date is done by the engine on the catalog.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from zhaopian.modules.text_module import TextModule, TextModuleConfig, TextSpan
from zhaopian.search.catalog import MediaRecord
from zhaopian.search.types import Frame, Hit, Match, MediaInfo, Segment


class MetaConfig(TextModuleConfig):
    #: which fields are indexed; custom fields are indexed under their own names
    fields: list[str] = Field(default_factory=lambda: ["title", "description", "tags", "filename", "custom"])
    #: weight of a match per field (a title match counts more than a description match)
    weights: dict[str, float] = Field(default_factory=lambda: {"title": 1.5, "tags": 1.5, "filename": 1.0,
                                                               "description": 1.0})


def readable_filename(path: str) -> str:
    """``cat_on-keyboard.2023.mp4`` -> ``cat on keyboard 2023``: separators become spaces."""
    return re.sub(r"[\s_.\-]+", " ", Path(path).stem).strip()


class MetaModule(TextModule):
    name = "meta"
    Config = MetaConfig
    reads = "file"

    def spans(self, record: MediaRecord) -> list[TextSpan]:
        end = record.duration
        wanted = set(self.config.fields)
        values = {"title": record.title, "description": record.description, "tags": " ".join(record.tags),
                  "filename": readable_filename(record.path)}
        spans = [TextSpan(0.0, end, text, field=name) for name, text in values.items() if name in wanted]
        if "custom" in wanted:
            spans += [TextSpan(0.0, end, f"{value}", field=name) for name, value in record.fields.items()]
        return [s for s in spans if s.text.strip()]

    # ingestion ---------------------------------------------------------------------------------
    def extract(self, media: MediaInfo, frames: Sequence[Frame]) -> list[TextSpan]:
        return self.spans(self.context.media.record(media.media_id))

    def write(self, media: MediaInfo, features: list[list[TextSpan]]) -> int:
        return self.store(media, [span for spans in features for span in spans])

    def metadata_changed(self, media_id: int) -> None:
        self.context.media.delete_units([media_id], self.name)
        self.remove([media_id])
        self.store(media_id, self.spans(self.context.media.record(media_id)))

    # search ------------------------------------------------------------------------------------
    def aggregate(self, hits: list[Hit], module_query) -> list[Segment]:
        by_media: dict[int, list[Hit]] = defaultdict(list)
        for h in hits:
            by_media[h.media_id].append(h)
        segments = []
        for media_id, items in by_media.items():
            weighted = [(self.config.weights.get(h.detail["field"], 1.0) * h.score, h) for h in items]
            score = sum(w for w, _ in weighted)
            matches = [Match(route=self.name, start=h.start, end=h.end, score=w, text=h.detail["text"],
                             highlight=h.detail["highlight"], field=h.detail["field"])
                       for w, h in sorted(weighted, key=lambda x: -x[0])]
            first = items[0]
            segments.append(Segment(media_id=media_id, start=0.0, end=max(h.end for h in items), score=score,
                                    thumbnail_time=first.thumb, routes={self.name: score}, matches=matches,
                                    whole_medium=True))
        return sorted(segments, key=lambda s: -s.score)
