"""Shared fixtures: apps on every store, a store that counts its calls."""

from __future__ import annotations

import collections
import typing as t

import flask
import pytest

from flask_picklesession import FileSystemStore, PickleSession, RedisStore, Store

pytest_plugins = ["tests.redis_servers"]

STORE_KINDS = ["filesystem", "redis", "sqlite"]


class CountingStore(Store):
    """Wraps a real store and counts each operation, to assert store traffic."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()
        self.needs_cleanup = inner.needs_cleanup  # type: ignore[misc]
        self.appends = inner.appends  # type: ignore[misc]

    def _call(self, name: str, *args: t.Any) -> t.Any:
        self.calls[name] += 1
        return getattr(self.inner, name)(*args)

    def load(self, key, ttl=None):  # type: ignore[no-untyped-def]
        return self._call("load", key, ttl)

    def create(self, key, record, ttl):  # type: ignore[no-untyped-def]
        return self._call("create", key, record, ttl)

    def patch(self, key, ops, ttl, max_size, loaded=None):  # type: ignore[no-untyped-def]
        return self._call("patch", key, ops, ttl, max_size, loaded)

    def touch(self, key, ttl):  # type: ignore[no-untyped-def]
        return self._call("touch", key, ttl)

    def delete(self, key):  # type: ignore[no-untyped-def]
        return self._call("delete", key)

    def take(self, key):  # type: ignore[no-untyped-def]
        return self._call("take", key)

    def scan(self, prefix):  # type: ignore[no-untyped-def]
        return self._call("scan", prefix)

    def info(self, key):  # type: ignore[no-untyped-def]
        return self._call("info", key)

    def cleanup(self, keys=None):  # type: ignore[no-untyped-def]
        return self._call("cleanup", keys)

    def reset(self) -> dict[str, int]:
        """Return the counts so far and start again from zero."""
        counts = dict(self.calls)
        self.calls.clear()
        return counts


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


@pytest.fixture
def raw_store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: t.Any
) -> Store:
    """A real, empty store of each kind: a folder, or a flushed redis-server."""
    if store_kind == "filesystem":
        return FileSystemStore(tmp_path / "sessions")
    if store_kind == "sqlite":
        from example_app.sqlite_store import SQLiteStore

        return SQLiteStore(str(tmp_path / "sessions.db"))
    return RedisStore(request.getfixturevalue("redis_client"))


@pytest.fixture
def store(raw_store: Store) -> CountingStore:
    return CountingStore(raw_store)


@pytest.fixture
def make_app(store: CountingStore, tmp_path: t.Any) -> t.Callable[..., flask.Flask]:
    """Build an app on the test's store; keyword arguments go to app.config."""

    def make(**config: t.Any) -> flask.Flask:
        app = flask.Flask("contract_app", instance_path=str(tmp_path / "instance"))
        app.config.update(SECRET_KEY="current secret", PICKLESESSION_STORE=store)
        app.config.update(config)
        PickleSession(app)
        return app

    return make


@pytest.fixture
def app(make_app: t.Callable[..., flask.Flask]) -> flask.Flask:
    return make_app()
