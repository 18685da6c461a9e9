"""Turning one session value into bytes and back.

Each top-level session value is encoded on its own, so a request decodes only
the keys it reads. The first byte of an encoded value names its encoding:
common exact types (str, int, float, bytes, bool, None, and datetimes that
are naive or in UTC) have compact native forms that never involve pickle;
everything else is pickled (pickle mode) or written as Flask's tagged JSON
(strict JSON mode). Decoding happens only after the store layer has checked
the value's MAC.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import hashlib
import importlib
import io
import json
import pickle
import struct
import types
import typing as t
import uuid
import zlib

from flask.json.tag import TaggedJSONSerializer

from .errors import SerializationError
from .keys import MAC_SIZE
from .pickle_guard import UnsafePickle, check_no_shared_object_changed
from .record import CorruptRecord, encode_varint, piece_size, read_varint

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from .record import Entry

_STR, _INT, _FLOAT, _BYTES = b"s", b"i", b"f", b"b"
_TRUE, _FALSE, _NONE = b"T", b"F", b"N"
#: How both codecs store ``True`` and ``False``: a flag can be read from an
#: entry without decoding it.
STORED_BOOLS = {_TRUE: True, _FALSE: False}
_DATETIME = b"t"
_PICKLE, _JSON = b"p", b"j"
_PICKLE_TAG, _JSON_TAG = _PICKLE[0], _JSON[0]
#: Compressed forms: ``P`` wraps a pickle, ``Z`` anything else, so that strict
#: JSON mode can refuse a pickle without decompressing it. The tag is
#: followed by the length before compression (a varint), then a zlib stream.
_ZPICKLE, _ZOTHER = b"P", b"Z"
#: First bytes of a compressed value.
COMPRESSED_TAGS = (_ZPICKLE, _ZOTHER)
#: Encoded values at least this long are compressed if that saves an eighth.
COMPRESS_FROM = 128
#: Largest value a compressed entry may expand to (bounds a hostile one).
MAX_PLAIN_SIZE = 64 * 1024 * 1024
_DOUBLE = struct.Struct(">d")
_PICKLE_PREFIX = pickle.PROTO + bytes([pickle.HIGHEST_PROTOCOL])
#: Values of these exact types cannot change in place, so a request that only
#: read them never needs to re-encode them to look for nested changes.
#: (Exact types only: a subclass may add mutable attributes.)
IMMUTABLE_TYPES = frozenset(
    {
        str,
        int,
        float,
        complex,
        bytes,
        bool,
        type(None),
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
        decimal.Decimal,
        uuid.UUID,
    }
)


class CorruptEntry(Exception):
    """An authenticated entry still cannot be decoded (or must not be)."""


def _encode_native(value: object) -> bytes | None:
    kind = type(value)
    if kind is str:
        return _STR + t.cast(str, value).encode("utf-8", "surrogatepass")
    if kind is int:
        try:
            return _INT + str(value).encode("ascii")
        except ValueError:  # more digits than int->str allows; pickle it
            return None
    if kind is bool:
        return _TRUE if value else _FALSE
    if value is None:
        return _NONE
    if kind is float:
        return _FLOAT + _DOUBLE.pack(t.cast(float, value))
    if kind is bytes:
        return _BYTES + t.cast(bytes, value)
    if kind is datetime.datetime:
        moment = t.cast(datetime.datetime, value)
        # ISO text keeps microseconds and the offset, a quarter of a pickle's
        # size; a named or non-UTC zone or a fold would not survive it.
        if moment.fold == 0 and moment.tzinfo in (None, datetime.timezone.utc):
            return _DATETIME + moment.isoformat().encode("ascii")
    return None


def _datetime(data: bytes) -> datetime.datetime:
    return datetime.datetime.fromisoformat(data[1:].decode("ascii"))


#: Decoders of the native forms, by tag byte; each takes the whole encoding.
_NATIVE_DECODERS: dict[int, t.Callable[[bytes], object]] = {
    _STR[0]: lambda data: data[1:].decode("utf-8", "surrogatepass"),
    _INT[0]: lambda data: int(data[1:]),
    _FLOAT[0]: lambda data: _DOUBLE.unpack(data[1:])[0],
    _BYTES[0]: lambda data: data[1:],
    _TRUE[0]: lambda data: True,
    _FALSE[0]: lambda data: False,
    _NONE[0]: lambda data: None,
    _DATETIME[0]: _datetime,
}


def pack(plain: bytes) -> bytes:
    """The stored form of an encoded value: compressed when that pays."""
    if len(plain) < COMPRESS_FROM:
        return plain
    head = (_ZPICKLE if plain[:1] == _PICKLE else _ZOTHER) + encode_varint(len(plain))
    packed = _deflate(plain)
    if len(head) + len(packed) > len(plain) - len(plain) // 8:
        return plain
    return head + packed


def serialized_size(entries: Mapping[bytes, bytes]) -> int:
    """Size of a record of ``{key: mac+value}`` with every value counted as
    before compression: what ``PICKLESESSION_MAX_SIZE`` limits."""
    return 1 + sum(
        piece_size(key, MAC_SIZE + plain_size(body[MAC_SIZE:]))
        for key, body in entries.items()
    )


def plain_size(data: bytes) -> int:
    """Length of a stored value before compression, without inflating it.

    What ``PICKLESESSION_MAX_SIZE`` counts: the serialized session, so that a
    value that compresses well is not let through for that.
    """
    if data[:1] not in COMPRESSED_TAGS:
        return len(data)
    try:
        return read_varint(data, 1)[0]
    except CorruptRecord:
        return len(data)  # unreadable; decoding it will say so


#: Small compressed values inflated recently, by their exact stored bytes:
#: a session read again and again holds the same bytes, and setting up zlib
#: costs more than decoding a small value. Emptied whenever it fills.
_inflated: dict[bytes, bytes] = {}
INFLATED_MEMO_SIZE = 512
#: Largest inflated value remembered (so at most 512 x 8 KiB in all).
INFLATED_MEMO_MAX = 8 * 1024


def _deflate(plain: bytes) -> bytes:
    """zlib at level 1, with a window and hash table sized to the value.

    zlib's defaults set up about 256 KiB of state per call, which a small
    value never uses; freeing that much lets the C heap give the pages back,
    so the next call faults them in again and costs ten times the
    compressing. A window as large as the value (512 bytes at least, 32 KiB
    at most) finds the same matches; any zlib reader accepts the stream,
    whose header names its window.
    """
    wbits = min(max(len(plain).bit_length(), 9), 15)
    packer = zlib.compressobj(1, zlib.DEFLATED, wbits, min(wbits - 6, 8))
    return packer.compress(plain) + packer.flush()


def unpack(data: bytes) -> bytes:
    """The encoded value inside a stored one (the same bytes if not compressed)."""
    tag = data[:1]
    if tag not in COMPRESSED_TAGS:
        return data
    if len(data) > INFLATED_MEMO_MAX:  # inflates to more still: never kept
        return _inflate(data, tag)
    plain = _inflated.get(data)
    if plain is None:
        plain = _inflate(data, tag)
        if len(plain) <= INFLATED_MEMO_MAX:
            if len(_inflated) >= INFLATED_MEMO_SIZE:
                _inflated.clear()
            _inflated[data] = plain
    return plain


def _inflate(data: bytes, tag: bytes) -> bytes:
    try:
        size, start = read_varint(data, 1)
    except CorruptRecord as exc:
        raise CorruptEntry(f"compressed value has no length: {exc}") from exc
    if not 0 < size <= MAX_PLAIN_SIZE:
        raise CorruptEntry(f"compressed value claims {size} bytes")
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(data[start:], size)
    except zlib.error as exc:
        raise CorruptEntry(f"bad compressed value: {exc}") from exc
    if inflater.unconsumed_tail or not inflater.eof or len(plain) != size:
        raise CorruptEntry("compressed value is truncated or not the size it claims")
    if (plain[:1] == _PICKLE) != (tag == _ZPICKLE) or plain[:1] in COMPRESSED_TAGS:
        raise CorruptEntry("compressed value does not match its tag")
    return plain


def _describe(value: object) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _parts(
    value: object, into: t.Callable[[object], bool]
) -> Iterator[tuple[str, object]]:
    """``(path, part)`` of what a value is made of, for error messages;
    the attributes of an object too if ``into(object)``."""
    if isinstance(value, dict):
        for k, v in list(value.items()):
            yield f"[{k!r}]", v
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield f"[{i}]", v
    elif isinstance(value, (set, frozenset)):
        for v in list(value):
            yield " (in a set)", v
    elif into(value):
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict):
            for name, v in list(attributes.items()):
                yield f".{name}", v


def _locate(
    value: object,
    fails: t.Callable[[object], bool],
    into: t.Callable[[object], bool] = lambda _: True,
) -> tuple[str, object]:
    """The path to, and the innermost part of ``value`` that ``fails`` alone.

    Only run once encoding has failed, so that the message can point at the
    lock inside the cart rather than at the cart. Pickle stores an object's
    attributes, so the culprit may be one of them, but only if the object
    itself can be stored (``into``): JSON stores no object at all.
    """
    path = ""
    for _ in range(50):  # deep enough for any session; cycles end here too
        for sub_path, part in _parts(value, into):
            if fails(part):
                path, value = path + sub_path, part
                break
        else:
            break
    return path, value


def _raises(encode: t.Callable[[object], object]) -> t.Callable[[object], bool]:
    def fails(part: object) -> bool:
        try:
            encode(part)
        except Exception:
            return True
        return False

    return fails


class Codec:
    """Base of the two serializers; subclasses encode what natives cannot."""

    #: Name used in ``PICKLESESSION_SERIALIZER``.
    name: t.ClassVar[str]

    def encode(self, key: str, value: object) -> bytes:
        """Encode one value as stored; a :class:`SerializationError` names ``key``."""
        return pack(self.encode_plain(key, value))

    def encode_plain(self, key: str, value: object) -> bytes:
        """Encode one value, uncompressed (what change detection compares)."""
        native = _encode_native(value)
        return native if native is not None else self._encode_other(key, value)

    def decode(self, data: bytes) -> object:
        """Decode bytes made by :meth:`encode`; raise :class:`CorruptEntry`."""
        return self.decode_plain(unpack(data))

    def decode_plain(self, data: bytes) -> object:
        """Decode bytes made by :meth:`encode_plain`."""
        if not data:
            raise CorruptEntry("empty value")
        tag = data[0]
        try:
            if tag == _PICKLE_TAG:
                return self._load_pickle(data[1:])
            native = _NATIVE_DECODERS.get(tag)
            if native is not None:
                return native(data)
            if tag == _JSON_TAG:
                return _load_json(data[1:].decode("utf-8"))
        except CorruptEntry:
            raise
        except Exception as exc:  # any failure of a decoder means a bad entry
            raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc
        raise CorruptEntry(f"unknown value tag {data[:1]!r}")

    def check(self, entries: Iterable[Entry]) -> None:
        """Refuse, before any decoding, a record this codec must never decode."""

    def fingerprint(self, value: object) -> bytes | None:
        """An exact summary of a decoded value, made again at save to tell
        whether it changed in place; None when re-encoding is cheap enough.
        """
        return None

    def _encode_other(self, key: str, value: object) -> bytes:
        raise NotImplementedError

    def _load_pickle(self, body: bytes) -> object:
        raise CorruptEntry("pickled value refused in strict JSON mode")


_JSON_TAGGER = TaggedJSONSerializer()
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _load_json(text: str) -> object:
    """Flask's tagged JSON ``loads``, skipping the per-object hook when no
    object can be a tag: a tag is a one-key object whose key starts with a
    space, which only shows in the text as ``{" `` (inside a JSON string a
    quote is escaped)."""
    if '{" ' not in text:
        return json.loads(text)
    return _JSON_TAGGER.loads(text)


def _tag(value: object) -> object:
    """Flask's ``TaggedJSONSerializer.tag``, with a fast path for plain JSON.

    Lists and dicts of plain JSON values are walked here; everything else
    (tuples, bytes, Markup, UUID, datetimes, a one-key dict whose key could
    pass for a tag) goes to Flask's tagger, so the output is the same.
    """
    kind = type(value)
    if kind in _JSON_SCALARS:
        return value
    # Scalars are tested inline: most items of a session's lists and dicts
    # are scalars, and a call per item would double the cost.
    scalars = _JSON_SCALARS
    if kind is list:
        items = t.cast("list[object]", value)
        return [v if type(v) in scalars else _tag(v) for v in items]
    if kind is dict and len(t.cast("dict[object, object]", value)) != 1:
        pairs = t.cast("dict[object, object]", value).items()
        return {k: v if type(v) in scalars else _tag(v) for k, v in pairs}
    return _JSON_TAGGER.tag(value)


def _json_text(value: object) -> str:
    """Strict mode's JSON for one value, as Flask's tagged serializer writes it."""
    return json.dumps(_tag(value), separators=(",", ":"))


class JSONCodec(Codec):
    """Strict mode: Flask's tagged JSON types only; nothing is ever unpickled."""

    name = "json"

    def check(self, entries: Iterable[Entry]) -> None:
        if any(entry.value[:1] in (_PICKLE, _ZPICKLE) for entry in entries):
            raise CorruptRecord("a pickled entry is refused in strict JSON mode")

    def fingerprint(self, value: object) -> bytes | None:
        """The value's pickle, compared and never loaded.

        Tagging and writing JSON runs in Python and costs ten times as much;
        a pickle tells as exactly whether anything changed, types included
        (``True`` for ``1``, a tuple for a list, Markup for str).
        """
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an unpicklable object put in: compare by JSON
            return None

    def _encode_other(self, key: str, value: object) -> bytes:
        try:
            text = _json_text(value)
        except (TypeError, ValueError, RecursionError) as exc:
            path, part = _locate(value, _raises(_json_text), lambda _: False)
            raise SerializationError(
                f"session[{key!r}]{path} holds a {_describe(part)}, which strict"
                f" JSON mode cannot store ({exc}); store JSON types, tuples, bytes,"
                " Markup, UUID or datetime, or use PICKLESESSION_SERIALIZER ="
                " 'pickle'",
                key,
            ) from exc
        return _JSON + text.encode("utf-8")


