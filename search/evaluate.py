"""Retrieval quality on a labelled query set: R@1, R@5, R@10, MRR and latency per query kind.

A query set is JSONL, one query per line::

    {"id": "q1", "kind": "text", "lang": "zh", "query": "一只猫", "video": "cat.mp4", "start": 3, "end": 9}
    {"id": "q2", "kind": "image", "query": "queries/cup.jpg", "video": "coffee.mp4", "start": 0, "end": 4,
     "also": [["narrated.mp4", 6, 12]]}

``query`` of an image query is a file relative to the JSONL's folder. A result is right when it
is from the labelled video (compared by file name) and overlaps the labelled span (for a still,
``start == end``, contains that instant); ``also`` lists other spans that are equally right; a
span without ``start``/``end`` is the whole video. ``about`` (what the query is about: visual,
ocr, asr, …) groups the report. The demo's ``queries.jsonl`` is in this format.

The MSR-VTT test split is read too: its ``test_videodatainfo.json`` (``sentences`` with
``caption`` and ``video_id``; the relevant video is ``<video_id>.mp4``, whole) or the 1k-A
``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError

KS = (1, 5, 10)


class EvalQuery(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    kind: Literal["text", "image"] = "text"
    lang: str | None = None
    #: the text, or for an image query the image file (absolute after loading)
    query: str
    video: str
    start: float = 0.0
    end: float = math.inf
    about: str = "visual"
    also: list[tuple[str, float, float]] = Field(default_factory=list)

    @property
    def group(self) -> str:
        """The kind the report groups by: ``text:zh:visual``, ``image:visual``, …"""
        parts = [self.kind] + ([self.lang] if self.kind == "text" and self.lang else []) + [self.about]
        return ":".join(parts)

    def is_hit(self, video: str, start: float, end: float) -> bool:
        for name, a, b in [(self.video, self.start, self.end), *self.also]:
            if Path(video).name != Path(name).name:
                continue
            if (start <= a <= end) if a == b else max(start, a) < min(end, b):
                return True
        return False


def load_queries(path: Path | str) -> list[EvalQuery]:
    """A query set from JSONL (ours), MSR-VTT's ``test_videodatainfo.json`` or its 1k-A CSV."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such query file")
    if path.suffix == ".csv":
        return _msrvtt_csv(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return _msrvtt_json(json.loads(text))
    queries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = EvalQuery.model_validate_json(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: not a labelled query ({exc.__class__.__name__})") from None
        if q.kind == "image":
            q = q.model_copy(update={"query": str((path.parent / q.query).resolve())})
        queries.append(q)
    if not queries:
        raise ConfigError(f"{path}: no queries")
    return queries


def _msrvtt_json(data: dict) -> list[EvalQuery]:
    try:
        test = {v["video_id"] for v in data.get("videos", []) if v.get("split", "test") == "test"}
        sentences = data["sentences"]
        return [EvalQuery(id=f"{s['video_id']}#{s.get('sen_id', i)}", query=s["caption"], lang="en",
                          video=f"{s['video_id']}.mp4")
                for i, s in enumerate(sentences) if not test or s["video_id"] in test]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"not an MSR-VTT videodatainfo file (missing {exc})") from None


def _msrvtt_csv(path: Path) -> list[EvalQuery]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"video_id", "sentence"} <= set(rows[0]):
        raise ConfigError(f"{path}: expected MSR-VTT columns video_id and sentence")
    return [EvalQuery(id=row.get("key") or row["video_id"], query=row["sentence"], lang="en",
                      video=f"{row['video_id']}.mp4") for row in rows]


class Found(BaseModel):
    """One returned segment, as the evaluation needs it."""

    video: str
    start: float
    end: float


class Scores(BaseModel):
    n: int
    recall: dict[str, float]  # "R@1" -> share of queries with a right result in the top 1
    mrr: float
    latency_ms_p50: float
    latency_ms_p95: float


class EvalReport(BaseModel):
    top_k: int
    groups: dict[str, Scores]  # "all" first, then each query kind
    #: rank of the first right result per query id (None: not in the top k)
    ranks: dict[str, int | None]


def rank_of(results: Sequence[Found], q: EvalQuery) -> int | None:
    return next((i for i, r in enumerate(results, 1) if q.is_hit(r.video, r.start, r.end)), None)


def scores(ranks: Sequence[int | None], latencies: Sequence[float], ks: Sequence[int] = KS) -> Scores:
    n = len(ranks)
    recall = {f"R@{k}": sum(r is not None and r <= k for r in ranks) / n if n else 0.0 for k in ks}
    mrr = sum(1 / r for r in ranks if r) / n if n else 0.0
    lat = sorted(latencies) or [0.0]
    p95 = lat[min(len(lat) - 1, math.ceil(0.95 * len(lat)) - 1)]
    return Scores(n=n, recall=recall, mrr=mrr, latency_ms_p50=statistics.median(lat), latency_ms_p95=p95)


def evaluate(queries: Sequence[EvalQuery], search: Callable[[EvalQuery, int], Sequence[Found]],
             top_k: int = 10, on_query: Callable[[EvalQuery, int | None], None] | None = None) -> EvalReport:
    """Run every query once through ``search(query, top_k)`` and score it."""
    ranks: dict[str, int | None] = {}
    latency: dict[str, float] = {}
    for q in queries:
        t = time.perf_counter()
        found = search(q, top_k)
        latency[q.id] = (time.perf_counter() - t) * 1000
        ranks[q.id] = rank_of(found, q)
        if on_query:
            on_query(q, ranks[q.id])
    groups = {"all": scores(list(ranks.values()), list(latency.values()))}
    for group in sorted({q.group for q in queries}):
        members = [q.id for q in queries if q.group == group]
        groups[group] = scores([ranks[i] for i in members], [latency[i] for i in members])
    return EvalReport(top_k=top_k, groups=groups, ranks=ranks)
