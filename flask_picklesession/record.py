"""The stored format of one session, shared by every store.

A record is one version byte followed by entries::

    record := FORMAT_VERSION entry*
    entry  := varint(len(key)) key varint(len(value)) mac[16] value

``key`` is the UTF-8 session key, ``value`` an encoded value (see
:mod:`.codec`), and ``mac`` a keyed BLAKE2b-128 of
``sid || varint(len(key)) || key || value``. The MAC binds each value to its
session id and key, so an entry cannot be moved to another session or key,
and is checked before anything is decoded.

A key may appear more than once: the last entry wins, and an entry with an
empty value (a tombstone; never a real value, which starts with a tag byte)
deletes the key. So a save can be appended to the record instead of
rewriting it, which keeps the cost of a write proportional to what changed;
a rewrite (:func:`build` of :func:`apply_ops`) compacts the record again.
Tombstones carry no MAC: removing an entry needs no key, as dropping it from
the record would not either.

Entries are independent, so a store can merge a save into the current record
(set or delete single keys) without the keys: this is what keeps concurrent
requests from overwriting each other, and the Redis store does it in a Lua
script that follows :func:`apply_ops` exactly.

Making and checking the MACs is in :mod:`.sealing`.
"""

from __future__ import annotations

import typing as t

from .keys import MAC_SIZE

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

#: Version of this layout; a reader refuses records of any other version.
FORMAT_VERSION = 1
_HEADER = bytes([FORMAT_VERSION])

#: Patch operations, as sent to a store: set a key, set it only if its current
#: MAC is still the expected one (used to re-key an entry without overwriting a
#: concurrent change), delete a key.
OP_SET, OP_SET_IF_MAC, OP_DELETE = b"s", b"c", b"d"

#: One patch operation: (op, UTF-8 key, payload). The payload is ``mac+value``
#: for OP_SET, ``old_mac+mac+value`` for OP_SET_IF_MAC, empty for OP_DELETE.
Op = tuple[bytes, bytes, bytes]


class CorruptRecord(Exception):
    """A stored record does not follow this format."""


class Entry(t.NamedTuple):
    """One parsed entry: its MAC and encoded value."""

    mac: bytes
    value: bytes


#: Builds an Entry without the Python-level ``__new__`` of a NamedTuple.
new_tuple = tuple.__new__


def encode_varint(number: int) -> bytes:
    """Encode a non-negative integer in 7-bit groups, low group first."""
    if number < 0x80:
        return bytes((number,))
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; return it and the position after it."""
    number = shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise CorruptRecord("truncated or oversized length")
        byte = data[pos]
        pos += 1
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, pos
        shift += 7


def spans(record: bytes) -> dict[bytes, tuple[int, int] | None]:
    """Map each key to ``(offset of its MAC, value length)``; None: a tombstone.

    Every declared length is checked against the bytes that are really there
    before anything is sliced, so a forged length cannot allocate memory. A
    later entry of a key replaces an earlier one but keeps its place, as a
    re-set key keeps it.
    """
    if record[:1] != _HEADER:
        raise CorruptRecord("unknown format version")
    spans: dict[bytes, tuple[int, int] | None] = {}
    pos, end = 1, len(record)
    while pos < end:
        key_len = record[pos]  # one-byte lengths are the common case
        if key_len < 0x80:
            pos += 1
        else:
            key_len, pos = read_varint(record, pos)
        if key_len > end - pos:
            raise CorruptRecord("key runs past the end")
        key, pos = record[pos : pos + key_len], pos + key_len
        value_len = record[pos] if pos < end else 0x80
        if value_len < 0x80:
            pos += 1
        else:
            value_len, pos = read_varint(record, pos)
        if value_len + MAC_SIZE > end - pos:
            raise CorruptRecord("value runs past the end")
        spans[key] = (pos, value_len) if value_len else None
        pos += MAC_SIZE + value_len
    return spans


def is_foreign(record: bytes) -> bool:
    """Whether a record was not written in this package's format at all:
    another library's session under the same key prefix, most often."""
    return record[:1] != _HEADER


