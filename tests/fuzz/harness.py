"""What the hostile-input property tests and the atheris fuzz target share.

* an app whose views seed a session with values of every encoding, and read
  the whole session back into a list (``/probe``), so a test can compare the
  objects themselves;
* :class:`RecordingStore`, which wraps a real store and remembers every
  pickled value the *app* wrote through it (the harness writes hostile bytes
  into the inner store directly, so those are never remembered);
* :class:`UnpickleSpy`, which records every input handed to ``pickle.loads``
  and to the allowlist unpickler in :mod:`flask_picklesession.pickle_codec`;
* record surgery: parse a record into entries, rebuild it with forged
  declared lengths, and apply edit programs (structural and byte-level).

No test lives here; ``tests/fuzz/fuzz_session.py`` runs under atheris and
``tests/test_hostile_input.py`` under hypothesis.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import typing as t

import flask

from flask_picklesession import PickleSession, Store, pickle_codec
from flask_picklesession.compression import unpack
from flask_picklesession.record import (
    OP_SET,
    OP_SET_IF_MAC,
    CorruptRecord,
    apply_ops,
    build,
    encode_varint,
)
from flask_picklesession.store import CORRUPT, GONE, TOO_LARGE, EntryInfo
from flask_picklesession.tags import CorruptEntry

MAC_SIZE = 16
TTL_MS = 600_000
PREFIX = "session:"
MODES = ("pickle", "json", "allowlist")


class Thing:
    """A custom object: stored as a pickle, refused by strict JSON mode."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.items = [token, {"k": (1, 2.5)}, None]

    def __eq__(self, other: object) -> bool:
        return type(other) is Thing and other.__dict__ == self.__dict__

    def __repr__(self) -> str:
        return f"Thing({self.token!r})"


THING_GLOBAL = f"{Thing.__module__}.{Thing.__qualname__}"


def seed_values(mode: str, token: str) -> dict[str, t.Any]:
    """Values of every encoding (native, pickle or tagged JSON), unique per token."""
    values: dict[str, t.Any] = {
        "user": f"user-{token}",
        "n": 7,
        "ratio": 0.25,
        "raw": token.encode() + b"\x00\xff",
        "flag": True,
        "nothing": None,
        "cart": [{"sku": token, "qty": 2}, {"sku": "x", "qty": 1}],
    }
    if mode == "json":
        values["pair"] = (token, 1)
    else:
        values["obj"] = Thing(token)
    return values


def app_config(mode: str) -> dict[str, t.Any]:
    config: dict[str, t.Any] = {
        "PICKLESESSION_SERIALIZER": "json" if mode == "json" else "pickle"
    }
    if mode == "allowlist":
        config["PICKLESESSION_PICKLE_ALLOWLIST"] = [THING_GLOBAL]
    return config


