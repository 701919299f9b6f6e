"""HTTP routes of a library's dna module: which indexed videos contain a clip, and a medium's copies.

    POST /v1/libraries/{name}/dna/check            multipart (part ``file``: a clip or an image), or
                                                   JSON ``{"path": ...}`` (a file under the media root)
                                                   -> CheckReport: the media containing it, with spans
    GET  /v1/libraries/{name}/media/{id}/copies    the spans a medium shares with the library's others

Errors use the API's codes: a library without the dna module is ``config_invalid``; a clip with
less than 2 s of picture ``media_too_short`` (422); a file that is not a readable video or image
``media_invalid``; a path outside the media root ``path_outside_media_root``.
"""

# no ``from __future__ import annotations``: FastAPI reads these routes' parameter types at definition,
# and the caller dependency is handed in by api/http.py
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.params import Path as PathParam
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile

from zhaopian.indexer.ingest import MEDIA_SUFFIXES, resolve_under
from zhaopian.modules.dna.check import CheckReport, check_file, dna_module
from zhaopian.search.errors import MediaError, PathOutsideRoot, ZhaopianError
from zhaopian.search.types import CopySpan

from .service import Service

MediaId = Annotated[int, PathParam(le=2**63 - 1)]


class _RequestInvalid(ZhaopianError):
    code = "request_invalid"


class _ContentTypeUnsupported(ZhaopianError):
    code = "content_type_unsupported"


class CheckPath(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a video or image file inside the server's media root (relative paths are taken from the media root)
    path: str


def dna_routes(svc: Service, caller: Any, check_size: Callable[[int | None], None]) -> APIRouter:
    """The routes, with ``caller`` the API's dependency that authenticates a request (its tenant)."""
    router = APIRouter(tags=["dna"])
    scratch = svc.settings.data_dir / "dna-check"

    @router.post("/libraries/{name}/dna/check", response_model=CheckReport, openapi_extra=_CHECK_BODY)
    async def dna_check(name: str, request: Request, who: caller) -> CheckReport:
        """Which indexed videos contain this clip, and where: each match gives the clip's span and the
        medium's span (with the speed and offset that map one onto the other). An image gives the
        moments that show it. Upload the file (multipart, part ``file``) or name one under the media
        root (JSON ``{"path": ...}``)."""
        lib = await run_in_threadpool(svc.library, name, who.tenant)
        dna_module(lib)  # config_invalid before the body is read
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=2)
            try:
                upload = form.get("file")
                if not isinstance(upload, StarletteUploadFile):
                    raise _RequestInvalid("a multipart upload needs a file part named 'file'")
                check_size(upload.size)
                filename = Path(upload.filename or "clip").name or "clip"
                return await run_in_threadpool(_check_upload, lib, upload.file, filename)
            finally:
                await form.close()
        if content_type == "application/json":
            try:
                body = CheckPath.model_validate_json(await request.body())
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False)) from exc
            return await run_in_threadpool(lambda: check_file(lib, _under_root(body.path), body.path))
        raise _ContentTypeUnsupported(f"send multipart/form-data (an upload) or application/json (a path), "
                                      f"not {content_type or 'no content type'!r}")

    def _check_upload(lib, source, filename: str) -> CheckReport:
        suffix = Path(filename).suffix.lower()
        scratch.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=scratch, prefix=".clip-", suffix=suffix if suffix in MEDIA_SUFFIXES else "")
        try:
            with os.fdopen(fd, "wb") as fh:
                while block := source.read(1 << 20):
                    fh.write(block)
            if os.path.getsize(tmp) == 0:
                raise MediaError(f"{filename}: empty file (0 bytes)")
            return check_file(lib, Path(tmp), filename)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _under_root(path: str) -> Path:
        if not path.strip():
            raise _RequestInvalid("path: give a file under the media root")
        root = svc.settings.media_root
        try:
            target = resolve_under(root / path, [root])
        except PathOutsideRoot:
            raise PathOutsideRoot(f"{path}: not inside the media root") from None
        if target.is_relative_to(svc.settings.data_dir):
            raise PathOutsideRoot(f"{path}: not inside the media root")
        if not target.is_file():
            raise MediaError(f"{path}: no such file under the media root")
        return target

    @router.get("/libraries/{name}/media/{media_id}/copies", response_model=list[CopySpan])
    def media_copies(name: str, media_id: MediaId, who: caller) -> list[CopySpan]:
        """The spans a medium shares with the library's other media (near-duplicates, partial copies),
        found when either was added; ``start``/``end`` are in the other medium."""
        return svc.copies(media_id, name, who.tenant)

    return router


_CHECK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}}}},
            "application/json": {"schema": {
                "type": "object", "required": ["path"],
                "properties": {"path": {"type": "string", "description": "a file inside the server's media root"}}}},
        },
    },
}