def parse_raw(record: bytes) -> dict[bytes, bytes]:
    """Split a record into ``{key: mac+value}``, checking only the layout."""
    return {
        key: record[span[0] : span[0] + MAC_SIZE + span[1]]
        for key, span in spans(record).items()
        if span is not None
    }


#: The body of a tombstone: no MAC, no value.
TOMBSTONE = bytes(MAC_SIZE)


def appendix(ops: Sequence[Op]) -> bytes:
    """Entries that, appended to a record, apply ``ops`` (sets and deletes only)."""
    parts: list[bytes] = []
    for op, key, payload in ops:
        if op == OP_SET_IF_MAC:
            raise ValueError("a conditional set cannot be appended")
        body = payload if op == OP_SET else TOMBSTONE
        parts += (encode_varint(len(key)), key)
        parts += (encode_varint(len(body) - MAC_SIZE), body)
    return b"".join(parts)


def appended_entries(
    entries: Mapping[str, Entry], record: bytes, ops: Sequence[Op]
) -> dict[str, Entry] | None:
    """What :func:`.sealing.open_record` gives for ``record + appendix(ops)``, without
    parsing or checking anything, when it gave ``entries`` for ``record``.

    None when that cannot be told so: a key new to ``entries`` whose bytes
    occur anywhere in ``record`` may have a deleted entry there, which would
    give it that entry's place; so may a key that ``ops`` name twice.
    """
    after = dict(entries)
    named: set[bytes] = set()
    for op, key, payload in ops:
        if key in named:
            return None
        named.add(key)
        name = key.decode()
        if op == OP_DELETE:
            after.pop(name, None)
            continue
        if op != OP_SET:
            raise ValueError("a conditional set cannot be appended")
        if name not in after and key in record:
            return None
        after[name] = new_tuple(Entry, (payload[:MAC_SIZE], payload[MAC_SIZE:]))
    return after


def build(entries: Mapping[bytes, bytes]) -> bytes:
    """Join ``{key: mac+value}`` into a record; the inverse of :func:`parse_raw`."""
    parts = [_HEADER]
    for key, body in entries.items():
        parts += (encode_varint(len(key)), key)
        parts += (encode_varint(len(body) - MAC_SIZE), body)
    return b"".join(parts)


def apply_ops(record: bytes | None, ops: Sequence[Op]) -> dict[bytes, bytes] | None:
    """Merge patch operations into a record; None when there is no record.

    The Redis store's Lua script implements the same rules.
    """
    if record is None:
        return None
    entries = parse_raw(record)
    for op, key, payload in ops:
        if op == OP_SET:
            entries[key] = payload
        elif op == OP_DELETE:
            entries.pop(key, None)
        elif key in entries and entries[key][:MAC_SIZE] == payload[:MAC_SIZE]:
            entries[key] = payload[MAC_SIZE:]
    return entries


def varint_size(number: int) -> int:
    """Length of :func:`encode_varint`'s output, without building it."""
    return (number.bit_length() + 6) // 7 or 1


def piece_size(key: bytes, body_len: int) -> int:
    """Bytes that a ``key`` with ``body_len`` bytes of MAC+value takes in a record."""
    key_len, value_len = len(key), body_len - MAC_SIZE
    # One-byte lengths, the common case, without a call: sizing is per write.
    key_head = 1 if key_len < 0x80 else varint_size(key_len)
    value_head = 1 if value_len < 0x80 else varint_size(value_len)
    return key_head + key_len + value_head + body_len


def record_size(entries: Iterable[tuple[bytes, bytes]]) -> int:
    """Size :func:`build` would produce for ``(key, mac+value)`` pairs."""
    size = len(_HEADER)
    for key, body in entries:
        size += piece_size(key, len(body))
    return size