#: Pickles remembered as passed by the guard; about 50 bytes each.
_GUARDED_DIGESTS = 4096


def _refuse_unlisted(allowed: frozenset[str], module: str, name: str) -> None:
    if f"{module}.{name}" not in allowed:
        raise CorruptEntry(
            f"global {module}.{name} is not in PICKLESESSION_PICKLE_ALLOWLIST"
        )


def _find_listed(allowed: frozenset[str], module: str, name: str) -> object:
    """The global an allowlist unpickler would load, found the same way."""
    _refuse_unlisted(allowed, module, name)
    found: object = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


class _AllowlistUnpickler(pickle.Unpickler):
    allowed: frozenset[str] = frozenset()

    def find_class(self, module: str, name: str) -> t.Any:
        _refuse_unlisted(self.allowed, module, name)
        return super().find_class(module, name)


class _NotAllowed(Exception):
    """A global the allowlist does not list; carries its ``module.Name``."""


def _global_name(obj: t.Any) -> str | None:
    """``module.Name`` of an object pickle stores by reference, else None."""
    if isinstance(obj, (type, types.FunctionType)):
        name = obj.__qualname__
    elif isinstance(obj, types.BuiltinFunctionType) and isinstance(
        obj.__self__, types.ModuleType
    ):
        name = obj.__name__
    else:
        return None  # reduced to a callable and arguments, each seen in turn
    module = getattr(obj, "__module__", None)
    return f"{module}.{name}" if module else None  # else: checked on loading


