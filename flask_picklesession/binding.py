"""What one request's session needs to reach its store, worked out lazily.

A request that never touches the session should cost next to nothing, so the
cookie is verified, the keys derived and the store reached only when
something asks for them. The clock and one flag are read up front: nearly
every request with a cookie needs them, and reading them costs less than
deferring.
"""

from __future__ import annotations

import logging
import time
import typing as t

from .cookie import peek_permanent_stamp
from .errors import ConfigurationError, StoreUnavailable
from .ids import short_hash
from .record import CorruptRecord
from .store import checked_record
from .verified import verified_cookie, verified_record

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from flask import Flask

    from .cookie import CookieRef
    from .keys import KeyRing
    from .record import Entry
    from .settings import Settings
    from .verified import VerifiedRecord

logger = logging.getLogger("flask_picklesession")

_T = t.TypeVar("_T")

#: The last ``PERMANENT_SESSION_LIFETIME`` value seen, its length and the
#: refresh interval in ms: the config value rarely changes, and converting
#: it is per request.
_last_lifetime: tuple[object, int, int] = (None, 0, 0)


class _once(t.Generic[_T]):
    """Compute an attribute on first use, then keep it in the instance.

    Like ``functools.cached_property`` without its per-access lock (Python
    < 3.12), which costs more than the values cached here.
    """

    def __init__(self, func: t.Callable[[t.Any], _T]) -> None:
        self.func = func
        self.name = func.__name__

    @t.overload
    def __get__(self, obj: None, owner: type) -> _once[_T]: ...
    @t.overload
    def __get__(self, obj: object, owner: type) -> _T: ...
    def __get__(self, obj: object | None, owner: type) -> _T | _once[_T]:
        if obj is None:
            return self
        value: _T = self.func(obj)
        obj.__dict__[self.name] = value
        return value


#: A minute, in ms: the expiry of a session in use is pushed back at least
#: this often (see :meth:`Binding.is_due`).
_LONGEST_REFRESH_INTERVAL = 60_000


