"""The HTTP API (FastAPI), versioned under ``/v1``; interactive docs at ``/docs``.

Every route but ``GET /v1/health`` needs ``Authorization: Bearer <API key>`` and acts on the
key's tenant only: a tenant's libraries and media are invisible to every other tenant's keys.
Admin keys may also create tenants and keys.

Every error is ``{"error": {"code": ..., "message": ...}}`` with a stable code:

    request_invalid 422, config_invalid 422, query_invalid 422, media_invalid 422, media_too_short 422,
    io_error 422,
    unauthorized 401, forbidden 403, path_outside_media_root 403, not_found 404,
    method_not_allowed 405, already_exists 409, job_conflict 409, payload_too_large 413,
    content_type_unsupported 415, rate_limited 429, model_unavailable 503, store_unavailable 503,
    internal 500

Each API key may make ``ZHAOPIAN_RATE_LIMIT`` requests per second (bursts of ``ZHAOPIAN_RATE_BURST``);
past that the answer is 429 ``rate_limited`` with ``Retry-After`` (api/ratelimit.py). Security headers,
CORS (off unless ``ZHAOPIAN_CORS_ORIGINS`` lists origins) and the body limit: api/security.py.

Media files and thumbnails are also reachable without the header through the signed
``stream_url`` and ``thumbnail_url`` that media and search results carry (for ``<video src>``).
A byte range past the end of a file gets the plain HTTP 416 with ``Content-Range: bytes */size``.

Adding media queues an ingestion job per file (202); workers run them (``zhaopian worker``, or
the ones ``zhaopian serve`` starts). ``?wait=true`` runs them in the request and answers when done.

Settings (environment, prefix ``ZHAOPIAN_``):

    ZHAOPIAN_MAX_UPLOAD_MB   largest accepted upload (media or query image), in MiB (1024)
    ZHAOPIAN_RATE_LIMIT      requests per second per API key, 0 = no limit (20)
    ZHAOPIAN_RATE_BURST      requests a key may make at once (40)
    ZHAOPIAN_CORS_ORIGINS    origins allowed to call the API from a browser, comma-separated (none)
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import MalformedRangeHeader

from zhaopian.indexer import thumbnails
from zhaopian.indexer.ingest import expand, resolve_under
from zhaopian.indexer.jobs import Job, JobStatus
from zhaopian.modules.visual.encoders.base import EncoderConfig
from zhaopian.modules.visual.encoders.registry import BACKENDS as ENCODER_BACKENDS
from zhaopian.search.catalog import LibraryRecord, MediaRecord, check_name
from zhaopian.search.errors import AlreadyExists, ConfigError, MediaError, NotFound, PathOutsideRoot, ZhaopianError
from zhaopian.search.rerank import BACKENDS as RERANK_BACKENDS
from zhaopian.search.rerank import RerankConfig
from zhaopian.search.types import CopySpan

from .auth import Caller, Forbidden, authenticate, create_key
from .http_dna import dna_routes
from .http_faces import people_routes
from .ratelimit import RateLimiter
from .security import BodyLimitMiddleware, secure
from .service import DEFAULT_MODULES, Result, SearchResponse, Service
from .signing import MediaSigner
from .web import mount_ui

log = logging.getLogger("zhaopian.http")
_TOKEN_RE = re.compile(r"(token=)[^&\s\"]+")


class RedactTokens(logging.Filter):
    """Access logs show ``token=***``: a signed media link is a credential while it is valid."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_RE.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _TOKEN_RE.sub(r"\1***", record.msg)
        return True

