"""What every store does: keep records under keys, merge patches atomically.

A store knows nothing of sessions, keys or serializers. It keeps opaque
records with an expiry, and applies patches so that concurrent saves of one
session merge key by key instead of overwriting each other. All times are in
milliseconds.

This module is public for anyone writing a store of their own: subclass
:class:`Store`, and let :func:`merge_record` work out what a patch stores.
Everything a store needs is importable from here.
"""

from __future__ import annotations

import abc
import typing as t

from .compression import serialized_size
from .record import (
    OP_DELETE,
    OP_SET,
    OP_SET_IF_MAC,
    CorruptRecord,
    Op,
    apply_ops,
    build,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

__all__ = [
    "CORRUPT",
    "GONE",
    "OP_DELETE",
    "OP_SET",
    "OP_SET_IF_MAC",
    "TOO_LARGE",
    "CorruptRecord",
    "EntryInfo",
    "Merged",
    "Op",
    "Store",
    "merge_record",
]

#: :meth:`Store.patch` results below zero.
GONE = -1  #: the record is missing or expired: nothing was written
TOO_LARGE = -2  #: the merged record would exceed the size limit: nothing written
CORRUPT = -3  #: the stored record is unreadable: nothing was written


class Merged(t.NamedTuple):
    """What a patch comes to: see :func:`merge_record`."""

    #: What :meth:`Store.patch` returns: entries left, or GONE, TOO_LARGE, CORRUPT.
    result: int
    #: The record to store when ``result`` is positive, else None.
    record: bytes | None


def merge_record(current: bytes | None, ops: Sequence[Op], max_size: int) -> Merged:
    """Merge patch ``ops`` into the ``current`` record (None: missing or expired).

    The whole of :meth:`Store.patch` but the reading and writing, which a
    store does around it under one lock or transaction: store ``record``
    when ``result`` is positive, delete the key when it is 0, write nothing
    otherwise. The size limit counts values before compression, as
    ``PICKLESESSION_MAX_SIZE`` does.
    """
    try:
        entries = apply_ops(current, ops)
    except CorruptRecord:
        return Merged(CORRUPT, None)
    if entries is None:
        return Merged(GONE, None)
    if not entries:
        return Merged(0, None)
    if serialized_size(entries) > max_size:
        return Merged(TOO_LARGE, None)
    return Merged(len(entries), build(entries))


def checked_record(store: Store, method: str, answer: object) -> bytes | None:
    """A store's ``load`` or ``take`` answer as bytes or None.

    A bytearray or memoryview (what some database drivers give for a
    binary column) is copied to bytes; anything else is a mistake in the
    store, said plainly rather than as a corrupt record later on.
    """
    if answer is None or type(answer) is bytes:
        return answer
    if isinstance(answer, (bytes, bytearray, memoryview)):
        return bytes(answer)
    raise _bad_answer(store, method, answer, "the record's bytes or None")


def checked_result(store: Store, method: str, answer: object) -> int:
    """A store's ``patch`` answer, which must be an int."""
    if type(answer) is int:
        return answer
    raise _bad_answer(store, method, answer, "an int")


def checked_created(store: Store, answer: object) -> bool:
    """A store's ``create`` answer: True, or False if the key is taken
    (any truthy or falsy value, as a driver's row count; None is a
    ``create`` that forgot to answer)."""
    if answer is None:
        raise _bad_answer(store, "create", answer, "True, or False if the key is taken")
    return bool(answer)


def _bad_answer(store: Store, method: str, answer: object, wanted: str) -> TypeError:
    return TypeError(
        f"{type(store).__name__}.{method}() returned {type(answer).__name__}"
        f" {answer!r:.60}; a store's {method}() returns {wanted}"
    )


class EntryInfo(t.NamedTuple):
    """What :meth:`Store.info` tells about one stored record."""

    size: int
    #: Milliseconds until expiry.
    ttl: int


class Store(abc.ABC):
    """Base class of session stores; see :class:`FileSystemStore`, :class:`RedisStore`.

    Methods raise :class:`~flask_picklesession.StoreUnavailable` when the store
    cannot be reached or written (wrap the driver's errors in it: apps catch
    that one), and :class:`CorruptRecord` from :meth:`load` when what is
    stored under a key is not a record. Records are ``bytes``; ttls and
    expiries are in milliseconds.
    """

    #: Whether expired records stay around until :meth:`cleanup` removes them.
    needs_cleanup: t.ClassVar[bool] = False
    #: Whether :meth:`patch` takes up every ``loaded`` offer it can, by
    #: appending :func:`.record.appendix` of the ops to the record when it
    #: is still the one loaded. The package then knows the bytes it stored, and
    #: remembers them as verified for the session's next request.
    appends: t.ClassVar[bool] = False

    @abc.abstractmethod
    def load(self, key: str, ttl: int | None = None) -> bytes | None:
        """Return the record under ``key``, or None if missing or expired.

        With ``ttl``, also reset the record's expiry to ``ttl`` from now, in
        the same operation and without rewriting the record.
        """

    @abc.abstractmethod
    def create(self, key: str, record: bytes, ttl: int) -> bool:
        """Store a new record; return False if ``key`` already holds one."""

    @abc.abstractmethod
    def patch(
        self,
        key: str,
        ops: Sequence[Op],
        ttl: int,
        max_size: int,
        loaded: bytes | None = None,
    ) -> int:
        """Merge ``ops`` into the record atomically and reset its expiry.

        Return the number of entries left (0: the record was deleted), or
        :data:`GONE`, :data:`TOO_LARGE` or :data:`CORRUPT`. A missing record is
        never created: a deleted session must stay deleted. ``max_size``
        counts values before compression: :func:`merge_record` does all of
        this given the current record.

        With ``loaded`` (the record as the caller read it), the caller allows
        the ops (sets and deletes only) to be appended, having checked that
        the result fits: only onto that same record, then, for a record
        another request changed meanwhile may be larger than the caller
        knows (compare at least its length and last bytes). A store may then
        return any positive number, and may ignore the offer and rewrite.
        """

    @abc.abstractmethod
    def touch(self, key: str, ttl: int) -> bool:
        """Reset the expiry of a live record; return False if there is none."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the record under ``key``; return False if there was none."""

    @abc.abstractmethod
    def take(self, key: str) -> bytes | None:
        """Remove the live record under ``key`` and return it, atomically.

        Used to move a session to a new id: whatever was merged into the old
        record until this moment moves along, and nothing can be merged into
        it afterwards.
        """

    @abc.abstractmethod
    def scan(self, prefix: str) -> Iterator[str]:
        """Yield the keys that start with ``prefix``.

        A store that keeps expired records (:attr:`needs_cleanup`) yields
        those too, so that :meth:`cleanup` can be given them; callers ask
        :meth:`info` or :meth:`load` whether a record is live.
        """

    @abc.abstractmethod
    def info(self, key: str) -> EntryInfo | None:
        """Return size and remaining lifetime of a live record, or None."""

    def cleanup(self, keys: Iterable[str] | None = None) -> int:
        """Remove expired records, of ``keys`` only if given; return how many.

        The ``cleanup`` command passes this app's session keys, as
        :meth:`scan` found them.

        Stores that expire by themselves have nothing to do.
        """
        return 0
