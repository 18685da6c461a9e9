"""The Redis store: one string key per session, native expiry, Lua merges.

Works with ``redis.Redis``, ``redis.cluster.RedisCluster`` and Sentinel
``master_for()`` clients, accepted for what they can do rather than their
class. Each operation is one round trip: GET or GETEX to load, SET NX to
create, a script to merge a save or to push back an expiry, DEL to delete.
Every session lives in a single key, so the scripts are safe on a cluster.

redis-py sends a command again when its reply is lost (a timeout, a dropped
connection), so every operation gives the same answer when it ran twice: a
create finds its own record, a take finds its own marker.

The scripts, with what each takes and answers, are in :mod:`.redis_scripts`;
what a client must be, in :mod:`.redis_client`.
"""

from __future__ import annotations

import contextlib
import secrets
import typing as t

from .errors import StoreUnavailable
from .record import CorruptRecord, appendix
from .redis_client import check_client, redis_module
from .redis_scripts import (
    APPEND_SCRIPT,
    MERGE_SCRIPT,
    MOVED_MARKER,
    NEEDS_REWRITE,
    TAKE_SCRIPT,
    TOUCH_SCRIPT,
)
from .store import EntryInfo, Store

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .record import Op

#: Last bytes of the loaded record that an append compares, beside its
#: length: the end of its last value, which a save that rewrote the record
#: meanwhile would almost always have changed or moved.
_TAIL = 32
#: How long a marker outlives a take whose caller could not delete it.
_MARKER_TTL_MS = 60_000


class _ClientErrors:
    """Context manager behind :meth:`RedisStore._errors`.

    A class rather than ``contextlib.contextmanager``, whose generator costs
    a microsecond or two on every store call.
    """

    __slots__ = ("action", "store")

    def __init__(self, store: RedisStore, action: str) -> None:
        self.store = store
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: t.Any, exc: BaseException | None, tb: t.Any) -> None:
        if exc is None:
            return
        store = self.store
        if isinstance(exc, store._redis.exceptions.ResponseError):
            if str(exc).startswith("WRONGTYPE"):
                raise CorruptRecord("key holds another Redis type") from exc
            raise StoreUnavailable(f"Redis refused to {self.action}: {exc}") from exc
        if isinstance(exc, store._client_errors):
            raise StoreUnavailable(
                f"Redis unavailable to {self.action}: {exc}",
                reached=not isinstance(exc, store._unreachable_errors),
            ) from exc


