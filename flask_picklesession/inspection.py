"""Inspecting one stored session for an operator: authenticated, then decoded.

Apart from the other operator tasks because it alone decodes values, for a
human to read, and so needs the codec and reports what it refuses; the
others count, delete or re-MAC records without decoding them.
"""

from __future__ import annotations

import typing as t

from .ids import short_hash
from .operator import OperatorError, Target, check_sid
from .record import CorruptRecord, parse_raw
from .sealing import open_entries
from .store import checked_record
from .tags import CorruptEntry

if t.TYPE_CHECKING:
    from .codec import Codec
    from .keys import KeyRing


class Value(t.NamedTuple):
    """One decoded entry of an inspected session."""

    key: str
    value: t.Any
    #: Why the value was not decoded, or None if it was.
    refused: str | None
    #: True if the entry is still MACed with a fallback key.
    stale: bool


class Inspection(t.NamedTuple):
    """An authenticated session, decoded key by key."""

    size: int
    ttl: int
    values: list[Value]


def inspect_session(target: Target, sid: str) -> Inspection:
    """Load, authenticate and decode one session.

    Nothing is decoded unless every entry passes its MAC check, as in a
    request; an entry the codec refuses (a pickle in strict JSON mode, a class
    outside the allowlist) is reported, never forced open.
    """
    check_sid(sid)
    key = target.key(sid)
    data: bytes | None = None
    try:
        info = target.store.info(key)
        data = checked_record(target.store, "load", target.store.load(key))
        if data is None or info is None:
            raise OperatorError(
                f"no session {short_hash(sid)} in the store (unknown or expired id)"
            )
        entries, stale = open_entries(target.ring, sid, parse_raw(data))
    except CorruptRecord as exc:
        failed = _failed_keys(target.ring, sid, data) if data else []
        detail = f" (keys: {', '.join(map(repr, failed))})" if failed else ""
        raise OperatorError(
            f"refusing session {short_hash(sid)}: {exc}{detail}; nothing was decoded"
        ) from exc
    values = [
        _decode(target.codec, name, entry.value, name in stale)
        for name, entry in entries.items()
    ]
    return Inspection(info.size, info.ttl, values)


def _failed_keys(ring: KeyRing, sid: str, data: bytes) -> list[str]:
    """Name the entries no key authenticates, to tell the operator what is wrong."""
    try:
        raw = parse_raw(data)
    except CorruptRecord:
        return []
    failed = []
    for key, body in raw.items():
        try:
            open_entries(ring, sid, {key: body})
        except CorruptRecord:
            failed.append(key.decode("utf-8", "backslashreplace"))
    return failed


def _decode(codec: Codec, name: str, value: bytes, stale: bool) -> Value:
    try:
        return Value(name, codec.decode(value), None, stale)
    except CorruptEntry as exc:
        return Value(name, None, str(exc), stale)