class _AllowlistPickler(pickle.Pickler):
    """Refuses, while pickling, a global the unpickler would refuse to load.

    Pickle calls ``reducer_override`` for every object but the plain
    builtins (str, int, list, dict...), so sessions of plain data pay
    nothing for the check.
    """

    allowed: frozenset[str] = frozenset()

    def reducer_override(self, obj: t.Any) -> t.Any:
        name = _global_name(obj)
        if name is not None and name not in self.allowed:
            raise _NotAllowed(name)
        return NotImplemented


class PickleCodec(Codec):
    """Pickle mode: any picklable value, at the highest protocol."""

    name = "pickle"

    def __init__(self, allowlist: Iterable[str] | None = None) -> None:
        self._unpickler: type[_AllowlistUnpickler] | None = None
        self._pickler: type[_AllowlistPickler] | None = None
        #: Digests of pickles the guard passed, so each is walked once.
        self._guarded: set[bytes] = set()
        if allowlist is not None:
            names = frozenset(allowlist)
            self._unpickler = type(
                "_Unpickler", (_AllowlistUnpickler,), {"allowed": names}
            )
            self._pickler = type("_Pickler", (_AllowlistPickler,), {"allowed": names})

    def _dumps(self, value: object) -> bytes:
        if self._pickler is None:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        out = io.BytesIO()
        self._pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        return out.getvalue()

    def _encode_other(self, key: str, value: object) -> bytes:
        try:
            data = self._dumps(value)
        except _NotAllowed as exc:
            # Stored, it could never be read back: refuse it now, by name.
            allowed = t.cast(type[_AllowlistPickler], self._pickler).allowed
            path, _ = _locate(
                value,
                _raises(self._dumps),
                lambda part: _global_name(type(part)) in allowed,
            )
            raise SerializationError(
                f"session[{key!r}]{path} holds a {exc}, which"
                " PICKLESESSION_PICKLE_ALLOWLIST does not list, so it could not"
                f" be loaded again; add {str(exc)!r} to the allowlist or store"
                " something else",
                key,
            ) from None
        except Exception as exc:  # pickle raises TypeError, AttributeError, ...
            path, part = _locate(value, _raises(self._dumps))
            raise SerializationError(
                f"session[{key!r}]{path} holds a {_describe(part)}, which cannot be"
                f" pickled ({type(exc).__name__}: {exc}); store plain data: open"
                " files, sockets, locks, connections, lambdas and classes defined"
                " inside functions cannot be pickled",
                key,
            ) from exc
        body = _strip_pickle_header(data)
        if self._pickler is not None:
            # Pickled here from live objects: loading it changes nothing
            # shared, so this process need not walk it when reading it back.
            self._remember_guarded(_guard_digest(body))
        return _PICKLE + body

    def check(self, entries: Iterable[Entry]) -> None:
        """Under an allowlist, refuse the whole record if any pickled value
        names a global the allowlist does not list (or no longer loads).

        Values are otherwise decoded one key at a time, when read; a
        refused one would then empty the session only for the requests that
        read it, while the others went on merging into the record. Each
        value's globals are looked up through the allowlist by the guard's
        walk, nothing is unpickled, and a value walked once in this process
        is not walked again.
        """
        unpickler = self._unpickler
        if unpickler is None:
            return
        for entry in entries:
            if entry.value[:1] in (_PICKLE, _ZPICKLE):
                try:
                    self._guard(unpack(entry.value)[1:], unpickler)
                except Exception as exc:  # refused, unreadable, or gone
                    raise CorruptRecord(f"{type(exc).__name__}: {exc}") from None

    def _load_pickle(self, body: bytes) -> object:
        unpickler = self._unpickler
        if unpickler is None:
            return pickle.loads(body, fix_imports=False)
        self._guard(body, unpickler)
        return unpickler(io.BytesIO(body), fix_imports=False).load()

    def _guard(self, body: bytes, unpickler: type[_AllowlistUnpickler]) -> None:
        """Refuse a pickle that would change an allowed global, or an
        existing object reached through one, as it loads."""
        digest = _guard_digest(body)
        if digest in self._guarded:
            return
        resolve = functools.partial(_find_listed, unpickler.allowed)
        try:
            check_no_shared_object_changed(body, resolve)
        except UnsafePickle as exc:
            raise CorruptEntry(
                f"{exc}; PICKLESESSION_PICKLE_ALLOWLIST refuses it"
            ) from None
        self._remember_guarded(digest)

    def _remember_guarded(self, digest: bytes) -> None:
        if len(self._guarded) >= _GUARDED_DIGESTS:
            self._guarded.clear()
        self._guarded.add(digest)


def _guard_digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


def _strip_pickle_header(data: bytes) -> bytes:
    """Drop the PROTO and FRAME opcodes, which the unpickler does not need.

    Saves 11 bytes per stored value; decoding reads the opcodes that remain.
    """
    if data.startswith(_PICKLE_PREFIX):
        data = data[2:]
        if data[:1] == pickle.FRAME:
            data = data[9:]
    return data


def make_codec(name: str, allowlist: Iterable[str] | None = None) -> Codec:
    """Return the codec for a ``PICKLESESSION_SERIALIZER`` value."""
    if name == "pickle":
        return PickleCodec(allowlist)
    if name == "json":
        return JSONCodec()
    raise ValueError(name)
