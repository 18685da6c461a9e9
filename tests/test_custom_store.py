"""Stores of one's own: the API in ``flask_picklesession.store``, the SQLite
example (``example_app/sqlite_store.py``, which the store-parametrized tests
run beside the built-in stores) and clear errors for a store's mistakes."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
import typing as t

import flask
import pytest

from example_app.sqlite_store import SQLiteStore
from flask_picklesession import PickleSession, SessionTooLarge, StoreUnavailable
from flask_picklesession.cli import picklesession_cli
from flask_picklesession.compression import pack
from flask_picklesession.keys import MAC_SIZE
from flask_picklesession.record import build, parse_raw
from flask_picklesession.store import (
    CORRUPT,
    GONE,
    OP_DELETE,
    OP_SET,
    TOO_LARGE,
    Store,
    merge_record,
)
from tests.helpers import add_routes, cookie_value, put_cookie, sid_of

if t.TYPE_CHECKING:
    from pathlib import Path

MAC = b"m" * MAC_SIZE


def test_merge_record_gives_what_patch_stores() -> None:
    current = build({b"a": MAC + b"1", b"b": MAC + b"2"})
    merged = merge_record(
        current, [(OP_SET, b"c", MAC + b"3"), (OP_DELETE, b"a", b"")], 1000
    )
    assert merged.result == 2
    assert merged.record is not None
    assert parse_raw(merged.record) == {b"b": MAC + b"2", b"c": MAC + b"3"}


@pytest.mark.parametrize(
    ("current", "result"),
    [(None, GONE), (b"\x07not a record", CORRUPT), (build({b"a": MAC + b"1"}), 0)],
)
def test_merge_record_writes_nothing_when_gone_corrupt_or_emptied(
    current: bytes | None, result: int
) -> None:
    assert merge_record(current, [(OP_DELETE, b"a", b"")], 1000) == (result, None)


def test_merge_record_limit_counts_values_before_compression() -> None:
    """As PICKLESESSION_MAX_SIZE does: a value that compresses well is no
    way past the limit (a store checking the stored size let two
    concurrent saves build a session every later save was refused for)."""
    plain = b"j" + b'"' + b"x" * 700 + b'"'
    packed = pack(plain)
    assert len(packed) < 100  # compressed in the record
    current = build({b"a": MAC + packed})
    merged = merge_record(current, [(OP_SET, b"b", MAC + packed)], 1000)
    assert merged == (TOO_LARGE, None)


# -- the SQLite example, beyond the shared store tests -------------------------


def _app(store: Store, **config: t.Any) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(SECRET_KEY="s", TESTING=True, PICKLESESSION_STORE=store)
    app.config.update(config)
    PickleSession(app)
    return add_routes(app)


def test_sqlite_example_keeps_sessions_across_store_objects(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    client = _app(SQLiteStore(path)).test_client()
    client.get("/set/user/alice")
    other = _app(SQLiteStore(path)).test_client()  # another worker, same file
    put_cookie(other, cookie_value(client))
    assert other.get("/get/user").data == b"'alice'"


def test_sqlite_example_cleanup_command_removes_expired_rows(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    app = _app(store)
    live, expired = app.test_client(), app.test_client()
    live.get("/set/a/1")
    expired.get("/set/a/2")
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        db.execute(
            "UPDATE sessions SET expires = ? WHERE key = ?",
            (int(time.time() * 1000) - 1, "session:" + sid_of(expired)),
        )
    result = app.test_cli_runner().invoke(picklesession_cli, ["cleanup"])
    assert result.exit_code == 0, result.output
    assert "Removed 1 expired" in result.output
    assert list(store.scan("session:")) == ["session:" + sid_of(live)]


def test_sqlite_example_reports_a_broken_database_as_unavailable(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    client = _app(store).test_client()
    client.get("/set/a/1")
    (tmp_path / "s.db").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreUnavailable, match="session database"):
        client.get("/get/a")


def test_sqlite_example_refuses_a_session_over_the_limit(tmp_path: Path) -> None:
    app = _app(SQLiteStore(str(tmp_path / "s.db")), PICKLESESSION_MAX_SIZE=1000)
    c = app.test_client()
    c.get("/set/a/1")
    with pytest.raises(SessionTooLarge):
        c.get("/set/big/" + "x" * 2000)
    assert c.get("/dump").data == b"[('a', '1')]"


# -- a store's mistakes are said plainly ----------------------------------------


class DictStore(SQLiteStore):
    """The SQLite example with answers bent by ``bend`` (a test's mistake)."""

    def __init__(self, path: str, bend: dict[str, t.Callable[[t.Any], t.Any]]) -> None:
        super().__init__(path)
        self.bend = bend

    def load(self, key: str, ttl: int | None = None) -> t.Any:
        return self.bend.get("load", lambda v: v)(super().load(key, ttl))

    def create(self, key: str, record: bytes, ttl: int) -> t.Any:
        return self.bend.get("create", lambda v: v)(super().create(key, record, ttl))

    def patch(self, key: str, *args: t.Any) -> t.Any:
        return self.bend.get("patch", lambda v: v)(super().patch(key, *args))


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_binary_buffers_from_a_store_are_records(tmp_path: Path, kind: type) -> None:
    """What database drivers give for binary columns (psycopg: memoryview)."""
    bend = {"load": lambda v: None if v is None else kind(v)}
    c = _app(DictStore(str(tmp_path / "s.db"), bend)).test_client()
    c.get("/set/a/1")
    c.get("/set/b/2")
    assert c.get("/dump").data == b"[('a', '1'), ('b', '2')]"


@pytest.mark.parametrize(
    ("method", "bend", "says"),
    [
        (
            "load",
            lambda v: None if v is None else v.decode("latin-1"),
            "load() returned str",
        ),
        ("create", lambda v: None, "create() returned None"),
        ("patch", lambda v: None, "patch() returned NoneType"),
    ],
)
def test_a_store_answering_the_wrong_type_is_a_clear_error(
    tmp_path: Path, method: str, bend: t.Callable[[t.Any], t.Any], says: str
) -> None:
    """Not a corrupt record, a lost write or "no unused session id": the
    store's method and what it gave are named."""
    store = DictStore(str(tmp_path / "s.db"), {})
    app = _app(store)
    c = app.test_client()
    c.get("/set/a/1")
    store.bend[method] = bend
    request = {"load": "/get/a", "patch": "/set/a/2"}.get(method)
    if request is None:  # create: a new session
        c, request = app.test_client(), "/set/b/1"
    with pytest.raises(TypeError, match=re.escape(f"DictStore.{says}")):
        c.get(request)