def build_app(
    store: Store, mode: str, name: str = "hostile_app", **config: t.Any
) -> tuple[flask.Flask, list[dict[str, t.Any]]]:
    """An app on ``store`` in ``mode``; returns it and the list ``/probe`` fills."""
    app = flask.Flask(name)
    app.config.update(
        SECRET_KEY="hostile test secret", PICKLESESSION_STORE=store, TESTING=True
    )
    app.config.update(app_config(mode))
    app.config.update(config)
    PickleSession(app)
    probes: list[dict[str, t.Any]] = []

    @app.route("/seed/<token>")
    def seed(token: str) -> str:
        flask.session.update(seed_values(mode, token))
        return t.cast(str, flask.session.sid)

    @app.route("/probe")
    def probe() -> str:
        probes.append(dict(flask.session))
        return "ok"

    @app.route("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        flask.session[key] = value
        return "ok"

    @app.route("/readset/<key>/<value>")
    def read_then_set(key: str, value: str) -> str:
        dict(flask.session)
        flask.session[key] = value
        return "ok"

    @app.route("/untouched")
    def untouched() -> str:
        return "ok"

    return app, probes


def cookie_of(response: t.Any) -> str | None:
    """The session cookie value a response sets, or None."""
    for header in response.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name == "session":
            return rest.split(";", 1)[0]
    return None


def request_with_cookie(
    app: flask.Flask, path: str, cookie_header: str | None
) -> t.Any:
    """One request carrying exactly ``Cookie: <cookie_header>`` (or none)."""
    client = app.test_client(use_cookies=False)
    overrides = {} if cookie_header is None else {"HTTP_COOKIE": cookie_header}
    return client.get(path, environ_overrides=overrides)


def is_right_or_empty(result: dict[str, t.Any], original: dict[str, t.Any]) -> bool:
    """The session is the stored one, possibly minus whole entries, or empty.

    Entries carry their own MACs, so someone with write access to the store
    can drop entries (documented); nothing else may ever show up.
    """
    return all(
        key in original and original[key] == value for key, value in result.items()
    )


# -- which pickles the app itself stored ------------------------------------------


def pickled_bodies_of_record(record: bytes) -> set[bytes]:
    """The bytes ``pickle.loads`` would get for each pickled value of a record."""
    found = set()
    for _key, body in parse_entries(record) or []:
        found |= pickled_body(body[MAC_SIZE:])
    return found


def pickled_body(value: bytes) -> set[bytes]:
    """What ``pickle.loads`` gets for a stored value: none, or one input."""
    if value[:1] == b"P":
        try:
            value = unpack(value)
        except CorruptEntry:
            return set()
    return {value[1:]} if value[:1] == b"p" else set()


class RecordingStore(Store):
    """Wraps a store; remembers every pickled value the app wrote through it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.needs_cleanup = inner.needs_cleanup  # type: ignore[misc]
        #: Inputs ``pickle.loads`` may legitimately see: values the app stored.
        self.app_pickles: set[bytes] = set()
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def load(self, key, ttl=None):  # type: ignore[no-untyped-def]
        self._count("load")
        return self.inner.load(key, ttl)

    def create(self, key, record, ttl):  # type: ignore[no-untyped-def]
        self._count("create")
        self.app_pickles |= pickled_bodies_of_record(record)
        return self.inner.create(key, record, ttl)

    def patch(self, key, ops, ttl, max_size, loaded=None):  # type: ignore[no-untyped-def]
        self._count("patch")
        for op, _key, payload in ops:
            value = payload[MAC_SIZE:] if op == OP_SET else payload[2 * MAC_SIZE :]
            if op in (OP_SET, OP_SET_IF_MAC):
                self.app_pickles |= pickled_body(value)
        return self.inner.patch(key, ops, ttl, max_size, loaded)

    def touch(self, key, ttl):  # type: ignore[no-untyped-def]
        self._count("touch")
        return self.inner.touch(key, ttl)

    def delete(self, key):  # type: ignore[no-untyped-def]
        self._count("delete")
        return self.inner.delete(key)

    def take(self, key):  # type: ignore[no-untyped-def]
        self._count("take")
        return self.inner.take(key)

    def scan(self, prefix):  # type: ignore[no-untyped-def]
        return self.inner.scan(prefix)

    def info(self, key):  # type: ignore[no-untyped-def]
        return self.inner.info(key)


class MemoryStore(Store):
    """A dict-backed store with the filesystem store's merge rules (for fuzzing)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def load(self, key, ttl=None):  # type: ignore[no-untyped-def]
        return self.data.get(key)

    def create(self, key, record, ttl):  # type: ignore[no-untyped-def]
        if key in self.data:
            return False
        self.data[key] = record
        return True

    def patch(self, key, ops, ttl, max_size, loaded=None):  # type: ignore[no-untyped-def]
        try:
            entries = apply_ops(self.data.get(key), ops)
        except CorruptRecord:
            return CORRUPT
        if entries is None:
            return GONE
        if not entries:
            del self.data[key]
            return 0
        record = build(entries)
        if len(record) > max_size:
            return TOO_LARGE
        self.data[key] = record
        return len(entries)

    def touch(self, key, ttl):  # type: ignore[no-untyped-def]
        return key in self.data

    def delete(self, key):  # type: ignore[no-untyped-def]
        return self.data.pop(key, None) is not None

    def take(self, key):  # type: ignore[no-untyped-def]
        return self.data.pop(key, None)

    def scan(self, prefix):  # type: ignore[no-untyped-def]
        return iter([k for k in self.data if k.startswith(prefix)])

    def info(self, key):  # type: ignore[no-untyped-def]
        return EntryInfo(len(self.data[key]), TTL_MS) if key in self.data else None


# -- every way into the unpickler ---------------------------------------------------


class _PickleProxy:
    """Stands in for the ``pickle`` module inside the codec; spies on ``loads``."""

    def __init__(self, calls: list[bytes], real_loads: t.Callable[..., t.Any]) -> None:
        self._calls = calls
        self._real_loads = real_loads

    def loads(self, data: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        self._calls.append(bytes(data))
        return self._real_loads(data, *args, **kwargs)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(pickle, name)


class UnpickleSpy:
    """Record every input the codec hands to an unpickler, while active.

    Covers ``pickle.loads`` as the codec calls it (the codec's ``pickle`` name
    is replaced by a proxy; the global ``pickle.loads`` is wrapped too) and
    every construction of the allowlist unpickler (its file's bytes).
    """

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    @contextlib.contextmanager
    def active(self) -> t.Iterator[UnpickleSpy]:
        calls = self.calls
        real_loads = pickle.loads
        unpickler = pickle_codec._AllowlistUnpickler
        had_init = "__init__" in unpickler.__dict__
        old_init = unpickler.__dict__.get("__init__")
        old_module = pickle_codec.pickle

        def spy_loads(data: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
            calls.append(bytes(data))
            return real_loads(data, *args, **kwargs)

        def spy_init(self: t.Any, file: t.Any, *args: t.Any, **kwargs: t.Any) -> None:
            if not isinstance(file, io.BytesIO):
                raise AssertionError(
                    f"unpickler fed from {type(file).__name__}, not BytesIO"
                )
            calls.append(file.getvalue())
            pickle.Unpickler.__init__(self, file, *args, **kwargs)

        pickle_codec.pickle = _PickleProxy(calls, real_loads)  # type: ignore[assignment]
        pickle.loads = spy_loads
        unpickler.__init__ = spy_init  # type: ignore[method-assign]
        try:
            yield self
        finally:
            pickle_codec.pickle = old_module
            pickle.loads = real_loads
            if had_init:
                unpickler.__init__ = old_init  # type: ignore[method-assign]
            else:
                del unpickler.__init__

    def foreign(self, allowed: set[bytes]) -> list[bytes]:
        """Inputs that are not exactly a value the app stored."""
        return [data for data in self.calls if data not in allowed]


# -- record surgery -------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    number = shift = 0
    while pos < len(data) and shift <= 28:
        byte = data[pos]
        pos += 1
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, pos
        shift += 7
    return None


def parse_entries(record: bytes) -> list[tuple[bytes, bytes]] | None:
    """``[(key, mac+value)]`` in stored order (duplicates kept), or None."""
    if record[:1] != b"\x01":
        return None
    out, pos = [], 1
    while pos < len(record):
        got = _read_varint(record, pos)
        if got is None or got[0] > len(record) - got[1]:
            return None
        klen, pos = got
        key, pos = record[pos : pos + klen], pos + klen
        got = _read_varint(record, pos)
        if got is None or got[0] + MAC_SIZE > len(record) - got[1]:
            return None
        vlen, pos = got
        out.append((key, record[pos : pos + MAC_SIZE + vlen]))
        pos += MAC_SIZE + vlen
    return out


def varint(number: int, pad: int = 0) -> bytes:
    """``encode_varint``, optionally with ``pad`` redundant zero groups."""
    data = bytearray(encode_varint(number))
    for _ in range(pad):
        data[-1] |= 0x80
        data.append(0)
    return bytes(data)


def render(
    entries: list[tuple[bytes, bytes]],
    forged: dict[tuple[int, str], bytes] | None = None,
) -> bytes:
    """Rebuild a record; ``forged[(i, "k"|"v")]`` replaces a declared length."""
    forged = forged or {}
    parts = [b"\x01"]
    for i, (key, body) in enumerate(entries):
        parts.append(forged.get((i, "k"), encode_varint(len(key))))
        parts.append(key)
        parts.append(forged.get((i, "v"), encode_varint(max(len(body) - MAC_SIZE, 0))))
        parts.append(body)
    return b"".join(parts)


#: One edit: a tuple whose first item names it; integers are taken modulo the
#: current sizes, so any program applies to any record.
Edit = tuple[t.Any, ...]


def apply_program(
    record: bytes,
    structural: t.Sequence[Edit],
    byte_edits: t.Sequence[Edit],
    donor: bytes | None = None,
) -> bytes:
    """Apply structural edits (on entries) then byte edits (on the bytes)."""
    entries = parse_entries(record)
    donor_entries = parse_entries(donor) if donor else None
    forged: dict[tuple[int, str], bytes] = {}
    if entries is not None:
        for edit in structural:
            entries = _structural(entries, edit, donor_entries or [], forged)
        record = render(entries, forged)
    data = bytearray(record)
    for edit in byte_edits:
        data = _byte_edit(data, edit)
    return bytes(data)


def _structural(
    entries: list[tuple[bytes, bytes]],
    edit: Edit,
    donor: list[tuple[bytes, bytes]],
    forged: dict[tuple[int, str], bytes],
) -> list[tuple[bytes, bytes]]:
    kind, args = edit[0], edit[1:]
    entries = list(entries)
    n = len(entries)
    if kind == "donor" and donor:
        j, pos = args
        entries.insert(pos % (n + 1), donor[j % len(donor)])
        return entries
    if not n:
        return entries
    i = args[0] % n if args else 0
    key, body = entries[i]
    if kind == "drop":
        del entries[i]
    elif kind == "dup":
        entries.insert(args[1] % (n + 1), entries[i])
    elif kind == "move":
        entries.insert(args[1] % n, entries.pop(i))
    elif kind == "swap_bodies":
        j = args[1] % n
        entries[i], entries[j] = (key, entries[j][1]), (entries[j][0], body)
    elif kind == "rename":
        entries[i] = (args[1], body)
    elif kind == "mac":
        entries[i] = (key, args[1][:MAC_SIZE].ljust(MAC_SIZE, b"\0") + body[MAC_SIZE:])
    elif kind == "value":
        entries[i] = (key, body[:MAC_SIZE] + args[1])
    elif kind == "forge":
        which, number, pad = args[1:]
        forged[(i, which)] = varint(number, pad)
    return entries


def _byte_edit(data: bytearray, edit: Edit) -> bytearray:
    kind, args = edit[0], edit[1:]
    n = len(data)
    if kind == "extend":
        return data + args[0]
    if kind == "insert":
        pos = args[0] % (n + 1)
        return data[:pos] + args[1] + data[pos:]
    if kind == "truncate":
        return data[: args[0] % (n + 1)]
    if not n:
        return data
    pos = args[0] % n
    if kind == "flip":
        data[pos] ^= 1 << (args[1] % 8)
    elif kind == "set":
        data[pos] = args[1] % 256
    elif kind == "delete":
        del data[pos : pos + args[1]]
    return data
