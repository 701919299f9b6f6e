"""Rerankers for testing the stage (search/rerank.py), used through the dotted-path form ``fake_rerankers:Class``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from zhaopian.search.rerank import Candidate, Deadline, Judgement, Reranker, RerankQuery


class TableReranker(Reranker):
    """Scores a candidate by its file name (``scores``), waits ``sleep`` seconds per candidate, or fails."""

    name = "table"
    default_budget_ms = 2000.0
    image_queries = True

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        scores: dict[str, float] = {}
        sleep: float = 0.0
        fail: bool = False
        text_only: bool = False

    #: every candidate judged, across instances: (file name, start, end)
    judged: ClassVar[list[tuple[str, float, float]]] = []

    def declines(self, query: RerankQuery) -> str | None:
        if self.options.text_only and query.text is None:
            return "it judges text queries only"
        return None

    def judge(self, query: RerankQuery, candidates: list[Candidate], deadline: Deadline) -> Iterator[tuple[int, Judgement]]:
        for i, c in enumerate(candidates):
            if self.options.fail:
                raise RuntimeError("the judge broke")
            time.sleep(self.options.sleep)
            TableReranker.judged.append((Path(c.path).name, c.segment.start, c.segment.end))
            yield i, Judgement(score=self.options.scores.get(Path(c.path).name, 0.5))