STATUS = {
    "request_invalid": 422, "config_invalid": 422, "query_invalid": 422, "media_invalid": 422, "io_error": 422,
    "media_too_short": 422,
    "unauthorized": 401, "forbidden": 403, "path_outside_media_root": 403, "not_found": 404,
    "method_not_allowed": 405, "already_exists": 409, "job_conflict": 409, "payload_too_large": 413,
    "content_type_unsupported": 415, "rate_limited": 429,
    "model_unavailable": 503, "store_unavailable": 503, "internal": 500,
}
#: room for the multipart framing and form fields around an upload when checking Content-Length
MULTIPART_SLACK = 16 * 1024
#: ids and offsets are SQLite integers (signed 64-bit): a larger number is request_invalid, not a 500
MAX_INT = 2**63 - 1
RowId = Annotated[int, PathParam(le=MAX_INT)]
Offset = Annotated[int, Query(ge=0, le=MAX_INT)]


class HttpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHAOPIAN_", extra="ignore")

    max_upload_mb: float = Field(default=1024, gt=0)
    #: let API callers name encoder or reranker backends by Python import path ('package.module:Class');
    #: off: such a path makes the server import a module a client chose. The CLI always may.
    api_import_paths: bool = False

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class MediaFile(FileResponse):
    """A medium's file with byte ranges. A Range header it cannot read (another unit, bad syntax) is
    ignored and the whole file sent, as RFC 9110 section 14.2 allows (Starlette answered a plain-text 400)."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []


class IngestFailed(ZhaopianError):
    """A file that could not be indexed (``?wait=true``), with the code its job reported."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.error.message if job.error else f"job {job.id} failed")
        self.code = job.error.code if job.error else MediaError.code


class RequestInvalid(ZhaopianError):
    code = "request_invalid"


class PayloadTooLarge(ZhaopianError):
    code = "payload_too_large"


class ContentTypeUnsupported(ZhaopianError):
    code = "content_type_unsupported"


# -- request and response models -------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        """JSON can escape half of a UTF-16 pair (``"\\ud800"``); no catalog, index or answer can hold it."""
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if _SURROGATE.search(item):
                    raise ValueError("text with a lone surrogate (half of a \\uXXXX pair)")
            elif isinstance(item, dict):
                stack += [*item.keys(), *item.values()]
            elif isinstance(item, list | tuple):
                stack += item
        return data


_SURROGATE = re.compile("[\ud800-\udfff]")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class TenantCreate(Strict):
    name: str


class Tenant(BaseModel):
    name: str


class KeyCreate(Strict):
    admin: bool = False


class ApiKey(BaseModel):
    #: the whole key: shown only in this response
    key: str
    prefix: str
    tenant: str
    admin: bool
    created: float


#: whether the request being handled may name backends by import path (see HttpSettings.api_import_paths)
_IMPORT_PATHS: ContextVar[bool] = ContextVar("zhaopian_api_import_paths", default=True)


def _refuse_import_path(kind: str, backend: str, named: Iterable[str]) -> None:
    if backend not in named and not _IMPORT_PATHS.get():
        raise PydanticCustomError(
            "config_invalid", "{message}",
            {"message": f"{kind} {backend!r} is not one of {', '.join(named)}: this server does not take Python "
                        f"import paths from API callers (ZHAOPIAN_API_IMPORT_PATHS=1 allows it; the CLI may)"})


