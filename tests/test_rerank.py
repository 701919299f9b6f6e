"""The reranker stage (search/rerank.py) and its backends: built-in, local VLM (tiny random Qwen-VL
models with real processors) and an OpenAI-compatible endpoint (a local test server)."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import COLOR_ENCODER
from fake_rerankers import TableReranker
from media import BLUE, GREEN, RED, write_image, write_video
from PIL import Image
from typer.testing import CliRunner

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.indexer.thumbnails import frame_at
from zhaopian.search.errors import ConfigError
from zhaopian.search.library import LibraryConfig
from zhaopian.search.rerank import Candidate, Deadline, RerankConfig, RerankQuery, stage_for
from zhaopian.search.rerank_frames import (
    FramePlan,
    decode_at,
    frame_count,
    frame_size,
    grid_times,
    group_times,
    sample_times,
)
from zhaopian.search.types import Query

ORANGE = (230, 120, 20)
VISUAL_ONLY = {"modules": {"visual": {"encoder": COLOR_ENCODER}}}


# -- media and a library shared by the module (the colour encoder: which segment wins is known) ------


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerank-media")
    return {
        # red seen by the 1 fps ingest only at 3 s: the segment found is 3-4 s, the red shot is 2.5-4 s
        "late": write_video(root / "late.mp4", [(GREEN, 2.5), (RED, 1.5), (GREEN, 2.0)]),
        # a red flash between two sampled seconds: ingest sees a green clip 0-6 s
        "flash": write_video(root / "flash.mp4", [(GREEN, 2.1), (RED, 0.8), (GREEN, 3.1)]),
        # orange all along: closer to "red" than green, so the fused order puts it above the flash
        "orange": write_video(root / "orange.mp4", [(ORANGE, 6.0)]),
        "blue": write_video(root / "blue.mp4", [(BLUE, 3.0)]),
        "still": write_image(root / "still.png", RED, size=(64, 48)),
        "root": root,
    }


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]):
    service = Service(Settings(data_dir=tmp_path_factory.mktemp("rerank-data"), media_root=media["root"]))
    service.create_library("colours", VISUAL_ONLY)
    results = service.index([media[k] for k in ("late", "flash", "orange", "blue", "still")], library="colours")
    assert [r.status for r in results] == ["indexed"] * 5
    yield service
    service.close()


def use(svc: Service, backend: str, **config: Any):
    """The colour library with this reranker (a new config gives a new stage: a fresh cache)."""
    lib = svc.library("colours")
    lib.config.rerank = RerankConfig(backend=backend, **config)
    return lib


def names(response) -> list[tuple[str, float, float]]:
    return [(Path(r.video).name, r.start, r.end) for r in response.results]


# -- configuration ----------------------------------------------------------------------------------


def test_config_specs_and_errors():
    assert RerankConfig.parse_spec("builtin").backend == "builtin"
    assert RerankConfig.parse_spec("vlm:Qwen/Qwen2.5-VL-3B-Instruct").options == {"model": "Qwen/Qwen2.5-VL-3B-Instruct"}
    endpoint = RerankConfig.parse_spec("endpoint:qwen2.5vl:3b@http://localhost:11434/v1")
    assert endpoint.options == {"model": "qwen2.5vl:3b", "url": "http://localhost:11434/v1"}
    assert RerankConfig.parse_spec("fake_rerankers:TableReranker").backend == "fake_rerankers:TableReranker"
    assert LibraryConfig.parse({}).rerank.enabled is False
    with pytest.raises(ConfigError, match="unknown reranker 'magic'"):
        LibraryConfig.parse({"rerank": {"backend": "magic"}})
    with pytest.raises(ConfigError, match="rerank.options.model: Field required"):
        LibraryConfig.parse({"rerank": {"backend": "vlm"}})
    with pytest.raises(ConfigError, match="rerank.options.fps"):
        LibraryConfig.parse({"rerank": {"backend": "builtin", "options": {"fps": 0}}})
    with pytest.raises(ConfigError, match="top_n"):
        LibraryConfig.parse({"rerank": {"backend": "builtin", "top_n": 0}})


# -- frame sampling ---------------------------------------------------------------------------------


def test_frame_counts_follow_qwen_video_rules():
    plan = FramePlan()  # 2 fps, 4..16 frames, pairs
    assert [frame_count(d, plan) for d in (0.0, 1.0, 3.0, 3.4, 5.0, 8.0, 60.0)] == [4, 4, 6, 6, 10, 16, 16]
    assert frame_count(3.0, FramePlan(min_frames=3, max_frames=9)) == 6  # bounds rounded to even counts
    times = sample_times(10.0, 13.0, plan)
    assert times == [10.0, 10.5, 11.0, 11.5, 12.0, 12.5]
    long = sample_times(0.0, 60.0, plan)
    assert len(long) == 16 and long[0] == 0.0 and long[-1] < 60.0
    assert np.allclose(np.diff(long), 60.0 / 16)
    assert group_times([0.0, 0.5, 1.0, 1.5]) == [0.25, 1.25]
    assert group_times([0.0, 0.5, 1.0]) == [0.25, 1.0]  # the last frame repeats to fill its group


@pytest.mark.parametrize(("height", "width", "factor"), [(270, 480, 28), (1080, 1920, 28), (48, 64, 28), (720, 1280, 32)])
def test_frame_sizes_are_transformers_smart_resize(height: int, width: int, factor: int):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    plan = FramePlan(factor=factor, min_pixels=16 * factor**2, max_pixels=192 * factor**2)
    h, w = frame_size(height, width, plan)
    assert (h, w) == smart_resize(height, width, factor=factor, min_pixels=plan.min_pixels, max_pixels=plan.max_pixels)
    assert h % factor == 0 and w % factor == 0
    assert plan.min_pixels <= h * w <= plan.max_pixels
    assert abs(w / h - width / height) < 0.25 * width / height


def test_grid_times_stay_on_the_grid_and_in_the_medium():
    assert grid_times(-1.0, 1.6, 4.0, 100, 10.0) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert grid_times(8.5, 11.0, 4.0, 100, 9.0)[-1] == 8.75  # nothing at or after the end
    thinned = grid_times(0.0, 10.0, 4.0, 8, 20.0)
    assert len(thinned) == 8 and thinned[0] == 0.0 and thinned[-1] == 10.0
    assert all(abs(t * 4 - round(t * 4)) < 1e-9 for t in thinned)


def test_decoding_at_times_matches_a_seek_to_each_time(media: dict[str, Path]):
    times = [5.95, 0.0, 2.55, 2.35, 3.0, 0.05, 9.0]  # any order, one past the end
    frames = decode_at(media["late"], "video", times)
    for t, frame in zip(times, frames):
        expected = np.asarray(frame_at(media["late"], min(t, 5.95)).convert("RGB"))
        assert frame.shape == expected.shape == (48, 64, 3)
        assert np.abs(frame.astype(int) - expected.astype(int)).max() <= 2, t
    assert frames[2].mean(axis=(0, 1)).argmax() == 0 and frames[3].mean(axis=(0, 1)).argmax() == 1  # red, green
    sized = decode_at(media["late"], "video", [1.0], size=(56, 84))
    assert sized[0].shape == (56, 84, 3)
    still = decode_at(media["still"], "image", [0.0, 0.0], size=(28, 56))
    assert len(still) == 2 and still[0].shape == (28, 56, 3)


# -- the stage: order, cache, budget, failures --------------------------------------------------------


def test_the_stage_reorders_the_top_n_and_keeps_the_rest(svc: Service):
    fused = svc.search_report("red", library="colours", top_k=10, rerank=False)
    assert "rerank" not in fused.timings_ms
    lib = use(svc, "fake_rerankers:TableReranker", top_n=3, options={"scores": {"blue.mp4": 0.9, "orange.mp4": 0.8}})
    first3 = {Path(r.video).name for r in fused.results[:3]}
    reranked = svc.search_report("red", library="colours", top_k=10)
    assert "rerank" in reranked.timings_ms and not reranked.notes
    # within the first three, the table's order (blue and orange, if there, lead); after them, the fused order
    got = [Path(r.video).name for r in reranked.results[:3]]
    assert set(got) == first3
    expected = sorted(fused.results[:3], key=lambda r: -{"blue.mp4": 0.9, "orange.mp4": 0.8}.get(Path(r.video).name, 0.5))
    assert got == [Path(r.video).name for r in expected]
    assert names(reranked)[3:] == names(fused)[3:]
    # the scores of the fused order are handed out again in the new order: comparable, still descending
    assert [r.score for r in reranked.results] == [r.score for r in fused.results]
    assert all("rerank" in r.routes for r in reranked.results[:3]) and "rerank" not in reranked.results[3].routes
    assert stage_for(lib).last["outcome"] == "reranked"


def test_judgements_are_cached_per_segment_and_query(svc: Service):
    lib = use(svc, "fake_rerankers:TableReranker", top_n=4)
    TableReranker.judged.clear()
    svc.search_report("red", library="colours")
    assert len(TableReranker.judged) == 4
    svc.search_report("red", library="colours")
    assert len(TableReranker.judged) == 4  # all four from the cache
    assert stage_for(lib).last == {"candidates": 4, "cached": 4, "judged": 0, "outcome": "reranked"}
    svc.search_report("blue", library="colours")
    assert len(TableReranker.judged) > 4  # another query: judged again


def test_a_slow_reranker_falls_back_to_the_fused_order_within_its_budget(svc: Service):
    fused = svc.search_report("red", library="colours", rerank=False)
    lib = use(svc, "fake_rerankers:TableReranker", budget_ms=300, options={"sleep": 0.25, "scores": {"blue.mp4": 1.0}})
    start = time.perf_counter()
    response = svc.search_report("red", library="colours")
    elapsed = time.perf_counter() - start
    assert names(response) == names(fused)
    assert response.timings_ms["rerank"] < 300 + 150
    assert elapsed < 2.0
    [note] = response.notes
    assert "did not finish within its 300 ms budget" in note and "fused order" in note
    assert stage_for(lib).last["outcome"] == "timeout"


def test_a_failing_reranker_falls_back_with_a_note(svc: Service, caplog: pytest.LogCaptureFixture):
    fused = svc.search_report("red", library="colours", rerank=False)
    use(svc, "fake_rerankers:TableReranker", options={"fail": True})
    response = svc.search_report("red", library="colours")
    assert names(response) == names(fused)
    assert response.notes == [("reranker fake_rerankers:TableReranker failed (RuntimeError: the judge broke); "
                               "results are in fused order")]
    assert "the judge broke" in caplog.text


def test_a_text_only_reranker_skips_image_queries(svc: Service, media: dict[str, Path]):
    use(svc, "fake_rerankers:TableReranker", options={"text_only": True})
    response = svc.search_report(image=media["still"], library="colours")
    assert response.notes == [("reranker fake_rerankers:TableReranker skipped: it judges text queries only; "
                               "results are in fused order")]


# -- built-in reranker ------------------------------------------------------------------------------


def builtin(svc: Service, **options: Any):
    """The built-in reranker seeing every frame at 4/s, scoring by the 2 best (the flash lasts 0.8 s)."""
    return use(svc, "builtin", budget_ms=30_000, options={"max_frames": 64, "top_frames": 2, **options})


def test_builtin_finds_a_flash_the_ingest_missed_and_fits_spans_to_the_frames(svc: Service):
    fused = svc.search_report("red", library="colours", top_k=10, rerank=False)
    order = [n for n, _, _ in names(fused)]
    assert order.index("orange.mp4") < order.index("flash.mp4")  # 1 frame/s never saw the flash
    assert ("late.mp4", 3.0, 4.0) in names(fused)
    lib = builtin(svc)
    response = svc.search_report("red", library="colours", top_k=10)
    assert not response.notes and stage_for(lib).last["outcome"] == "reranked"
    got = names(response)
    order = [n for n, _, _ in got]
    assert order.index("flash.mp4") < order.index("orange.mp4")  # its best frames are red
    flash = next(r for r in response.results if r.video.endswith("flash.mp4"))
    assert (flash.start, flash.end) == pytest.approx((2.25, 3.0), abs=0.01)  # red from 2.1 to 2.9 s, on the 4/s grid
    assert 2.25 <= flash.thumbnail_time <= 2.75
    late = next(r for r in response.results if r.video.endswith("late.mp4"))
    assert (late.start, late.end) == pytest.approx((2.5, 4.0), abs=0.01)  # the whole red shot, not just 3-4 s
    still = next(r for r in response.results if r.video.endswith("still.png"))
    assert (still.start, still.end) == (0.0, 0.0)
    assert response.results[0].routes["rerank"] > 0


def test_builtin_judges_image_queries_and_caches_frames(svc: Service, media: dict[str, Path], tmp_path: Path):
    lib = builtin(svc)
    query = write_image(tmp_path / "red.png", RED)
    first = svc.search_report(image=query, library="colours", top_k=10)
    assert not first.notes
    order = [Path(r.video).name for r in first.results]
    assert order.index("flash.mp4") < order.index("orange.mp4")
    svc.search_report("red", library="colours", top_k=10)
    reranker = stage_for(lib).reranker()
    misses, hits = reranker.frames.misses, reranker.frames.hits
    again = svc.search_report("红色", library="colours", top_k=10)  # another query, the same segments
    assert stage_for(lib).last["judged"] > 0  # not from the judgement cache: the backend looked again,
    assert reranker.frames.misses == misses and reranker.frames.hits > hits  # at frames it had seen
    assert names(again) == names(svc.search_report("red", library="colours", top_k=10))


def test_builtin_never_exceeds_its_budget(svc: Service):
    fused = svc.search_report("red", library="colours", rerank=False)
    use(svc, "builtin", budget_ms=1, options={"max_frames": 64})
    response = svc.search_report("red", library="colours")
    assert names(response) == names(fused)
    assert "budget" in response.notes[0]
    assert response.timings_ms["rerank"] < 1 + 150


# -- local VLM: tiny random-weight Qwen-VL models with real processors ----------------------------------


@pytest.fixture(scope="module")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    from tiny_vlm import make_tiny_qwen_vl

    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = make_tiny_qwen_vl(tmp_path_factory.mktemp(family) / "model", family)
        return made[family]

    return get


def vlm_options(path: Path, **more: Any) -> dict[str, Any]:
    return {"model": str(path), "min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28, **more}


def candidate(lib, path: Path, start: float, end: float, rank: int = 0) -> Candidate:
    from zhaopian.search.types import Segment

    record = next(r for r in lib.media.list() if r.path == str(path))
    return Candidate(rank=rank, segment=Segment(media_id=record.id, start=start, end=end, score=1.0, thumbnail_time=start,
                                                routes={"visual": 1.0}),
                     path=path, kind=record.kind, duration=record.duration, width=record.width, height=record.height,
                     sha256=record.sha256)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_vlm_inputs_scores_and_batches(family: str, svc: Service, media: dict[str, Path], tiny_vlms, one_torch_thread):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from zhaopian.search.rerank_vlm import VLMOptions, VLMReranker

    lib = svc.library("colours")
    reranker = VLMReranker(VLMOptions(**vlm_options(tiny_vlms(family), batch_size=3)), lib)
    reranker.load()  # AutoProcessor / AutoModelForImageTextToText from the directory, as for a real model
    factor = 32 if family == "qwen3_vl" else 28
    assert reranker.plan.factor == factor and reranker.plan.temporal_patch == 2

    clip = reranker.clip(candidate(lib, media["late"], 2.0, 5.0))  # 3 s at 2 frames/s: 6 frames
    assert clip.times == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5] and clip.fps == 2.0
    h, w = smart_resize(48, 64, factor=factor, min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)
    assert clip.frames[0].shape == (h, w, 3)
    inputs = reranker.inputs("a red car", [clip])
    patch = factor // 2
    assert inputs["video_grid_thw"].tolist() == [[3, h // patch, w // patch]]
    assert tuple(inputs["pixel_values_videos"].shape) == (3 * (h // patch) * (w // patch), 3 * 2 * patch * patch)
    video_id = reranker.processor.video_token_id
    assert int((inputs["input_ids"] == video_id).sum()) == 3 * (h // patch) * (w // patch) // 4
    text = reranker.processor.tokenizer.decode(inputs["input_ids"][0])
    assert "Does this clip show: a red car? Answer yes or no." in text
    assert text.rstrip().endswith("assistant")
    if family == "qwen3_vl":  # each temporal patch's time, relative to the clip: (0 + 0.5) / 2 = 0.25 s, ...
        assert "<0.2 seconds>" in text and "<1.2 seconds>" in text and "<2.2 seconds>" in text
    else:
        assert "seconds>" not in text

    clips_of = [candidate(lib, media[k], s, e, i) for i, (k, s, e) in
                enumerate([("late", 2.0, 5.0), ("flash", 0.0, 6.0), ("orange", 1.0, 2.0), ("still", 0.0, 0.0)])]
    query = RerankQuery.of(Query(text="red"))
    batched = dict(reranker.judge(query, clips_of, Deadline(60)))
    one_by_one = {}
    for i, c in enumerate(clips_of):
        [(_, judgement)] = list(reranker.judge(query, [c], Deadline(60)))
        one_by_one[i] = judgement
    for i in range(len(clips_of)):
        assert 0.0 <= batched[i].score <= 1.0
        assert batched[i].score == pytest.approx(one_by_one[i].score, abs=1e-5)
    assert len({round(j.score, 6) for j in batched.values()}) > 1  # different clips, different scores


@pytest.mark.slow
def test_vlm_reranks_a_library_end_to_end_with_cache_and_budget(svc: Service, tiny_vlms, one_torch_thread):
    fused = svc.search_report("red", library="colours", top_k=5, rerank=False)
    lib = use(svc, "vlm", top_n=4, budget_ms=60_000, options=vlm_options(tiny_vlms("qwen2_vl")))
    response = svc.search_report("red", library="colours", top_k=5)
    assert not response.notes
    scores = [r.routes["rerank"] for r in response.results[:4]]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    assert {n for n in names(response)[:4]} == {n for n in names(fused)[:4]}
    assert stage_for(lib).last["judged"] == 4
    again = svc.search_report("red", library="colours", top_k=5)
    assert names(again) == names(response)
    assert stage_for(lib).last == {"candidates": 4, "cached": 4, "judged": 0, "outcome": "reranked"}
    # a budget too small for loading and judging: the fused order and a note
    use(svc, "vlm", top_n=4, budget_ms=5, options=vlm_options(tiny_vlms("qwen2_vl")))
    hurried = svc.search_report("red", library="colours", top_k=5)
    assert names(hurried) == names(fused) and "budget" in hurried.notes[0]
    assert hurried.timings_ms["rerank"] < 5 + 150


def test_vlm_reports_a_missing_model(svc: Service, tmp_path: Path):
    use(svc, "vlm", options={"model": str(tmp_path / "nowhere")})
    response = svc.search_report("red", library="colours")
    assert "reranker vlm failed (reranker model directory" in response.notes[0]


# -- OpenAI-compatible endpoint ------------------------------------------------------------------------

KEY = "sk-rerank-SECRET-7"
Reply = tuple[int, bytes, float]


def completion(text: str = "yes", top: dict[str, float] | None = None) -> Reply:
    choice: dict[str, Any] = {"message": {"role": "assistant", "content": text}}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": text, "logprob": top.get(text, -9.0),
                                           "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]}]}
    return 200, json.dumps({"choices": [choice]}).encode(), 0.0


class FakeVLM(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.reply: Callable[[dict[str, Any]], Reply] = lambda request: completion()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up closes the socket under a sleeping reply


class _Handler(BaseHTTPRequestHandler):
    server: FakeVLM

    def do_POST(self) -> None:
        with self.server.lock:
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            request = {"path": self.path, "headers": dict(self.headers), "body": body}
            self.server.requests.append(request)
            status, payload, delay = self.server.reply(request)
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with self.server.lock:
                self.server.in_flight -= 1

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    fake = FakeVLM()
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()
    thread.join(timeout=5)


@pytest.fixture
def endpoint(server: FakeVLM, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """The endpoint's URL and model from the environment, its key too; no log line may contain the key."""
    server.requests.clear()
    server.max_in_flight = 0
    server.reply = lambda request: completion()
    monkeypatch.setenv("ZHAOPIAN_RERANK_URL", server.url)
    monkeypatch.setenv("ZHAOPIAN_RERANK_MODEL", "qwen-vl-test")
    monkeypatch.setenv("ZHAOPIAN_RERANK_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    yield server
    assert KEY not in caplog.text


def question(request: dict[str, Any]) -> str:
    return request["body"]["messages"][0]["content"][-1]["text"]


def red_share(request: dict[str, Any]) -> float:
    """The share of a request's frames that are red (a server that can see colours)."""
    frames = [p["image_url"]["url"] for p in request["body"]["messages"][0]["content"] if p["type"] == "image_url"]
    red = 0
    for url in frames:
        data = base64.b64decode(url.split(",", 1)[1])
        r, g, b = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), float).mean(axis=(0, 1))
        red += r > 150 and g < 80 and b < 80
    return red / len(frames)


