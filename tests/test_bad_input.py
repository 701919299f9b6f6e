"""Every case of the bad-input corpus (tests/badinput/make_corpus.py) through the service (what the CLI
runs: ``Service.index``, ``submit`` + a worker, ``search_report``) and the HTTP API.

Each case must end in a documented error code (api/http.py's list; never ``internal``, never a
traceback), or in success where its manifest allows it; the process keeps answering; and the library
indexed before the corpus keeps exactly its media, units and search results. Cases that may succeed
go to a scratch library so that the known-good one is only ever handed input that fails.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import httpx
import pytest
from badinput.make_corpus import Corpus, RequestCase, make_corpus
from conftest import COLOR_LIBRARY
from fastapi.testclient import TestClient
from media import BLUE, GREEN, RED, YELLOW, write_image, write_video

from zhaopian.api.auth import create_key
from zhaopian.api.http import STATUS, create_app
from zhaopian.api.ratelimit import RateLimiter
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.search.errors import ZhaopianError

pytestmark = pytest.mark.slow

GOOD, SCRATCH = "colours", "scratch"
#: the app's upload limit: above the 1 MiB query, so that one reaches the query check
LIMIT = 2 << 20
CODES = set(STATUS) - {"internal"}


class World:
    """One service over the corpus's media folder, a known-good library, a scratch library, an API client."""

    def __init__(self, corpus: Corpus, data: Path) -> None:
        self.corpus = corpus
        self.data = data
        self.service = Service(Settings())
        svc = self.service
        svc.create_library(GOOD, COLOR_LIBRARY)
        svc.create_library(SCRATCH, COLOR_LIBRARY)
        good = corpus.media / "good"
        files = [write_video(good / "a.mp4", [(RED, 3), (GREEN, 3), (BLUE, 4)]),
                 write_video(good / "b.mp4", [(YELLOW, 2), (RED, 2)]), write_image(good / "still.png", GREEN)]
        assert [r.status for r in svc.index(files, library=GOOD)] == ["indexed"] * 3
        assert svc.index([files[0]], library=SCRATCH)[0].status == "indexed"
        svc.catalog.ensure_tenant(svc.settings.tenant)
        self.key = create_key(svc.catalog, svc.settings.tenant).key
        self.headers = {"Authorization": f"Bearer {self.key}"}
        self.client = TestClient(create_app(svc, max_upload_bytes=LIMIT, rate_limiter=RateLimiter(0, 1)),
                                 raise_server_exceptions=False)
        self.client.__enter__()
        self.before = self.snapshot()

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.service.close()

    def snapshot(self) -> dict:
        lib = self.service.library(GOOD)
        media = [{k: v for k, v in m.as_dict().items()} for m in lib.media.list(0, 1000)]
        units = lib.media.conn.execute("SELECT media_id, module, COUNT(*) FROM units GROUP BY media_id, module "
                                       "ORDER BY media_id, module").fetchall()
        found = self.service.search_report("red", library=GOOD, top_k=10)
        return {"media": media, "units": [tuple(row) for row in units],
                "results": [r.model_dump() for r in found.results]}

    def assert_unchanged(self) -> None:
        """The known-good library is as it was, and the API still answers."""
        assert self.snapshot() == self.before
        assert self.client.get("/v1/health").status_code == 200
        found = self.client.post(f"/v1/libraries/{GOOD}/search", json={"text": "red", "top_k": 10},
                                 headers=self.headers)
        assert found.status_code == 200
        assert [(r["media_id"], r["start"], r["end"]) for r in found.json()["results"]] == [
            (r["media_id"], r["start"], r["end"]) for r in self.before["results"]]

    def library_for(self, expect: list[str]) -> str:
        """Input that may succeed goes to the scratch library, the rest to the known-good one."""
        return SCRATCH if "ok" in expect else GOOD


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("badinput") / "corpus")