class RedisStore(Store):
    """Keep sessions in Redis through a ready redis-py ``client``."""

    appends = True

    def __init__(self, client: t.Any) -> None:
        check_client(client, "RedisStore client")
        self._redis = redis = redis_module()
        # RedisClusterException is not a RedisError; both mean "unavailable".
        self._client_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            getattr(redis.exceptions, "RedisClusterException", OSError),
            OSError,
        )
        self._unreachable_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            OSError,
        )
        #: The redis-py client this store talks through.
        self.client = client
        self._merge = client.register_script(MERGE_SCRIPT)
        self._append = client.register_script(APPEND_SCRIPT)
        self._take = client.register_script(TAKE_SCRIPT)
        self._touch = client.register_script(TOUCH_SCRIPT)
        self._scripts_sent: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **kwargs: t.Any) -> RedisStore:
        """Build a store with a ``redis.Redis`` client for ``url``."""
        return cls(redis_module().Redis.from_url(url, **kwargs))

    def __repr__(self) -> str:
        """Where the sessions are, short: redis-py's own repr lists every
        connection option, several hundred characters in CLI output."""
        kind = type(self.client).__name__
        service = getattr(
            getattr(self.client, "connection_pool", None), "service_name", None
        )
        if isinstance(service, str):
            return f"RedisStore({kind} for Sentinel master {service!r})"
        get_kwargs = getattr(self.client, "get_connection_kwargs", None)
        kwargs = get_kwargs() if callable(get_kwargs) else None
        if isinstance(kwargs, dict) and "host" in kwargs:
            where = f"{kwargs['host']}:{kwargs.get('port', 6379)}"
            return f"RedisStore({kind} {where} db={kwargs.get('db', 0)})"
        if isinstance(kwargs, dict) and "path" in kwargs:
            return f"RedisStore({kind} unix:{kwargs['path']} db={kwargs.get('db', 0)})"
        return f"RedisStore({kind})"

    def _errors(self, action: str) -> _ClientErrors:
        """Turn client errors into :class:`StoreUnavailable`, chained."""
        return _ClientErrors(self, action)

    def load(self, key: str, ttl: int | None = None) -> bytes | None:
        with self._errors("load a session" if ttl is None else "refresh a session"):
            if ttl is None:
                data = self.client.get(key)
            else:
                data = self.client.getex(key, px=ttl)
        if data is None:
            return None
        if data[:1] == MOVED_MARKER:  # the session moved to a new id
            if ttl is not None:
                self._shorten_marker(key)
            return None
        if not isinstance(data, bytes):
            raise CorruptRecord("Redis returned text; is decode_responses on?")
        return data

    def create(self, key: str, record: bytes, ttl: int) -> bool:
        with self._errors("create a session"):
            if self.client.set(key, record, px=ttl, nx=True):
                return True
            # Ids are random: a taken one is this very SET, sent again by
            # redis-py after its first reply was lost, and already stored.
            return bool(self.client.get(key) == record)

    def patch(
        self,
        key: str,
        ops: Sequence[Op],
        ttl: int,
        max_size: int,
        loaded: bytes | None = None,
    ) -> int:
        """Append the ops when offered and the record is still the loaded
        one, else merge in Lua.

        Appending costs Redis time in proportion to the change; the merge
        script reads and rewrites the whole record, which also compacts it.
        """
        with self._errors("save a session"):
            if loaded:
                offer = [ttl, len(loaded), loaded[-_TAIL:], appendix(ops)]
                result = self._run(APPEND_SCRIPT, self._append, key, offer)
                if result != NEEDS_REWRITE:
                    return 1 if result > 0 else result
            args: list[t.Any] = [ttl, max_size]
            for op in ops:
                args.extend(op)
            return self._run(MERGE_SCRIPT, self._merge, key, args)

    def _run(self, source: str, script: t.Any, key: str, args: list[t.Any]) -> int:
        return int(self._call(source, script, key, args))

    def _call(self, source: str, script: t.Any, key: str, args: list[t.Any]) -> t.Any:
        client = self.client
        if source not in self._scripts_sent:
            # EVAL caches the script on the server as it runs, so even the
            # first call is one round trip; EVALSHA from then on.
            result = client.eval(source, 1, key, *args)
            self._scripts_sent.add(source)
            return result
        # EVALSHA directly: redis-py's Script object adds a tenth to the
        # client-side cost of the call. A server that lost its script cache
        # (restart, SCRIPT FLUSH, failover) is sent the source again.
        try:
            return client.evalsha(script.sha, 1, key, *args)
        except self._redis.exceptions.NoScriptError:
            return client.eval(source, 1, key, *args)

    def _shorten_marker(self, key: str) -> None:
        """Undo the push back a GETEX gave a marker, whose record must go."""
        with contextlib.suppress(StoreUnavailable), self._errors("refresh a session"):
            self.client.pexpire(key, _MARKER_TTL_MS)

    def touch(self, key: str, ttl: int) -> bool:
        with self._errors("refresh a session"):
            return bool(self._run(TOUCH_SCRIPT, self._touch, key, [ttl]))

    def delete(self, key: str) -> bool:
        with self._errors("delete a session"):
            return bool(self.client.delete(key))

    def take(self, key: str) -> bytes | None:
        """Read and delete a record in one step that is safe to run twice."""
        token = secrets.token_bytes(16)
        with self._errors("move a session"):
            data = self._call(TAKE_SCRIPT, self._take, key, [token, _MARKER_TTL_MS])
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise CorruptRecord(
                "key holds another Redis type"
                if isinstance(data, int)
                else "Redis returned text; is decode_responses on?"
            )
        # The marker has served: a failed delete leaves it to expire.
        with contextlib.suppress(StoreUnavailable), self._errors("move a session"):
            self.client.delete(key)
        return data

    def scan(self, prefix: str) -> Iterator[str]:
        pattern = _glob_escape(prefix) + "*"
        with self._errors("list sessions"):
            for key in self.client.scan_iter(match=pattern, count=1000):
                yield key.decode() if isinstance(key, bytes) else key

    def info(self, key: str) -> EntryInfo | None:
        with self._errors("inspect a session"):
            ttl = self.client.pttl(key)
            size = self.client.strlen(key) if ttl != -2 else 0
        if ttl == -2:
            return None
        return EntryInfo(int(size), int(ttl))


def _glob_escape(text: str) -> str:
    """Escape Redis glob characters so a prefix matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