class LibraryOptions(Strict):
    """How a new library indexes; omitted fields take the server's defaults."""

    modules: list[str] | None = Field(default=None, description=f"default: {', '.join(DEFAULT_MODULES)}")
    encoder: str | None = Field(default=None, description="visual encoder spec, e.g. 'bundled' or "
                                                          "'chinese-clip:OFA-Sys/chinese-clip-vit-base-patch16'")
    text_index: Literal["tantivy", "elasticsearch"] = "tantivy"
    vector_index: Literal["auto", "flat", "sq8", "ivf-sq8"] = "auto"
    sample_fps: float = Field(default=1.0, gt=0, le=30)
    #: the reranker after fusion: a spec ('builtin', 'vlm:<model>', 'endpoint') or a full config
    rerank: RerankConfig | str | None = None

    @field_validator("encoder")
    @classmethod
    def _named_encoder(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                backend = EncoderConfig.parse_spec(value).backend
            except ConfigError as exc:
                raise PydanticCustomError("config_invalid", "{message}", {"message": exc.message}) from None
            _refuse_import_path("encoder backend", backend, ENCODER_BACKENDS)
        return value

    @field_validator("rerank", mode="wrap")
    @classmethod
    def _rerank_config(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """RerankConfig refuses an unknown backend with ConfigError: keep it a validation error (still
        answered as config_invalid) so the model raises nothing but ValidationError. An import path is
        refused before anything is imported."""
        backend = value.partition(":")[0] if isinstance(value, str) else (
            value.get("backend") if isinstance(value, dict) else None)
        if isinstance(backend, str) and backend != "none":
            if isinstance(value, str) and backend not in RERANK_BACKENDS and ":" in value:
                backend = value  # 'package.module:Class' is a path, not 'name:model'
            _refuse_import_path("reranker", backend, RERANK_BACKENDS)
        try:
            return handler(value)
        except ConfigError as exc:
            raise PydanticCustomError("config_invalid", "{message}", {"message": exc.message}) from None


class LibraryCreate(Strict):
    name: str
    config: LibraryOptions | None = None


class Library(BaseModel):
    name: str
    tenant: str
    config: dict[str, Any]
    created: float

    @classmethod
    def of(cls, record: LibraryRecord) -> Library:
        return cls(name=record.name, tenant=record.tenant, config=record.config, created=record.created)


class Me(BaseModel):
    tenant: str
    admin: bool


class Medium(BaseModel):
    id: int
    path: str
    kind: str
    sha256: str
    size: int
    duration: float
    width: int
    height: int
    title: str
    description: str
    tags: list[str]
    fields: dict[str, str]
    recorded: float
    created: float
    updated: float
    #: the file (HTTP range requests work) and a thumbnail, as signed URLs that need no API key
    stream_url: str
    thumbnail_url: str
    #: GET of one medium: the spans it shares with the library's other media (libraries with the dna module)
    copies: list[CopySpan] = Field(default_factory=list)

    @classmethod
    def of(cls, record: MediaRecord, links: MediaLinks) -> Medium:
        fields = {name: getattr(record, name) for name in cls.model_fields if hasattr(record, name)}
        thumb_at = 0.0 if record.kind == "image" else min(record.duration / 2, 5.0)
        return cls.model_validate({**fields, "stream_url": links.stream(record.id),
                                   "thumbnail_url": links.thumbnail(record.id, thumb_at)})


class MediaLinks:
    """Signed URLs of one library's media for one tenant."""

    def __init__(self, signer: MediaSigner, tenant: str, library: str) -> None:
        self.signer, self.tenant, self.library = signer, tenant, library

    def _base(self, media_id: int) -> str:
        return f"/v1/libraries/{self.library}/media/{media_id}"

    def stream(self, media_id: int) -> str:
        return f"{self._base(media_id)}/file?token={self.signer.token(self.tenant, self.library, media_id)}"

    def thumbnail(self, media_id: int, t: float, width: int = 320) -> str:
        token = self.signer.token(self.tenant, self.library, media_id)
        return f"{self._base(media_id)}/thumbnail?t={t:.1f}&width={width}&token={token}"


class ResultWithLinks(Result):
    stream_url: str
    thumbnail_url: str


class SearchResults(SearchResponse):
    results: list[ResultWithLinks]  # type: ignore[assignment]


class MediaPage(BaseModel):
    items: list[Medium]
    total: int
    offset: int
    limit: int


class MediumPatch(Strict):
    """Only the fields given change; ``fields`` replaces all custom fields."""

    title: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    fields: dict[str, str] | None = None


class RegisterPath(Strict):
    #: a file or folder inside the server's media root (relative paths are taken from the media root; "." is all)
    path: str = Field(min_length=1)


class JobsResponse(BaseModel):
    #: one job per file
    jobs: list[Job]


class JobPage(BaseModel):
    items: list[Job]
    total: int
    offset: int
    limit: int


class SearchRequest(Strict):
    text: str | None = None
    top_k: int = 10
    #: only these routes (visual, labels, ocr, asr, meta); default: all the library has
    routes: list[str] | None = None
    #: false: skip the library's reranker
    rerank: bool = True


# -- errors ----------------------------------------------------------------------------------------
def error_response(code: str, message: str, status: int | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if code == "unauthorized" else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status or STATUS.get(code, 400),
                        headers=headers)


async def _product_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ZhaopianError)
    return error_response(exc.code, exc.message)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return error_response("request_invalid", "invalid request")
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    code = "config_invalid" if first.get("type") == "config_invalid" else "request_invalid"
    return error_response(code, f"{where}: {first.get('msg', 'invalid')}" if where else first["msg"])


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
            413: "payload_too_large", 415: "content_type_unsupported"}.get(exc.status_code, "request_invalid")
    # a body that cannot be parsed (JSON nested too deep, not UTF-8, broken multipart) is Starlette's 400
    return error_response(code, str(exc.detail), STATUS[code] if code == "request_invalid" else exc.status_code)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    return error_response("internal", "internal server error")


