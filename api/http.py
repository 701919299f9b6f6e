"""The HTTP API (FastAPI), versioned under ``/v1``; interactive docs at ``/docs``.

Every route but ``GET /v1/health`` needs ``Authorization: Bearer <API key>`` and acts on the
key's tenant only: a tenant's libraries and media are invisible to every other tenant's keys.
Admin keys may also create tenants and keys.

Every error is ``{"error": {"code": ..., "message": ...}}`` with a stable code:

    request_invalid 422, config_invalid 422, query_invalid 422, media_invalid 422, io_error 422,
    unauthorized 401, forbidden 403, path_outside_media_root 403, not_found 404,
    method_not_allowed 405, already_exists 409, payload_too_large 413,
    content_type_unsupported 415, model_unavailable 503, store_unavailable 503, internal 500

Settings (environment, prefix ``ZHAOPIAN_``):

    ZHAOPIAN_MAX_UPLOAD_MB   largest accepted upload (media or query image), in MiB (1024)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhaopian.indexer.ingest import IngestResult, expand
from zhaopian.search.catalog import LibraryRecord, MediaRecord, check_name
from zhaopian.search.errors import AlreadyExists, MediaError, PathOutsideRoot, ZhaopianError

from .auth import Caller, Forbidden, authenticate, create_key
from .service import DEFAULT_MODULES, SearchResponse, Service

log = logging.getLogger("zhaopian.http")

STATUS = {
    "request_invalid": 422, "config_invalid": 422, "query_invalid": 422, "media_invalid": 422, "io_error": 422,
    "unauthorized": 401, "forbidden": 403, "path_outside_media_root": 403, "not_found": 404,
    "method_not_allowed": 405, "already_exists": 409, "payload_too_large": 413, "content_type_unsupported": 415,
    "model_unavailable": 503, "store_unavailable": 503, "internal": 500,
}
#: room for the multipart framing and form fields around an upload when checking Content-Length
MULTIPART_SLACK = 16 * 1024


class HttpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHAOPIAN_", extra="ignore")

    max_upload_mb: float = Field(default=1024, gt=0)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class IngestFailed(ZhaopianError):
    """A file that could not be indexed, with the code its ingest reported."""

    def __init__(self, result: IngestResult) -> None:
        super().__init__(result.message)
        self.code = result.code or MediaError.code


class RequestInvalid(ZhaopianError):
    code = "request_invalid"


class PayloadTooLarge(ZhaopianError):
    code = "payload_too_large"


class ContentTypeUnsupported(ZhaopianError):
    code = "content_type_unsupported"


# -- request and response models -------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class LibraryOptions(Strict):
    """How a new library indexes; omitted fields take the server's defaults."""

    modules: list[str] | None = Field(default=None, description=f"default: {', '.join(DEFAULT_MODULES)}")
    encoder: str | None = Field(default=None, description="visual encoder spec, e.g. 'bundled' or "
                                                          "'chinese-clip:OFA-Sys/chinese-clip-vit-base-patch16'")
    text_index: Literal["tantivy", "elasticsearch"] = "tantivy"
    vector_index: Literal["auto", "flat", "sq8", "ivf-sq8"] = "auto"
    sample_fps: float = Field(default=1.0, gt=0, le=30)


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

    @classmethod
    def of(cls, record: MediaRecord) -> Medium:
        return cls.model_validate({name: getattr(record, name) for name in cls.model_fields})


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
    #: a file or folder inside the server's media root (relative paths are taken from the media root)
    path: str


class IngestResponse(BaseModel):
    results: list[IngestResult]  # the ingestor's own result type (a dataclass pydantic can validate)


class SearchRequest(Strict):
    text: str | None = None
    top_k: int = 10
    #: only these routes (visual, labels, ocr, asr, meta); default: all the library has
    routes: list[str] | None = None


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
    return error_response("request_invalid", f"{where}: {first.get('msg', 'invalid')}" if where else first["msg"])


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
            413: "payload_too_large", 415: "content_type_unsupported"}.get(exc.status_code, "request_invalid")
    return error_response(code, str(exc.detail), exc.status_code)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    return error_response("internal", "internal server error")


