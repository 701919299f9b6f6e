"""Text analysis shared by every text index backend, so both find and highlight the same things.

* :func:`words`  — jieba segmentation (Chinese words; Latin words kept whole),
  lower-cased, punctuation dropped. Documents use jieba's search mode (a long
  word also yields its parts: 中华人民共和国 -> 中华, 华人, 人民, 共和, 共和国, ...);
  queries use the precise mode. Backends stem English words on top (tantivy's
  ``en_stem`` tokenizer, Elasticsearch's ``porter_stem`` filter).
* :func:`grams`  — Chinese/Japanese/Korean characters as unigrams and
  overlapping bigrams: finds words jieba segments differently in the query
  and the document (2-character words a trigram index would miss).
* :func:`normalize` / :func:`contains_phrase` — exact-phrase checks on the
  stored text: NFKC, case and whitespace folded.
* :func:`highlight` — the stored text with matches wrapped in ``<em>…</em>``.
* :func:`query_words` — a query's words without stop words (the, of, 的, 了, ...)
  unless nothing else is left; :func:`coverage` — the share of a query's terms
  a text contains, which text routes use to drop units that match only a
  small part of a long query.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import threading
import unicodedata
from collections.abc import Iterable

import jieba
import stopwordsiso
from snowballstemmer import stemmer as _snowball

jieba.setLogLevel(logging.WARNING)
jieba_lock = threading.Lock()  # jieba loads its dictionary lazily and is not thread-safe while doing so
_english = _snowball("english")

#: English: the short list jieba's keyword extractor uses (``jieba.analyse.tfidf.KeywordExtractor``;
#: importing it costs a second of start-up, so it is written out here) and "a";
#: Chinese: the stopwords-iso list (的, 了, 在, 我们, 一些, ...)
ENGLISH_STOP_WORDS = frozenset(
    "a all an and are as at be by can for from has have if in is it not of on one or that the then this to we "
    "which with you".split())
STOP_WORDS = ENGLISH_STOP_WORDS | frozenset(stopwordsiso.stopwords("zh"))

CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")
WORD_RE = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, lower case, runs of whitespace as one space (full-width ＡＢＣ == abc)."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def _segment(text: str, search_mode: bool) -> list[str]:
    with jieba_lock:
        pieces = jieba.lcut_for_search(text) if search_mode else jieba.lcut(text)
    return pieces


def words(text: str, query: bool = False) -> list[str]:
    """Lower-cased word tokens: jieba words for CJK, ``\\w+`` runs otherwise (not yet stemmed)."""
    return list(_words(text, query))


@functools.lru_cache(maxsize=65536)
def _words(text: str, query: bool) -> tuple[str, ...]:
    """Cached: the same line comes back often (a channel's logo text, a lower third, a title card)."""
    out: list[str] = []
    for piece in _segment(normalize(text), search_mode=not query):
        out.extend(WORD_RE.findall(piece))
    return tuple(out)


def query_words(text: str) -> list[str]:
    """The words a query looks for: :func:`words` in query mode without stop words (all of them
    when the query has nothing but stop words)."""
    return list(_query_words(text))


@functools.lru_cache(maxsize=4096)
def _query_words(text: str) -> tuple[str, ...]:  # cached: every hit of a query is checked against it
    found = words(text, query=True)
    kept = [w for w in found if w not in STOP_WORDS]
    return tuple(kept or found)


def grams(text: str) -> list[str]:
    """CJK unigrams and bigrams of every CJK run (``猫在键盘`` -> 猫 在 键 盘 猫在 在键 键盘)."""
    out: list[str] = []
    for run in CJK_RE.findall(unicodedata.normalize("NFKC", text)):
        out.extend(run)
        out.extend(run[i : i + 2] for i in range(len(run) - 1))
    return out


def query_grams(text: str) -> list[str]:
    """The grams a query looks for: bigrams of each CJK run, or the character of a 1-character run."""
    return list(_query_grams(text))


@functools.lru_cache(maxsize=4096)
def _query_grams(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for run in CJK_RE.findall(unicodedata.normalize("NFKC", text)):
        out.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return tuple(out)


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """English (Porter2) stem of a lower-cased word; other scripts pass through (cached: highlighting
    stems every word of every hit)."""
    return _english.stemWord(word) if word.isascii() else word


@functools.lru_cache(maxsize=4096)
def query_terms(text: str) -> frozenset[str]:
    """What :func:`coverage` counts: stemmed query words and the query's CJK bigrams."""
    return frozenset({stem(w) for w in _query_words(text)} | set(_query_grams(text)))


LATIN_RE = re.compile(r"[0-9a-z]+")


def coverage(query_text: str, text: str) -> float:
    """The share (0..1) of the query's terms that ``text`` contains; 1.0 for a query without terms.

    Latin terms are compared stem to stem; other terms (CJK words and bigrams) are looked up in the
    folded text, which needs no segmentation of ``text`` (a text route checks every recalled unit)."""
    wanted = query_terms(query_text)
    if not wanted:
        return 1.0
    folded = normalize(text)
    latin = {stem(w) for w in LATIN_RE.findall(folded)}
    return sum((term in latin) if term.isascii() else (term in folded) for term in wanted) / len(wanted)


def contains_phrase(text: str, phrase: str) -> bool:
    p = normalize(phrase)
    return bool(p) and p in normalize(text)


def _spans(text: str, needles: Iterable[str]) -> list[tuple[int, int]]:
    """Character spans of ``text`` equal (after folding) to one of the needles."""
    folded = unicodedata.normalize("NFKC", text).lower()
    # NFKC can change length (rare: ligatures, some full-width forms); fall back to plain lower then
    if len(folded) != len(text):
        folded = text.lower()
    spans = []
    for needle in {n for n in needles if n}:
        needle = normalize(needle)
        if not needle:
            continue
        for m in re.finditer(re.escape(needle).replace(r"\ ", r"\s+"), folded):
            spans.append((m.start(), m.end()))
    return spans


def _word_spans(text: str, query_words: Iterable[str]) -> list[tuple[int, int]]:
    """Spans of Latin words whose stem equals a query word's stem (mentions ~ mentioned)."""
    stems = {stem(w) for w in query_words if w.isascii()}
    if not stems:
        return []
    return [(m.start(), m.end()) for m in re.finditer(r"[A-Za-z0-9]+", text) if stem(m.group().lower()) in stems]


def highlight(text: str, query_text: str = "", phrases: Iterable[str] = ()) -> str:
    """``text`` HTML-escaped, with phrases, query words and query bigrams wrapped in ``<em>``."""
    qwords = query_words(query_text) if query_text else []
    cjk = [w for w in qwords if CJK_RE.fullmatch(w)] + query_grams(query_text)
    spans = _spans(text, [*phrases, *cjk]) + _word_spans(text, qwords)
    if not spans:
        return html.escape(text)
    spans.sort()
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = [], 0
    for start, end in merged:
        out.append(html.escape(text[pos:start]))
        out.append(f"<em>{html.escape(text[start:end])}</em>")
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)
