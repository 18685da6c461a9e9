"""Finding the session cookie in a request without Werkzeug's full parse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from flask_picklesession.cookie import peek_permanent, raw_cookie

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
        ("sid.19ap.sig", True),
        ("sid.19as.sig", False),
        ("garbage", False),
        ("a.b", False),
        ("", False),
    ],
)
def test_peek_permanent(value, expected):
    assert peek_permanent(value) is expected
