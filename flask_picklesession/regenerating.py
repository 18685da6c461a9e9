"""Moving a regenerated session to its new id when it is saved.

Apart from the other saves because it writes two records: whatever fails on
the way, the old record is left as it was and the new one is not left behind.
"""

from __future__ import annotations

import contextlib
import logging
import typing as t

from .binding import warn_corrupt
from .changes import encode_key
from .errors import StoreUnavailable
from .ids import short_hash
from .record import OP_DELETE, OP_SET, CorruptRecord, parse_raw
from .sealing import open_entries
from .store import TOO_LARGE, checked_record, checked_result
from .writing import DELETE, CookieUpdate, create, log_dropped, sealed_values

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from .record import Entry, Op
    from .session import ServerSession
    from .store import Store

logger = logging.getLogger("flask_picklesession")

#: The limit a move of changes made meanwhile is given: no limit but the
#: store's own (see :func:`_move_changes_made_meanwhile`).
MAX_RECORD = 1 << 62


def save_regenerated(
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
        log_dropped(session)
        return None
    moved = _moved_values(session, current, sets, deletes)
    update = create(session, moved)
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
        log_dropped(session)
        return None
    if taken != current:  # changed meanwhile: the new record takes those too
        try:
            _move_changes_made_meanwhile(session, taken, moved, sets, deletes)
        except BaseException:
            # The store failed: undone, as if this request had not run, the
            # old record back as taken and the copy no cookie will point to
            # gone (best effort: the store may be down for these too).
            with contextlib.suppress(StoreUnavailable):
                b.store.create(old_key, taken, b.ttl)
            with contextlib.suppress(StoreUnavailable):
                b.store.delete(new_key)
            raise
    return update if update is not None else DELETE


def _move_changes_made_meanwhile(
    session: ServerSession,
    taken: bytes,
    moved: dict[str, bytes],
    sets: dict[str, bytes],
    deletes: set[str],
) -> None:
    """Merge into the new record what another request changed in the old
    one while this request ran.

    Kept even if the two together pass the size limit, with a warning:
    the other request was told its change is saved, and refusing the move
    would mean putting the old record back, over whatever a third request
    did to the old id meanwhile (a logout's delete, a write it dropped).
    """
    b = session._binding
    values = _moved_values(session, taken, sets, deletes)
    ops: list[Op] = [
        (OP_SET, kb, body)
        for kb, body in sealed_values(b, session._id(), values).items()
    ]
    gone = set(moved) - set(values)
    ops += [(OP_DELETE, encode_key(key), b"") for key in gone]
    new_key = b.key(session._id())
    result = checked_result(
        b.store, "patch", b.store.patch(new_key, ops, b.ttl, b.max_size)
    )
    if result == TOO_LARGE:
        logger.warning(
            "session %s is over PICKLESESSION_MAX_SIZE with a change made while"
            " it was regenerated; kept whole rather than lose that change",
            short_hash(session._id()),
        )
        result = checked_result(
            b.store, "patch", b.store.patch(new_key, ops, b.ttl, MAX_RECORD)
        )
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


def _with_changes(
    values: dict[str, bytes], sets: dict[str, bytes], deletes: set[str]
) -> dict[str, bytes]:
    """``values`` with this save's sets and deletes applied (in place)."""
    values.update(sets)
    for key in deletes:
        values.pop(key, None)
    return values


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
