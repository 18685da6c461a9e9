"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import secrets
import typing as t

import flask

from flask_picklesession.keys import KeyRing


def add_routes(app: flask.Flask) -> flask.Flask:
    """Give ``app`` a route for each way a view can use the session."""

    @app.route("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        flask.session[key] = value
        return "ok"

    @app.route("/get/<key>")
    def get_value(key: str) -> str:
        return repr(flask.session.get(key))

    @app.route("/dump")
    def dump() -> str:
        return repr(sorted(dict(flask.session).items()))

    @app.route("/untouched")
    def untouched() -> str:
        return "ok"

    @app.route("/clear")
    def clear() -> str:
        flask.session.clear()
        return "ok"

    @app.route("/regenerate")
    def regenerate() -> str:
        flask.session.regenerate()
        return flask.session.sid

    @app.route("/sid")
    def sid() -> str:
        return t.cast(str, flask.session.sid)

    @app.route("/permanent/<key>/<value>")
    def permanent(key: str, value: str) -> str:
        flask.session.permanent = True
        flask.session[key] = value
        return "ok"

    return app


def cookie_value(client: t.Any, name: str = "session") -> str | None:
    """The session cookie the test client holds, or None (any Werkzeug)."""
    getter = getattr(client, "get_cookie", None)
    if getter is not None:  # Werkzeug >= 2.3
        cookie = getter(name)
        return None if cookie is None else t.cast(str, cookie.value)
    for cookie in client.cookie_jar:
        if cookie.name == name:
            return t.cast(str, cookie.value)
    return None


def put_cookie(client: t.Any, value: str, name: str = "session") -> None:
    """Make the test client send ``name=value`` (any Werkzeug)."""
    if hasattr(client, "get_cookie"):  # Werkzeug >= 2.3
        client.set_cookie(name, value)
    else:  # older Werkzeug takes the server name first
        client.set_cookie("localhost", name, value)


def sid_of(client: t.Any, name: str = "session") -> str:
    """The session id inside the client's cookie."""
    value = cookie_value(client, name)
    assert value is not None, "no session cookie"
    return value.split(".")[0]


def signed(secret: str, payload: str) -> str:
    """A cookie value for ``payload`` signed as the package would with ``secret``."""
    return KeyRing(secret).sign(payload)


def set_cookie_headers(response: t.Any) -> list[str]:
    return t.cast("list[str]", response.headers.getlist("Set-Cookie"))


def noise(length: int) -> str:
    """Random URL-safe text: unlike ``"x" * n``, compression barely shrinks it."""
    return secrets.token_urlsafe(length)[:length]
