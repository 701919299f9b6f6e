"""Signed media URLs: ``<video src>`` and ``<img src>`` cannot send an API key, so the API hands
out URLs that carry a token for one medium of one library of one tenant, valid for some hours.

A token is ``<tenant, base64url>~<expiry>~<HMAC-SHA256>``, signed with a secret kept in the data
directory (created on first use, readable by its owner only). It grants reading that medium's file
and thumbnails, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path

from .auth import Unauthorized

#: tokens live at least this long; expiries are rounded up to the hour so URLs stay cacheable
TTL_SECONDS = 6 * 3600


class MediaSigner:
    def __init__(self, secret: bytes, ttl: float = TTL_SECONDS) -> None:
        self.secret = secret
        self.ttl = ttl

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> MediaSigner:
        path = Path(data_dir) / "secret.key"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)  # never replaces a secret another process made first
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        return cls(path.read_bytes())

    def _sign(self, tenant: str, library: str, media_id: int, expires: int) -> str:
        message = f"{tenant}\n{library}\n{media_id}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]

    def token(self, tenant: str, library: str, media_id: int, now: float | None = None) -> str:
        expires = int(((now or time.time()) + self.ttl) // 3600 + 1) * 3600
        who = base64.urlsafe_b64encode(tenant.encode()).decode().rstrip("=")
        return f"{who}~{expires}~{self._sign(tenant, library, media_id, expires)}"

    def verify(self, token: str, library: str, media_id: int, now: float | None = None) -> str:
        """The tenant a valid token was issued for; ``Unauthorized`` otherwise."""
        try:
            who, expires_text, signature = token.split("~")
            tenant = base64.urlsafe_b64decode(who + "=" * (-len(who) % 4)).decode()
            expires = int(expires_text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed media token") from None
        if not hmac.compare_digest(signature, self._sign(tenant, library, media_id, expires)):
            raise Unauthorized("invalid media token")
        if expires < (now or time.time()):
            raise Unauthorized("media token expired: search again for fresh links")
        return tenant
