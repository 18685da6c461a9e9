"""Response headers of the session: Set-Cookie with its attributes formatted
once, and Vary: Cookie without parsing the header each time.

Werkzeug's ``dump_cookie`` formats every attribute (an HTTP date among them)
on each call, which costs more than the rest of a read-only request's save.
The attributes depend only on the expiry and the app's cookie settings, so
they are formatted by Werkzeug once per combination and reused; only the
value is put in front on each response.
"""

from __future__ import annotations

import datetime
import functools
import re
import typing as t

from werkzeug.http import dump_cookie

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

#: Values that Werkzeug writes unquoted; every value this package makes is.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.\-]*")
_PLACEHOLDER = "v"

CookieOptions = tuple[tuple[str, t.Any], ...]


@functools.lru_cache(maxsize=512)
def _attributes(
    name: str, expires: datetime.datetime | None, options: CookieOptions
) -> str | None:
    """Everything after ``name=value``; None if the name needs quoting."""
    sample = dump_cookie(name, _PLACEHOLDER, expires=expires, **dict(options))
    head = f"{name}={_PLACEHOLDER}"
    if not sample.startswith(head):
        return None
    return sample[len(head) :]


def set_session_cookie(
    response: Response,
    name: str,
    value: str,
    expires: datetime.datetime | None,
    options: CookieOptions,
    *,
    known_plain: bool = False,
) -> None:
    """Add the cookie as ``response.set_cookie`` would, without re-formatting.

    ``known_plain`` skips checking that the value needs no quoting: true of
    every value this package signs, and of a client's cookie once verified.
    """
    plain = known_plain or _PLAIN_VALUE.fullmatch(value) is not None
    rest = _attributes(name, expires, options) if plain else None
    if rest is None:
        response.set_cookie(name, value, expires=expires, **dict(options))
    else:
        response.headers.add("Set-Cookie", f"{name}={value}{rest}")


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
