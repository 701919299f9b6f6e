"""The VLM reranker: a local Qwen-VL model asked "Does this clip show: <query>? Answer yes or no."

Models: the Qwen2-VL, Qwen2.5-VL and Qwen3-VL instruct families through transformers
(``AutoProcessor`` + ``AutoModelForImageTextToText``), from a model hub id
(``Qwen/Qwen2.5-VL-3B-Instruct``, ``Qwen/Qwen3-VL-2B-Instruct``, ...) or a local directory
holding the same files. A model already in the hub cache is loaded without asking the hub.

Each candidate segment becomes a short video the way these models expect one
(search/rerank_frames.py): frames at 2 per second, 4 to 16 of them (an even count: two
frames make one temporal patch), each resized by transformers' ``smart_resize`` to multiples
of patch size × merge size (28 for Qwen2/2.5-VL, 32 for Qwen3-VL, read from the model's
processor) within ``max_pixels``. The frames go to the model's own processor with their
sampling rate (``VideoMetadata``), so Qwen2.5-VL gets the right seconds per temporal patch
and Qwen3-VL writes each patch's time (``<1.2 seconds>``) into the prompt. A still image is
one temporal patch of two identical frames, which is how these models read an image.

The prompt is the chat template's user turn (the video, then the question) and the
assistant's turn opened; one forward pass gives the next-token logits, and

    score = P(yes) / (P(yes) + P(no))

where P(yes) sums the probabilities of the first tokens of "yes", "Yes", "YES" (and
likewise for no). Candidates are scored ``batch_size`` at a time (the text padded on the
left, the vision tokens concatenated), which gives the same scores as one at a time.

CPU is slow for this: with Qwen2.5-VL-3B, expect seconds per segment; give the library a
GPU (``device: cuda``) or a small ``top_n`` and a generous ``budget_ms``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, ModelUnavailable
from .rerank import Candidate, Deadline, Judgement, Reranker, RerankQuery, RerankTimeout
from .rerank_frames import ClipFrames, FramePlan, frame_size, plan_clip, sample_clips

DEFAULT_PROMPT = "Does this clip show: {query}? Answer yes or no."


class VLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a model hub id or a local directory (config.json, weights, processor and tokenizer files)
    model: str
    device: str = "cpu"
    #: weights' dtype; auto: float32 on the CPU, bfloat16 on a GPU
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: segments per forward pass
    batch_size: int = Field(default=4, ge=1, le=256)
    fps: float = Field(default=2.0, gt=0, le=30)
    min_frames: int = Field(default=4, ge=1, le=768)
    max_frames: int = Field(default=16, ge=2, le=768)
    #: pixels per frame, before alignment to the model's patch grid
    min_pixels: int = Field(default=16 * 28 * 28, ge=1)
    max_pixels: int = Field(default=192 * 28 * 28, ge=1)
    #: the question; {query} is replaced by the query's text
    prompt: str = DEFAULT_PROMPT
    #: answers whose first token counts as yes / no
    yes: list[str] = Field(default_factory=lambda: ["yes", "Yes", "YES"])
    no: list[str] = Field(default_factory=lambda: ["no", "No", "NO"])
    trust_remote_code: bool = False


def _load(load, model: str, what: str, **kwargs: Any):
    """``load(model)``: a local directory as is; a hub id from the cache first, then from the hub."""
    path = Path(model).expanduser()
    if path.is_dir():
        try:
            return load(str(path.resolve()), **kwargs)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelUnavailable(f"could not load the reranker's {what} from {path}: {first}") from exc
    if model.startswith(("/", "./", "../", "~")):
        raise ModelUnavailable(f"reranker model directory {model} does not exist")
    try:
        return load(model, local_files_only=True, **kwargs)
    except Exception:  # noqa: BLE001, S110 - not in the hub cache: ask the hub below
        pass
    try:
        return load(model, **kwargs)
    except Exception as exc:
        raise ModelUnavailable(f"could not fetch the reranker model {model} from the model hub (offline?); "
                               f"download it on a machine with internet and set model to its directory") from exc


class VLMReranker(Reranker):
    name = "vlm"
    Config = VLMOptions
    default_budget_ms = 60_000.0

    def __init__(self, options: VLMOptions, library) -> None:
        super().__init__(options, library)
        self._lock = threading.Lock()
        self.processor: Any = None
        self.model: Any = None
        self.plan = FramePlan()
        self.yes_ids: list[int] = []
        self.no_ids: list[int] = []

    def fingerprint(self) -> str:
        return f"vlm:{self.options.model_dump_json()}"

    # -- loading --------------------------------------------------------------------------------
    def load(self) -> None:
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise ConfigError("the vlm reranker needs transformers: pip install 'zhaopian[clip]'") from exc
        o = self.options
        try:
            device = torch.device(o.device)
        except RuntimeError as exc:
            raise ConfigError(f"unknown device {o.device!r} for the vlm reranker") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {o.device!r} is not available on this machine; use device: cpu")
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
            o.dtype, torch.float32 if device.type == "cpu" else torch.bfloat16)
        remote = {"trust_remote_code": True} if o.trust_remote_code else {}
        processor = _load(AutoProcessor.from_pretrained, o.model, "processor", **remote)
        model = _load(AutoModelForImageTextToText.from_pretrained, o.model, "model", dtype=dtype, **remote)
        self.device = device
        self.model = model.to(device).eval()
        self.processor = processor
        video = getattr(processor, "video_processor", None)
        if video is None or getattr(processor, "video_token", None) is None:
            raise ModelUnavailable(f"{o.model} has no video processor: the vlm reranker needs a Qwen-VL-style model")
        processor.tokenizer.padding_side = "left"
        self.plan = FramePlan(fps=o.fps, min_frames=o.min_frames, max_frames=max(o.min_frames, o.max_frames),
                              temporal_patch=int(video.temporal_patch_size),
                              factor=int(video.patch_size) * int(video.merge_size),
                              min_pixels=o.min_pixels, max_pixels=max(o.min_pixels, o.max_pixels))
        self.yes_ids = self._first_tokens(o.yes)
        self.no_ids = self._first_tokens(o.no)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise ModelUnavailable(f"{o.model}: the answers {o.yes} and {o.no} do not start with distinct tokens")

    def _first_tokens(self, words: list[str]) -> list[int]:
        ids = []
        for word in words:
            tokens = self.processor.tokenizer.encode(word, add_special_tokens=False)
            if tokens and tokens[0] not in ids:
                ids.append(int(tokens[0]))
        return ids

    # -- inputs and scores ------------------------------------------------------------------------
    def prompt(self, text: str) -> str:
        """The chat-templated prompt for one query: the user's turn (video, question), the assistant's opened."""
        question = self.options.prompt.format(query=text)
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def clip(self, candidate: Candidate) -> ClipFrames:
        """The candidate's frames as the model takes a video (search/rerank_frames.py)."""
        return self.clips([candidate])[0]

    def clips(self, candidates: list[Candidate]) -> list[ClipFrames]:
        """Clips of several candidates, each medium decoded in one pass."""
        planned = []
        for c in candidates:
            start, end = (0.0, c.duration) if c.segment.whole_medium else (c.segment.start, c.segment.end)
            planned.append(plan_clip(c.kind, start, end, c.duration, self.plan, (c.height, c.width)))
        out: list[ClipFrames | None] = [None] * len(candidates)
        by_medium: dict[Path, list[int]] = {}
        for i, c in enumerate(candidates):
            by_medium.setdefault(c.path, []).append(i)
        for path, members in by_medium.items():
            c = candidates[members[0]]
            filled = sample_clips(path, c.kind, [planned[i] for i in members],
                                  frame_size(c.height, c.width, self.plan))
            for i, clip in zip(members, filled):
                out[i] = clip
        return out  # type: ignore[return-value]

    def inputs(self, text: str, clips: list[ClipFrames]):
        """The processor's batch for one query and several clips (input_ids, pixel_values_videos, video_grid_thw, ...)."""
        from transformers.video_utils import VideoMetadata

        metadata = [VideoMetadata(total_num_frames=len(c.frames), fps=c.fps, frames_indices=list(range(len(c.frames))),
                                  height=c.frames[0].shape[0], width=c.frames[0].shape[1],
                                  duration=len(c.frames) / c.fps) for c in clips]
        prompt = self.prompt(text)
        return self.processor(text=[prompt] * len(clips), videos=[c.frames for c in clips], video_metadata=metadata,
                              do_sample_frames=False, do_resize=False, cap_pixels_per_frame=False, padding=True,
                              return_tensors="pt")

    def scores(self, inputs) -> list[float]:
        """P(yes) / (P(yes) + P(no)) of the next token, per row of the batch."""
        import torch

        with torch.inference_mode():
            batch = inputs.to(self.device)
            logits = self.model(**batch, logits_to_keep=1).logits[:, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
        return torch.sigmoid(yes - no).tolist()

    def judge(self, query: RerankQuery, candidates: list[Candidate], deadline: Deadline) -> Iterator[tuple[int, Judgement]]:
        size = self.options.batch_size
        for first in range(0, len(candidates), size):
            if deadline.expired:
                raise RerankTimeout()
            clips = self.clips(candidates[first:first + size])
            inputs = self.inputs(query.text or "", clips)
            if not self._lock.acquire(timeout=deadline.remaining()):  # another search holds the model
                raise RerankTimeout()
            try:
                if deadline.expired:
                    raise RerankTimeout()
                scores = self.scores(inputs)
            finally:
                self._lock.release()
            for k, score in enumerate(scores):
                yield first + k, Judgement(score=float(score))

    def close(self) -> None:
        self.model = None
        self.processor = None
