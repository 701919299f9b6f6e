"""The endpoint reranker: the VLM question asked of an OpenAI-compatible chat server.

Any server speaking ``POST {url}/chat/completions`` with image parts works: vLLM serving
a Qwen-VL model, Ollama (``http://localhost:11434/v1``), a cloud API. Per candidate segment
the message is one user turn: a line saying how many frames of how long a clip follow, the
frames as base64 JPEG ``image_url`` parts (sampled as for the local VLM, search/rerank_frames.py,
at most ``max_frames``), then "Does this clip show: <query>? Answer yes or no."

The request asks for one token at temperature 0 with ``logprobs`` and ``top_logprobs``.
The score is P(yes) / (P(yes) + P(no)) over the first token's alternatives (tokens that read
"yes" or "no" once trimmed and lower-cased). A server that refuses ``logprobs`` (HTTP 400 or
422) is asked again without, and from then on never with; without log-probabilities the
answer's text decides: 1.0 for yes, 0.0 for no. Any other answer is an error.

Settings: ``url`` and ``model`` in the library's options, or ``ZHAOPIAN_RERANK_URL`` and
``ZHAOPIAN_RERANK_MODEL``; the key only from the environment (``ZHAOPIAN_RERANK_API_KEY``, or
the variable ``api_key_env`` names), never stored in the library's config, sent only in the
``Authorization`` header and never logged. At most ``concurrency`` requests are in flight;
each waits at most ``timeout`` seconds and never past the stage's budget. Any failure (a
timeout, a connection error, an HTTP error, an answer that is neither yes nor no) ends the
stage: the results keep the fused order and the search report says why.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, ZhaopianError
from .rerank import Candidate, Deadline, Judgement, Reranker, RerankQuery, RerankTimeout
from .rerank_frames import ClipFrames, FramePlan, sample_clip
from .rerank_vlm import DEFAULT_PROMPT

URL_ENV = "ZHAOPIAN_RERANK_URL"
MODEL_ENV = "ZHAOPIAN_RERANK_MODEL"
KEY_ENV = "ZHAOPIAN_RERANK_API_KEY"


class EndpointOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: an OpenAI-compatible API base (``http://localhost:8000/v1``); default: $ZHAOPIAN_RERANK_URL
    url: str | None = None
    #: the model name sent with each request; default: $ZHAOPIAN_RERANK_MODEL
    model: str | None = None
    #: the environment variable holding the API key (keys are never stored in a library's config)
    api_key_env: str = KEY_ENV
    #: seconds one request may take (never longer than what is left of the budget)
    timeout: float = Field(default=30.0, gt=0, le=600)
    #: requests in flight at once
    concurrency: int = Field(default=4, ge=1, le=64)
    fps: float = Field(default=2.0, gt=0, le=30)
    min_frames: int = Field(default=4, ge=1, le=256)
    max_frames: int = Field(default=8, ge=1, le=256)
    #: pixels per frame sent (the server's processor resizes again)
    max_pixels: int = Field(default=128 * 28 * 28, ge=28 * 28)
    jpeg_quality: int = Field(default=80, ge=30, le=95)
    prompt: str = DEFAULT_PROMPT
    #: ask for log-probabilities (the score is then a probability, not 0 or 1)
    logprobs: bool = True
    top_logprobs: int = Field(default=10, ge=1, le=20)


class EndpointError(ZhaopianError):
    code = "rerank_failed"


def _word(token: str) -> str:
    return token.strip().strip(".,!:;\"'`*").lower()


def score_answer(body: Any) -> float:
    """P(yes) / (P(yes) + P(no)) from a chat completion's first-token log-probabilities, else from its text."""
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise ValueError("no choices in the response") from None
    if not isinstance(choice, dict):
        raise ValueError("the choice is not an object")  # noqa: TRY004 - an invalid answer, like bad JSON
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        seen: dict[str, float] = {}
        for entry in [first, *(first.get("top_logprobs") or [])]:
            if isinstance(entry, dict) and isinstance(entry.get("token"), str) and isinstance(entry.get("logprob"), (int, float)):
                seen.setdefault(entry["token"], float(entry["logprob"]))
        yes = sum(math.exp(lp) for tok, lp in seen.items() if _word(tok) == "yes")
        no = sum(math.exp(lp) for tok, lp in seen.items() if _word(tok) == "no")
        if yes + no > 0:
            return yes / (yes + no)
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str):
        raise ValueError("no answer text in the response")  # noqa: TRY004 - an invalid answer
    words = text.strip().split()
    answer = _word(words[0]) if words else ""
    if answer == "yes":
        return 1.0
    if answer == "no":
        return 0.0
    raise ValueError(f"the answer is neither yes nor no: {text.strip()[:40]!r}")


