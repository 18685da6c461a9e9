"""The Redis store: one string key per session, native expiry, Lua merges.

Works with ``redis.Redis``, ``redis.cluster.RedisCluster`` and Sentinel
``master_for()`` clients, accepted for what they can do rather than their
class. Each operation is one round trip: GET or GETEX to load, SET NX to
create, a script to merge a save or to push back an expiry, DEL to delete.
Every session lives in a single key, so the scripts are safe on a cluster.

redis-py sends a command again when its reply is lost (a timeout, a dropped
connection), so every operation gives the same answer when it ran twice: a
create finds its own record, a take finds its own marker.
"""

from __future__ import annotations

import contextlib
import inspect
import secrets
import typing as t

from .errors import ConfigurationError, StoreUnavailable
from .record import CorruptRecord, appendix
from .store import EntryInfo, Store

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .record import Op

#: Merges a patch into the record; follows ``record.apply_ops`` exactly.
#: ARGV: ttl in ms, size limit (compressed values count as before), then
#: (op, key, payload) triples.
MERGE_SCRIPT = """
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' and cur.err then return -3 end
if not cur or string.byte(cur, 1) == 0 then return -1 end
if string.byte(cur, 1) ~= 1 then return -3 end
local function read_varint(s, pos)
  local n, mul = 0, 1
  while true do
    local b = string.byte(s, pos)
    if b == nil or mul > 268435456 then return nil, pos end
    pos = pos + 1
    if b < 128 then return n + b * mul, pos end
    n = n + (b - 128) * mul
    mul = mul * 128
  end
end
local function varint(n)
  local out = {}
  while n > 127 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
local order, body, moved = {}, {}, {}
local pos, last = 2, #cur
while pos <= last do
  local klen, vlen
  klen, pos = read_varint(cur, pos)
  if not klen or pos + klen - 1 > last then return -3 end
  local key = string.sub(cur, pos, pos + klen - 1)
  pos = pos + klen
  vlen, pos = read_varint(cur, pos)
  if not vlen or pos + 16 + vlen - 1 > last then return -3 end
  if body[key] == nil then order[#order + 1] = key end
  if vlen == 0 then
    body[key] = false
  else
    body[key] = string.sub(cur, pos, pos + 16 + vlen - 1)
  end
  pos = pos + 16 + vlen
end
for _, key in ipairs(order) do
  if body[key] == false then body[key] = nil end
end
for i = 3, #ARGV, 3 do
  local op, key, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 's' then
    if body[key] == nil then
      order[#order + 1] = key
      moved[key] = #order
    end
    body[key] = payload
  elseif op == 'd' then
    body[key] = nil
  elseif body[key] and string.sub(body[key], 1, 16) == string.sub(payload, 1, 16) then
    body[key] = string.sub(payload, 17)
  end
end
local parts, count, size = {string.char(1)}, 0, 1
for i, key in ipairs(order) do
  local b = body[key]
  if b and (moved[key] == nil or moved[key] == i) then
    local piece = varint(#key) .. key .. varint(#b - 16) .. b
    parts[#parts + 1] = piece
    count = count + 1
    -- the limit counts a compressed value (P or Z) at its size before
    local tag, plain = string.byte(b, 17), nil
    if tag == 80 or tag == 90 then plain = read_varint(b, 18) end
    if plain then
      size = size + #varint(#key) + #key + #varint(plain) + 16 + plain
    else
      size = size + #piece
    end
  end
end
if count == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
if size > tonumber(ARGV[2]) then return -2 end
redis.call('SET', KEYS[1], table.concat(parts), 'PX', ARGV[1])
return count
"""

