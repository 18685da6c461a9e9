"""The first bytes of stored values that several modules test.

A pickle must be told from anything else without decoding or inflating it:
strict JSON mode refuses one unread, and the allowlist checks one unloaded.
So the codecs and compression share these tags; the native forms' tags stay
in :mod:`.codec`. :class:`CorruptEntry` is here too, as compression raises
it as well as the codecs.
"""

from __future__ import annotations

PICKLE, JSON = b"p", b"j"
#: Compressed forms: ``P`` wraps a pickle, ``Z`` anything else, so that strict
#: JSON mode can refuse a pickle without decompressing it. The tag is
#: followed by the length before compression (a varint), then a zlib stream.
ZPICKLE, ZOTHER = b"P", b"Z"
#: First bytes of a compressed value.
COMPRESSED_TAGS = (ZPICKLE, ZOTHER)


class CorruptEntry(Exception):
    """An authenticated entry still cannot be decoded (or must not be)."""
