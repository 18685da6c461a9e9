"""Saving a session at the end of a request: the least the store must do.

The save looks at what the request really changed and picks one operation:
nothing (untouched or read-only), an expiry refresh, a merge of the changed
keys into the stored record, the creation of a new record, or a deletion.
It returns what the response's cookie must become.
"""

from __future__ import annotations

import contextlib
import logging
import typing as t

from .binding import warn_corrupt, warn_refresh_failed
from .codec import IMMUTABLE_TYPES, STORED_BOOLS
from .compression import pack, plain_size
from .cookie import make_cookie
from .errors import SerializationError, SessionTooLarge, StoreUnavailable
from .ids import short_hash
from .keys import MAC_SIZE
from .record import (
    OP_DELETE,
    OP_SET,
    OP_SET_IF_MAC,
    CorruptRecord,
    Entry,
    appended_entries,
    appendix,
    build,
    open_entries,
    parse_raw,
    piece_size,
    rekey_ops,
    seal,
)
from .store import CORRUPT, GONE, TOO_LARGE, checked_record, checked_result
from .verified import remember_record

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from .binding import Binding
    from .record import Op
    from .session import ServerSession
    from .store import Store
    from .verified import Sizes

logger = logging.getLogger("flask_picklesession")

#: Keys that alone do not make a session worth storing.
_META_KEYS = frozenset({"_permanent"})
#: Tries at creating a record under a fresh id before giving up.
_CREATE_TRIES = 3


class CookieUpdate(t.NamedTuple):
    """The cookie to set (``value``) or, with ``value=None``, to delete."""

    value: str | None
    #: When a permanent cookie expires, in whole seconds since the epoch.
    expires: int | None = None


_DELETE = CookieUpdate(None)


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
    sets, deletes = pending_changes(session)
    if session._replaced_sid is not None:
        return _save_regenerated(session, sets, deletes)
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
        return _create(session, sets)
    return _patch(session, sets, deletes)


# -- what changed ------------------------------------------------------------


def pending_changes(session: ServerSession) -> tuple[dict[str, bytes], set[str]]:
    """What a save of ``session`` would write, worked out once per request.

    Asked before a subclass's ``should_set_cookie`` too, so that
    ``session.modified`` counts changes made inside values.
    """
    found = session._pending
    if found is None:
        found = session._pending = _changes(session)
    return found


def _key_bytes(key: object) -> bytes:
    if not isinstance(key, str):
        raise SerializationError(
            f"session keys must be str, not {type(key).__name__}: session[{key!r:.60}]"
        )
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(f"session key {key!r} is not valid text", key) from exc


def _changes(session: ServerSession) -> tuple[dict[str, bytes], set[str]]:
    """Return ``(encoded values to store, keys to delete)``.

    Values read from the store are checked for changes made inside them
    (``session["cart"].append(x)``), so those are saved too; values of
    immutable types are skipped, keeping the cost to what the request used.
    """
    codec = session._binding.codec
    entries = session._entries or {}
    sets: dict[str, bytes] = {}
    for key, value in session._values.items():
        if key in session._dirty or key not in entries:
            _key_bytes(key)  # keys read from the store are valid already
            sets[key] = codec.encode(key, value)
        elif session._forced:
            sets[key] = codec.encode(key, value)
        elif type(value) not in IMMUTABLE_TYPES:
            encoded = _changed_in_place(session, key, value)
            if encoded is not None:
                sets[key] = pack(encoded)
    return sets, set(session._deleted)


