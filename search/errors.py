"""Errors the product reports to users: one class per kind, each with a stable code.

Every error carries a one-line message meant for an editor, not a traceback.
The CLI prints ``error[<code>]: <message>`` and exits non-zero; the HTTP API
returns ``{"code": ..., "message": ...}``.
"""

from __future__ import annotations


class ZhaopianError(Exception):
    """Base class: a clear, expected failure (bad input, missing thing)."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ZhaopianError):
    code = "config_invalid"


class NotFound(ZhaopianError):
    code = "not_found"


class AlreadyExists(ZhaopianError):
    code = "already_exists"


class InvalidQuery(ZhaopianError):
    code = "query_invalid"


class MediaError(ZhaopianError):
    """A file that cannot be decoded: corrupt, truncated, empty or not media."""

    code = "media_invalid"


class PathOutsideRoot(ZhaopianError):
    code = "path_outside_media_root"


class ModelUnavailable(ZhaopianError):
    """An encoder's weights or runtime cannot be found or loaded."""

    code = "model_unavailable"


class StoreUnavailable(ZhaopianError):
    """A search server (Elasticsearch) cannot be reached, or refused some of a batch of writes."""

    code = "store_unavailable"
