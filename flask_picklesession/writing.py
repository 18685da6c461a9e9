"""The writes a save makes: creating a session's record or patching it.

Each is one store operation, sealed with the session's keys, and returns
the cookie the response must carry; :mod:`.saving` picks which to make.
"""

from __future__ import annotations

import logging
import typing as t

from .appending import append_limit, remember_appended
from .changes import encode_key
from .codec import STORED_BOOLS
from .cookie import make_cookie
from .errors import SessionTooLarge
from .ids import short_hash
from .keys import MAC_SIZE
from .record import OP_DELETE, OP_SET, Entry, build
from .sealing import rekey_ops, seal
from .sizes import measure, patched_sizes, refuse_over_limit
from .store import CORRUPT, GONE, TOO_LARGE, checked_created, checked_result
from .verified import remember_record

if t.TYPE_CHECKING:
    from .binding import Binding
    from .record import Op
    from .session import ServerSession

logger = logging.getLogger("flask_picklesession")

#: Keys that alone do not make a session worth storing.
META_KEYS = frozenset({"_permanent"})
#: Tries at creating a record under a fresh id before giving up.
_CREATE_TRIES = 3


class CookieUpdate(t.NamedTuple):
    """The cookie to set (``value``) or, with ``value=None``, to delete."""

    value: str | None
    #: When a permanent cookie expires, in whole seconds since the epoch.
    expires: int | None = None


DELETE = CookieUpdate(None)


# -- cookie ------------------------------------------------------------------


def is_permanent(session: ServerSession) -> bool:
    values = session._values
    if "_permanent" in values:
        return bool(values["_permanent"])
    entries = session._entries
    if entries is None:
        cookie = session._binding.cookie
        return bool(cookie and cookie.permanent)
    entry = entries.get("_permanent")
    if entry is None or "_permanent" in session._deleted:
        return False
    # Flask stores a bool: read it from the entry (MAC-checked at load) as
    # it is, without decoding a value the request did not ask for.
    flag = STORED_BOOLS.get(entry.value)
    return flag if flag is not None else bool(session.get("_permanent"))


def cookie_update(session: ServerSession, stamp: int) -> CookieUpdate:
    b = session._binding
    permanent = is_permanent(session)
    sent = b.cookie
    if (
        sent is not None
        and not sent.by_fallback
        and sent.stamp == stamp
        and sent.permanent == permanent
        and sent.sid == session._id()
    ):
        value = t.cast(str, b.raw_cookie)  # the same signed value: no re-signing
    else:
        value = make_cookie(b.ring, session._id(), stamp, permanent)
    if not permanent:
        return CookieUpdate(value)
    return CookieUpdate(value, (stamp + b.ttl) // 1000)


# -- the operations ----------------------------------------------------------


def sealed_values(b: Binding, sid: str, values: dict[str, bytes]) -> dict[bytes, bytes]:
    sealed = {}
    for key, value in values.items():
        key_bytes = encode_key(key)
        sealed[key_bytes] = seal(b.ring, sid, key_bytes, value)
    return sealed


def create(session: ServerSession, values: dict[str, bytes]) -> CookieUpdate | None:
    """Store a session that has no record yet.

    An id that a client sent is never stored anew: the record behind it is
    gone or was never there, so the session gets a fresh id first.
    """
    b = session._binding
    if not set(values) - META_KEYS:
        return DELETE if b.cookie is not None else None
    if session._permanent_set and "_permanent" not in {*values, *session._values}:
        # Made permanent while the cookie said it was: the session it
        # named is gone, and this new one must be permanent too.
        session._values["_permanent"] = True
        values = {**values, "_permanent": b.codec.encode("_permanent", True)}
    sizes = measure(values)
    refuse_over_limit(session, sizes)
    for _ in range(_CREATE_TRIES):
        if b.cookie is not None and session._id() == b.cookie.sid:
            session._renew_id()
        sealed = sealed_values(b, session._id(), values)
        record = build(sealed)
        created = b.store.create(b.key(session._id()), record, b.ttl)
        if checked_created(b.store, created):
            session._found = True
            entries = {
                key: Entry(body[:MAC_SIZE], value)
                for (key, value), body in zip(values.items(), sealed.values())
            }
            remember_record(b.ring, session._id(), record, entries, sizes)
            return cookie_update(session, b.now)
        session._renew_id()
    raise RuntimeError("could not find an unused session id")  # pragma: no cover


def patch(
    session: ServerSession, sets: dict[str, bytes], deletes: set[str]
) -> CookieUpdate | None:
    """Merge the changed keys into the stored record, in one store operation.

    The session was loaded first (see :func:`.saving.save`): its sizes are known.
    """
    b = session._binding
    entries = session._entries
    assert entries is not None, "a session is loaded before it is patched"
    ops: list[Op] = [
        (OP_SET, kb, body) for kb, body in sealed_values(b, session._id(), sets).items()
    ]
    ops += [(OP_DELETE, encode_key(k), b"") for k in deletes]
    stale = session._stale - set(sets) - deletes
    if stale:  # rotation: re-MAC what a fallback key verified, if unchanged
        ops += rekey_ops(b.ring, session._id(), entries, stale)
    sizes = patched_sizes(session, sets, deletes)
    limit = append_limit(session, ops, sizes[0])
    loaded = b.loaded_record if limit else None
    result = b.store.patch(b.key(session._id()), ops, b.ttl, b.max_size, loaded)
    if type(result) is not int:
        result = checked_result(b.store, "patch", result)
    if result > 0:
        if limit and b.store.appends:
            remember_appended(session, ops, sizes)
        return cookie_update(session, _patched_stamp(b))
    if result == 0:
        return DELETE
    if result == TOO_LARGE:
        raise SessionTooLarge(None, b.max_size)
    if result == GONE:
        # Deleted since the load (clear, regenerate, expiry): it stays
        # deleted. Leave the cookie alone: the client may hold a newer one.
        log_dropped(session)
        return None
    if result != CORRUPT:  # pragma: no cover (a store breaking its contract)
        raise AssertionError(f"unexpected patch result {result}")
    # Replaced by something unreadable since the load: keep the writes in a
    # new session rather than lose them; the old one is not brought back.
    logger.warning(
        "stored session %s is unreadable; starting a new one",
        short_hash(session._id()),
    )
    session._found = False
    return create(session, sets)


def _patched_stamp(b: Binding) -> int:
    """The stamp for the cookie after a save that pushed the stored expiry back.

    A cookie stamped less than the refresh interval ago is kept as it is, as
    a read-only request keeps it: the store then outlives the cookie by at
    most that interval, and busy sessions are not re-signed and re-formatted
    per write.
    """
    cookie = b.cookie
    if cookie is not None and cookie.stamp <= b.now and not b.is_due(cookie.stamp):
        return cookie.stamp
    return b.now


def log_dropped(session: ServerSession) -> None:
    logger.info(
        "session %s was deleted while this request ran; its changes are dropped",
        short_hash(session._id()),
    )
