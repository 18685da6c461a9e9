"""Finding the session cookie in a request without Werkzeug's full parse, and
writing it back without Werkzeug's full format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.http import http_date as werkzeug_http_date
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from flask_picklesession.cookie import peek_permanent_stamp, raw_cookie
from flask_picklesession.headers import (
    _attributes,
    http_date,
    set_session_cookie,
    vary_on_cookie,
)

token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789_-.", min_size=1, max_size=30
)


def request_with(header):
    return Request(
        EnvironBuilder(headers={"Cookie": header} if header else {}).get_environ()
    )


@given(
    st.lists(
        st.tuples(st.sampled_from(["session", "sess", "xsession", "other"]), token),
        max_size=5,
    )
)
def test_same_answer_as_werkzeug(pairs):
    header = "; ".join(f"{k}={v}" for k, v in pairs)
    assert raw_cookie(request_with(header), "session") == request_with(
        header
    ).cookies.get("session")


def test_reuses_a_parse_the_app_already_made():
    request = request_with("session=abc")
    assert request.cookies["session"] == "abc"
    request.environ["HTTP_COOKIE"] = "session=changed"
    assert raw_cookie(request, "session") == "abc"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sid.19ap.sig", 0x19A),
        ("sid.19as.sig", None),
        ("sid.zzp.sig", None),
        ("sid.p.sig", None),
        ("sid." + "f" * 12 + "p.sig", None),
        ("sid." + "f" * 11 + "p.sig", 0xFFFFFFFFFFF),
        ("garbage", None),
        ("a.b", None),
        ("", None),
    ],
)
def test_peek_permanent_stamp(value, expected):
    assert peek_permanent_stamp(value) == expected


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"domain": "example.org", "path": "/app", "secure": True, "httponly": True},
        {"samesite": "Lax", "httponly": False, "path": "/"},
    ],
)
@pytest.mark.parametrize("expires", [None, 1924484645])  # 2031-01-02 03:04:05
@pytest.mark.parametrize("value", ["abc.19ap.sig-_", "needs quoting;"])
def test_set_session_cookie_matches_werkzeug(options, expires, value):
    expected, ours = Response(), Response()
    expected.set_cookie("session", value, expires=expires, **options)
    for _ in range(2):  # the second call uses the cached attributes
        ours.headers.remove("Set-Cookie")
        set_session_cookie(ours, "session", value, expires, tuple(options.items()))
    assert ours.headers.getlist("Set-Cookie") == expected.headers.getlist("Set-Cookie")
    if value == "abc.19ap.sig-_":  # plain: the check may be skipped
        ours.headers.remove("Set-Cookie")
        items = tuple(options.items())
        set_session_cookie(ours, "session", value, expires, items, known_plain=True)
        assert ours.headers.getlist("Set-Cookie") == expected.headers.getlist(
            "Set-Cookie"
        )


@pytest.mark.parametrize(
    "existing", [None, "Accept-Encoding", "cookie", "Origin, Cookie"]
)
def test_vary_on_cookie_matches_werkzeug(existing):
    expected, ours = Response(), Response()
    for response in (expected, ours):
        if existing is not None:
            response.headers["Vary"] = existing
    expected.vary.add("Cookie")
    vary_on_cookie(ours)
    vary_on_cookie(ours)  # idempotent
    assert ours.headers.getlist("Vary") == expected.headers.getlist("Vary")


# Up to the year 2527 plus a 30-year lifetime: the latest stamp a cookie holds.
@given(st.integers(min_value=0, max_value=17_800_000_000))
def test_http_date_matches_werkzeug(seconds):
    assert http_date(seconds) == werkzeug_http_date(seconds)


def test_attributes_are_shared_by_every_expiry():
    """Each session's cookie expires at its own moment; the formatted
    attributes must not be cached per moment, or a busy site would miss."""
    options = (("path", "/"), ("httponly", True), ("samesite", "Lax"))
    _attributes.cache_clear()
    for seconds in range(1_900_000_000, 1_900_000_000 + 3600 * 24 * 40, 3599):
        ours = Response()
        set_session_cookie(ours, "session", "abc.19ap.sig", seconds, options)
        expected = Response()
        expected.set_cookie("session", "abc.19ap.sig", expires=seconds, **dict(options))
        assert ours.headers["Set-Cookie"] == expected.headers["Set-Cookie"]
    assert _attributes.cache_info().currsize == 1