def _changed_in_place(session: ServerSession, key: str, value: t.Any) -> bytes | None:
    """The new encoding of a value read from the store, or None if unchanged.

    The codec's fingerprint, where it has one, settles "unchanged" without
    encoding. Otherwise the value is re-encoded: the same bytes mean no
    change. A list, dict, set or tuple whose length changed has changed,
    without decoding the old value (equal ones have equal lengths), so an
    append costs no second decode. Otherwise the stored value is decoded
    and encoded again to compare.
    """
    codec = session._binding.codec
    fingerprint = session._fingerprints.get(key)
    if fingerprint is not None and codec.fingerprint(value) == fingerprint:
        return None
    encoded = codec.encode_plain(key, value)
    stored = session._plain.get(key)
    if stored is None:
        stored = t.cast("Mapping[str, Entry]", session._entries)[key].value
    if encoded == stored:
        return None
    loaded = session._loaded_len.get(key)
    if loaded is not None and len(value) != loaded:
        return encoded
    return None if _encodes_as(session, key, stored, encoded) else encoded


def _encodes_as(
    session: ServerSession, key: str, stored: bytes, encoded: bytes
) -> bool:
    """Whether the stored value, decoded and encoded again, gives ``encoded``.

    An unchanged value can encode to other bytes than were stored: a set
    built by other steps, or in a process with another hash seed, iterates
    in another order. Decoded afresh, the stored bytes give the value as
    this request got it, which encodes as the value does if the request
    left it alone. ``==`` would not tell: an object without ``__eq__``
    equals only itself (a read-only request would then write it back over
    a concurrent change), and an ``__eq__`` that looks at some attributes
    would hide a change to the others.
    """
    codec = session._binding.codec
    try:
        return codec.encode_plain(key, codec.decode(stored)) == encoded
    except Exception:  # unreadable or no longer encodable: save the value
        return False


# -- cookie ------------------------------------------------------------------


def _is_permanent(session: ServerSession) -> bool:
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


def _cookie(session: ServerSession, stamp: int) -> CookieUpdate:
    b = session._binding
    permanent = _is_permanent(session)
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
    if b.refresh and _is_permanent(session):
        if not b.refresh_due:
            return _cookie(session, cookie.stamp)
        try:
            return _refresh(session)
        except StoreUnavailable as exc:
            if session.accessed:
                raise
            # The view never used the session: a store that is down fails
            # the request that needs it, not this one. The cookie goes out
            # as it came, and the next request tries the refresh again.
            warn_refresh_failed(session._id(), exc)
            return _cookie(session, cookie.stamp)
    if session._renew and b.is_due(cookie.stamp):
        # ``permanent`` set again: Flask's session counts that as modified
        # and re-sends its cookie, so apps set it on every request to keep
        # users signed in. Renewed once a refresh would be due.
        return _refresh(session)
    if cookie.by_fallback:
        return _cookie(session, cookie.stamp)
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
            return _patch(session, {}, set())
    refreshed = session._entries is not None and b.refresh_due  # GETEX at load
    if not refreshed and not b.store.touch(b.key(session._id()), b.ttl):
        return None
    return _cookie(session, b.now)


def _sealed(b: Binding, sid: str, values: dict[str, bytes]) -> dict[bytes, bytes]:
    sealed = {}
    for key, value in values.items():
        key_bytes = _key_bytes(key)
        sealed[key_bytes] = seal(b.ring, sid, key_bytes, value)
    return sealed


def _create(session: ServerSession, values: dict[str, bytes]) -> CookieUpdate | None:
    """Store a session that has no record yet.

    An id that a client sent is never stored anew: the record behind it is
    gone or was never there, so the session gets a fresh id first.
    """
    b = session._binding
    if not set(values) - _META_KEYS:
        return _DELETE if b.cookie is not None else None
    if session._permanent_set and "_permanent" not in {*values, *session._values}:
        # Made permanent while the cookie said it was: the session it
        # named is gone, and this new one must be permanent too.
        session._values["_permanent"] = True
        values = {**values, "_permanent": b.codec.encode("_permanent", True)}
    sizes = _measure(values)
    _refuse_over_limit(session, sizes)
    for _ in range(_CREATE_TRIES):
        if b.cookie is not None and session._id() == b.cookie.sid:
            session._renew_id()
        sealed = _sealed(b, session._id(), values)
        record = build(sealed)
        created = b.store.create(b.key(session._id()), record, b.ttl)
        if created is None:
            raise TypeError(
                f"{type(b.store).__name__}.create() returned None;"
                " a store's create() returns True, or False if the key is taken"
            )
        if created:
            session._found = True
            entries = {
                key: Entry(body[:MAC_SIZE], value)
                for (key, value), body in zip(values.items(), sealed.values())
            }
            remember_record(b.ring, session._id(), record, entries, sizes)
            return _cookie(session, b.now)
        session._renew_id()
    raise RuntimeError("could not find an unused session id")  # pragma: no cover


