"""Tenant isolation over every route of the API, enumerated from the OpenAPI schema.

Tenant A has a library with media, a finished job and edited metadata. Tenant B, with its own
(non-admin) key, calls every route with A's library name, media ids, job id and a person's name:

* first while B has no library at all: each route answers 404 (403 for the admin routes);
* then after B made a library of the same name with media of its own (so ids collide): each route
  answers about B's things only, never with anything of A's.

A's catalog, units, jobs and search results are the same afterwards. Routes are classified explicitly:
a new route is expected to be tenant-scoped (404 for B) unless listed below, and one whose body or
parameters this suite cannot make up fails until a sample is added here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import COLOR_LIBRARY
from fastapi.testclient import TestClient
from media import BLUE, GREEN, RED, YELLOW, write_image, write_video

from zhaopian.api.auth import create_key
from zhaopian.api.http import create_app
from zhaopian.api.ratelimit import RateLimiter
from zhaopian.api.service import Service

#: no key needed
EXEMPT = {("GET", "/v1/health")}
#: admin keys only: 403 for B's key
ADMIN = {("POST", "/v1/tenants"), ("POST", "/v1/tenants/{tenant}/keys")}
#: the caller's own tenant, naming nothing of A's: 2xx for B, with none of A's things in the answer
OWN = {("GET", "/v1/me"), ("GET", "/v1/libraries"), ("POST", "/v1/libraries"), ("GET", "/v1/jobs")}

MARK = "tenant-A-only"  # in A's titles, tags and fields: must never reach B


def png(rgb: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


#: JSON bodies a route would accept from A (so that only tenant scoping can refuse B)
JSON_BODIES = {
    ("POST", "/v1/tenants"): {"name": "eve"},
    ("POST", "/v1/tenants/{tenant}/keys"): {"admin": True},
    ("POST", "/v1/libraries"): {"name": "bees", "config": {"modules": ["visual"],
                                                          "encoder": COLOR_LIBRARY["modules"]["visual"]["encoder"]["backend"]}},
    ("POST", "/v1/libraries/{name}/media"): {"path": "a.mp4"},
    ("PATCH", "/v1/libraries/{name}/media/{media_id}"): {"title": "mine now", "tags": ["stolen"]},
    ("POST", "/v1/libraries/{name}/search"): {"text": "red"},
    ("POST", "/v1/libraries/{name}/dna/check"): {"path": "a.mp4"},
}
#: multipart bodies for routes that take files only
MULTIPART = {
    ("POST", "/v1/libraries/{name}/search/image"): {"files": {"image": ("q.png", png(RED), "image/png")}},
    ("POST", "/v1/libraries/{name}/people"): {"data": {"name": "alice"},
                                              "files": [("photos", ("p.png", png(GREEN), "image/png"))]},
}


def routes(client: TestClient) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, operation) for path, methods in client.app.openapi()["paths"].items()
            for method, operation in methods.items()]


class Tenants:
    def __init__(self, service: Service, media_root: Path) -> None:
        self.service = service
        self.media_root = media_root
        service.create_library("colours", COLOR_LIBRARY)
        files = [write_video(media_root / "a.mp4", [(RED, 2), (GREEN, 2)]), write_image(media_root / "b.png", BLUE)]
        jobs = service.run_jobs(service.submit(files, library="colours"))
        assert [j.status for j in jobs] == ["done", "done"]
        self.job_id = jobs[0].id
        self.media_ids = [j.media_id for j in jobs]
        for media_id in self.media_ids:
            service.update_medium(media_id, "colours", title=f"{MARK} title", tags=[MARK],
                                  fields={"owner": MARK})
        service.catalog.ensure_tenant(service.settings.tenant)
        service.catalog.ensure_tenant("other")
        self.key_a = create_key(service.catalog, service.settings.tenant).key
        self.key_b = create_key(service.catalog, "other").key
        self.secrets = [MARK, str(media_root / "a.mp4"), str(media_root / "b.png")]
        self.secrets += [service.medium(i, "colours").sha256 for i in self.media_ids]

    def snapshot(self) -> dict:
        svc = self.service
        lib = svc.library("colours")
        units = lib.media.conn.execute("SELECT media_id, module, COUNT(*) FROM units GROUP BY media_id, module "
                                       "ORDER BY media_id, module").fetchall()
        jobs, _ = svc.jobs.list(svc.settings.tenant, None, None, 0, 1000)
        return {"libraries": [(r.name, r.config) for r in svc.libraries()],
                "media": [m.as_dict() for m in lib.media.list(0, 100)],
                "units": [tuple(u) for u in units],
                "jobs": [j.model_dump(exclude={"worker"}) for j in jobs],
                "keys": [(k.prefix, k.admin) for k in svc.catalog.api_keys(svc.settings.tenant)],
                "results": [r.model_dump() for r in svc.search_report("red", library="colours").results]}

    def request(self, client: TestClient, method: str, path: str, operation: dict, key: str,
                bodies: dict | None = None):
        """``method path`` with A's identifiers, a body A could send (or one of ``bodies``), and ``key``."""
        values = {"name": "colours", "media_id": str(self.media_ids[0]), "job_id": str(self.job_id),
                  "tenant": self.service.settings.tenant, "person": "alice"}
        url = path
        for param in operation.get("parameters", []):
            if param["in"] == "path":
                assert param["name"] in values, f"{method} {path}: add a value for {{{param['name']}}} to this suite"
                url = url.replace("{" + param["name"] + "}", values[param["name"]])
            elif param["in"] == "query" and param.get("required"):
                raise AssertionError(f"{method} {path}: add a value for its query parameter {param['name']}")
        kwargs: dict = {"headers": {"Authorization": f"Bearer {key}"}}
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            assert (method, path) in JSON_BODIES, f"{method} {path}: add a JSON body to this suite"
            kwargs["json"] = {**JSON_BODIES, **(bodies or {})}[(method, path)]
        elif content:
            assert (method, path) in MULTIPART, f"{method} {path}: add a multipart body to this suite"
            kwargs.update(MULTIPART[(method, path)])
        return client.request(method, url, **kwargs)

    def assert_nothing_of_a(self, response, what: str) -> None:
        text = response.content.decode("utf-8", "replace")
        for secret in self.secrets:
            assert secret not in text, f"{what}: tenant B saw {secret!r}"


