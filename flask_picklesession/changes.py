"""What a request changed in its session, worked out once for the save.

Set and deleted keys are known as they happen; a change made inside a value
read from the store (``session["cart"].append(x)``) is not, so values read
are compared with what was stored, at a cost kept to what the request used.
"""

from __future__ import annotations

import typing as t

from .codec import IMMUTABLE_TYPES
from .compression import pack
from .errors import SerializationError

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from .record import Entry
    from .session import ServerSession


def pending_changes(session: ServerSession) -> tuple[dict[str, bytes], set[str]]:
    """What a save of ``session`` would write, worked out once per request.

    Asked before a subclass's ``should_set_cookie`` too, so that
    ``session.modified`` counts changes made inside values.
    """
    found = session._pending
    if found is None:
        found = session._pending = _changes(session)
    return found


def encode_key(key: object) -> bytes:
    if not isinstance(key, str):
        raise SerializationError(
            f"session keys must be str, not {type(key).__name__}: session[{key!r:.60}]"
        )
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(f"session key {key!r} is not valid text", key) from exc


def _changes(session: ServerSession) -> tuple[dict[str, bytes], set[str]]:
    """Return ``(encoded values to store, keys to delete)``.

    Values read from the store are checked for changes made inside them
    (``session["cart"].append(x)``), so those are saved too; values of
    immutable types are skipped, keeping the cost to what the request used.
    """
    codec = session._binding.codec
    entries = session._entries or {}
    sets: dict[str, bytes] = {}
    for key, value in session._values.items():
        if key in session._dirty or key not in entries:
            encode_key(key)  # keys read from the store are valid already
            sets[key] = codec.encode(key, value)
        elif session._forced:
            sets[key] = codec.encode(key, value)
        elif type(value) not in IMMUTABLE_TYPES:
            encoded = _changed_in_place(session, key, value)
            if encoded is not None:
                sets[key] = pack(encoded)
    return sets, set(session._deleted)


def _changed_in_place(session: ServerSession, key: str, value: t.Any) -> bytes | None:
    """The new encoding of a value read from the store, or None if unchanged.

    The codec's fingerprint, where it has one, settles "unchanged" without
    encoding. Otherwise the value is re-encoded: the same bytes mean no
    change. A list, dict, set or tuple whose length changed has changed,
    without decoding the old value (equal ones have equal lengths), so an
    append costs no second decode. Otherwise the stored value is decoded
    and encoded again to compare.
    """
    codec = session._binding.codec
    fingerprint = session._fingerprints.get(key)
    if fingerprint is not None and codec.fingerprint(value) == fingerprint:
        return None
    encoded = codec.encode_plain(key, value)
    stored = session._plain.get(key)
    if stored is None:
        stored = t.cast("Mapping[str, Entry]", session._entries)[key].value
    if encoded == stored:
        return None
    loaded = session._loaded_len.get(key)
    if loaded is not None and len(value) != loaded:
        return encoded
    return None if _encodes_as(session, key, stored, encoded) else encoded


def _encodes_as(
    session: ServerSession, key: str, stored: bytes, encoded: bytes
) -> bool:
    """Whether the stored value, decoded and encoded again, gives ``encoded``.

    An unchanged value can encode to other bytes than were stored: a set
    built by other steps, or in a process with another hash seed, iterates
    in another order. Decoded afresh, the stored bytes give the value as
    this request got it, which encodes as the value does if the request
    left it alone. ``==`` would not tell: an object without ``__eq__``
    equals only itself (a read-only request would then write it back over
    a concurrent change), and an ``__eq__`` that looks at some attributes
    would hide a change to the others.
    """
    codec = session._binding.codec
    try:
        return codec.encode_plain(key, codec.decode(stored)) == encoded
    except Exception:  # unreadable or no longer encodable: save the value
        return False