def test_endpoint_scores_from_logprobs(svc: Service, endpoint: FakeVLM):
    def reply(request):  # a token "Yes" or "No", with both in the top log-probabilities
        p = min(max(red_share(request), 0.02), 0.98)
        return completion("Yes" if p > 0.5 else "No", {"Yes": np.log(p) - 0.01, " yes": np.log(p * 0.01),
                                                        "No": np.log(1 - p), "Maybe": -5.0})

    endpoint.reply = reply
    fused = svc.search_report("red", library="colours", top_k=5, rerank=False)
    lib = use(svc, "endpoint", top_n=5, budget_ms=20_000, options={"concurrency": 2})
    response = svc.search_report("red", library="colours", top_k=5)
    assert not response.notes
    assert len(endpoint.requests) == 5 and endpoint.max_in_flight <= 2
    scores = [r.routes["rerank"] for r in response.results]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9 and scores[-1] < 0.1
    assert {n for n in names(response)} == {n for n in names(fused)}
    request = endpoint.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "qwen-vl-test" and body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 10
    assert question(request) == "Does this clip show: red? Answer yes or no."
    images = [p["image_url"]["url"] for r in endpoint.requests for p in r["body"]["messages"][0]["content"]
              if p["type"] == "image_url"]
    assert images and all(u.startswith("data:image/jpeg;base64,") for u in images)
    assert stage_for(lib).last["outcome"] == "reranked"