def _patch(
    session: ServerSession, sets: dict[str, bytes], deletes: set[str]
) -> CookieUpdate | None:
    """Merge the changed keys into the stored record, in one store operation.

    The session was loaded first (see :func:`save`): its sizes are known.
    """
    b = session._binding
    entries = session._entries
    assert entries is not None, "a session is loaded before it is patched"
    ops: list[Op] = [
        (OP_SET, kb, body) for kb, body in _sealed(b, session._id(), sets).items()
    ]
    ops += [(OP_DELETE, _key_bytes(k), b"") for k in deletes]
    stale = session._stale - set(sets) - deletes
    if stale:  # rotation: re-MAC what a fallback key verified, if unchanged
        ops += rekey_ops(b.ring, session._id(), entries, stale)
    sizes = _patched_sizes(session, sets, deletes)
    limit = _append_limit(session, ops, sizes[0])
    result = b.store.patch(b.key(session._id()), ops, b.ttl, b.max_size, limit)
    if type(result) is not int:
        result = checked_result(b.store, "patch", result)
    if result > 0:
        if limit and b.store.appends:
            _remember_appended(session, ops, sizes)
        return _cookie(session, _patched_stamp(b))
    if result == 0:
        return _DELETE
    if result == TOO_LARGE:
        raise SessionTooLarge(None, b.max_size)
    if result == GONE:
        # Deleted since the load (clear, regenerate, expiry): it stays
        # deleted. Leave the cookie alone: the client may hold a newer one.
        _log_dropped(session)
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
    return _create(session, sets)


def _remember_appended(session: ServerSession, ops: list[Op], sizes: Sizes) -> None:
    """Remember the record an appending store now holds, as verified.

    Unless another request changed it meanwhile, it is the loaded record
    with this save's entries appended (:func:`_append_limit` offered the
    append only if that fits): a write after a write, or the redirect after
    a POST, then checks no MAC again. Were the stored bytes other, the
    remembered ones would simply never be asked for.
    """
    b = session._binding
    if b.loaded is None:  # pragma: no cover (an append needs a loaded record)
        return
    # Predicted from what verifying the loaded bytes gave, not from the
    # session's state. No entry is left MACed by a fallback key: this save
    # re-sealed or deleted each one, or its re-keying ops would have ruled
    # out appending.
    entries = appended_entries(b.loaded.entries, b.loaded_record, ops)
    if entries is not None:
        record = b.loaded_record + appendix(ops)
        remember_record(b.ring, session._id(), record, entries, sizes)


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


def _log_dropped(session: ServerSession) -> None:
    logger.info(
        "session %s was deleted while this request ran; its changes are dropped",
        short_hash(session._id()),
    )


#: Appended saves may make a record this much, or half its live size if that
#: is more, larger than the live session before a save rewrites it, but never
#: more than :data:`APPEND_SLACK_MAX`: every load parses the superseded
#: entries too, and small writes to a large session would pile up hundreds.
APPEND_SLACK = 512
APPEND_SLACK_MAX = 1024