# -- the app ---------------------------------------------------------------------------------------
def create_app(service: Service | None = None, max_upload_bytes: int | None = None) -> FastAPI:
    """The API over ``service`` (by default one built from the environment, closed at shutdown)."""
    owned = service is None
    svc = service or Service()
    limit = max_upload_bytes or HttpSettings().max_upload_bytes

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

    @app.middleware("http")
    async def refuse_large_bodies(request: Request,
                                  call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """A declared body beyond the upload limit is refused before it is read."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + MULTIPART_SLACK:
            return error_response("payload_too_large",
                                  f"request body too large ({length} bytes, upload limit {limit})")
        return await call_next(request)

    app.include_router(_routes(svc, limit), prefix="/v1")
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


def _routes(svc: Service, limit: int) -> APIRouter:
    router = APIRouter(responses={404: {"model": ErrorResponse}})

    def check_size(size: int | None) -> None:
        if size is not None and size > limit:
            raise PayloadTooLarge(f"upload too large ({size} bytes, limit {limit})")

    # -- health, tenants and keys --------------------------------------------------------------------
    @router.get("/health", response_model=Health, tags=["health"])
    def health() -> Health:
        return Health(version=_version())

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
                                    options.vector_index, options.text_index)
        return Library.of(svc.create_library(body.name, config, who.tenant))

    @router.delete("/libraries/{name}", status_code=204, tags=["libraries"])
    def delete_library(name: str, who: CallerDep) -> None:
        svc.delete_library(name, who.tenant)

    # -- media ---------------------------------------------------------------------------------------
    @router.get("/libraries/{name}/media", response_model=MediaPage, tags=["media"])
    def list_media(name: str, who: CallerDep, offset: Annotated[int, Query(ge=0)] = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> MediaPage:
        lib = svc.library(name, who.tenant)
        return MediaPage(items=[Medium.of(r) for r in lib.media.list(offset, limit)], total=lib.media.count(),
                         offset=offset, limit=limit)

    @router.get("/libraries/{name}/media/{media_id}", response_model=Medium, tags=["media"])
    def get_medium(name: str, media_id: int, who: CallerDep) -> Medium:
        return Medium.of(svc.medium(media_id, name, who.tenant))

    @router.patch("/libraries/{name}/media/{media_id}", response_model=Medium, tags=["media"])
    def update_medium(name: str, media_id: int, body: MediumPatch, who: CallerDep) -> Medium:
        return Medium.of(svc.update_medium(media_id, name, who.tenant, **body.model_dump()))

    @router.delete("/libraries/{name}/media/{media_id}", status_code=204, tags=["media"])
    def delete_medium(name: str, media_id: int, who: CallerDep) -> None:
        svc.delete_medium(media_id, name, who.tenant)

    @router.post("/libraries/{name}/media", response_model=IngestResponse, status_code=201, tags=["media"],
                 openapi_extra=_ADD_MEDIA_BODY)
    async def add_media(name: str, request: Request, who: CallerDep) -> IngestResponse:
        """Upload a file (multipart, part ``file``) or register a file or folder under the media root
        (JSON ``{"path": ...}``), and index it. A single file that fails is an error; a folder lists
        each file's outcome."""
        await run_in_threadpool(svc.library, name, who.tenant)  # NotFound before reading the body
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=4)
            try:
                upload = form.get("file")
                if not isinstance(upload, StarletteUploadFile):
                    raise RequestInvalid("a multipart upload needs a file part named 'file'")
                check_size(upload.size)
                results = [await run_in_threadpool(svc.add_upload, upload.filename or "", upload.file, name,
                                                   who.tenant)]
            finally:
                await form.close()
        elif content_type == "application/json":
            try:
                body = RegisterPath.model_validate_json(await request.body())
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False)) from exc
            results = await run_in_threadpool(_register, body.path, name, who.tenant)
        else:
            raise ContentTypeUnsupported(f"send multipart/form-data (an upload) or application/json (a path), "
                                         f"not {content_type or 'no content type'!r}")
        if len(results) == 1 and results[0].status == "failed":
            raise IngestFailed(results[0])
        return IngestResponse(results=results)

    def _register(path: str, library: str, tenant: str) -> list[IngestResult]:
        root = svc.settings.media_root
        target = (root / path).expanduser().resolve()
        if not target.is_relative_to(root) or target.is_relative_to(svc.settings.data_dir):
            raise PathOutsideRoot(f"{path}: not inside the media root")
        if not target.exists():
            raise MediaError(f"{path}: no such file or folder under the media root")
        files = [f for f in expand([target]) if not f.resolve().is_relative_to(svc.settings.data_dir)]
        if not files:
            raise MediaError(f"{path}: no media files in this folder")
        return svc.index(files, library, tenant)

    # -- search --------------------------------------------------------------------------------------
    @router.post("/libraries/{name}/search", response_model=SearchResponse, tags=["search"])
    def search_text(name: str, body: SearchRequest, who: CallerDep) -> SearchResponse:
        return svc.search_report(body.text, None, name, who.tenant, body.top_k, body.routes)

    @router.post("/libraries/{name}/search/image", response_model=SearchResponse, tags=["search"])
    def search_image(name: str, who: CallerDep,
                     image: Annotated[UploadFile, File(description="the query image")],
                     text: Annotated[str | None, Form()] = None,
                     top_k: Annotated[int, Form()] = 10) -> SearchResponse:
        check_size(image.size)
        return svc.search_report(text, image.file.read(), name, who.tenant, top_k)

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
