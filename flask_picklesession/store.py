"""What every store does: keep records under keys, merge patches atomically.

A store knows nothing of sessions, keys or serializers. It keeps opaque
records (see :mod:`.record`) with an expiry, and applies patches so that
concurrent saves of one session merge key by key instead of overwriting each
other. All times are in milliseconds.
"""

from __future__ import annotations

import abc
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from .record import Op

#: :meth:`Store.patch` results below zero.
GONE = -1  #: the record is missing or expired: nothing was written
TOO_LARGE = -2  #: the merged record would exceed the size limit: nothing written
CORRUPT = -3  #: the stored record is unreadable: nothing was written


class EntryInfo(t.NamedTuple):
    """What :meth:`Store.info` tells about one stored record."""

    size: int
    #: Milliseconds until expiry.
    ttl: int


class Store(abc.ABC):
    """Base class of session stores; see :class:`FileSystemStore`, :class:`RedisStore`.

    Methods raise :class:`~flask_picklesession.StoreUnavailable` when the store
    cannot be reached or written, and
    :class:`~flask_picklesession.record.CorruptRecord` from :meth:`load` when
    what is stored under a key is not a record.
    """

    #: Whether expired records stay around until :meth:`cleanup` removes them.
    needs_cleanup: t.ClassVar[bool] = False
    #: Whether :meth:`patch` takes up every ``append_limit`` offer it can, by
    #: appending :func:`.record.appendix` of the ops while the record stays
    #: within the limit. The package then knows the bytes it stored, and
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
        append_limit: int = 0,
    ) -> int:
        """Merge ``ops`` into the record atomically and reset its expiry.

        Return the number of entries left (0: the record was deleted), or
        :data:`GONE`, :data:`TOO_LARGE` or :data:`CORRUPT`. A missing record is
        never created: a deleted session must stay deleted.

        With ``append_limit``, the caller allows the ops (sets and deletes
        only) to be appended to the record as long as it stays within that
        many bytes; a store may then return any positive number, and may
        ignore the offer and rewrite.
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
        """Yield the keys of live records that start with ``prefix``."""

    @abc.abstractmethod
    def info(self, key: str) -> EntryInfo | None:
        """Return size and remaining lifetime of a live record, or None."""

    def cleanup(self, keys: Iterable[str] | None = None) -> int:
        """Remove expired records, of ``keys`` only if given; return how many.

        Stores that expire by themselves have nothing to do.
        """
        return 0
