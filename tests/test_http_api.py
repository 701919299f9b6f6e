"""The HTTP API in-process (FastAPI's TestClient), over the colour-encoder library: no model loads."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from conftest import COLOR_ENCODER
from fastapi.testclient import TestClient
from media import BLUE, GREEN, RED, write_image

from zhaopian.api.auth import create_key
from zhaopian.api.http import create_app
from zhaopian.api.service import Service

#: a new library over the colour encoder, as the API takes it
COLOR_OPTIONS = {"modules": ["visual"], "encoder": COLOR_ENCODER["backend"]}
UPLOAD_LIMIT = 4096


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    assert "Traceback" not in response.text
    return body["error"]


def png_bytes(rgb: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def client(service: Service):
    with TestClient(create_app(service, max_upload_bytes=UPLOAD_LIMIT)) as test_client:
        yield test_client


@pytest.fixture
def admin_key(service: Service) -> str:
    """An admin key of the service's own tenant (the one the colour library lives in)."""
    service.catalog.ensure_tenant(service.settings.tenant)
    return create_key(service.catalog, service.settings.tenant, admin=True).key


@pytest.fixture
def user_key(service: Service) -> str:
    service.catalog.ensure_tenant(service.settings.tenant)
    return create_key(service.catalog, service.settings.tenant).key


@pytest.fixture
def other_key(client: TestClient, admin_key: str) -> str:
    """A key of a second tenant, made through the admin routes."""
    assert client.post("/v1/tenants", json={"name": "other"}, headers=bearer(admin_key)).status_code == 201
    response = client.post("/v1/tenants/other/keys", json={}, headers=bearer(admin_key))
    assert response.status_code == 201
    return response.json()["key"]


def media_ids(client: TestClient, key: str, library: str = "colours") -> list[int]:
    page = client.get(f"/v1/libraries/{library}/media", headers=bearer(key)).json()
    return [m["id"] for m in page["items"]]


# -- health, auth, admin ---------------------------------------------------------------------------
def test_health_and_docs_need_no_key(client):
    health = client.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert "/v1/libraries/{name}/search" in schema["paths"]
    assert set(schema["paths"]["/v1/libraries/{name}/media"]["post"]["requestBody"]["content"]) == {
        "multipart/form-data", "application/json"}
    assert client.get("/docs").status_code == 200


def test_missing_wrong_and_malformed_keys_are_401(client, user_key):
    missing = client.get("/v1/libraries")
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(client.get("/v1/libraries", headers=bearer(user_key[:-1] + ("A" if user_key[-1] != "A" else "B"))),
                 401, "unauthorized")
    assert_error(client.get("/v1/libraries", headers=bearer("not-a-key")), 401, "unauthorized")
    assert_error(client.get("/v1/libraries", headers={"Authorization": f"Basic {user_key}"}), 401, "unauthorized")
    assert client.get("/v1/libraries", headers=bearer(user_key)).status_code == 200


def test_keys_are_stored_hashed(service, user_key):
    [record] = [r for r in service.catalog.api_keys(service.settings.tenant) if not r.admin]
    assert user_key.startswith(record.prefix) and user_key not in (record.hash, record.prefix)
    assert len(record.hash) == 64


def test_admin_creates_tenants_and_keys(client, admin_key, user_key):
    assert_error(client.post("/v1/tenants", json={"name": "acme"}, headers=bearer(user_key)), 403, "forbidden")
    assert_error(client.post("/v1/tenants/default/keys", json={}, headers=bearer(user_key)), 403, "forbidden")
    created = client.post("/v1/tenants", json={"name": "acme"}, headers=bearer(admin_key))
    assert created.status_code == 201 and created.json() == {"name": "acme"}
    assert_error(client.post("/v1/tenants", json={"name": "acme"}, headers=bearer(admin_key)), 409, "already_exists")
    assert_error(client.post("/v1/tenants", json={"name": "bad name!"}, headers=bearer(admin_key)),
                 422, "config_invalid")
    assert_error(client.post("/v1/tenants/nobody/keys", json={}, headers=bearer(admin_key)), 404, "not_found")

    issued = client.post("/v1/tenants/acme/keys", json={"admin": False}, headers=bearer(admin_key)).json()
    assert issued["tenant"] == "acme" and issued["admin"] is False and issued["key"].startswith(issued["prefix"])
    acme = bearer(issued["key"])
    assert client.get("/v1/libraries", headers=acme).json() == []
    assert_error(client.post("/v1/tenants", json={"name": "x"}, headers=acme), 403, "forbidden")


