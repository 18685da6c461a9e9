"""A session store of your own: sessions in one SQLite table.

The README's "Writing a store" walks through it; the test suite runs its
contract tests against it beside the built-in stores. Everything it needs
comes from ``flask_picklesession.store``. Use it as::

    app.config["PICKLESESSION_STORE"] = SQLiteStore("sessions.db")

A row keeps a session's record (opaque bytes) and its expiry in epoch
milliseconds. Each method runs in one transaction; ``patch`` and ``take``
read and write under SQLite's write lock, so concurrent saves of one session
merge instead of overwriting each other.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import typing as t

from flask_picklesession import StoreUnavailable
from flask_picklesession.store import EntryInfo, Op, Store, merge_record

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence


def _now() -> int:
    return int(time.time() * 1000)


class SQLiteStore(Store):
    """Sessions in an SQLite database file, one row each."""

    #: Expired rows stay until ``flask picklesession cleanup`` removes them.
    needs_cleanup = True

    def __init__(self, path: str) -> None:
        self.path = str(path)
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY,"
                " record BLOB NOT NULL, expires INTEGER NOT NULL)"
            )

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock, on a connection of its
        own (safe across threads and forked workers); driver errors become
        StoreUnavailable, which apps and the package know to handle."""
        try:
            with contextlib.closing(
                sqlite3.connect(self.path, timeout=10, isolation_level=None)
            ) as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"session database {self.path}: {exc}") from exc

    @staticmethod
    def _live(db: sqlite3.Connection, key: str) -> bytes | None:
        row = db.execute(
            "SELECT record FROM sessions WHERE key = ? AND expires > ?", (key, _now())
        ).fetchone()
        return None if row is None else bytes(row[0])

    def load(self, key: str, ttl: int | None = None) -> bytes | None:
        with self._transaction() as db:
            record = self._live(db, key)
            if record is not None and ttl is not None:
                db.execute(
                    "UPDATE sessions SET expires = ? WHERE key = ?", (_now() + ttl, key)
                )
            return record

    def create(self, key: str, record: bytes, ttl: int) -> bool:
        with self._transaction() as db:
            if self._live(db, key) is not None:
                return False
            db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
                (key, record, _now() + ttl),
            )
            return True

    def patch(
        self,
        key: str,
        ops: Sequence[Op],
        ttl: int,
        max_size: int,
        loaded: bytes | None = None,  # an offer to append; taken by no SQL
    ) -> int:
        with self._transaction() as db:
            merged = merge_record(self._live(db, key), ops, max_size)
            if merged.record is not None:
                db.execute(
                    "UPDATE sessions SET record = ?, expires = ? WHERE key = ?",
                    (merged.record, _now() + ttl, key),
                )
            elif merged.result == 0:
                db.execute("DELETE FROM sessions WHERE key = ?", (key,))
            return merged.result

    def touch(self, key: str, ttl: int) -> bool:
        with self._transaction() as db:
            now = _now()
            cursor = db.execute(
                "UPDATE sessions SET expires = ? WHERE key = ? AND expires > ?",
                (now + ttl, key, now),
            )
            return cursor.rowcount == 1

    def delete(self, key: str) -> bool:
        with self._transaction() as db:
            live = self._live(db, key) is not None
            db.execute("DELETE FROM sessions WHERE key = ?", (key,))
            return live

    def take(self, key: str) -> bytes | None:
        with self._transaction() as db:
            record = self._live(db, key)
            db.execute("DELETE FROM sessions WHERE key = ?", (key,))
            return record

    def scan(self, prefix: str) -> Iterator[str]:
        # Expired rows too (needs_cleanup): cleanup is given what scan finds.
        with self._transaction() as db:
            rows = db.execute(
                "SELECT key FROM sessions WHERE substr(key, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        return iter([key for (key,) in rows])

    def info(self, key: str) -> EntryInfo | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT length(record), expires FROM sessions"
                " WHERE key = ? AND expires > ?",
                (key, _now()),
            ).fetchone()
        return None if row is None else EntryInfo(row[0], row[1] - _now())

    def cleanup(self, keys: Iterable[str] | None = None) -> int:
        with self._transaction() as db:
            now = _now()
            if keys is None:
                return db.execute(
                    "DELETE FROM sessions WHERE expires <= ?", (now,)
                ).rowcount
            return sum(
                db.execute(
                    "DELETE FROM sessions WHERE key = ? AND expires <= ?", (key, now)
                ).rowcount
                for key in keys
            )