#: Appends entries (sets and tombstones) to a record, O(appended bytes).
#: APPEND comes first: Redis refuses a script for lack of memory only at its
#: first write, and PEXPIRE is not one it refuses, so behind it the APPEND
#: would pass a full server's memory limit.
#: ARGV: ttl in ms, the length and last bytes of the record as the caller
#: loaded it, the bytes to append. Returns 1, or -1 (gone, or moved: see
#: :data:`TAKE_SCRIPT`), -3 (not a record of this format: appending would
#: bury the save where no load finds it) or -4: the record is no longer the
#: one loaded, whose size the caller checked the append against (another
#: save grew it meanwhile, by any amount before compression), so the
#: caller merges instead, which checks the whole record. On Redis 7 and
#: later an ACL user refused PEXPIRE is refused before the APPEND: a save
#: that raises is never half done.
APPEND_SCRIPT = """
local size = redis.pcall('STRLEN', KEYS[1])
if type(size) == 'table' and size.err then return -3 end
if size == 0 then return -1 end
local version = redis.call('GETRANGE', KEYS[1], 0, 0)
if version == string.char(0) then return -1 end
if version ~= string.char(1) then return -3 end
if size ~= tonumber(ARGV[2]) then return -4 end
if redis.call('GETRANGE', KEYS[1], -#ARGV[3], -1) ~= ARGV[3] then return -4 end
if redis.acl_check_cmd and not redis.acl_check_cmd('PEXPIRE', KEYS[1], ARGV[1]) then
  return redis.error_reply('NOPERM this user has no permissions to run PEXPIRE')
end
redis.call('APPEND', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
#: :data:`APPEND_SCRIPT`'s answer when the record must be rewritten instead.
_NEEDS_REWRITE = -4
#: Last bytes of the loaded record that an append compares, beside its
#: length: the end of its last value, which a save that rewrote the record
#: meanwhile would almost always have changed or moved.
_TAIL = 32

#: Takes a record away, to move it to a new id, so that a second run of the
#: same call gets it too. GETDEL could not: when redis-py resends it after
#: losing the reply, the second answer is nil, read as "deleted meanwhile",
#: and the session was dropped. The record is replaced by a marker, the
#: caller's token followed by the record, which loads and merges take for a
#: deleted session, and which the caller deletes once it has the record.
#: ARGV: token, marker lifetime in ms. Returns the record, nil when there is
#: none (or another call's marker), or -3 when the key is not a string.
TAKE_SCRIPT = """
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' and cur.err then return -3 end
if not cur then return false end
if string.byte(cur, 1) == 0 then
  if string.sub(cur, 2, 1 + #ARGV[1]) == ARGV[1] then
    return string.sub(cur, 2 + #ARGV[1])
  end
  return false
end
redis.call('SET', KEYS[1], string.char(0) .. ARGV[1] .. cur, 'PX', ARGV[2])
return cur
"""
#: Pushes back a record's expiry, but not a marker's (see :data:`TAKE_SCRIPT`):
#: an old cookie must not keep a marker, which holds the moved record, alive.
#: ARGV: ttl in ms. Returns 1 if pushed back, else 0.
TOUCH_SCRIPT = """
local head = redis.pcall('GETRANGE', KEYS[1], 0, 0)
if head == string.char(0) then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""
#: First byte of a marker left by :data:`TAKE_SCRIPT`; records start with 1.
MOVED_MARKER = b"\x00"
#: How long a marker outlives a take whose caller could not delete it.
_MARKER_TTL_MS = 60_000

_REQUIRED = (
    "get",
    "getex",
    "set",
    "delete",
    "pexpire",
    "pttl",
    "strlen",
    "register_script",
    "scan_iter",
)


def _redis_module() -> t.Any:
    try:
        import redis
    except ImportError as exc:
        raise ConfigurationError(
            "the Redis store needs redis-py: pip install 'flask-picklesession[redis]'"
        ) from exc
    return redis


def check_client(client: object, name: str) -> None:
    """Refuse, naming ``name``, what cannot serve as the store's client."""
    if isinstance(client, type):
        raise ConfigurationError(
            f"{name} is the class {client.__qualname__}, not a client; give it"
            f" one: {client.__qualname__}(host=..., port=...)"
        )
    missing = [m for m in _REQUIRED if not callable(getattr(client, m, None))]
    if missing:
        raise ConfigurationError(
            f"{name} must be a redis-py client (redis.Redis, RedisCluster or a"
            f" Sentinel master_for() client); {type(client).__qualname__} lacks"
            f" {', '.join(missing)}"
        )
    if hasattr(client, "command_stack"):
        # A pipeline only queues commands until execute(): writes would look
        # done and store nothing.
        raise ConfigurationError(
            f"{name} is a pipeline ({type(client).__qualname__}); give it the"
            " client itself (redis.Redis, RedisCluster or a Sentinel client)"
        )
    if inspect.iscoroutinefunction(getattr(client, "execute_command", None)):
        # Its commands return coroutines, which are never run: every write
        # would look done and store nothing.
        raise ConfigurationError(
            f"{name} is an asyncio client ({type(client).__module__}."
            f"{type(client).__qualname__}); Flask calls the session interface"
            " synchronously, so give it a redis.Redis, RedisCluster or Sentinel"
            " client from the synchronous API"
        )
    get_kwargs = getattr(client, "get_connection_kwargs", None)
    kwargs = get_kwargs() if callable(get_kwargs) else {}
    if isinstance(kwargs, dict) and kwargs.get("decode_responses"):
        raise ConfigurationError(
            f"{name} was created with decode_responses=True; sessions are stored"
            " as bytes, so give the store a client without it"
        )


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
        self._redis = redis = _redis_module()
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
        return cls(_redis_module().Redis.from_url(url, **kwargs))

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
                if result != _NEEDS_REWRITE:
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
