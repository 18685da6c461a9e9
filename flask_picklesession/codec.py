"""Turning one session value into bytes and back.

Each top-level session value is encoded on its own, so a request decodes only
the keys it reads. The first byte of an encoded value names its encoding:
common exact types (str, int, float, bytes, bool, None, and datetimes that
are naive or in UTC) have compact native forms that never involve pickle;
everything else is pickled (pickle mode) or written as Flask's tagged JSON
(strict JSON mode). Decoding happens only after the store layer has checked
the value's MAC.

This module holds what both codecs share: the base class, the native forms,
and the search for the part of a value that cannot be stored. The codecs
are in :mod:`.pickle_codec` and :mod:`.json_codec`, compression in
:mod:`.compression`.
"""

from __future__ import annotations

import datetime
import decimal
import struct
import typing as t
import uuid

from .compression import pack, unpack
from .tagged_json import load_json
from .tags import JSON, PICKLE, CorruptEntry

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from .record import Entry

_STR, _INT, _FLOAT, _BYTES = b"s", b"i", b"f", b"b"
_TRUE, _FALSE, _NONE = b"T", b"F", b"N"
#: How both codecs store ``True`` and ``False``: a flag can be read from an
#: entry without decoding it.
STORED_BOOLS = {_TRUE: True, _FALSE: False}
_DATETIME = b"t"
_PICKLE_TAG, _JSON_TAG = PICKLE[0], JSON[0]
_DOUBLE = struct.Struct(">d")
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


def describe(value: object) -> str:
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


def locate(
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


def raises(encode: t.Callable[[object], object]) -> t.Callable[[object], bool]:
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
                return load_json(data[1:].decode("utf-8"))
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
