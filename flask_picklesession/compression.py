"""Compressing stored values, and the sizes a compressed value counts for.

Packing works on encoded bytes whatever the codec, so it stands apart from
the codecs. The size limit counts values as before compression, and reads
that size from a value's head without inflating it.
"""

from __future__ import annotations

import typing as t
import zlib

from .keys import MAC_SIZE
from .record import CorruptRecord, encode_varint, piece_size, read_varint
from .tags import COMPRESSED_TAGS, PICKLE, ZOTHER, ZPICKLE, CorruptEntry

if t.TYPE_CHECKING:
    from collections.abc import Mapping

#: Encoded values at least this long are compressed if that saves an eighth.
COMPRESS_FROM = 128
#: Largest value a compressed entry may expand to (bounds a hostile one).
MAX_PLAIN_SIZE = 64 * 1024 * 1024


def pack(plain: bytes) -> bytes:
    """The stored form of an encoded value: compressed when that pays."""
    if len(plain) < COMPRESS_FROM:
        return plain
    head = (ZPICKLE if plain[:1] == PICKLE else ZOTHER) + encode_varint(len(plain))
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
    if (plain[:1] == PICKLE) != (tag == ZPICKLE) or plain[:1] in COMPRESSED_TAGS:
        raise CorruptEntry("compressed value does not match its tag")
    return plain
