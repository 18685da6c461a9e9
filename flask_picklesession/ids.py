"""Session ids: random, fixed-shape, and never logged in a usable form."""

from __future__ import annotations

import hashlib
import re
import secrets

#: Bytes of randomness in a session id (256 bits).
SID_BYTES = 32

#: Shape of a session id: URL-safe base64 of 32 bytes, without padding.
_SID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_sid() -> str:
    """Return a fresh session id with 256 bits from :mod:`secrets`."""
    return secrets.token_urlsafe(SID_BYTES)


def is_valid_sid(value: str) -> bool:
    """Tell whether ``value`` has the exact shape of an id made by :func:`new_sid`.

    Stores build names only from ids that pass this check.
    """
    return _SID_PATTERN.fullmatch(value) is not None


def short_hash(sid: str) -> str:
    """Return a short digest of ``sid`` to name a session in logs.

    Logs often reach more people than the store does; the digest lets an
    operator correlate lines without exposing a usable id.
    """
    return hashlib.sha256(sid.encode()).hexdigest()[:12]