def jpeg_data_url(frame, quality: int) -> str:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


class EndpointReranker(Reranker):
    name = "endpoint"
    Config = EndpointOptions
    default_budget_ms = 15_000.0

    def __init__(self, options: EndpointOptions, library, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(options, library)
        self._transport = transport
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._logprobs = options.logprobs  # False once the server refused them
        self.url: str | None = None
        self.model: str | None = None
        self.host: str | None = None
        o = options
        self.plan = FramePlan(fps=o.fps, min_frames=o.min_frames, max_frames=max(o.min_frames, o.max_frames),
                              temporal_patch=1, factor=28, min_pixels=28 * 28, max_pixels=o.max_pixels)

    def __repr__(self) -> str:
        return f"EndpointReranker(url={self.url!r}, model={self.model!r})"

    def fingerprint(self) -> str:
        return f"endpoint:{self.url}:{self.model}:{self.options.model_dump_json(exclude={'url', 'model'})}"

    def load(self) -> None:
        o = self.options
        base = o.url or os.environ.get(URL_ENV)
        self.model = o.model or os.environ.get(MODEL_ENV)
        if not base or not self.model:
            raise ConfigError(f"the endpoint reranker needs a url and a model: set options.url and options.model "
                              f"or {URL_ENV} and {MODEL_ENV}")
        self.url = base.rstrip("/") + "/chat/completions"
        self.host = httpx.URL(self.url).host
        headers = {}
        if key := os.environ.get(o.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=o.timeout, headers=headers, transport=self._transport)
        self._pool = ThreadPoolExecutor(max_workers=o.concurrency, thread_name_prefix="zhaopian-rerank-endpoint")

    # -- one candidate ---------------------------------------------------------------------------
    def clip(self, candidate: Candidate) -> ClipFrames:
        seg = candidate.segment
        start, end = (0.0, candidate.duration) if seg.whole_medium else (seg.start, seg.end)
        return sample_clip(candidate.path, candidate.kind, start, end, candidate.duration, self.plan,
                           (candidate.height, candidate.width))

    def messages(self, text: str, candidate: Candidate, clip: ClipFrames) -> list[dict[str, Any]]:
        frames = clip.frames[:1] if candidate.kind == "image" else clip.frames
        if candidate.kind == "image":
            intro = "A picture:"
        else:
            intro = f"{len(frames)} frames, in order, from a video clip {clip.end - clip.start:.1f} seconds long:"
        parts: list[dict[str, Any]] = [{"type": "text", "text": intro}]
        parts += [{"type": "image_url", "image_url": {"url": jpeg_data_url(f, self.options.jpeg_quality)}}
                  for f in frames]
        parts.append({"type": "text", "text": self.options.prompt.format(query=text)})
        return [{"role": "user", "content": parts}]

    def _post(self, messages: list[dict[str, Any]], logprobs: bool, timeout: float) -> httpx.Response:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": 1}
        if logprobs:
            body.update(logprobs=True, top_logprobs=self.options.top_logprobs)
        return self._client.post(self.url, json=body, timeout=timeout)

    def ask(self, text: str, candidate: Candidate, deadline: Deadline) -> float:
        messages = self.messages(text, candidate, self.clip(candidate))
        timeout = min(self.options.timeout, deadline.remaining())
        if timeout <= 0:
            raise RerankTimeout()
        try:
            logprobs = self._logprobs
            response = self._post(messages, logprobs, timeout)
            if logprobs and response.status_code in (400, 422):  # a server without log-probabilities
                retry = self._post(messages, False, max(0.001, min(self.options.timeout, deadline.remaining())))
                if retry.is_success:
                    self._logprobs = False
                response = retry
            response.raise_for_status()
            return score_answer(response.json())
        except httpx.TimeoutException as exc:
            raise EndpointError(f"{self.host}: no answer within {timeout:.1f} s") from exc
        except httpx.HTTPStatusError as exc:
            raise EndpointError(f"{self.host}: HTTP {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise EndpointError(f"{self.host}: {type(exc).__name__}") from exc
        except ValueError as exc:  # a body that is not JSON, or an answer that is neither yes nor no
            raise EndpointError(f"{self.host}: invalid answer ({str(exc)[:80]})") from exc

    def judge(self, query: RerankQuery, candidates: list[Candidate], deadline: Deadline) -> Iterator[tuple[int, Judgement]]:
        text = query.text or ""
        futures: dict[Future, int] = {self._pool.submit(self.ask, text, c, deadline): i for i, c in enumerate(candidates)}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=deadline.remaining(), return_when=FIRST_COMPLETED)
                if not done:
                    raise RerankTimeout()
                for future in done:
                    yield futures[future], Judgement(score=future.result())
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
