"""The cookie value: a signed session id plus two facts that save store calls.

Layout: ``<sid>.<stamp><flag>.<signature>``, where ``stamp`` is the time in
milliseconds (hex) at which the store's expiry of this session was last set,
and ``flag`` is ``p`` for a permanent session and ``s`` otherwise. Knowing
both from the cookie lets a request that never touches the session refresh a
permanent cookie, and refresh the stored expiry only when it is due, without
reading the store. No session data is in the cookie.
"""

from __future__ import annotations

import typing as t

from .ids import is_valid_sid

if t.TYPE_CHECKING:
    from flask import Request

    from .keys import KeyRing

#: Longest cookie value looked at; anything longer is refused unread.
MAX_COOKIE_LENGTH = 160


class CookieRef(t.NamedTuple):
    """What a verified cookie says."""

    sid: str
    #: When the stored expiry was last set, in ms since the epoch.
    stamp: int
    permanent: bool
    #: True if only a fallback key verified the signature: re-issue the cookie.
    by_fallback: bool


def make_cookie(ring: KeyRing, sid: str, stamp: int, permanent: bool) -> str:
    """Return the signed cookie value, signed with the current key."""
    return ring.sign(f"{sid}.{stamp:x}{'p' if permanent else 's'}")


def raw_cookie(request: Request, name: str) -> str | None:
    """Return the request's cookie ``name`` without parsing every cookie.

    Werkzeug's full parse costs more than everything else an untouched
    request does here; a parse the app already made is reused. Quoted values
    are returned as sent: this package never quotes, so they fail to verify.
    """
    parsed = request.__dict__.get("cookies")
    if parsed is not None:
        return t.cast("str | None", parsed.get(name))
    header: str = request.environ.get("HTTP_COOKIE", "")
    if name not in header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def peek_permanent_stamp(value: str) -> int | None:
    """Read a permanent cookie's stamp without verifying the signature.

    None for a cookie not flagged permanent or not readable. Only good for
    deciding whether verifying is worth it.
    """
    end = value.rfind(".")
    start = value.rfind(".", 0, end) + 1  # 0: no dot before (value[0:end])
    if end < 0 or not 2 <= end - start <= 12 or value[end - 1] != "p":
        return None
    try:
        return int(value[start : end - 1], 16)
    except ValueError:
        return None


def read_cookie(ring: KeyRing, value: str | None) -> CookieRef | None:
    """Verify a cookie value; None for anything not signed by a known key."""
    if not value or len(value) > MAX_COOKIE_LENGTH or not value.isascii():
        return None
    verified = ring.unsign(value)
    if verified is None:
        return None
    payload, by_fallback = verified
    sid, _, meta = payload.partition(".")
    # At most 11 hex digits: milliseconds up to the year 2527, which keeps
    # the cookie's expiry a valid datetime even for a stamp signed with our
    # own key (12 digits reach the year 10889).
    if not is_valid_sid(sid) or not 2 <= len(meta) <= 12 or meta[-1] not in "ps":
        return None
    try:
        stamp = int(meta[:-1], 16)
    except ValueError:
        return None
    return CookieRef(sid, stamp, meta[-1] == "p", by_fallback)