# -- libraries -------------------------------------------------------------------------------------
def test_library_lifecycle(client, user_key):
    headers = bearer(user_key)
    created = client.post("/v1/libraries", json={"name": "films", "config": COLOR_OPTIONS}, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "films" and body["tenant"] == "default"
    assert body["config"]["modules"]["visual"]["encoder"]["backend"] == COLOR_ENCODER["backend"]
    assert [lib["name"] for lib in client.get("/v1/libraries", headers=headers).json()] == ["films"]

    assert_error(client.post("/v1/libraries", json={"name": "films", "config": COLOR_OPTIONS}, headers=headers),
                 409, "already_exists")
    assert_error(client.post("/v1/libraries", json={"name": "../x", "config": COLOR_OPTIONS}, headers=headers),
                 422, "config_invalid")
    assert_error(client.post("/v1/libraries", json={"name": "y", "config": {**COLOR_OPTIONS, "modules": ["nope"]}},
                             headers=headers), 422, "config_invalid")
    assert_error(client.post("/v1/libraries", json={"name": "y", "config": {"colour": 1}}, headers=headers),
                 422, "request_invalid")

    assert client.delete("/v1/libraries/films", headers=headers).status_code == 204
    assert client.get("/v1/libraries", headers=headers).json() == []
    assert_error(client.delete("/v1/libraries/films", headers=headers), 404, "not_found")


# -- media -----------------------------------------------------------------------------------------
def test_media_paging_show_update_delete(client, colour_library, user_key):
    headers = bearer(user_key)
    first = client.get("/v1/libraries/colours/media?offset=0&limit=2", headers=headers).json()
    rest = client.get("/v1/libraries/colours/media?offset=2&limit=2", headers=headers).json()
    assert (first["total"], first["offset"], first["limit"], len(first["items"])) == (3, 0, 2, 2)
    assert (rest["total"], len(rest["items"])) == (3, 1)
    assert [Path(m["path"]).name for m in first["items"] + rest["items"]] == ["a.mp4", "b.mp4", "still.png"]
    assert_error(client.get("/v1/libraries/colours/media?limit=0", headers=headers), 422, "request_invalid")
    assert_error(client.get("/v1/libraries/colours/media?offset=-1", headers=headers), 422, "request_invalid")

    medium_id = first["items"][0]["id"]
    shown = client.get(f"/v1/libraries/colours/media/{medium_id}", headers=headers).json()
    assert shown["kind"] == "video" and shown["duration"] == pytest.approx(10, abs=0.5)

    patch = {"title": "Sunset", "tags": ["beach", "2024"], "fields": {"place": "Sanya"}}
    updated = client.patch(f"/v1/libraries/colours/media/{medium_id}", json=patch, headers=headers)
    assert updated.status_code == 200, updated.text
    assert {k: updated.json()[k] for k in patch} == patch
    assert client.get(f"/v1/libraries/colours/media/{medium_id}", headers=headers).json()["title"] == "Sunset"
    assert_error(client.patch(f"/v1/libraries/colours/media/{medium_id}", json={"tags": "x"}, headers=headers),
                 422, "request_invalid")

    assert client.delete(f"/v1/libraries/colours/media/{medium_id}", headers=headers).status_code == 204
    assert_error(client.get(f"/v1/libraries/colours/media/{medium_id}", headers=headers), 404, "not_found")
    assert_error(client.delete(f"/v1/libraries/colours/media/{medium_id}", headers=headers), 404, "not_found")
    assert client.get("/v1/libraries/colours/media", headers=headers).json()["total"] == 2


def test_unknown_library_media_and_ids(client, colour_library, user_key):
    headers = bearer(user_key)
    assert_error(client.get("/v1/libraries/nope/media", headers=headers), 404, "not_found")
    assert_error(client.get("/v1/libraries/colours/media/999", headers=headers), 404, "not_found")
    assert_error(client.patch("/v1/libraries/colours/media/999", json={"title": "x"}, headers=headers),
                 404, "not_found")
    assert_error(client.get("/v1/libraries/colours/media/abc", headers=headers), 422, "request_invalid")
    assert_error(client.get("/v1/nothing-here", headers=headers), 404, "not_found")
    assert_error(client.put("/v1/libraries", headers=headers), 405, "method_not_allowed")


def test_upload_indexes_and_is_searchable(client, service, user_key):
    headers = bearer(user_key)
    client.post("/v1/libraries", json={"name": "shots", "config": COLOR_OPTIONS}, headers=headers)
    response = client.post("/v1/libraries/shots/media?wait=true", headers=headers,
                           files={"file": ("sky.png", png_bytes(BLUE), "image/png")})
    assert response.status_code == 201, response.text
    [item] = response.json()["jobs"]
    assert (item["status"], item["outcome"]) == ("done", "indexed") and item["media_id"] is not None
    assert Path(item["path"]).is_relative_to(service.settings.upload_dir)

    again = client.post("/v1/libraries/shots/media?wait=true", headers=headers,
                        files={"file": ("sky-again.png", png_bytes(BLUE), "image/png")})
    assert again.json()["jobs"][0]["outcome"] == "duplicate"
    found = client.post("/v1/libraries/shots/search", json={"text": "blue", "top_k": 1}, headers=headers).json()
    assert found["results"][0]["media_id"] == item["media_id"]


def test_upload_failures(client, user_key):
    headers = bearer(user_key)
    client.post("/v1/libraries", json={"name": "shots", "config": COLOR_OPTIONS}, headers=headers)
    url = "/v1/libraries/shots/media?wait=true"
    assert_error(client.post(url, headers=headers, files={"file": ("big.png", b"\0" * (UPLOAD_LIMIT + 1))}),
                 413, "payload_too_large")
    assert_error(client.post(url, headers=headers, files={"file": ("huge.png", b"\0" * (UPLOAD_LIMIT * 10))}),
                 413, "payload_too_large")
    assert_error(client.post(url, headers=headers, files={"file": ("notes.png", b"not an image")}),
                 422, "media_invalid")
    assert_error(client.post(url, headers=headers, files={"other": ("a.png", png_bytes(RED))}),
                 422, "request_invalid")
    assert_error(client.post(url, headers={**headers, "Content-Type": "text/plain"}, content=b"hello"),
                 415, "content_type_unsupported")
    assert_error(client.post("/v1/libraries/missing/media", headers=headers,
                             files={"file": ("a.png", png_bytes(RED))}), 404, "not_found")
    assert client.get("/v1/libraries/shots/media", headers=headers).json()["total"] == 0


def test_register_paths_under_the_media_root(client, user_key, colour_videos, media_root, env):
    headers = bearer(user_key)
    client.post("/v1/libraries", json={"name": "clips", "config": COLOR_OPTIONS}, headers=headers)
    url = "/v1/libraries/clips/media?wait=true"
    one = client.post(url, json={"path": "a.mp4"}, headers=headers)
    assert one.status_code == 201, one.text
    assert [r["outcome"] for r in one.json()["jobs"]] == ["indexed"]
    folder = client.post(url, json={"path": str(media_root)}, headers=headers).json()["jobs"]
    assert sorted((Path(r["path"]).name, r["outcome"]) for r in folder) == [
        ("a.mp4", "indexed"), ("b.mp4", "indexed"), ("still.png", "indexed")]
    assert folder[0]["id"] == one.json()["jobs"][0]["id"]  # a.mp4 again is the same job, not a new one

    outside = write_image(env.parent / "elsewhere" / "x.png", GREEN)
    assert_error(client.post(url, json={"path": str(outside)}, headers=headers), 403, "path_outside_media_root")
    assert_error(client.post(url, json={"path": "../elsewhere/x.png"}, headers=headers),
                 403, "path_outside_media_root")
    assert_error(client.post(url, json={"path": "missing.mp4"}, headers=headers), 422, "media_invalid")
    assert_error(client.post(url, content=b'{"path": ', headers={**headers, "Content-Type": "application/json"}),
                 422, "request_invalid")
    assert_error(client.post(url, json={"file": "a.mp4"}, headers=headers), 422, "request_invalid")
    assert client.get("/v1/libraries/clips/media", headers=headers).json()["total"] == 3


def test_registering_never_reaches_into_the_data_dir(service, user_key, media_root, monkeypatch):
    """With the data directory inside the media root (the default layout), its uploads stay out of reach."""
    monkeypatch.setattr(service.settings, "data_dir", media_root / "data")
    upload = write_image(media_root / "data" / "media" / "uploads" / "other" / "lib" / "x.png", RED)
    with TestClient(create_app(service)) as client:
        headers = bearer(user_key)
        client.post("/v1/libraries", json={"name": "clips", "config": COLOR_OPTIONS}, headers=headers)
        assert_error(client.post("/v1/libraries/clips/media", json={"path": str(upload)}, headers=headers),
                     403, "path_outside_media_root")
        assert_error(client.post("/v1/libraries/clips/media", json={"path": "data"}, headers=headers),
                     403, "path_outside_media_root")


# -- search ----------------------------------------------------------------------------------------
def test_text_search(client, colour_library, user_key):
    response = client.post("/v1/libraries/colours/search", json={"text": "red", "top_k": 2},
                           headers=bearer(user_key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(Path(r["video"]).name, r["start"], r["end"]) for r in body["results"]] == [("b.mp4", 2.0, 4.0),
                                                                                       ("a.mp4", 0.0, 3.0)]
    first = body["results"][0]
    assert first["library"] == "colours" and "visual" in first["routes"]
    assert body["query"]["text"] == "red" and body["routes"] == ["visual"] and "visual.recall" in body["timings_ms"]
    only_visual = client.post("/v1/libraries/colours/search", json={"text": "red", "routes": ["visual"]},
                              headers=bearer(user_key))
    assert only_visual.status_code == 200 and only_visual.json()["results"]


def test_search_bad_input(client, colour_library, user_key):
    headers = bearer(user_key)
    url = "/v1/libraries/colours/search"
    assert_error(client.post(url, json={"text": "   "}, headers=headers), 422, "query_invalid")
    assert_error(client.post(url, json={}, headers=headers), 422, "query_invalid")
    assert_error(client.post(url, json={"text": "red", "top_k": 0}, headers=headers), 422, "query_invalid")
    assert_error(client.post(url, content=b"{text: red", headers={**headers, "Content-Type": "application/json"}),
                 422, "request_invalid")
    assert_error(client.post(url, json={"text": "red", "colour": "x"}, headers=headers), 422, "request_invalid")
    assert_error(client.post("/v1/libraries/nope/search", json={"text": "red"}, headers=headers), 404, "not_found")


def test_image_search(client, colour_library, user_key):
    headers = bearer(user_key)
    url = "/v1/libraries/colours/search/image"
    response = client.post(url, headers=headers, data={"top_k": "1"},
                           files={"image": ("q.png", png_bytes((30, 20, 230)), "image/png")})
    assert response.status_code == 200, response.text
    [hit] = response.json()["results"]
    assert (Path(hit["video"]).name, hit["start"]) == ("a.mp4", 6.0)

    assert_error(client.post(url, headers=headers, json={"text": "red"}), 422, "request_invalid")
    assert_error(client.post(url, headers=headers, files={"image": ("q.png", b"garbage")}), 422, "media_invalid")
    assert_error(client.post(url, headers=headers, files={"image": ("q.png", b"\0" * (UPLOAD_LIMIT + 1))}),
                 413, "payload_too_large")
    assert_error(client.post(url, headers=headers, files={"image": ("q.png", b"\0" * (UPLOAD_LIMIT * 10))}),
                 413, "payload_too_large")


# -- tenants never mix -----------------------------------------------------------------------------
def test_tenant_isolation(client, colour_library, user_key, other_key):
    mine, theirs = bearer(user_key), bearer(other_key)
    [medium_id, *_] = media_ids(client, user_key)

    assert client.get("/v1/libraries", headers=theirs).json() == []
    assert_error(client.get("/v1/libraries/colours/media", headers=theirs), 404, "not_found")
    assert_error(client.get(f"/v1/libraries/colours/media/{medium_id}", headers=theirs), 404, "not_found")
    assert_error(client.patch(f"/v1/libraries/colours/media/{medium_id}", json={"title": "mine now"},
                              headers=theirs), 404, "not_found")
    assert_error(client.delete(f"/v1/libraries/colours/media/{medium_id}", headers=theirs), 404, "not_found")
    assert_error(client.post("/v1/libraries/colours/search", json={"text": "red"}, headers=theirs), 404, "not_found")
    assert_error(client.post("/v1/libraries/colours/search/image", headers=theirs,
                             files={"image": ("q.png", png_bytes(RED))}), 404, "not_found")
    assert_error(client.delete("/v1/libraries/colours", headers=theirs), 404, "not_found")
    assert_error(client.get(f"/v1/libraries/colours/media/{medium_id}/file", headers=theirs), 404, "not_found")
    assert_error(client.get(f"/v1/libraries/colours/media/{medium_id}/thumbnail", headers=theirs), 404, "not_found")
    assert_error(client.post("/v1/libraries/colours/media", json={"path": "a.mp4"}, headers=theirs),
                 404, "not_found")

    # the same library name in the other tenant is a different, empty library
    created = client.post("/v1/libraries", json={"name": "colours", "config": COLOR_OPTIONS}, headers=theirs)
    assert created.status_code == 201 and created.json()["tenant"] == "other"
    assert client.get("/v1/libraries/colours/media", headers=theirs).json()["total"] == 0
    for text in ("red", "library:colours red"):
        found = client.post("/v1/libraries/colours/search", json={"text": text}, headers=theirs)
        assert found.status_code == 200 and found.json()["results"] == []

    # and the first tenant still has everything
    assert client.get(f"/v1/libraries/colours/media/{medium_id}", headers=mine).json()["title"] != "mine now"
    assert client.get("/v1/libraries/colours/media", headers=mine).json()["total"] == 3
    assert client.post("/v1/libraries/colours/search", json={"text": "red"}, headers=mine).json()["results"]


def test_unexpected_errors_are_json_without_details(service, user_key, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("secret internals at /srv/db")

    monkeypatch.setattr(service, "libraries", broken)
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        response = client.get("/v1/libraries", headers=bearer(user_key))
    error = assert_error(response, 500, "internal")
    assert "secret" not in json.dumps(error)


def test_cli_issues_keys_the_api_accepts(env, service, client):
    from typer.testing import CliRunner

    from zhaopian.api.cli import app

    result = CliRunner().invoke(app, ["key", "create", "--tenant", "studio", "--admin"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert client.get("/v1/libraries", headers=bearer(key)).json() == []
    assert client.post("/v1/tenants", json={"name": "guests"}, headers=bearer(key)).status_code == 201
    assert "studio" in service.catalog.tenants()


# -- jobs ------------------------------------------------------------------------------------------
def test_media_become_jobs_that_a_worker_runs(client, service, user_key, other_key, colour_videos, media_root):
    headers = bearer(user_key)
    client.post("/v1/libraries", json={"name": "clips", "config": COLOR_OPTIONS}, headers=headers)
    (media_root / "broken.mp4").write_bytes(b"\0" * 64)
    queued = client.post("/v1/libraries/clips/media", json={"path": "."}, headers=headers)
    assert queued.status_code == 202, queued.text
    jobs = queued.json()["jobs"]
    assert len(jobs) == 4 and {j["status"] for j in jobs} == {"queued"} and {j["library"] for j in jobs} == {"clips"}
    again = client.post("/v1/libraries/clips/media", json={"path": "a.mp4"}, headers=headers).json()["jobs"]
    assert again[0]["id"] == next(j["id"] for j in jobs if j["path"].endswith("a.mp4"))  # idempotent

    # a queued job can be cancelled and retried; the other tenant sees none of it
    victim = jobs[0]["id"]
    assert client.post(f"/v1/jobs/{victim}/cancel", headers=headers).json()["status"] == "cancelled"
    assert_error(client.post(f"/v1/jobs/{victim}/cancel", headers=headers), 409, "job_conflict")
    theirs = bearer(other_key)
    assert client.get("/v1/jobs", headers=theirs).json()["total"] == 0
    for method, url in (("get", f"/v1/jobs/{victim}"), ("post", f"/v1/jobs/{victim}/retry"),
                        ("post", f"/v1/jobs/{victim}/cancel")):
        assert_error(getattr(client, method)(url, headers=theirs), 404, "not_found")
    assert client.post(f"/v1/jobs/{victim}/retry", headers=headers).json()["status"] == "queued"
    assert_error(client.post(f"/v1/jobs/{victim}/retry", headers=headers), 409, "job_conflict")

    assert service.worker().run(drain=True) == 4
    page = client.get("/v1/jobs?library=clips", headers=headers).json()
    assert page["total"] == 4 and [j["id"] for j in page["items"]] == sorted((j["id"] for j in jobs), reverse=True)
    by_name = {Path(j["path"]).name: j for j in page["items"]}
    assert by_name["a.mp4"]["status"] == "done" and by_name["a.mp4"]["progress"] == 1.0
    assert by_name["a.mp4"]["modules"] == {"decode": 1.0, "visual": 1.0}
    assert by_name["broken.mp4"]["status"] == "failed" and by_name["broken.mp4"]["error"]["code"] == "media_invalid"
    failed = client.get("/v1/jobs?status=failed", headers=headers).json()["items"]
    assert [j["id"] for j in failed] == [by_name["broken.mp4"]["id"]]
    second = client.get("/v1/jobs?limit=1&offset=1", headers=headers).json()
    assert len(second["items"]) == 1 and second["items"][0]["id"] == page["items"][1]["id"]
    assert_error(client.get("/v1/jobs?status=lost", headers=headers), 422, "request_invalid")
    assert_error(client.get("/v1/jobs/999", headers=headers), 404, "not_found")
    found = client.post("/v1/libraries/clips/search", json={"text": "blue", "top_k": 1}, headers=headers).json()
    assert Path(found["results"][0]["video"]).name == "a.mp4"


# -- streaming and thumbnails ----------------------------------------------------------------------
def test_streaming_supports_ranges_and_signed_links(client, colour_library, colour_videos, user_key, other_key):
    headers = bearer(user_key)
    medium = next(m for m in client.get("/v1/libraries/colours/media", headers=headers).json()["items"]
                  if m["path"].endswith("a.mp4"))
    data = colour_videos["a"].read_bytes()
    url = f"/v1/libraries/colours/media/{medium['id']}/file"
    whole = client.get(url, headers=headers)
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    part = client.get(url, headers={**headers, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(url, headers={**headers, "Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    assert client.get(url, headers={**headers, "Range": f"bytes={len(data) + 10}-"}).status_code == 416
    assert client.head(url, headers=headers).headers["content-length"] == str(len(data))

    # the signed link works without a key, for this medium only
    signed = client.get(medium["stream_url"])
    assert signed.status_code == 200 and signed.content == data
    token = medium["stream_url"].split("token=")[1]
    other_id = next(i for i in media_ids(client, user_key) if i != medium["id"])
    assert_error(client.get(f"/v1/libraries/colours/media/{other_id}/file?token={token}"), 401, "unauthorized")
    assert_error(client.get(f"{url}?token={token[:-2]}xx"), 401, "unauthorized")
    assert_error(client.get(f"{url}?token=garbage"), 401, "unauthorized")
    assert_error(client.get(url), 401, "unauthorized")
    assert_error(client.get(url, headers=bearer(other_key)), 404, "not_found")  # another tenant's key


def test_signed_links_expire_and_name_their_tenant(tmp_path):
    from zhaopian.api.auth import Unauthorized
    from zhaopian.api.signing import MediaSigner

    signer = MediaSigner.for_data_dir(tmp_path)
    assert MediaSigner.for_data_dir(tmp_path).secret == signer.secret  # one secret per data directory
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    token = signer.token("acme.tv", "news", 7, now=1000.0)
    assert signer.verify(token, "news", 7, now=1000.0) == "acme.tv"
    with pytest.raises(Unauthorized, match="expired"):
        signer.verify(token, "news", 7, now=1000.0 + 2 * signer.ttl)
    with pytest.raises(Unauthorized):
        signer.verify(token, "sport", 7, now=1000.0)
    forged = token.replace(token.split("~")[0], "b3RoZXI")  # "other"
    with pytest.raises(Unauthorized):
        signer.verify(forged, "news", 7, now=1000.0)


def test_thumbnails_at_a_time(client, colour_library, user_key, service):
    from PIL import Image

    headers = bearer(user_key)
    media = {Path(m["path"]).name: m for m in client.get("/v1/libraries/colours/media", headers=headers).json()["items"]}
    url = f"/v1/libraries/colours/media/{media['a.mp4']['id']}/thumbnail"
    expected = {1.0: (255, 0, 0), 4.5: (0, 255, 0), 8.0: (0, 0, 255), 99.0: (0, 0, 255)}  # past the end: last frame
    for t, rgb in expected.items():
        response = client.get(f"{url}?t={t}&width=64", headers=headers)
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(response.content)).convert("RGB")
        assert image.width == 64
        pixel = image.getpixel((32, image.height // 2))
        assert all(abs(a - b) < 40 for a, b in zip(pixel, rgb, strict=True)), (t, pixel)
    cached = list((service.settings.data_dir / "thumbnails").rglob("*.jpg"))
    assert len(cached) == 4 and not list((service.settings.data_dir / "thumbnails").rglob(".thumb-*"))
    still = client.get(media["still.png"]["thumbnail_url"])  # signed: no key needed
    assert still.status_code == 200 and Image.open(io.BytesIO(still.content)).width <= 320
    assert_error(client.get(f"{url}?t=-1", headers=headers), 422, "request_invalid")
    assert_error(client.get(f"{url}?width=100000", headers=headers), 422, "request_invalid")
    assert_error(client.get("/v1/libraries/colours/media/999/thumbnail", headers=headers), 404, "not_found")


def test_results_carry_playable_links(client, colour_library, user_key):
    body = client.post("/v1/libraries/colours/search", json={"text": "red", "top_k": 1},
                       headers=bearer(user_key)).json()
    [hit] = body["results"]
    assert client.get(hit["stream_url"]).status_code == 200
    thumb = client.get(hit["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert f"t={hit['thumbnail_time']:.1f}" in hit["thumbnail_url"]


def test_media_file_gone_or_moved_outside_the_root(client, colour_library, colour_videos, user_key, tmp_path):
    headers = bearer(user_key)
    medium = next(m for m in client.get("/v1/libraries/colours/media", headers=headers).json()["items"]
                  if m["path"].endswith("b.mp4"))
    url = f"/v1/libraries/colours/media/{medium['id']}/file"
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"secret")
    colour_videos["b"].unlink()
    assert_error(client.get(url, headers=headers), 404, "not_found")
    colour_videos["b"].symlink_to(outside)  # swapped for a link out of the media root
    assert_error(client.get(url, headers=headers), 403, "path_outside_media_root")


def test_me_tells_the_key_tenant(client, user_key, admin_key):
    assert client.get("/v1/me", headers=bearer(user_key)).json() == {"tenant": "default", "admin": False}
    assert client.get("/v1/me", headers=bearer(admin_key)).json()["admin"] is True
    assert_error(client.get("/v1/me"), 401, "unauthorized")


def test_access_logs_hide_media_tokens():
    import logging

    from zhaopian.api.http import RedactTokens

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/v1/libraries/a/media/1/file?token=dGVuYW50~1~abc&x=1", "1.1",
                                200), None)
    RedactTokens().filter(record)
    assert "abc" not in record.getMessage() and "token=***&x=1" in record.getMessage()


def test_api_callers_cannot_name_import_paths(service, user_key):
    """A backend named 'package.module:Class' would make the server import a module the client chose."""
    with TestClient(create_app(service, import_paths=False)) as client:
        headers = bearer(user_key)
        for config in ({"encoder": "this:x"}, {"encoder": COLOR_ENCODER["backend"]}, {"rerank": "this:x"},
                       {"rerank": {"backend": "antigravity:x"}}):
            error = assert_error(client.post("/v1/libraries", json={"name": "x", "config": config}, headers=headers),
                                 422, "config_invalid")
            assert "import paths" in error["message"]
        assert "antigravity" not in sys.modules  # refused before anything was imported
        named = client.post("/v1/libraries", json={"name": "ok", "config": {"modules": ["visual"],
                                                                           "encoder": "bundled", "rerank": "builtin"}},
                            headers=headers)
        assert named.status_code == 201, named.text