def test_endpoint_score_rule():
    from zhaopian.search.rerank_endpoint import score_answer

    yes, no = np.log(0.6), np.log(0.3)
    assert score_answer(json.loads(completion("Yes", {"Yes": yes, "No": no, "yes": np.log(0.05)})[1])) == \
        pytest.approx(0.65 / 0.95)
    assert score_answer(json.loads(completion("no.")[1])) == 0.0  # no log-probabilities: the text decides
    assert score_answer(json.loads(completion(" YES")[1])) == 1.0
    with pytest.raises(ValueError, match="neither yes nor no"):
        score_answer(json.loads(completion("It shows a cat")[1]))


def test_endpoint_without_logprobs_reads_the_answer(svc: Service, endpoint: FakeVLM):
    def reply(request):
        if request["body"].get("logprobs"):
            return 400, b'{"error": {"message": "logprobs are not supported"}}', 0.0
        return completion("Yes, it does." if red_share(request) > 0.5 else "No.")

    endpoint.reply = reply
    use(svc, "endpoint", top_n=5, budget_ms=20_000, options={"concurrency": 1})
    response = svc.search_report("red", library="colours", top_k=5)
    assert not response.notes
    scores = [r.routes["rerank"] for r in response.results]
    assert set(scores) == {0.0, 1.0} and scores == sorted(scores, reverse=True)
    asked = [bool(r["body"].get("logprobs")) for r in endpoint.requests]
    assert asked == [True, False, False, False, False, False]  # refused once, never asked again


