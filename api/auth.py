"""API keys: each belongs to one tenant; an admin key may also create tenants and keys.

A key looks like ``zp_<8 characters>_<43 characters>``. Only its sha256 and its public
start (``zp_<8 characters>``, the *prefix*) are stored, so a leaked catalog reveals no key.
A presented key is found by its prefix, then its hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from zhaopian.search.catalog import ApiKeyRecord, Catalog
from zhaopian.search.errors import ZhaopianError

KEY_START = "zp_"
PREFIX_CHARS = 8


class Unauthorized(ZhaopianError):
    """No API key, or one that is not known."""

    code = "unauthorized"


class Forbidden(ZhaopianError):
    """A valid key that may not do this (a tenant key on an admin route)."""

    code = "forbidden"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: every route acts on this tenant only."""

    tenant: str
    admin: bool
    key_prefix: str


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``key`` is shown once and never stored."""

    key: str
    record: ApiKeyRecord


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_prefix(key: str) -> str | None:
    """The public start of a well-formed key, else None."""
    if not key.startswith(KEY_START):
        return None
    prefix = key[: len(KEY_START) + PREFIX_CHARS]
    if len(prefix) != len(KEY_START) + PREFIX_CHARS or key[len(prefix) : len(prefix) + 1] != "_":
        return None
    return prefix


def create_key(catalog: Catalog, tenant: str, admin: bool = False) -> IssuedKey:
    """Issue a key for an existing tenant (``NotFound`` otherwise)."""
    prefix = KEY_START + secrets.token_hex(PREFIX_CHARS // 2)
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key, catalog.add_api_key(tenant, prefix, hash_key(key), admin))


def authenticate(catalog: Catalog, key: str | None) -> Caller:
    """The caller a key stands for; ``Unauthorized`` for a missing, malformed or unknown key."""
    if not key:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    prefix = key_prefix(key)
    if prefix is not None:
        presented = hash_key(key)
        for record in catalog.api_keys_with_prefix(prefix):
            if hmac.compare_digest(presented, record.hash):
                return Caller(record.tenant, record.admin, record.prefix)
    raise Unauthorized("invalid API key")