@pytest.fixture
def tenants(service: Service, media_root: Path) -> Tenants:
    return Tenants(service, media_root)


@pytest.fixture
def client(service: Service):
    with TestClient(create_app(service, rate_limiter=RateLimiter(0, 1))) as test_client:
        yield test_client


def test_every_route_is_scoped_to_the_callers_tenant(client, tenants):
    before = tenants.snapshot()
    all_routes = routes(client)
    assert len(all_routes) >= 20 and EXEMPT | ADMIN | OWN <= {(m, p) for m, p, _ in all_routes}
    swept = 0
    for method, path, operation in sorted(all_routes, key=lambda r: r[0] == "DELETE"):
        if (method, path) in EXEMPT:
            continue
        response = tenants.request(client, method, path, operation, tenants.key_b)
        what = f"{method} {path} with B's key"
        assert "Traceback" not in response.text, what
        if (method, path) in ADMIN:
            assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden", what
        elif (method, path) in OWN:
            assert response.status_code < 300, (what, response.text[:300])
        else:
            assert response.status_code == 404, (what, response.status_code, response.text[:300])
            assert response.json()["error"]["code"] == "not_found", what
        tenants.assert_nothing_of_a(response, what)
        swept += 1
    assert swept == len(all_routes) - len(EXEMPT)
    assert tenants.snapshot() == before

    # the file route also answers HEAD (not in the schema), and B's key wins over A's signed link
    medium = client.get(f"/v1/libraries/colours/media/{tenants.media_ids[0]}",
                        headers={"Authorization": f"Bearer {tenants.key_a}"}).json()
    url = f"/v1/libraries/colours/media/{tenants.media_ids[0]}/file"
    assert client.head(url, headers={"Authorization": f"Bearer {tenants.key_b}"}).status_code == 404
    token = medium["stream_url"].split("token=")[1]
    with_both = client.get(f"{url}?token={token}", headers={"Authorization": f"Bearer {tenants.key_b}"})
    assert with_both.status_code == 404
    assert client.get(medium["stream_url"]).status_code == 200  # the link alone works: it is A's to share


def test_same_names_and_ids_in_another_tenant_never_reach_the_first(client, tenants, service, media_root):
    """B makes its own 'colours' with media whose ids are A's ids; every route then answers about B's
    things only (the same sweep, now with 2xx answers allowed), and A keeps everything."""
    before = tenants.snapshot()
    b_files = [write_video(media_root / "b-side" / "y.mp4", [(YELLOW, 2), (RED, 2)]),
               write_image(media_root / "b-side" / "z.png", GREEN)]
    headers_b = {"Authorization": f"Bearer {tenants.key_b}"}
    created = client.post("/v1/libraries", json=JSON_BODIES[("POST", "/v1/libraries")] | {"name": "colours"},
                          headers=headers_b)
    assert created.status_code == 201, created.text
    for file in b_files:
        done = client.post("/v1/libraries/colours/media?wait=true", json={"path": str(file)}, headers=headers_b)
        assert done.status_code == 201, done.text
    assert sorted(m["id"] for m in client.get("/v1/libraries/colours/media", headers=headers_b).json()["items"]) \
        == sorted(tenants.media_ids)  # the same ids, other media

    # B names its own files (the media root is the server's: any tenant may index any file in it)
    own_files = {("POST", "/v1/libraries/{name}/media"): {"path": "b-side/y.mp4"},
                 ("POST", "/v1/libraries/{name}/dna/check"): {"path": "b-side/y.mp4"}}
    for method, path, operation in sorted(routes(client), key=lambda r: r[0] == "DELETE"):
        if (method, path) in EXEMPT:
            continue
        response = tenants.request(client, method, path, operation, tenants.key_b, own_files)
        what = f"{method} {path} with B's key and B's own 'colours'"
        assert "Traceback" not in response.text and response.status_code < 500, (what, response.text[:300])
        if (method, path) in ADMIN:
            assert response.status_code == 403, what
        tenants.assert_nothing_of_a(response, what)
        if response.content and response.headers.get("content-type", "").startswith("application/json"):
            body = json.dumps(response.json())
            assert '"tenant": "default"' not in body, what
    assert tenants.snapshot() == before
    found = client.post("/v1/libraries/colours/search", json={"text": f"{MARK} red"},
                        headers={"Authorization": f"Bearer {tenants.key_a}"})
    assert found.status_code == 200 and found.json()["results"]