# -- the app ---------------------------------------------------------------------------------------
def create_app(service: Service | None = None, max_upload_bytes: int | None = None,
               rate_limiter: RateLimiter | None = None, import_paths: bool | None = None) -> FastAPI:
    """The API over ``service`` (by default one built from the environment, closed at shutdown);
    ``rate_limiter`` defaults to one from ZHAOPIAN_RATE_LIMIT and ZHAOPIAN_RATE_BURST, ``import_paths``
    to ZHAOPIAN_API_IMPORT_PATHS."""
    owned = service is None
    svc = service or Service()
    http_settings = HttpSettings()
    limit = max_upload_bytes or http_settings.max_upload_bytes
    allow_paths = http_settings.api_import_paths if import_paths is None else import_paths

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            svc.close()

    app = FastAPI(title="zhaopian", version=_version(), lifespan=lifespan,
                  description="Find the exact clip in your videos by what you remember.",
                  responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    app.add_exception_handler(ZhaopianError, _product_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.state.service = svc
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
    app.state.signer = signer = MediaSigner.for_data_dir(svc.settings.data_dir)

    app.add_middleware(BodyLimitMiddleware, limit=limit + MULTIPART_SLACK)  # bodies without Content-Length

    @app.middleware("http")
    async def refuse_large_bodies(request: Request,
                                  call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """A declared body beyond the upload limit is refused before it is read."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + MULTIPART_SLACK:
            return error_response("payload_too_large",
                                  f"request body too large ({length} bytes, upload limit {limit})")
        _IMPORT_PATHS.set(allow_paths)  # the request's own context: validation reads it
        return await call_next(request)

    app.include_router(_routes(svc, limit, signer), prefix="/v1")
    mount_ui(app)
    secure(app, rate_limiter)  # api/security.py: security headers, CORS, rate limits
    return app


def _version() -> str:
    try:
        return version("zhaopian")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        return "0"


_bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer <key>")


def _caller(request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    service: Service = request.app.state.service
    return authenticate(service.catalog, credentials.credentials if credentials else None)


def _admin(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    if not who.admin:
        raise Forbidden("this needs an admin key")
    return who


CallerDep = Annotated[Caller, Depends(_caller)]
AdminDep = Annotated[Caller, Depends(_admin)]


def _media_reader(request: Request, name: str, media_id: RowId,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                  token: Annotated[str | None, Query(description="the signed token of a stream_url")] = None) -> str:
    """The tenant that may read a medium's bytes: the API key's, or the signed token's."""
    if credentials is not None or token is None:
        return _caller(request, credentials).tenant
    signer: MediaSigner = request.app.state.signer
    return signer.verify(token, name, media_id)


ReaderDep = Annotated[str, Depends(_media_reader)]


def _routes(svc: Service, limit: int, signer: MediaSigner) -> APIRouter:
    router = APIRouter(responses={404: {"model": ErrorResponse}})
    thumb_dir = svc.settings.data_dir / "thumbnails"

    def links(tenant: str, library: str) -> MediaLinks:
        return MediaLinks(signer, tenant, library)


    def check_size(size: int | None) -> None:
        if size is not None and size > limit:
            raise PayloadTooLarge(f"upload too large ({size} bytes, limit {limit})")

    # -- health, tenants and keys --------------------------------------------------------------------
    @router.get("/health", response_model=Health, tags=["health"])
    def health() -> Health:
        return Health(version=_version())

    @router.get("/me", response_model=Me, tags=["health"])
    def me(who: CallerDep) -> Me:
        """The key's tenant and whether it is an admin key (the web UI checks a key with it)."""
        return Me(tenant=who.tenant, admin=who.admin)

    @router.post("/tenants", response_model=Tenant, status_code=201, tags=["admin"])
    def create_tenant(body: TenantCreate, _admin: AdminDep) -> Tenant:
        check_name("tenant", body.name)
        if body.name in svc.catalog.tenants():
            raise AlreadyExists(f"tenant {body.name!r} already exists")
        svc.catalog.ensure_tenant(body.name)
        return Tenant(name=body.name)

    @router.post("/tenants/{tenant}/keys", response_model=ApiKey, status_code=201, tags=["admin"])
    def create_tenant_key(tenant: str, body: KeyCreate, _admin: AdminDep) -> ApiKey:
        issued = create_key(svc.catalog, tenant, body.admin)
        record = issued.record
        return ApiKey(key=issued.key, prefix=record.prefix, tenant=record.tenant, admin=record.admin,
                      created=record.created)

    # -- libraries -----------------------------------------------------------------------------------
    @router.get("/libraries", response_model=list[Library], tags=["libraries"])
    def list_libraries(who: CallerDep) -> list[Library]:
        return [Library.of(r) for r in svc.libraries(who.tenant)]

    @router.post("/libraries", response_model=Library, status_code=201, tags=["libraries"])
    def create_library(body: LibraryCreate, who: CallerDep) -> Library:
        options = body.config or LibraryOptions()
        config = svc.default_config(options.encoder, options.modules or DEFAULT_MODULES, options.sample_fps,
                                    options.vector_index, options.text_index, rerank=options.rerank)
        return Library.of(svc.create_library(body.name, config, who.tenant))

    @router.delete("/libraries/{name}", status_code=204, tags=["libraries"])
    def delete_library(name: str, who: CallerDep) -> None:
        svc.delete_library(name, who.tenant)

    # -- media ---------------------------------------------------------------------------------------
    @router.get("/libraries/{name}/media", response_model=MediaPage, tags=["media"])
    def list_media(name: str, who: CallerDep, offset: Offset = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> MediaPage:
        lib = svc.library(name, who.tenant)
        urls = links(who.tenant, name)
        return MediaPage(items=[Medium.of(r, urls) for r in lib.media.list(offset, limit)],
                         total=lib.media.count(), offset=offset, limit=limit)

    @router.get("/libraries/{name}/media/{media_id}", response_model=Medium, tags=["media"])
    def get_medium(name: str, media_id: RowId, who: CallerDep) -> Medium:
        medium = Medium.of(svc.medium(media_id, name, who.tenant), links(who.tenant, name))
        return medium.model_copy(update={"copies": svc.copies(media_id, name, who.tenant)})

    @router.patch("/libraries/{name}/media/{media_id}", response_model=Medium, tags=["media"])
    def update_medium(name: str, media_id: RowId, body: MediumPatch, who: CallerDep) -> Medium:
        return Medium.of(svc.update_medium(media_id, name, who.tenant, **body.model_dump()), links(who.tenant, name))

    @router.head("/libraries/{name}/media/{media_id}/file", include_in_schema=False)
    @router.get("/libraries/{name}/media/{media_id}/file", tags=["media"], response_class=FileResponse,
                responses={206: {"description": "a byte range"}, 416: {"description": "range past the end"}})
    def stream_medium(name: str, media_id: RowId, tenant: ReaderDep) -> FileResponse:
        """The medium's file; ``Range: bytes=...`` gives 206 with that part, so players can seek."""
        record = svc.medium(media_id, name, tenant)
        path = _media_file(record)
        return MediaFile(path, filename=path.name, content_disposition_type="inline",
                            headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/libraries/{name}/media/{media_id}/thumbnail", tags=["media"], response_class=Response,
                responses={200: {"content": {"image/jpeg": {}}}})
    def medium_thumbnail(name: str, media_id: RowId, tenant: ReaderDep,
                         t: Annotated[float, Query(ge=0, description="seconds into the video")] = 0.0,
                         width: Annotated[int, Query(ge=thumbnails.MIN_WIDTH, le=thumbnails.MAX_WIDTH)] = 320
                         ) -> FileResponse:
        """A JPEG of the medium at ``t`` seconds (the last frame past the end), ``width`` pixels wide."""
        record = svc.medium(media_id, name, tenant)
        path = _media_file(record)
        jpeg = thumbnails.thumbnail(path, record.kind, record.sha256, min(t, record.duration), width, thumb_dir)
        return FileResponse(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    def _media_file(record: MediaRecord) -> Path:
        path = Path(record.path)
        if not path.is_file():
            raise NotFound(f"medium {record.id}: its file {path.name!r} is no longer there")
        return resolve_under(path, svc.settings.media_roots)

    @router.delete("/libraries/{name}/media/{media_id}", status_code=204, tags=["media"])
    def delete_medium(name: str, media_id: RowId, who: CallerDep) -> None:
        svc.delete_medium(media_id, name, who.tenant)

    @router.post("/libraries/{name}/media", response_model=JobsResponse, status_code=202, tags=["media"],
                 openapi_extra=_ADD_MEDIA_BODY, responses={201: {"model": JobsResponse}})
    async def add_media(name: str, request: Request, response: Response, who: CallerDep,
                        wait: Annotated[bool, Query(description="index before answering (201)")] = False
                        ) -> JobsResponse:
        """Upload a file (multipart, part ``file``) or register a file or folder under the media root
        (JSON ``{"path": ...}``): one ingestion job per file (202). With ``wait=true`` the jobs run
        before the answer (201); a single file that fails is then an error with its job's code."""
        await run_in_threadpool(svc.library, name, who.tenant)  # NotFound before reading the body
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=4)
            try:
                upload = form.get("file")
                if not isinstance(upload, StarletteUploadFile):
                    raise RequestInvalid("a multipart upload needs a file part named 'file'")
                check_size(upload.size)
                jobs = [await run_in_threadpool(svc.add_upload, upload.filename or "", upload.file, name,
                                                who.tenant)]
            finally:
                await form.close()
        elif content_type == "application/json":
            try:
                body = RegisterPath.model_validate_json(await request.body())
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False)) from exc
            jobs = await run_in_threadpool(_register, body.path, name, who.tenant)
        else:
            raise ContentTypeUnsupported(f"send multipart/form-data (an upload) or application/json (a path), "
                                         f"not {content_type or 'no content type'!r}")
        if wait:
            jobs = await run_in_threadpool(svc.run_jobs, jobs)
            if len(jobs) == 1 and jobs[0].status == "failed":
                raise IngestFailed(jobs[0])
            response.status_code = 201
        return JobsResponse(jobs=jobs)

    def _register(path: str, library: str, tenant: str) -> list[Job]:
        root = svc.settings.media_root
        try:
            target = resolve_under(root / path, [root])  # media_invalid for a NUL byte or a symlink loop
        except PathOutsideRoot:
            raise PathOutsideRoot(f"{path}: not inside the media root") from None
        if target.is_relative_to(svc.settings.data_dir):
            raise PathOutsideRoot(f"{path}: not inside the media root")
        try:
            found = target.exists()
        except OSError as exc:  # a name too long for the file system
            raise MediaError(f"{path}: {exc.strerror or exc}") from None
        if not found:
            raise MediaError(f"{path}: no such file or folder under the media root")
        files = [f for f in expand([target]) if not f.resolve().is_relative_to(svc.settings.data_dir)]
        if not files:
            raise MediaError(f"{path}: no media files in this folder")
        return svc.submit(files, library, tenant)

    # -- jobs ----------------------------------------------------------------------------------------
    @router.get("/jobs", response_model=JobPage, tags=["jobs"])
    def list_jobs(who: CallerDep, library: str | None = None, status: JobStatus | None = None,
                  offset: Offset = 0,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobPage:
        """The tenant's ingestion jobs, newest first, with progress per step."""
        items, total = svc.jobs.list(who.tenant, library, status, offset, limit)
        return JobPage(items=items, total=total, offset=offset, limit=limit)

    @router.get("/jobs/{job_id}", response_model=Job, tags=["jobs"])
    def get_job(job_id: RowId, who: CallerDep) -> Job:
        return svc.jobs.get(job_id, who.tenant)

    @router.post("/jobs/{job_id}/cancel", response_model=Job, tags=["jobs"],
                 responses={409: {"model": ErrorResponse}})
    def cancel_job(job_id: RowId, who: CallerDep) -> Job:
        """A queued job stops at once; a running one within a second or so (its medium is not kept)."""
        return svc.jobs.cancel(job_id, who.tenant)

    @router.post("/jobs/{job_id}/retry", response_model=Job, tags=["jobs"],
                 responses={409: {"model": ErrorResponse}})
    def retry_job(job_id: RowId, who: CallerDep) -> Job:
        """Queue a failed or cancelled job again."""
        return svc.jobs.retry(job_id, who.tenant)

    # -- search --------------------------------------------------------------------------------------
    def with_links(report: SearchResponse, tenant: str) -> SearchResults:
        results = []
        for r in report.results:
            urls = links(tenant, r.library)
            results.append(ResultWithLinks(**r.model_dump(), stream_url=urls.stream(r.media_id),
                                           thumbnail_url=urls.thumbnail(r.media_id, r.thumbnail_time)))
        return SearchResults(**{**report.model_dump(), "results": results})

    @router.post("/libraries/{name}/search", response_model=SearchResults, tags=["search"])
    def search_text(name: str, body: SearchRequest, who: CallerDep) -> SearchResults:
        return with_links(svc.search_report(body.text, None, name, who.tenant, body.top_k, body.routes, body.rerank),
                          who.tenant)

    @router.post("/libraries/{name}/search/image", response_model=SearchResults, tags=["search"])
    def search_image(name: str, who: CallerDep,
                     image: Annotated[UploadFile, File(description="the query image")],
                     text: Annotated[str | None, Form()] = None,
                     top_k: Annotated[int, Form()] = 10,
                     routes: Annotated[list[str] | None, Form()] = None,
                     rerank: Annotated[bool, Form()] = True) -> SearchResults:
        check_size(image.size)
        return with_links(svc.search_report(text, image.file.read(), name, who.tenant, top_k, routes or None, rerank),
                          who.tenant)

    router.include_router(people_routes(svc, CallerDep, check_size))  # api/http_faces.py
    router.include_router(dna_routes(svc, CallerDep, check_size))  # api/http_dna.py
    return router




_ADD_MEDIA_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}}}},
            "application/json": {"schema": {
                "type": "object", "required": ["path"],
                "properties": {"path": {"type": "string",
                                        "description": "a file or folder inside the server's media root"}}}},
        },
    },
}