@pytest.fixture(scope="module")
def world(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("badinput-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZHAOPIAN_DATA_DIR", str(data))
        mp.setenv("ZHAOPIAN_MEDIA_ROOT", str(corpus.media))
        mp.chdir(corpus.media)  # relative paths mean the same to the service as to the API
        w = World(corpus, data)
        yield w
        w.close()


@pytest.fixture
def no_errors_logged(caplog: pytest.LogCaptureFixture):
    """Nothing reached the 'unexpected error' handler or the worker's catch-all."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


def outcome_ok(outcome: str, expect: list[str], what: str) -> None:
    assert outcome in expect, f"{what}: got {outcome!r}, expected one of {expect}"
    assert outcome == "ok" or outcome in CODES, f"{what}: {outcome!r} is not a documented code"


def check_response(response: httpx.Response, expect: list[str], what: str) -> str:
    """A documented error (JSON, matching status, no traceback) or a success; returns the outcome."""
    assert "Traceback" not in response.text, what
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code < 300:
        outcome = "ok"
    elif response.status_code == 416 and "range" in expect:  # documented: the plain HTTP 416
        assert response.headers["content-range"].startswith("bytes */")
        return "range"
    else:
        body = response.json()
        assert set(body) == {"error"} and body["error"]["message"], what
        outcome = body["error"]["code"]
        assert STATUS.get(outcome) == response.status_code, f"{what}: {outcome} with {response.status_code}"
    outcome_ok(outcome, expect, what)
    return outcome


def job_outcomes(jobs: list[dict]) -> set[str]:
    return {"ok" if j["status"] == "done" else j["error"]["code"] for j in jobs}


# -- the corpus ------------------------------------------------------------------------------------
def test_corpus_is_large_deterministic_and_documented(corpus, tmp_path):
    assert len(corpus) >= 100
    assert len(corpus.files) >= 60 and len(corpus.requests) >= 100
    for case in [*corpus.files, *corpus.paths, *corpus.queries, *corpus.requests]:
        assert case.expect and set(case.expect) <= CODES | {"ok", "range"}, case.name
    names = [c.name for c in [*corpus.files, *corpus.paths, *corpus.queries, *corpus.requests]]
    assert len(names) == len(set(names))

    again = make_corpus(tmp_path / "again")
    assert (again.root / "manifest.json").read_bytes() == (corpus.root / "manifest.json").read_bytes()
    for folder in ("media", "requests"):
        for path in sorted((corpus.root / folder).rglob("*")):
            twin = again.root / path.relative_to(corpus.root)
            if path.is_symlink():
                assert os.readlink(twin).replace(str(again.root), "") == \
                    os.readlink(path).replace(str(corpus.root), ""), path
            elif path.is_file():
                assert twin.read_bytes() == path.read_bytes(), f"{path.relative_to(corpus.root)} differs"


# -- through the service (what the CLI runs) -------------------------------------------------------
def test_index_answers_every_bad_file(world, no_errors_logged):
    for case in world.corpus.files:
        results = world.service.index([world.corpus.media / case.path], library=world.library_for(case.expect))
        outcomes = {"ok" if r.status != "failed" else r.code for r in results} or {"ok"}
        for outcome in outcomes:
            outcome_ok(outcome, case.expect, f"index {case.name}")
    world.assert_unchanged()


def test_jobs_answer_every_bad_file(world, no_errors_logged):
    submitted: dict[str, list[int]] = {}
    for case in world.corpus.files:
        jobs = world.service.submit([world.corpus.media / case.path], library=world.library_for(case.expect))
        submitted[case.name] = [j.id for j in jobs]
    world.service.worker().run(drain=True)
    for case in world.corpus.files:
        for job_id in submitted[case.name]:
            job = world.service.jobs.get(job_id)
            assert job.status in ("done", "failed"), (case.name, job)
            outcome_ok("ok" if job.status == "done" else job.error.code, case.expect, f"job {case.name}")
    world.assert_unchanged()


def test_paths_through_the_service(world, no_errors_logged):
    corpus = world.corpus
    for case in (c for c in corpus.paths if c.cli):
        path = case.path.format(media=corpus.media, outside=corpus.outside, data=world.data)
        for result in world.service.index([path], library=GOOD):
            outcome_ok(result.code or "ok", case.expect, f"index {case.name}")
        jobs = world.service.run_jobs(world.service.submit([path], library=GOOD))
        for job in jobs:
            outcome_ok(job.error.code if job.error else "ok", case.expect, f"job {case.name}")
    world.assert_unchanged()


def test_queries_through_the_service(world):
    for case in world.corpus.queries:
        try:
            world.service.search_report(case.text, library=GOOD)
            outcome = "ok"
        except ZhaopianError as exc:  # anything else is a bug and fails the test as it is
            outcome = exc.code
        outcome_ok(outcome, case.expect, f"query {case.name}")
    world.assert_unchanged()


# -- through the HTTP API --------------------------------------------------------------------------
def test_uploads_and_registered_paths(world, no_errors_logged):
    corpus, client = world.corpus, world.client
    for case in corpus.files:
        url = f"/v1/libraries/{world.library_for(case.expect)}/media?wait=true"
        if case.upload:
            name = os.fsencode(Path(case.path).name).decode("utf-8", "replace")  # multipart names are UTF-8
            response = client.post(url, headers=world.headers,
                                   files={"file": (name, (corpus.media / case.path).read_bytes())})
            check_response(response, case.expect, f"upload {case.name}")
        body = json.dumps({"path": case.path})  # a name that is not UTF-8 arrives escaped: request_invalid
        response = client.post(url, content=body, headers={**world.headers, "Content-Type": "application/json"})
        expect = [*case.expect, "request_invalid"] if "\\ud" in body else case.expect
        if check_response(response, expect, f"register {case.name}") == "ok":
            for outcome in job_outcomes(response.json()["jobs"]):
                outcome_ok(outcome, case.expect, f"register {case.name}: its jobs")
    for case in corpus.paths:
        path = case.path.format(media=corpus.media, outside=corpus.outside, data=world.data)
        body = json.dumps({"path": path})
        response = client.post(f"/v1/libraries/{GOOD}/media?wait=true", content=body,
                               headers={**world.headers, "Content-Type": "application/json"})
        expect = [*case.expect, "request_invalid"] if "\\ud" in body else case.expect
        if check_response(response, [*expect, "ok"], f"register path {case.name}") == "ok":
            for outcome in job_outcomes(response.json()["jobs"]):
                outcome_ok(outcome, case.expect, f"register path {case.name}: its jobs")
    world.assert_unchanged()


def test_queries_over_http(world, no_errors_logged):
    for case in world.corpus.queries:
        response = world.client.post(f"/v1/libraries/{GOOD}/search", content=json.dumps({"text": case.text}),
                                     headers={**world.headers, "Content-Type": "application/json"})
        check_response(response, case.expect, f"query {case.name}")
    world.assert_unchanged()


def _request(world: World, case: RequestCase) -> httpx.Response:
    corpus, svc = world.corpus, world.service
    medium = svc.media(SCRATCH)[0].id
    token = world.client.get(f"/v1/libraries/{SCRATCH}/media/{medium}", headers=world.headers).json()["stream_url"]
    library = SCRATCH if (case.url.startswith("/v1/libraries/{library}/media/{medium}") or "ok" in case.expect) \
        else GOOD
    url = case.url.format(library=library, medium=medium, job=1, token=token.split("token=")[1])
    headers = dict(case.headers)
    if not (case.name.startswith(("auth-", "token-"))):
        headers = {**world.headers, **headers}
    size = LIMIT + 1 if case.body_size == "over_limit" else 0
    kwargs: dict = {}
    if case.files is not None:
        kwargs["files"] = {part: (name, corpus.body(body) if body else b"\0" * size, ctype)
                           for part, (name, body, ctype) in case.files.items()}
        if case.form:
            kwargs["data"] = case.form
    elif case.body is not None:
        kwargs["content"] = corpus.body(case.body)
    if case.chunked:  # the same multipart body, streamed without a Content-Length
        request = httpx.Request(case.method, "http://test" + url, **kwargs)
        data = request.read()
        headers["Content-Type"] = request.headers["Content-Type"]
        kwargs = {"content": (data[i:i + 65536] for i in range(0, len(data), 65536))}
    return world.client.request(case.method, url, headers=headers, **kwargs)


def test_requests(world, no_errors_logged):
    for case in world.corpus.requests:
        check_response(_request(world, case), case.expect, f"request {case.name}")
    world.assert_unchanged()


def test_files_of_failed_uploads_are_not_kept(world):
    """Uploads that cannot be indexed are deleted (the corpus uploaded dozens of them)."""
    uploads = world.service.settings.upload_dir / "uploads"
    failed = [job for lib in (GOOD, SCRATCH)
              for job in world.service.jobs.list(world.service.settings.tenant, lib, "failed", 0, 1000)[0]]
    from_uploads = [job for job in failed if Path(job.path).is_relative_to(uploads)]
    assert not [job.path for job in from_uploads if Path(job.path).exists()]


def test_a_chunked_body_is_cut_off_at_the_limit(world):
    """A body sent without Content-Length is refused once past the limit, not spooled to disk whole."""
    def body():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
        for _ in range(20 * LIMIT // 65536):
            yield b"\0" * 65536

    response = world.client.post(f"/v1/libraries/{SCRATCH}/media", content=body(),
                                 headers={**world.headers, "Content-Type": "multipart/form-data; boundary=x"})
    check_response(response, ["payload_too_large"], "chunked body")
