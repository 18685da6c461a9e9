"""Operator tasks on an app's session store, without any command-line code.

The ``flask picklesession`` commands (:mod:`.cli`) are thin wrappers around
these functions, so the logic can be tested and reused from scripts. Every
function works one store key at a time, which lets a caller show progress and
lets a long run be interrupted without leaving anything half done.

Only keys made of the configured prefix and a well-formed session id are
treated as sessions: a prefix shared with other data in Redis must not lead
these tasks to read, rewrite or delete keys that are not ours.

Inspecting a session, the one task that decodes values, is in
:mod:`.inspection`.
"""

from __future__ import annotations

import dataclasses
import typing as t

from .errors import SessionError
from .ids import is_valid_sid, short_hash
from .interface import PickleSession
from .record import CorruptRecord, is_foreign, parse_raw
from .sealing import open_entries, rekey_ops
from .store import CORRUPT, GONE, TOO_LARGE, checked_record, checked_result

if t.TYPE_CHECKING:
    from flask import Flask

    from .codec import Codec
    from .keys import KeyRing
    from .store import Store


class OperatorError(SessionError):
    """An operator task cannot run; the message says why, for a human."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Everything a task needs about one app's sessions."""

    store: Store
    codec: Codec
    ring: KeyRing
    prefix: str
    max_size: int
    #: Lifetime given to a record that has none (never written by this package).
    default_ttl: int

    def key(self, sid: str) -> str:
        """Store key of a session id."""
        return self.prefix + sid

    def sid(self, key: str) -> str:
        """Session id of a store key."""
        return key[len(self.prefix) :]


def target_for(app: Flask) -> Target:
    """Read the app's session settings, as its requests would see them."""
    interface = app.session_interface
    if not isinstance(interface, PickleSession):
        kind = type(interface)
        raise OperatorError(
            f"app {app.name!r} does not use flask_picklesession: its session"
            f" interface is {kind.__module__}.{kind.__qualname__};"
            " install it with PickleSession(app)"
        )
    secret_key = app.config.get("SECRET_KEY")
    if not secret_key:
        raise OperatorError("SECRET_KEY is not set: stored sessions cannot be verified")
    settings = interface.settings_for(app)
    ring = settings.keyring(secret_key, app.config.get("SECRET_KEY_FALLBACKS"))
    ttl = int(app.permanent_session_lifetime.total_seconds() * 1000)
    return Target(
        settings.store,
        settings.codec,
        ring,
        settings.key_prefix,
        settings.max_size,
        ttl,
    )


def session_keys(target: Target) -> tuple[list[str], int]:
    """Return ``(session keys under the prefix, count of other keys skipped)``."""
    keys, others = [], 0
    for key in target.store.scan(target.prefix):
        if is_valid_sid(target.sid(key)):
            keys.append(key)
        else:
            others += 1
    return keys, others


def check_sid(sid: str) -> None:
    """Refuse anything that is not a session id before it reaches a store key."""
    if not is_valid_sid(sid):
        raise OperatorError(
            f"not a session id: {sid!r} (expected 43 characters of URL-safe base64,"
            " the part of the cookie before the first '.')"
        )


# -- stats ---------------------------------------------------------------------


@dataclasses.dataclass
class Stats:
    """Sizes and expiries of the stored sessions."""

    count: int = 0
    total_size: int = 0
    #: ``(size, short hash)`` of the largest session.
    largest: tuple[int, str] | None = None
    #: ``(remaining ms, short hash)`` of the session that expires first / last.
    first_expiry: tuple[int, str] | None = None
    last_expiry: tuple[int, str] | None = None
    #: Sessions stored without an expiry (Redis keys written by something else).
    no_expiry: int = 0
    #: Keys whose size and expiry cannot be read (not a record file, wrong type).
    unreadable: int = 0

    def add(self, key: str, size: int, ttl: int) -> None:
        """Count one session."""
        name = short_hash(key)
        self.count += 1
        self.total_size += size
        if self.largest is None or size > self.largest[0]:
            self.largest = (size, name)
        if ttl < 0:
            self.no_expiry += 1
            return
        if self.first_expiry is None or ttl < self.first_expiry[0]:
            self.first_expiry = (ttl, name)
        if self.last_expiry is None or ttl > self.last_expiry[0]:
            self.last_expiry = (ttl, name)


def add_stats(target: Target, stats: Stats, key: str) -> None:
    """Add one session to ``stats``; one that expired meanwhile is not counted."""
    try:
        info = target.store.info(key)
    except CorruptRecord:
        stats.unreadable += 1
        return
    if info is not None:
        stats.add(target.sid(key), info.size, info.ttl)


# -- delete and clear ------------------------------------------------------------


def delete_session(target: Target, sid: str) -> None:
    """Delete one session; an unknown id is an error, to catch typos."""
    check_sid(sid)
    key = target.key(sid)
    try:
        exists = target.store.info(key) is not None
    except CorruptRecord:
        exists = True  # there but unreadable: deleting it is the fix
    if not exists:
        raise OperatorError(
            f"no session {short_hash(sid)} in the store (unknown or expired id)"
        )
    if not target.store.delete(key) and still_there(target, key):
        raise OperatorError(
            f"session {short_hash(sid)} is not a regular file, and the store"
            " never removes such an entry itself: remove it by hand"
        )


def still_there(target: Target, key: str) -> bool:
    """Whether anything is left under ``key`` (a delete may leave a folder)."""
    try:
        return target.store.info(key) is not None
    except CorruptRecord:
        return True


# -- rekey ---------------------------------------------------------------------

#: Outcomes of :func:`rekey_session`.
REKEYED, CURRENT, FAILED, GONE_MEANWHILE = "rekeyed", "current", "failed", "gone"
#: Not a record of this package (another library's session, say): left alone.
FOREIGN = "foreign"


def rekey_session(target: Target, key: str) -> str:
    """Re-MAC one session's stale entries with the current key; return the outcome."""
    sid = target.sid(key)
    try:
        data = checked_record(target.store, "load", target.store.load(key))
        if data is None:
            return GONE_MEANWHILE
        if is_foreign(data):
            return FOREIGN
        entries, stale = open_entries(target.ring, sid, parse_raw(data))
    except CorruptRecord:
        return FAILED
    if not stale:
        return CURRENT
    info = target.store.info(key)
    if info is None:
        return GONE_MEANWHILE
    ttl = info.ttl if info.ttl > 0 else target.default_ttl
    ops = rekey_ops(target.ring, sid, entries, stale)
    result = target.store.patch(key, ops, ttl, target.max_size)
    return _patch_outcome(checked_result(target.store, "patch", result))


def _patch_outcome(result: int) -> str:
    if result > 0:
        return REKEYED
    if result in (0, GONE):
        return GONE_MEANWHILE
    if result in (CORRUPT, TOO_LARGE):
        return FAILED
    raise AssertionError(f"unexpected patch result {result}")  # pragma: no cover
