"""Saves that append their changes to the stored record, not rewrite it.

An append costs the store time in proportion to the change, but leaves
superseded entries that every load parses. So a record may grow by
appending only so far, and the record an append leaves is remembered as
verified, so that the next request checks no MAC again.
"""

from __future__ import annotations

import typing as t

from .keys import MAC_SIZE
from .record import OP_DELETE, OP_SET_IF_MAC, appended_entries, appendix, piece_size
from .verified import remember_record

if t.TYPE_CHECKING:
    from .record import Op
    from .session import ServerSession
    from .verified import Sizes


#: Appended saves may make a record this much, or half its live size if that
#: is more, larger than the live session before a save rewrites it, but never
#: more than :data:`APPEND_SLACK_MAX`: every load parses the superseded
#: entries too, and small writes to a large session would pile up hundreds.
APPEND_SLACK = 512
APPEND_SLACK_MAX = 1024


def append_limit(session: ServerSession, ops: list[Op], live: int) -> int:
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


def remember_appended(session: ServerSession, ops: list[Op], sizes: Sizes) -> None:
    """Remember the record an appending store now holds, as verified.

    Unless another request changed it meanwhile, it is the loaded record
    with this save's entries appended (:func:`append_limit` offered the
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