def _lifetime_ms(app: Flask, lifetime: object) -> tuple[int, int]:
    """``PERMANENT_SESSION_LIFETIME`` and the refresh interval, in ms,
    remembered for the next request."""
    global _last_lifetime
    ttl = int(app.permanent_session_lifetime.total_seconds() * 1000)
    if ttl <= 0:
        raise ConfigurationError(
            f"PERMANENT_SESSION_LIFETIME must be positive, not {lifetime!r}"
        )
    interval = min(ttl // 100, _LONGEST_REFRESH_INTERVAL)
    _last_lifetime = (lifetime, ttl, interval)
    return ttl, interval


class Binding:
    """Store, codec, keys and timing of one request's session."""

    #: A load found the store unreachable (it timed out or refused the
    #: connection): a refresh at the end of the request would wait again.
    unreachable = False

    def __init__(self, app: Flask, settings: Settings, raw_cookie: str | None) -> None:
        self.app = app
        self.store = settings.store
        self.codec = settings.codec
        self.prefix = settings.key_prefix
        self.max_size = settings.max_size
        self._settings = settings
        #: The session cookie as the client sent it, not yet verified.
        self.raw_cookie = raw_cookie
        #: The record as loaded and verified (appended saves make it grow).
        self.loaded_record = b""
        #: What verifying it gave, or None before a load.
        self.loaded: VerifiedRecord | None = None
        config = app.config
        # Read now, not on first use: almost every request with a cookie
        # needs these, and a lazy attribute costs more than reading them.
        #: Flask would refresh a permanent cookie on this request.
        self.refresh = bool(config["SESSION_REFRESH_EACH_REQUEST"])
        #: Time of this request's store-related decisions, in ms since the epoch.
        self.now = time.time_ns() // 1_000_000
        lifetime = config["PERMANENT_SESSION_LIFETIME"]
        last = _last_lifetime
        #: Lifetime of a stored entry, in ms (``PERMANENT_SESSION_LIFETIME``),
        #: and the longest time between pushes of a session in use's expiry
        #: (1% of it, at most a minute: see :meth:`is_due`).
        self.ttl, self.refresh_interval = (
            last[1:] if last[0] is lifetime else _lifetime_ms(app, lifetime)
        )

    @_once
    def ring(self) -> KeyRing:
        config = self.app.config
        return self._settings.keyring(
            config["SECRET_KEY"], config.get("SECRET_KEY_FALLBACKS")
        )

    @_once
    def cookie(self) -> CookieRef | None:
        """The verified cookie, or None if absent, not trustworthy or too old.

        Too old: its stamp (when the stored expiry was last set) is further
        back than the lifetime, give or take the refresh interval by which a
        stamp may lag. The stored entry may still live, set under a longer
        lifetime; as Flask's own cookie sessions do, a shortened lifetime
        applies at once.
        """
        cookie = verified_cookie(self.ring, self.raw_cookie)
        if (
            cookie is not None
            and self.now - cookie.stamp > self.ttl + self.refresh_interval
        ):
            return None
        return cookie

    @_once
    def refresh_due(self) -> bool:
        """The stored expiry of this permanent session should be pushed back.

        Due once the refresh interval (1% of the lifetime, at most a minute)
        has passed since it was last set, so a busy session refreshes rarely
        and never loses more than that interval.
        """
        cookie = self.cookie
        return bool(
            self.refresh
            and cookie is not None
            and cookie.permanent
            and self.is_due(cookie.stamp)
        )

    def is_due(self, stamp: int) -> bool:
        """Time to push the expiry set at ``stamp`` back: once 1% of the
        lifetime has passed, or a minute, whichever is shorter.

        The minute covers a lifetime made over 100 times longer: entries set
        under the old one would otherwise expire before a refresh fell due,
        and sign out users in the middle of reading.
        """
        return self.now - stamp >= self.refresh_interval

    def cookie_may_change(self) -> bool:
        """Could the cookie need re-sending although the session was not used?

        A permanent cookie under ``SESSION_REFRESH_EACH_REQUEST`` is re-sent
        on every response, as Flask does, and one signed with a fallback key
        during a rotation is re-signed. The flag is peeked at unverified: a
        false one only leads to verifying.
        """
        if self.raw_cookie is None:
            return False
        if self.app.config.get("SECRET_KEY_FALLBACKS"):
            return True
        return self.refreshed_stamp is not None

    @_once
    def refreshed_stamp(self) -> int | None:
        """Stamp of a cookie Flask would refresh on every response, unverified.

        Such a response varies with the cookie, even when the cookie then
        fails to verify and nothing is re-sent.
        """
        if self.raw_cookie is None or not self.refresh:
            return None
        return peek_permanent_stamp(self.raw_cookie)

    def key(self, sid: str) -> str:
        """Store key of a session id."""
        return self.prefix + sid

    def load(self, sid: str) -> tuple[Mapping[str, Entry], frozenset[str]] | None:
        """Read and authenticate a session; None if missing or not trustworthy.

        Refreshes the stored expiry in the same round trip when it is due.
        A store that reads but refuses the refresh (Redis refusing writes, a
        read-only folder, a session file with other hard links) is read
        without it: the view gets its session, and the cookie keeps the
        stamp of the expiry the store still has.
        """
        try:
            record = self._read(sid)
            if record is None:
                return None
            verified = verified_record(self.ring, sid, record)
            if verified.checked_by is not self.codec:
                self.codec.check(verified.entries.values())
                verified.checked_by = self.codec
            self.loaded_record = record
            self.loaded = verified
            return verified.entries, verified.stale
        except CorruptRecord as exc:
            warn_corrupt(sid, str(exc))
            return None
        except StoreUnavailable as exc:
            self.unreachable = not exc.reached
            raise

    def _read(self, sid: str) -> bytes | None:
        if not self.refresh_due:
            record = self.store.load(self.key(sid))
        else:
            try:
                record = self.store.load(self.key(sid), self.ttl)
            except StoreUnavailable as exc:
                if not exc.reached:
                    raise  # a plain read would time out as well
                record = self.store.load(self.key(sid))  # raises if reads fail too
                self.__dict__["refresh_due"] = False
                warn_refresh_failed(sid, exc)
        if record is None or type(record) is bytes:
            return record
        return checked_record(self.store, "load", record)


def warn_refresh_failed(sid: str, exc: StoreUnavailable) -> None:
    """Log an expiry refresh the store refused; the next request tries again."""
    logger.warning(
        "could not push back the expiry of session %s: %s", short_hash(sid), exc
    )


def warn_corrupt(sid: str, reason: str) -> None:
    """Log an untrusted or unreadable entry without revealing its id."""
    logger.warning(
        "ignoring stored session %s: %s; starting an empty session",
        short_hash(sid),
        reason,
    )
