"""The apps being compared, their payloads, and a throwaway redis-server.

Shared by ``bench.py`` (in-process WSGI timing) and ``load.py`` (gunicorn +
wrk), so both measure exactly the same views and configurations.
"""

from __future__ import annotations

import copy
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import redis
from flask import Flask, session
from flask.sessions import SessionMixin

SECRET_KEY = "benchmark-secret-key-not-for-production"
PAYLOAD_KINDS = ("realistic", "large")
ROUTES = ("untouched", "read", "write")
LARGE_RECORDS = 2600  # tuned so the large payload pickles to about 100 KB

# --------------------------------------------------------------------------
# Optional contenders: a missing one is reported as "not available", not fatal.


def _probe_ours() -> str | None:
    """Return why flask_picklesession cannot be used, or None if it can."""
    try:
        import flask_picklesession  # noqa: F401
        from flask_picklesession import (  # noqa: F401
            FileSystemStore,
            PickleSession,
            RedisStore,
        )
    except Exception as exc:  # a half-written package may raise anything
        return f"{type(exc).__name__}: {exc}"
    return None


def _probe_flask_session() -> str | None:
    """Return why Flask-Session cannot be used, or None if it can."""
    try:
        import cachelib  # noqa: F401
        import flask_session  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


OURS_ERROR = _probe_ours()
FLASK_SESSION_ERROR = _probe_flask_session()


# --------------------------------------------------------------------------
# Payloads


def make_payload(kind: str) -> dict[str, Any]:
    """Build a JSON-compatible session payload (datetime is tagged by Flask)."""
    payload: dict[str, Any] = {
        "user_id": 48213,
        "cart": [
            {"sku": f"SKU-{i:04d}", "qty": i % 3 + 1, "price": round(4.99 + i * 1.5, 2)}
            for i in range(20)
        ],
        # whole seconds: Flask's tagged JSON stores datetimes as HTTP dates
        "last_seen": datetime(2024, 5, 17, 12, 30, 45, tzinfo=timezone.utc),
        "note": ("Deliver to the side door; ring twice. " * 6)[:200],
    }
    if kind == "large":
        payload["history"] = [
            {"id": i, "sku": f"SKU-{i:05d}", "qty": i % 7, "price": 1.0 + i / 100}
            for i in range(LARGE_RECORDS)
        ]
    elif kind != "realistic":
        raise ValueError(f"unknown payload kind {kind!r}")
    return payload


def summarize(state: MutableMapping[str, Any], keys: tuple[str, ...]) -> str:
    """Read every payload key and reduce it, like a page header would."""
    parts = []
    for key in keys:
        value = state[key]
        if isinstance(value, list):
            parts.append(f"{key}:{len(value)}:{sum(item['qty'] for item in value)}")
        elif isinstance(value, datetime):
            parts.append(f"{key}:{value.isoformat()}")
        elif isinstance(value, str):
            parts.append(f"{key}:{len(value)}")
        else:
            parts.append(f"{key}:{value}")
    return "|".join(parts)


# --------------------------------------------------------------------------
# App construction


@dataclass(frozen=True)
class Env:
    """Where a contender keeps its data: its own Redis db and its own directory."""

    redis_port: int
    db: int
    workdir: Path

    def redis_client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis_port, db=self.db)

    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{self.db}"


StateGetter = Callable[[], MutableMapping[str, Any]]


def _add_routes(app: Flask, state: StateGetter, payload: dict[str, Any]) -> None:
    """Register the same four views on every contender's app."""
    keys = tuple(payload)

    @app.get("/login")
    def login() -> str:
        current = state()
        for key, value in copy.deepcopy(payload).items():
            current[key] = value
        if isinstance(current, SessionMixin):
            current.permanent = True  # a rolling login session, as apps usually set
        return "ok"

    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        return summarize(state(), keys)

    @app.get("/write")
    def write() -> str:
        current = state()
        visits = current.get("visits", 0) + 1
        current["visits"] = visits
        return str(visits)


def _base_app(name: str) -> Flask:
    app = Flask(name)
    app.config.update(SECRET_KEY=SECRET_KEY, TESTING=False)
    return app


def _session_state() -> MutableMapping[str, Any]:
    return session


def build_none(env: Env, payload: dict[str, Any]) -> Flask:
    """No session at all: the views work on a plain dict held by the app."""
    app = Flask("none")  # no SECRET_KEY: Flask hands out a null session
    data = copy.deepcopy(payload)
    _add_routes(app, lambda: data, payload)
    return app


def build_cookie(env: Env, payload: dict[str, Any]) -> Flask:
    """Flask's default signed-cookie session."""
    app = _base_app("cookie")
    _add_routes(app, _session_state, payload)
    return app


def build_fs_redis(env: Env, payload: dict[str, Any]) -> Flask:
    """Flask-Session 0.8 with its defaults (msgpack, refresh each request)."""
    from flask_session import Session

    app = _base_app("fs_redis")
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=env.redis_client())
    Session(app)
    _add_routes(app, _session_state, payload)
    return app


def build_fs_cachelib(env: Env, payload: dict[str, Any]) -> Flask:
    """Flask-Session 0.8 on cachelib's FileSystemCache (its non-deprecated path)."""
    from cachelib.file import FileSystemCache
    from flask_session import Session

    app = _base_app("fs_fs")
    cache = FileSystemCache(str(env.workdir), threshold=500)
    app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache)
    Session(app)
    _add_routes(app, _session_state, payload)
    return app


