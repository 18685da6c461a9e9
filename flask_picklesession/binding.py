"""What one request's session needs to reach its store: a small bundle."""

from __future__ import annotations

import logging
import typing as t

from .ids import short_hash
from .record import CorruptRecord, open_entries, parse_raw

if t.TYPE_CHECKING:
    from .codec import Codec
    from .cookie import CookieRef
    from .keys import KeyRing
    from .record import Entry
    from .store import Store

logger = logging.getLogger("flask_picklesession")


class Binding:
    """Store, codec, keys and timing of one request, fixed when it opens."""

    __slots__ = (
        "codec",
        "cookie",
        "max_size",
        "now",
        "prefix",
        "refresh",
        "refresh_due",
        "ring",
        "store",
        "ttl",
    )

    def __init__(
        self,
        *,
        store: Store,
        codec: Codec,
        ring: KeyRing,
        prefix: str,
        max_size: int,
        ttl: int,
        now: int,
        refresh: bool,
        cookie: CookieRef | None,
    ) -> None:
        self.store = store
        self.codec = codec
        self.ring = ring
        self.prefix = prefix
        self.max_size = max_size
        #: Lifetime of a stored entry, in ms.
        self.ttl = ttl
        #: Request time in ms since the epoch.
        self.now = now
        #: Flask would refresh a permanent cookie on this request.
        self.refresh = refresh
        self.cookie = cookie
        #: The stored expiry of this permanent session should be pushed back.
        self.refresh_due = bool(
            refresh
            and cookie is not None
            and cookie.permanent
            and now - cookie.stamp >= ttl // 100
        )

    def key(self, sid: str) -> str:
        """Store key of a session id."""
        return self.prefix + sid

    def load(self, sid: str) -> tuple[dict[str, Entry], set[str]] | None:
        """Read and authenticate a session; None if missing or not trustworthy.

        Refreshes the stored expiry in the same round trip when it is due.
        """
        ttl = self.ttl if self.refresh_due else None
        try:
            record = self.store.load(self.key(sid), ttl)
            if record is None:
                return None
            entries, stale = open_entries(self.ring, sid, parse_raw(record))
            self.codec.check(entries.values())
            return entries, stale
        except CorruptRecord as exc:
            warn_corrupt(sid, str(exc))
            return None


def warn_corrupt(sid: str, reason: str) -> None:
    """Log an untrusted or unreadable entry without revealing its id."""
    logger.warning(
        "ignoring stored session %s: %s; starting an empty session",
        short_hash(sid),
        reason,
    )
