"""Remembering what was already verified, so a repeat request skips the work.

A user's requests bring the same cookie again and again, and a session that
is only read comes back from the store byte for byte the same. Verifying a
cookie and the MACs of a record are pure functions of the key ring and those
exact bytes, so their results are kept in small LRU caches keyed by the key
ring and the full bytes: a hit is an exact match with something that passed
every check, never a guess from a hash. A new key ring (keys changed or
rotated) starts over, as it is part of the key. Failures are not kept. A
record this process wrote is put in as it is written: its entries are ones
the process sealed or verified itself.

Cached results are shared between requests, so they are frozen: entries
come as a read-only mapping and the stale keys as a frozenset; only the
sizes a save works out are added to them, once.
"""

from __future__ import annotations

import functools
import types
import typing as t
from collections import OrderedDict

from .cookie import read_cookie
from .sealing import open_record

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from .cookie import CookieRef
    from .keys import KeyRing
    from .record import Entry

#: Verified cookies kept per process (a cookie value is at most 160 bytes).
COOKIE_CACHE_SIZE = 1024
#: Verified records kept per process, and the largest record kept: at most
#: 256 x 16 KiB. Larger records cost far more to decode than to verify.
RECORD_CACHE_SIZE = 256
RECORD_CACHE_MAX_BYTES = 16 * 1024


class _Failed(Exception):
    """Carries a failed verification out of the cache, which keeps only successes."""


@functools.lru_cache(maxsize=COOKIE_CACHE_SIZE)
def _cookie(ring: KeyRing, value: str) -> CookieRef:
    ref = read_cookie(ring, value)
    if ref is None:
        raise _Failed
    return ref


def verified_cookie(ring: KeyRing, value: str | None) -> CookieRef | None:
    """:func:`.cookie.read_cookie`, remembering the cookies that verified."""
    if not value:
        return None
    try:
        return _cookie(ring, value)
    except _Failed:
        return None


#: ``(stored bytes, serialized bytes, {key: (stored, serialized)})`` of a
#: record's live entries, as a save measures them (see :mod:`.sizes`).
Sizes = tuple[int, int, dict[str, tuple[int, int]]]


class VerifiedRecord:
    """A record's entries that passed their MAC checks, shared by requests.

    ``sizes`` is worked out by the first save that needs it and kept here,
    so writes to a remembered record measure only what they change.
    """

    __slots__ = ("checked_by", "entries", "sizes", "stale")

    def __init__(
        self,
        entries: Mapping[str, Entry],
        stale: frozenset[str],
        sizes: Sizes | None = None,
    ) -> None:
        self.entries = entries
        #: Keys whose MAC was made by a fallback key.
        self.stale = stale
        self.sizes = sizes
        #: The codec whose :meth:`~.codec.Codec.check` the entries passed.
        self.checked_by: object = None


#: Verified records, least recently used first, by ``(ring, sid, record)``.
#: An OrderedDict rather than ``lru_cache``, so that records this process
#: wrote itself can be put in (:func:`remember_record`).
_records: OrderedDict[tuple[KeyRing, str, bytes], VerifiedRecord] = OrderedDict()


def verified_record(ring: KeyRing, sid: str, record: bytes) -> VerifiedRecord:
    """:func:`.sealing.open_record`, remembering small records that verified.

    Raises :class:`.record.CorruptRecord` as it does; those are not kept.
    """
    if len(record) > RECORD_CACHE_MAX_BYTES:
        entries, stale = open_record(ring, sid, record)
        return VerifiedRecord(entries, frozenset(stale))
    key = (ring, sid, record)
    found = _records.get(key)
    if found is None:
        entries, stale = open_record(ring, sid, record)
        found = VerifiedRecord(types.MappingProxyType(entries), frozenset(stale))
        _keep(key, found)
        return found
    try:  # noqa: SIM105 (contextlib.suppress costs more, on every hit)
        _records.move_to_end(key)
    except KeyError:  # another thread dropped it meanwhile
        pass
    return found


def remember_record(
    ring: KeyRing,
    sid: str,
    record: bytes,
    entries: dict[str, Entry],
    sizes: Sizes | None = None,
) -> None:
    """Remember a record this process has just stored, and what it holds.

    ``entries`` must be what :func:`.sealing.open_record` gives for these
    exact bytes, all MACed with the ring's current key: values the caller
    sealed itself, and entries it verified when it loaded the record. The
    next request of the session, often a redirect after the write, then
    finds the record verified, unless the store now holds other bytes.
    """
    if len(record) <= RECORD_CACHE_MAX_BYTES:
        remembered = VerifiedRecord(types.MappingProxyType(entries), frozenset(), sizes)
        _keep((ring, sid, record), remembered)


def _keep(key: tuple[KeyRing, str, bytes], value: VerifiedRecord) -> None:
    _records[key] = value
    while len(_records) > RECORD_CACHE_SIZE:
        try:
            _records.popitem(last=False)
        except KeyError:  # emptied by another thread
            break


def remembered_records() -> int:
    """How many verified records are remembered (for tests and tuning)."""
    return len(_records)


def forget() -> None:
    """Drop everything remembered (tests start from nothing)."""
    _cookie.cache_clear()
    _records.clear()
