"""The embedded text index: tantivy files in the library's folder (the default backend).

Schema (one document per text unit)::

    unit_id, media_id   u64, indexed + fast + stored
    module, field, lang raw strings, indexed + stored
    start, end          f64, stored
    words               jieba words joined by spaces, tokenizer ``en_stem`` (lower case + English stemming)
    grams               CJK unigrams + bigrams joined by spaces, tokenizer ``whitespace``
    payload             stored JSON bytes: the original text and the module's data

A query is a boolean query: each query word on ``words`` and each query
bigram on ``grams`` (weight :data:`GRAM_BOOST`) *should* match (BM25);
every token of every phrase *must* match, and the stored text is then checked
for the exact phrase. Filters (module, field, media) are *must* clauses.

Durability: writes go to one ``IndexWriter`` and become visible on ``flush``,
which commits (tantivy writes new segment files, then swaps ``meta.json``
atomically), so a crash loses only uncommitted units — of media the library
has not yet marked ready. The writer (and tantivy's writer lock) is held only
between the first write and the commit; readers reload before each search, so
they see other processes' commits.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import tantivy
from tantivy import Occur
from tantivy import Query as Q

from .text import TextDoc, TextHit, TextIndex, TextQuery
from .text_analysis import contains_phrase, grams, highlight, query_grams, query_words, stem, words

GRAM_BOOST = 0.5
#: with phrases, fetch this many times k before the exact check drops near misses
PHRASE_OVERFETCH = 5
#: ... and stop looking after this many candidates
MAX_PHRASE_CANDIDATES = 10_000
WRITER_HEAP = 50_000_000


def _schema() -> tantivy.Schema:
    b = tantivy.SchemaBuilder()
    b.add_unsigned_field("unit_id", stored=True, indexed=True, fast=True)
    b.add_unsigned_field("media_id", stored=True, indexed=True, fast=True)
    for name in ("module", "field", "lang"):
        b.add_text_field(name, stored=True, tokenizer_name="raw")
    b.add_float_field("start", stored=True)
    b.add_float_field("end", stored=True)
    b.add_text_field("words", tokenizer_name="en_stem")
    b.add_text_field("grams", tokenizer_name="whitespace", index_option="freq")
    b.add_bytes_field("payload", stored=True)
    return b.build()


class TantivyTextIndex(TextIndex):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._schema = _schema()
        self._index: tantivy.Index | None = None
        self._writer: tantivy.IndexWriter | None = None
        self._lock = threading.RLock()

    # -- files ----------------------------------------------------------------------------------
    def _open(self) -> tantivy.Index:
        if self._index is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._index = tantivy.Index(self._schema, path=str(self.path), reuse=True)
        return self._index

    def _writer_(self) -> tantivy.IndexWriter:
        if self._writer is None:
            self._writer = self._open().writer(heap_size=WRITER_HEAP, num_threads=1)
        return self._writer

    # -- writing --------------------------------------------------------------------------------
    def add(self, docs: Sequence[TextDoc]) -> None:
        if not docs:
            return
        with self._lock:
            writer = self._writer_()
            for d in docs:
                writer.delete_documents_by_query(self._term("unit_id", d.unit_id))  # re-adding replaces
                payload = json.dumps({"text": d.text, "data": d.data}, ensure_ascii=False).encode()
                doc = tantivy.Document(module=d.module, field=d.field, lang=d.lang, start=float(d.start),
                                       end=float(d.end), words=" ".join(words(d.text)),
                                       grams=" ".join(grams(d.text)), payload=payload)
                doc.add_unsigned("unit_id", d.unit_id)
                doc.add_unsigned("media_id", d.media_id)
                writer.add_document(doc)

    def remove(self, media_ids: Sequence[int], module: str | None = None) -> None:
        if not media_ids:
            return
        with self._lock:
            if self._index is None and not self.path.exists():
                return  # nothing was ever written
            query = self._media_clause(media_ids)
            if module is not None:
                query = Q.boolean_query([(Occur.Must, query), (Occur.Must, self._term("module", module))])
            self._writer_().delete_documents_by_query(query)

    def flush(self) -> None:
        with self._lock:
            if self._writer is None:
                return
            self._writer.commit()
            self._writer.wait_merging_threads()  # also releases the writer lock
            self._writer = None

    def compact(self) -> None:
        """Commit, let tantivy's merge policy merge segments, and delete files no commit refers to."""
        with self._lock:
            if self._index is None and not (self.path / "meta.json").exists():
                return
            writer = self._writer_()
            writer.commit()
            writer.garbage_collect_files()
            writer.wait_merging_threads()  # also releases the writer lock
            self._writer = None

    # -- reading --------------------------------------------------------------------------------
    def _term(self, name: str, value) -> Q:
        return Q.term_query(self._schema, name, value)

    def _media_clause(self, media_ids: Sequence[int]) -> Q:
        return Q.term_set_query(self._schema, "media_id", [int(m) for m in media_ids])

    def _any(self, name: str, values: Sequence[str]) -> Q:
        return Q.boolean_query([(Occur.Should, self._term(name, v)) for v in values])

    def _build(self, query: TextQuery) -> Q | None:
        should: list[tuple[Occur, Q]] = []
        for w in dict.fromkeys(query_words(query.text)):
            should.append((Occur.Should, self._term("words", stem(w))))
        for g in dict.fromkeys(query_grams(query.text)):
            should.append((Occur.Should, Q.boost_query(self._term("grams", g), GRAM_BOOST)))
        # words rank; they are required unless phrases already decide what matches
        occur = Occur.Should if any(p.strip() for p in query.phrases) else Occur.Must
        must: list[tuple[Occur, Q]] = [(occur, Q.boolean_query(should))] if should else []
        for phrase in query.phrases:
            tokens = [("grams", g) for g in query_grams(phrase)]
            tokens += [("words", stem(w)) for w in words(phrase, query=True) if w.isascii()]
            must += [(Occur.Must, self._term(name, value)) for name, value in dict.fromkeys(tokens)]
        if not must:
            return None
        filters = []
        if query.modules is not None:
            filters.append(self._any("module", query.modules))
        if query.fields is not None:
            filters.append(self._any("field", query.fields))
        if query.media_ids is not None:
            filters.append(self._media_clause(query.media_ids))
        must += [(Occur.Must, Q.const_score_query(f, 0.0)) for f in filters]  # filters do not score
        return Q.boolean_query(must)

    def _searcher(self) -> tantivy.Searcher | None:
        if self._index is None and not (self.path / "meta.json").exists():
            return None
        index = self._open()
        index.reload()
        return index.searcher()

    def search(self, query: TextQuery, k: int) -> list[TextHit]:
        if query.empty or k <= 0 or (query.media_ids is not None and not query.media_ids):
            return []
        if (tq := self._build(query)) is None or (searcher := self._searcher()) is None:
            return []
        phrases = [p for p in query.phrases if p.strip()]
        hits: list[TextHit] = []
        # with phrases, candidates are fetched in growing pages until k of them hold the exact phrase
        limit, offset = (k * PHRASE_OVERFETCH if phrases else k), 0
        while True:
            page = searcher.search(tq, limit, offset=offset).hits
            for score, address in page:
                doc = searcher.doc(address)
                payload = json.loads(bytes(doc["payload"][0]))
                text = payload["text"]
                if phrases and not all(contains_phrase(text, p) for p in phrases):
                    continue
                hits.append(TextHit(
                    unit_id=int(doc["unit_id"][0]), media_id=int(doc["media_id"][0]), module=doc["module"][0],
                    start=float(doc["start"][0]), end=float(doc["end"][0]), score=float(score), text=text,
                    field=doc["field"][0], lang=doc["lang"][0], data=payload.get("data") or {},
                    highlight=highlight(text, query.text, phrases)))
                if len(hits) == k:
                    return hits
            if not phrases or len(page) < limit or offset + limit >= MAX_PHRASE_CANDIDATES:
                return hits
            offset += limit
            limit *= 2

    def count(self, module: str | None = None) -> int:
        if (searcher := self._searcher()) is None:
            return 0
        if module is None:
            return searcher.num_docs
        return searcher.search(self._term("module", module), 1, count=True).count

    def media_ids(self) -> set[int]:
        if (searcher := self._searcher()) is None or searcher.num_docs == 0:
            return set()
        result = searcher.aggregate(Q.all_query(), {"m": {"terms": {"field": "media_id", "size": 1 << 30}}})
        return {int(b["key"]) for b in result["m"]["buckets"]}

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.rollback()
                self._writer = None
            self._index = None

    def drop(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