FAILURES = {
    "HTTP 500": ((500, b'{"error": "overloaded"}', 0.0), "HTTP 500"),
    "an answer neither yes nor no": (completion("Perhaps"), "neither yes nor no"),
    "a body that is not JSON": ((200, b"<html>oops</html>", 0.0), "invalid answer"),
    "no choices": ((200, b'{"choices": []}', 0.0), "invalid answer"),
    "a slow server": ((200, completion("yes")[1], 3.0), "budget|no answer within"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_endpoint_failures_fall_back_to_the_fused_order_within_the_budget(case: str, svc: Service, endpoint: FakeVLM):
    fused = svc.search_report("red", library="colours", rerank=False)
    reply, expected = FAILURES[case]
    endpoint.reply = lambda request: reply
    use(svc, "endpoint", top_n=3, budget_ms=800, options={"timeout": 5.0})
    start = time.perf_counter()
    response = svc.search_report("red", library="colours")
    assert time.perf_counter() - start < 0.8 + 0.5
    assert names(response) == names(fused)
    [note] = response.notes
    assert re.search(expected, note) and "fused order" in note
    assert KEY not in note


def test_endpoint_needs_a_url_and_a_model(svc: Service, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ZHAOPIAN_RERANK_URL", raising=False)
    monkeypatch.delenv("ZHAOPIAN_RERANK_MODEL", raising=False)
    use(svc, "endpoint")
    response = svc.search_report("red", library="colours")
    assert "needs a url and a model" in response.notes[0]


# -- CLI ----------------------------------------------------------------------------------------------


def test_cli_chooses_a_reranker_per_library_and_skips_it_per_query(env: Path, media_root: Path):
    from zhaopian.api.cli import app

    runner = CliRunner()
    write_video(media_root / "a.mp4", [(RED, 2), (GREEN, 2)])
    made = runner.invoke(app, ["library", "create", "x", "--rerank", "builtin", "--modules", "visual",
                               "--encoder", "color_encoder:ColorEncoder"])
    assert made.exit_code == 0, made.output
    listed = json.loads(runner.invoke(app, ["library", "list", "--json"]).stdout)
    assert listed[0]["config"]["rerank"]["backend"] == "builtin"
    assert runner.invoke(app, ["index", str(media_root / "a.mp4"), "-l", "x", "-q"]).exit_code == 0
    with_rerank = json.loads(runner.invoke(app, ["search", "red", "-l", "x", "--json"]).stdout)
    assert "rerank" in with_rerank["timings_ms"] and "rerank" in with_rerank["results"][0]["routes"]
    without = json.loads(runner.invoke(app, ["search", "red", "-l", "x", "--json", "--no-rerank"]).stdout)
    assert "rerank" not in without["timings_ms"]
    bad = runner.invoke(app, ["library", "create", "y", "--rerank", "telepathy"])
    assert bad.exit_code == 1 and bad.stderr.startswith("error[config_invalid]: unknown reranker 'telepathy'")


def test_api_library_options_take_a_spec_or_a_config(service: Service):
    from zhaopian.api.http import LibraryOptions

    spec = LibraryOptions(rerank="vlm:Qwen/Qwen3-VL-2B-Instruct").rerank
    config = service.default_config(rerank=spec)
    assert config.rerank.backend == "vlm" and config.rerank.options["model"] == "Qwen/Qwen3-VL-2B-Instruct"
    full = LibraryOptions(rerank={"backend": "builtin", "top_n": 5, "budget_ms": 1500}).rerank
    assert service.default_config(rerank=full).rerank.top_n == 5
    assert "rerank" not in service.default_config().model_dump(exclude_defaults=True)
