"""Saving a session at the end of a request: the least the store must do.

The save looks at what the request really changed and picks one operation:
nothing (untouched or read-only), an expiry refresh, a merge of the changed
keys into the stored record, the creation of a new record, or a deletion.
It returns what the response's cookie must become.

The parts are modules of their own: what changed (:mod:`.changes`), sizes
and the limit (:mod:`.sizes`), the writes (:mod:`.writing`, and
:mod:`.appending` for appends), and moving a regenerated session to its new
id (:mod:`.regenerating`).
"""

from __future__ import annotations

import typing as t

from .binding import warn_refresh_failed
from .changes import pending_changes
from .errors import StoreUnavailable
from .regenerating import save_regenerated
from .sizes import check_size
from .writing import (
    DELETE,
    META_KEYS,
    CookieUpdate,
    cookie_update,
    create,
    is_permanent,
    patch,
)

if t.TYPE_CHECKING:
    from .session import ServerSession


def save(session: ServerSession) -> CookieUpdate | None:
    """Write what the request changed; return the cookie change, if any."""
    if session._suppressed:
        return None
    if (
        not session.accessed
        and not session._forced
        and not session._binding.cookie_may_change()
    ):
        return None  # untouched: not even the cookie's signature is checked
    if session._cleared:
        return _save_cleared(session)
    if session._permanent_unchecked is not None:
        _settle_permanent(session, session._permanent_unchecked)
    sets, deletes = pending_changes(session)
    if session._replaced_sid is not None:
        return save_regenerated(session, sets, deletes)
    if not sets and not deletes:
        return _save_unchanged(session)
    if session._entries is None:
        # A write that did not read the session reads it now. Merged unread,
        # the writes could land in a record that fails its MAC (tampered, or
        # MACed with a key since dropped), which every later load refuses
        # with the writes in it; read, an unreadable record is replaced by a
        # new session holding them. It also lets this save re-key entries
        # still MACed with a fallback key.
        session._load()
    if not session._exists or session._binding.cookie is None:
        return create(session, sets)
    return patch(session, sets, deletes)


def _settle_permanent(session: ServerSession, value: bool) -> None:
    """``permanent`` was set to the cookie's flag before the session was read.

    Another request may have changed the stored flag since; this request's
    assignment is the later one, so it wins, as for any key. Checked when
    the save reads the session anyway (the view read it, or it writes);
    a request that only sets the flag trusts the cookie, sparing the round
    trip that apps setting it on every request would otherwise pay.
    """
    if session._entries is None:
        if not (session._dirty or session._deleted):
            return
        session._load()  # which the write would do anyway
    stored = session.get("_permanent", False)
    if session._exists and "_permanent" not in session._dirty and stored != value:
        session["_permanent"] = value
        session._pending = None  # worked out before, for a cookie hook


# -- the operations ----------------------------------------------------------


def _save_unchanged(session: ServerSession) -> CookieUpdate | None:
    """Read-only or untouched: at most an expiry refresh, never a data write."""
    b = session._binding
    cookie = b.cookie
    if cookie is None or (session._entries is not None and not session._exists):
        return None
    if b.unreachable:
        return None  # its load failed: the next request refreshes
    if session._forced:
        # modified = True with nothing to write: Flask re-sends the cookie
        # with a new expiry, so the stored expiry moves with it.
        return _refresh(session)
    if b.refresh and is_permanent(session):
        if not b.refresh_due:
            return cookie_update(session, cookie.stamp)
        try:
            return _refresh(session)
        except StoreUnavailable as exc:
            if session.accessed:
                raise
            # The view never used the session: a store that is down fails
            # the request that needs it, not this one. The cookie goes out
            # as it came, and the next request tries the refresh again.
            warn_refresh_failed(session._id(), exc)
            return cookie_update(session, cookie.stamp)
    if session._renew and b.is_due(cookie.stamp):
        # ``permanent`` set again: Flask's session counts that as modified
        # and re-sends its cookie, so apps set it on every request to keep
        # users signed in. Renewed once a refresh would be due; a store
        # that answers but refuses writes does not fail a read-only view
        # for that (the next request tries again).
        try:
            return _refresh(session)
        except StoreUnavailable as exc:
            if not exc.reached:
                raise
            warn_refresh_failed(session._id(), exc)
            return cookie_update(session, cookie.stamp)
    if cookie.by_fallback:
        return cookie_update(session, cookie.stamp)
    return None


def _refresh(session: ServerSession) -> CookieUpdate | None:
    """Push the stored expiry back; return the cookie that says so.

    During a key rotation it also re-keys, as a save does: a session kept
    alive by reads alone would otherwise stay MACed with the old key, and
    be lost once that key is dropped.
    """
    b = session._binding
    if b.ring.has_fallbacks:
        session._load()
        if not session._exists:
            return None
        if session._stale:
            return patch(session, {}, set())
    refreshed = session._entries is not None and b.refresh_due  # GETEX at load
    if not refreshed and not b.store.touch(b.key(session._id()), b.ttl):
        return None
    return cookie_update(session, b.now)


def _save_cleared(session: ServerSession) -> CookieUpdate | None:
    """``session.clear()``: delete the stored session (log out)."""
    b = session._binding
    # Encode and size what was set after clear() first: a value that cannot
    # be stored must fail the save before the stored session is deleted.
    values = {k: b.codec.encode(k, session._values[k]) for k in session._dirty}
    if set(values) - META_KEYS:
        check_size(session, values)  # create checks again, after the delete
    for sid in {b.cookie.sid if b.cookie else None, session._replaced_sid} - {None}:
        b.store.delete(b.key(t.cast(str, sid)))
    session._found = False
    if set(values) - META_KEYS:
        return create(session, values)
    return DELETE if b.cookie is not None else None
