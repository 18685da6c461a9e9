"""Response headers of the session: Set-Cookie with its attributes formatted
once, and Vary: Cookie without parsing the header each time.

Werkzeug's ``dump_cookie`` formats every attribute (an HTTP date among them)
on each call, which costs more than the rest of a read-only request's save.
The attributes depend only on the app's cookie settings, apart from the
expiry date, so Werkzeug formats them once per combination, around a sample
date; each response puts its value in front and its own date in the middle.
Keying the cache by the expiry instead would miss for every user but one, as
each session's cookie expires at its own moment.
"""

from __future__ import annotations

import functools
import re
import time
import typing as t

from werkzeug.http import dump_cookie

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

#: Values that Werkzeug writes unquoted; every value this package makes is.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.\-]*")
_PLACEHOLDER = "v"

CookieOptions = tuple[tuple[str, t.Any], ...]


#: Names in HTTP dates (RFC 9110), which are never localized.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip
#: The expiry Werkzeug formats the attributes around: 2001-02-03 04:05:06.
_SAMPLE_EXPIRES = 981173106


#: "00" to "99", so the time of day is put together without formatting.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))


@functools.lru_cache(maxsize=256)
def _day(days: int) -> str:
    """The date part of an HTTP date, for a day counted from the epoch.

    Cookies expire within a lifetime of now, so few days are ever asked.
    """
    tm = time.gmtime(days * 86400)
    return (
        f"{_DAYS[tm.tm_wday]}, {tm.tm_mday:02d} {_MONTHS[tm.tm_mon - 1]}"
        f" {tm.tm_year:04d} "
    )


def http_date(seconds: int) -> str:
    """``seconds`` since the epoch as an HTTP date, as Werkzeug writes it."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    two = _TWO_DIGITS
    return f"{_day(days)}{two[hours]}:{two[minutes]}:{two[rest]} GMT"


@functools.lru_cache(maxsize=64)
def _attributes(
    name: str, expiring: bool, options: CookieOptions
) -> tuple[str, str] | None:
    """Everything after ``name=value``, split where the expiry date goes.

    None if the name needs quoting or the sample date is not found as such.
    """
    expires = _SAMPLE_EXPIRES if expiring else None
    sample = dump_cookie(name, _PLACEHOLDER, expires=expires, **dict(options))
    head = f"{name}={_PLACEHOLDER}"
    if not sample.startswith(head):
        return None
    rest = sample[len(head) :]
    if not expiring:
        return rest, ""
    date = f"Expires={http_date(_SAMPLE_EXPIRES)}"
    before, found, after = rest.partition(date)
    if not found or date in after:
        return None
    return before + "Expires=", after


def set_session_cookie(
    response: Response,
    name: str,
    value: str,
    expires: int | None,
    options: CookieOptions,
    *,
    known_plain: bool = False,
) -> None:
    """Add the cookie as ``response.set_cookie`` would, without re-formatting.

    ``expires`` is in whole seconds since the epoch, or None for a cookie
    that ends with the browser session. ``known_plain`` skips checking that
    the value needs no quoting: true of every value this package signs, and
    of a client's cookie once verified.
    """
    plain = known_plain or _PLAIN_VALUE.fullmatch(value) is not None
    parts = _attributes(name, expires is not None, options) if plain else None
    if parts is None:
        response.set_cookie(name, value, expires=expires, **dict(options))
    elif expires is None:
        response.headers.add("Set-Cookie", f"{name}={value}{parts[0]}")
    else:
        before, after = parts
        header = f"{name}={value}{before}{http_date(expires)}{after}"
        response.headers.add("Set-Cookie", header)


def vary_on_cookie(response: Response) -> None:
    """Add ``Cookie`` to ``Vary``, as ``response.vary.add("Cookie")`` does.

    The common case, no Vary header yet, skips Werkzeug's parse and rebuild,
    and its lookup by name, which raises and catches an exception on a miss.
    """
    for name, _ in response.headers:
        if name.lower() == "vary":
            response.vary.add("Cookie")
            return
    response.headers.add("Vary", "Cookie")
