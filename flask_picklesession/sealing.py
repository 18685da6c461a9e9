"""Sealing entries with their MAC, and opening a record by checking every MAC.

An entry's MAC is a keyed BLAKE2b-128 of ``sid || varint(len(key)) || key
|| value`` (see :mod:`.record`). Apart from the byte format because only
this needs the keys: stores merge and compact records without them, but
making or checking a MAC takes the session's key ring.
"""

from __future__ import annotations

import typing as t

from .keys import MAC_SIZE, which_key
from .record import OP_SET_IF_MAC, CorruptRecord, Entry, encode_varint, new_tuple, spans

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from .keys import KeyRing
    from .record import Op


def _mac_message(sid: bytes, key: bytes, value: bytes) -> bytes:
    return b"".join((sid, encode_varint(len(key)), key, value))


def seal(ring: KeyRing, sid: str, key: bytes, value: bytes) -> bytes:
    """Return ``mac+value`` for ``value`` stored under ``key`` of session ``sid``."""
    return ring.mac(_mac_message(sid.encode("ascii"), key, value)) + value


def rekey_ops(
    ring: KeyRing, sid: str, entries: Mapping[str, Entry], stale: Iterable[str]
) -> list[Op]:
    """Conditional re-MAC operations for the entries MACed by a fallback key.

    Each applies only if the entry still has the MAC that was read, so a
    request that changed it meanwhile wins.
    """
    ops: list[Op] = []
    for name in sorted(stale):
        entry, key = entries[name], name.encode("utf-8")
        ops.append((OP_SET_IF_MAC, key, entry.mac + seal(ring, sid, key, entry.value)))
    return ops


def open_entries(
    ring: KeyRing, sid: str, raw: Mapping[bytes, bytes]
) -> tuple[dict[str, Entry], set[str]]:
    """Check every entry's MAC; return ``(entries, keys MACed by a fallback key)``.

    Raises :class:`CorruptRecord` on the first entry no key verifies: a record
    with one forged entry is not trusted at all.
    """
    split = ((k, body[:MAC_SIZE], body[MAC_SIZE:]) for k, body in raw.items())
    return _open(ring, sid, split)


def open_record(
    ring: KeyRing, sid: str, record: bytes
) -> tuple[dict[str, Entry], set[str]]:
    """:func:`open_entries` of :func:`.record.parse_raw`, in one pass: a load's path.

    Slices each MAC and value once, straight from the record.
    """
    return _open(ring, sid, _split(record))


def _split(record: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """``(key, mac, value)`` of each live entry, sliced from the record."""
    for key, span in spans(record).items():
        if span is not None:
            start, value_len = span
            mid = start + MAC_SIZE
            yield key, record[start:mid], record[mid : mid + value_len]


def _open(
    ring: KeyRing, sid: str, split: Iterable[tuple[bytes, bytes, bytes]]
) -> tuple[dict[str, Entry], set[str]]:
    """Authenticate ``(key, mac, value)`` triples of session ``sid``.

    The session id is hashed once for all entries (:meth:`KeyRing.mac_states`).
    """
    states = ring.mac_states(sid.encode("ascii"))
    entries: dict[str, Entry] = {}
    stale: set[str] = set()
    for key, tag, value in split:
        used = which_key(states, encode_varint(len(key)) + key, value, tag)
        if used is None:
            raise CorruptRecord("an entry failed its MAC check")
        try:
            name = key.decode()
        except UnicodeDecodeError as exc:
            raise CorruptRecord("a key is not UTF-8") from exc
        # tuple.__new__ directly: a NamedTuple's own __new__ is Python code.
        entries[name] = new_tuple(Entry, (tag, value))
        if used:
            stale.add(name)
    return entries, stale