def _append_limit(session: ServerSession, ops: list[Op], live: int) -> int:
    """How large the record may grow by appending this save; 0: rewrite it.

    Appending costs the store time in proportion to the change. A rewrite
    compacts the record, and is needed for conditional sets (re-keying) and
    for deletes that may leave the session empty (it is then removed).
    """
    b = session._binding
    grown = len(b.loaded_record)
    for op, kb, payload in ops:
        if op == OP_SET_IF_MAC or (op == OP_DELETE and live <= 1):
            return 0
        grown += piece_size(kb, len(payload) or MAC_SIZE)
    slack = min(max(live // 2, APPEND_SLACK), APPEND_SLACK_MAX)
    limit = min(b.max_size, live + slack)
    return limit if grown <= limit else 0


def _piece(key: str, value: bytes) -> tuple[int, int]:
    """``(stored, serialized)`` bytes that one value takes in a record.

    The serialized size counts a value as before compression: it is what
    ``PICKLESESSION_MAX_SIZE`` limits.
    """
    kb = _key_bytes(key)
    stored = piece_size(kb, MAC_SIZE + len(value))
    return stored, piece_size(kb, MAC_SIZE + plain_size(value))


def _measure(values: Mapping[str, bytes]) -> Sizes:
    """The :data:`.verified.Sizes` of a record holding ``values``."""
    stored = serialized = 1  # the version byte
    pieces = {}
    for key, value in values.items():
        pieces[key] = piece = _piece(key, value)
        stored += piece[0]
        serialized += piece[1]
    return stored, serialized, pieces


def _check_size(session: ServerSession, values: Mapping[str, bytes]) -> None:
    """Refuse, before writing, a session of ``values`` over the limit."""
    _refuse_over_limit(session, _measure(values))


def _refuse_over_limit(session: ServerSession, sizes: Sizes) -> None:
    limit = session._binding.max_size
    if sizes[1] > limit:
        pieces = sizes[2]
        largest = max(pieces, key=lambda key: pieces[key][1], default=None)
        raise SessionTooLarge(
            sizes[1], limit, largest, None if largest is None else pieces[largest][1]
        )


def _loaded_sizes(session: ServerSession) -> Sizes:
    """Sizes of the loaded session, measured once per verified record."""
    loaded = session._binding.loaded
    entries = t.cast("Mapping[str, Entry]", session._entries)
    if loaded is not None and loaded.sizes is not None and loaded.entries is entries:
        return loaded.sizes
    sizes = _measure({key: entry.value for key, entry in entries.items()})
    if loaded is not None and loaded.entries is entries:
        # Shared by requests: two may measure it at once, with one result.
        loaded.sizes = sizes
    return sizes


def _patched_sizes(
    session: ServerSession, sets: dict[str, bytes], deletes: set[str]
) -> Sizes:
    """Sizes of the loaded session once this save's changes are applied;
    a save over the limit is refused."""
    sizes = _changed_sizes(_loaded_sizes(session), sets, deletes)
    _refuse_over_limit(session, sizes)
    return sizes


def _changed_sizes(sizes: Sizes, sets: dict[str, bytes], deletes: set[str]) -> Sizes:
    """``sizes`` after setting and deleting keys, measuring only those."""
    stored, serialized, before = sizes
    pieces = dict(before)
    for key in deletes:
        gone = pieces.pop(key, None)
        if gone is not None:
            stored -= gone[0]
            serialized -= gone[1]
    for key, value in sets.items():
        old = pieces.get(key)
        if old is not None:
            stored -= old[0]
            serialized -= old[1]
        pieces[key] = new = _piece(key, value)
        stored += new[0]
        serialized += new[1]
    return stored, serialized, pieces


def _with_changes(
    values: dict[str, bytes], sets: dict[str, bytes], deletes: set[str]
) -> dict[str, bytes]:
    """``values`` with this save's sets and deletes applied (in place)."""
    values.update(sets)
    for key in deletes:
        values.pop(key, None)
    return values


def _save_cleared(session: ServerSession) -> CookieUpdate | None:
    """``session.clear()``: delete the stored session (log out)."""
    b = session._binding
    # Encode and size what was set after clear() first: a value that cannot
    # be stored must fail the save before the stored session is deleted.
    values = {k: b.codec.encode(k, session._values[k]) for k in session._dirty}
    if set(values) - _META_KEYS:
        _check_size(session, values)  # _create checks again, after the delete
    for sid in {b.cookie.sid if b.cookie else None, session._replaced_sid} - {None}:
        b.store.delete(b.key(t.cast(str, sid)))
    session._found = False
    if set(values) - _META_KEYS:
        return _create(session, values)
    return _DELETE if b.cookie is not None else None


def _save_regenerated(
    session: ServerSession, sets: dict[str, bytes], deletes: set[str]
) -> CookieUpdate | None:
    """Move the session to its new id: store the new record, then take the old.

    The new record is stored first, so a store that refuses it (down, out of
    memory, or the session too large) leaves the old one as it was. Then the
    old record is taken (read and deleted at once): changes merged into it
    meanwhile move along, and a session deleted meanwhile (a logout) is not
    brought back. Values are moved as authenticated bytes, re-MACed for the
    new id, never decoded.
    """
    b = session._binding
    old_key = b.key(t.cast(str, session._replaced_sid))
    current = _unless_corrupt(b.store, old_key)
    if current is None:
        _log_dropped(session)
        return None
    moved = _moved_values(session, current, sets, deletes)
    update = _create(session, moved)
    new_key = b.key(session._id())
    try:
        taken = _unless_corrupt(b.store, old_key, take=True)
    except StoreUnavailable:
        # The old session stays as it was; the copy no cookie points to goes.
        with contextlib.suppress(StoreUnavailable):
            b.store.delete(new_key)
        raise
    if taken is None:  # deleted while this request ran
        b.store.delete(new_key)
        _log_dropped(session)
        return None
    if taken != current:  # changed meanwhile: the new record takes those too
        try:
            _move_changes_made_meanwhile(session, taken, moved, sets, deletes)
        except BaseException:
            # Undone, as if this request had not run: the old record back
            # as taken, and the copy no cookie will point to gone.
            with contextlib.suppress(StoreUnavailable):
                b.store.create(old_key, taken, b.ttl)
            with contextlib.suppress(StoreUnavailable):
                b.store.delete(new_key)
            raise
    return update if update is not None else _DELETE


def _move_changes_made_meanwhile(
    session: ServerSession,
    taken: bytes,
    moved: dict[str, bytes],
    sets: dict[str, bytes],
    deletes: set[str],
) -> None:
    """Merge into the new record what another request changed in the old
    one while this request ran; refuse, as a save would, what cannot fit."""
    b = session._binding
    values = _moved_values(session, taken, sets, deletes)
    ops: list[Op] = [
        (OP_SET, kb, body) for kb, body in _sealed(b, session._id(), values).items()
    ]
    gone = set(moved) - set(values)
    ops += [(OP_DELETE, _key_bytes(key), b"") for key in gone]
    result = checked_result(
        b.store, "patch", b.store.patch(b.key(session._id()), ops, b.ttl, b.max_size, 0)
    )
    if result == TOO_LARGE:
        raise SessionTooLarge(None, b.max_size)
    if result < 0:
        raise StoreUnavailable("the new record of a regenerated session was lost")


def _unless_corrupt(store: Store, key: str, *, take: bool = False) -> bytes | None:
    """A store's load (or take) of ``key``; None if the record is unreadable."""
    try:
        answer = store.take(key) if take else store.load(key)
    except CorruptRecord:
        return None
    return checked_record(store, "take" if take else "load", answer)


def _moved_values(
    session: ServerSession, record: bytes, sets: dict[str, bytes], deletes: set[str]
) -> dict[str, bytes]:
    """The old record's values with this request's changes applied."""
    values = _current_values(session, t.cast(str, session._replaced_sid), record)
    return _with_changes(values, sets, deletes)


def _current_values(
    session: ServerSession, old_sid: str, record: bytes
) -> dict[str, bytes]:
    """Values of a stored record, authenticated; this request's copy if unreadable."""
    b = session._binding
    entries: Mapping[str, Entry]
    try:
        entries, _ = open_entries(b.ring, old_sid, parse_raw(record))
        b.codec.check(entries.values())
    except CorruptRecord as exc:
        warn_corrupt(old_sid, str(exc))
        entries = session._entries or {}
    return {key: entry.value for key, entry in entries.items()}