def _build_ours(store: str, serializer: str) -> Callable[[Env, dict[str, Any]], Flask]:
    def build(env: Env, payload: dict[str, Any]) -> Flask:
        """Ours, configured the documented way: app.config + PickleSession()."""
        from flask_picklesession import PickleSession

        app = _base_app(f"ours_{store}_{serializer}")
        app.config.update(
            PICKLESESSION_STORE=store, PICKLESESSION_SERIALIZER=serializer
        )
        if store == "redis":
            app.config["PICKLESESSION_REDIS_URL"] = env.redis_url()
        else:
            app.config["PICKLESESSION_FILE_DIR"] = str(env.workdir)
        app.session_interface = PickleSession()
        _add_routes(app, _session_state, payload)
        return app

    return build


def _build_overwrite(env: Env, payload: dict[str, Any]) -> Flask:
    """Ours on Redis, but saving by plain overwrite instead of merging.

    Same request path, same encoding, same single round trip; the store
    applies the changes to the record this request loaded and SETs the
    result (last writer wins). The difference to "ours redis pickle" on the
    write route is what merging costs.
    """
    from flask_picklesession import PickleSession, RedisStore
    from flask_picklesession.record import apply_ops, build

    class OverwriteRedisStore(RedisStore):
        def __init__(self, client: Any) -> None:
            super().__init__(client)
            self.loaded: dict[str, bytes] = {}

        def load(self, key: str, ttl: int | None = None) -> bytes | None:
            record = super().load(key, ttl)
            if record is not None:
                self.loaded[key] = record
            return record

        def patch(self, key: str, ops: Any, ttl: int, max_size: int, *_: Any) -> int:
            entries = apply_ops(self.loaded.pop(key, None), ops)
            if not entries:
                return super().patch(key, ops, ttl, max_size)
            self.client.set(key, build(entries), px=ttl)
            return len(entries)

    app = _base_app("ours_redis_overwrite")
    app.session_interface = PickleSession(store=OverwriteRedisStore(env.redis_client()))
    _add_routes(app, _session_state, payload)
    return app


def _build_floor(with_set: bool) -> Callable[[Env, dict[str, Any]], Flask]:
    def build(env: Env, payload: dict[str, Any]) -> Flask:
        """The no-session app plus a raw GET (and SET) of a payload-sized value."""
        app = build_none(env, payload)
        client = env.redis_client()
        key = "floor:payload"
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        client.set(key, blob)

        @app.before_request
        def fetch() -> None:
            client.get(key)

        if with_set:

            @app.after_request
            def store(response: Any) -> Any:
                client.set(key, blob)
                return response

        return app

    return build


#: Families that keep the session on the server (and so can be counted on).
SERVER_SIDE = ("flask-session", "ours", "ours-variant")


@dataclass(frozen=True)
class Contender:
    """One configuration under test."""

    name: str
    family: str  # none | cookie | floor | flask-session | ours
    store: str  # "" | redis | fs
    build: Callable[[Env, dict[str, Any]], Flask]
    routes: tuple[str, ...] = ROUTES

    def unavailable(self) -> str | None:
        """Why this contender cannot run here, or None."""
        if self.family in ("ours", "ours-variant"):
            return OURS_ERROR
        if self.family == "flask-session":
            return FLASK_SESSION_ERROR
        return None


def _ours(store: str, serializer: str) -> Contender:
    short = "fs" if store == "filesystem" else store
    name = f"ours {short} {serializer}"
    return Contender(name, "ours", short, _build_ours(store, serializer))


CONTENDERS: tuple[Contender, ...] = (
    Contender("none", "none", "", build_none),
    Contender("cookie", "cookie", "", build_cookie),
    Contender("floor GET", "floor", "redis", _build_floor(False), ROUTES[:2]),
    Contender("floor GET+SET", "floor", "redis", _build_floor(True), ROUTES[2:]),
    Contender("flask-session redis", "flask-session", "redis", build_fs_redis),
    Contender("flask-session fs", "flask-session", "fs", build_fs_cachelib),
    _ours("redis", "pickle"),
    Contender(
        "ours redis overwrite", "ours-variant", "redis", _build_overwrite, ROUTES[2:]
    ),
    _ours("redis", "json"),
    _ours("filesystem", "pickle"),
    _ours("filesystem", "json"),
)


def contender(name: str) -> Contender:
    """Look a contender up by its table name."""
    for item in CONTENDERS:
        if item.name == name:
            return item
    raise KeyError(name)


# --------------------------------------------------------------------------
# A private redis-server: never the shared one on 6379.


def free_port() -> int:
    """Ask the kernel for a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server on a free loopback port, no persistence, many dbs."""

    def __init__(self, binary: str | None = None, databases: int = 64) -> None:
        found = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.binary = found
        self.databases = databases
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.port = free_port()
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--databases", str(self.databases),
            "--dir", str(self.dir),
            "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited: {err}")
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING in time")

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def versions() -> dict[str, str]:
    """Versions of everything whose speed is being compared."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "flask",
        "werkzeug",
        "redis",
        "flask-session",
        "cachelib",
        "flask-picklesession",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    return out
