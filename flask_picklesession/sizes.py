"""How large a record of a session's values is, and refusing one too large.

A save measures only the keys it changes when it can: the sizes of a loaded
record are measured once, kept with the verified record, and updated with
each save's changes.
"""

from __future__ import annotations

import typing as t

from .changes import encode_key
from .compression import plain_size
from .errors import SessionTooLarge
from .keys import MAC_SIZE
from .record import piece_size

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from .record import Entry
    from .session import ServerSession
    from .verified import Sizes


def _piece(key: str, value: bytes) -> tuple[int, int]:
    """``(stored, serialized)`` bytes that one value takes in a record.

    The serialized size counts a value as before compression: it is what
    ``PICKLESESSION_MAX_SIZE`` limits.
    """
    kb = encode_key(key)
    stored = piece_size(kb, MAC_SIZE + len(value))
    return stored, piece_size(kb, MAC_SIZE + plain_size(value))


def measure(values: Mapping[str, bytes]) -> Sizes:
    """The :data:`.verified.Sizes` of a record holding ``values``."""
    stored = serialized = 1  # the version byte
    pieces = {}
    for key, value in values.items():
        pieces[key] = piece = _piece(key, value)
        stored += piece[0]
        serialized += piece[1]
    return stored, serialized, pieces


def check_size(session: ServerSession, values: Mapping[str, bytes]) -> None:
    """Refuse, before writing, a session of ``values`` over the limit."""
    refuse_over_limit(session, measure(values))


def refuse_over_limit(session: ServerSession, sizes: Sizes) -> None:
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
    sizes = measure({key: entry.value for key, entry in entries.items()})
    if loaded is not None and loaded.entries is entries:
        # Shared by requests: two may measure it at once, with one result.
        loaded.sizes = sizes
    return sizes


def patched_sizes(
    session: ServerSession, sets: dict[str, bytes], deletes: set[str]
) -> Sizes:
    """Sizes of the loaded session once this save's changes are applied;
    a save over the limit is refused."""
    sizes = _changed_sizes(_loaded_sizes(session), sets, deletes)
    refuse_over_limit(session, sizes)
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
