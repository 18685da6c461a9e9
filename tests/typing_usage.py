"""The public API as an application uses it, checked by ``mypy --strict``.

Not a test module (pytest does not collect it) and never run: the ``typing``
tox environment type-checks it against the installed package, so a change
that makes typed applications fail ``--strict`` (a lost annotation, a wrong
return type, a missing ``py.typed``) fails CI. Each ``assert_type`` pins the
type an application sees.
"""

from __future__ import annotations

import typing as t
from datetime import timedelta
from pathlib import Path

import flask
import redis

from flask_picklesession import (
    ConfigurationError,
    FileSystemStore,
    PickleSession,
    RedisStore,
    SerializationError,
    ServerSession,
    SessionError,
    SessionTooLarge,
    Store,
    StoreUnavailable,
)

if t.TYPE_CHECKING:
    from typing_extensions import assert_type
    from werkzeug.exceptions import InternalServerError
else:

    def assert_type(value: object, _type: object) -> object:
        return value


def create_app(redis_url: str | None = None) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config["SECRET_KEY"] = "a long random secret"
    app.config["SECRET_KEY_FALLBACKS"] = ["an older secret"]
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(days=7)
    store: Store
    if redis_url is None:
        store = FileSystemStore(Path(app.instance_path) / "sessions")
        assert_type(store.cleanup(), int)
        assert_type(store.cleanup(keys=["app:" + "x" * 43]), int)
    else:
        store = RedisStore(redis.Redis.from_url(redis_url))
        assert_type(RedisStore.from_url(redis_url), RedisStore)
    PickleSession(
        app,
        store=store,
        serializer="json",
        key_prefix="app:",
        max_size=64 * 1024,
        pickle_allowlist=["datetime.date"],
    )
    return app


def factory() -> flask.Flask:
    ext = PickleSession()
    app = flask.Flask(__name__)
    ext.init_app(app)
    app.session_interface = PickleSession()
    PickleSession(store="redis")  # a store's name, as PICKLESESSION_STORE takes
    assert_type(ext.pickle_based, bool)
    return app


def current_session() -> ServerSession:
    # flask.session is typed as Flask's SessionMixin; narrow it for .sid etc.
    session = flask.session
    assert isinstance(session, ServerSession)
    return session


def login(user_id: int) -> str:
    session = current_session()
    session.regenerate()
    session["user_id"] = user_id
    session.permanent = True
    assert_type(session.sid, str)
    assert_type(session.new, bool)
    assert_type(session.modified, bool)
    assert_type(session.accessed, bool)
    assert_type(session.permanent, bool)
    assert_type(session.get("user_id"), t.Any)
    assert_type(session.copy(), dict[str, t.Any])
    return session.sid


def add_to_cart(sku: str) -> int:
    cart: list[str] = flask.session.setdefault("cart", [])
    cart.append(sku)
    return len(cart)


def logout() -> None:
    current_session().clear()


def store_down(e: InternalServerError) -> tuple[str, int] | InternalServerError:
    if isinstance(e.original_exception, StoreUnavailable):
        return "Session store unavailable, try again", 503
    return e


def describe(exc: SessionError) -> str:
    if isinstance(exc, SessionTooLarge):
        value_error: ValueError = exc
        return str(value_error)
    if isinstance(exc, SerializationError):
        type_error: TypeError = exc
        return str(type_error)
    if isinstance(exc, ConfigurationError):
        return f"bad setting: {exc}"
    return str(exc)


def typos_are_type_errors() -> None:
    PickleSession(serializer="jsn")  # type: ignore[arg-type]
    PickleSession(store="reddis")  # type: ignore[arg-type]
