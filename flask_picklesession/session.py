"""The session object: a lazy mapping that knows exactly what changed.

Nothing is read from the store until the session is first read; values are
decoded one key at a time, on first access. At the end of the request the
session can tell which keys were set, deleted, or changed in place, so the
save sends only those keys and merges them into what is stored.
"""

from __future__ import annotations

import copy
import typing as t
from collections.abc import (
    ItemsView,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)

from flask.sessions import SessionMixin

from .binding import warn_corrupt
from .codec import IMMUTABLE_TYPES
from .compression import unpack
from .errors import StoreUnavailable
from .ids import new_sid
from .tags import CorruptEntry

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from .binding import Binding
    from .record import Entry

_MISSING = object()
#: Containers whose equal values always have equal lengths (exact types).
_SIZED_TYPES = frozenset({list, dict, set, frozenset, tuple, bytearray})


class ServerSession(SessionMixin, MutableMapping):  # type: ignore[type-arg]
    """A server-side session: ``session.sid`` is its id in the store."""

    # Immutable state starts as class attributes, so a session the request
    # never touches costs only the containers below.
    #: True once the request read or wrote the session (adds ``Vary: Cookie``).
    accessed = False
    _sid: str | None = None
    #: Stored entries as loaded (read-only: they may be shared with other
    #: requests), or None before the first read.
    _entries: Mapping[str, Entry] | None = None
    #: Keys whose MAC was made by a fallback key.
    _stale: frozenset[str] = frozenset()
    #: Whether the store holds this session: None until known (a valid
    #: cookie suggests so, a load tells).
    _found: bool | None = None
    _cleared = False
    _forced = False
    _suppressed = False
    #: Set when a save raised: Flask saves again after its error handler,
    #: which would repeat the failure (and its timeout) and log it twice.
    _save_failed = False
    #: Id this session had before :meth:`regenerate`, to delete on save.
    _replaced_sid: str | None = None
    #: ``permanent`` as last set to the value it already had: given to a
    #: new session if the stored one is gone (see :mod:`.writing`).
    _permanent_set = False
    #: ``permanent`` was set to the value it had, which in Flask marks the
    #: session modified and so renews the cookie: the expiry is renewed.
    _renew = False
    #: ``permanent`` as set before the session was read, when it agreed with
    #: the cookie's flag only: another request may have changed the stored
    #: flag since, which the save checks if it reads the session anyway.
    _permanent_unchecked: bool | None = None
    #: ``(values to store, keys to delete)`` once worked out for the save.
    _pending: tuple[dict[str, bytes], set[str]] | None = None

    def __init__(self, binding: Binding) -> None:
        self._binding = binding
        self._values: dict[str, t.Any] = {}
        #: Uncompressed encodings of the compressed values decoded so far.
        self._plain: dict[str, bytes] = {}
        #: Length of each decoded list, dict, set or tuple when it was loaded.
        self._loaded_len: dict[str, int] = {}
        #: The codec's fingerprint of decoded mutable values, where it has one.
        self._fingerprints: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()

    @property
    def sid(self) -> str:
        """The session id; the store key is ``PICKLESESSION_KEY_PREFIX + sid``.

        With a cookie, the session is loaded first: a cookie whose session is
        gone gets a fresh id, and this shows the id the session will have.
        """
        if self._entries is None and self._binding.cookie is not None:
            self._load()
        return self._id()

    def _id(self) -> str:
        """The current id, without loading (for the package's own use)."""
        if self._sid is None:
            cookie = self._binding.cookie
            self._sid = cookie.sid if cookie is not None else new_sid()
        return self._sid

    def _renew_id(self) -> None:
        self._sid = new_sid()

    @property
    def _exists(self) -> bool:
        """Whether the store is known, or assumed from the cookie, to hold it."""
        if self._found is None:
            return self._binding.cookie is not None
        return self._found

    # -- loading -----------------------------------------------------------

    def _load(self) -> Mapping[str, Entry]:
        if self._entries is None:
            found = self._binding.load(self._id()) if self._exists else None
            self._found = found is not None
            self._entries, self._stale = (
                found if found is not None else ({}, frozenset())
            )
            if found is None and self._binding.cookie is not None:
                self._renew_id()  # never store under an id a client sent
        return self._entries

    def _decode(self, key: str) -> t.Any:
        entries = self._load()
        if key in self._values:
            return self._values[key]
        if key in self._deleted or key not in entries:
            return _MISSING
        codec, stored = self._binding.codec, entries[key].value
        try:
            plain = unpack(stored)
            value = codec.decode_plain(plain)
        except CorruptEntry as exc:
            warn_corrupt(self._id(), f"session[{key!r}]: {exc}")
            self._discard_stored()
            return _MISSING
        self._values[key] = value
        kind = type(value)
        if kind not in IMMUTABLE_TYPES:
            if kind in _SIZED_TYPES:
                self._loaded_len[key] = len(t.cast("t.Sized", value))
            fingerprint = codec.fingerprint(value)
            if fingerprint is not None:
                self._fingerprints[key] = fingerprint
        if plain is not stored:  # compressed: keep what the save compares
            self._plain[key] = plain
        return value

    def _discard_stored(self) -> None:
        """Forget an untrustworthy stored session, keeping this request's writes."""
        self._entries, self._stale, self._found = {}, frozenset(), False
        self._renew_id()
        self._values = {k: self._values[k] for k in self._dirty}
        self._deleted.clear()
        self._loaded_len.clear()
        self._fingerprints.clear()

    # -- mapping protocol --------------------------------------------------

    def __getitem__(self, key: str) -> t.Any:
        self.accessed = True
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            value = self._decode(key)
            if value is _MISSING:
                raise KeyError(key)
        return value

    def get(self, key: str, default: t.Any = None) -> t.Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: t.Any) -> None:
        self.accessed = True
        self._suppressed = False
        self._values[key] = value
        self._dirty.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        self.accessed = True
        entries = self._load()
        if key not in self:
            raise KeyError(key)
        self._suppressed = False
        self._values.pop(key, None)
        self._dirty.discard(key)
        if key in entries:
            self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        if key in self._values:
            return True
        entries = self._load()
        if key not in entries or key in self._deleted:
            return False
        # Decoded now: ``key in session`` is nearly always followed by
        # ``session[key]``, which must not then fail (an entry that cannot
        # be decoded empties the stored session).
        return self._decode(t.cast(str, key)) is not _MISSING

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._keys())

    def popitem(self) -> tuple[str, t.Any]:
        """Remove and return the last key and its value, as a dict does
        (``MutableMapping``'s would take the first)."""
        keys = self._keys()
        if not keys:
            raise KeyError("popitem(): session is empty")
        key = keys[-1]
        return key, self.pop(key)

    def __len__(self) -> int:
        return len(self._keys())

    def __bool__(self) -> bool:
        # ``if session:`` may run on every page: answered without decoding.
        self.accessed = True
        entries = self._load()
        return any(k not in self._deleted for k in entries) or any(
            k not in entries for k in self._values
        )

    def _keys(self) -> list[str]:
        """Every key, stored ones first, in the order a dict would keep.

        Listing or counting keys usually precedes reading them
        (``dict(session)``, ``items()``, ``len(session)``): every stored value
        is decoded first, so a value that cannot be decoded empties the
        session before any of its keys is counted or handed out.
        """
        self.accessed = True
        entries = self._load()
        for key in list(entries):
            self._decode(key)
        entries = self._load()
        keys = [k for k in entries if k not in self._deleted]
        keys += [k for k in self._values if k not in entries]
        return keys

    # A view reads the session only when used, maybe after the response is
    # made; Flask < 3.1.3 marks a session accessed only through its methods.
    def keys(self) -> KeysView[str]:
        self.accessed = True
        return KeysView(self)

    def items(self) -> ItemsView[str, t.Any]:
        self.accessed = True
        return ItemsView(self)

    def values(self) -> ValuesView[t.Any]:
        self.accessed = True
        return ValuesView(self)

    def __repr__(self) -> str:
        try:
            content = repr(dict(self))
        except StoreUnavailable as exc:  # in a log line or a debugger: no raise
            content = f"(store unavailable: {exc})"
        return f"<{type(self).__name__} {content}>"

    def copy(self) -> dict[str, t.Any]:
        """Return the content as a plain dict."""
        return dict(self)

    # A copy is detached, as a copy of Flask's dict session is: writing to
    # it must not change this session. A plain dict, since a second session
    # object would share this one's id and store.
    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, t.Any]) -> dict[str, t.Any]:
        return copy.deepcopy(dict(self), memo)

    # The dict operators Flask's session has (a plain dict results, as above).
    def __or__(self, other: object) -> dict[str, t.Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self, **other}

    def __ror__(self, other: object) -> dict[str, t.Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**other, **self}

    # In place, as dict's: mypy wants the type of ``|``, which is a copy.
    def __ior__(self, other: t.Any) -> ServerSession:  # type: ignore[misc]
        self.update(other)
        return self

    def clear(self) -> None:
        """Empty the session; on save it is deleted from the store (log out)."""
        self.accessed = True
        self._suppressed = False
        self._cleared = True
        self._permanent_set = False
        self._entries, self._stale = {}, frozenset()
        self._values.clear()
        self._dirty.clear()
        self._deleted.clear()

    # -- Flask's session attributes ------------------------------------------

    @property
    def new(self) -> bool:  # type: ignore[override]
        """True if no stored session was found for this request."""
        self._load()
        return not self._exists

    @property
    def modified(self) -> bool:
        """True if the session was changed, as Flask counts it.

        Counted: changes through the mapping methods, ``clear()``,
        ``regenerate()``, an assignment to ``permanent``, and changes made
        inside values once the save has looked for them. Setting it to True
        saves every key this request read; setting it to False cancels
        saving the changes made so far.
        """
        if self._suppressed:
            return False
        pending = self._pending
        return bool(
            self._dirty
            or self._deleted
            or self._cleared
            or self._forced
            or self._replaced_sid
            or self._renew  # as Flask's: assigning ``permanent`` is a change
            or (pending and (pending[0] or pending[1]))  # changed inside a value
        )

    @modified.setter
    def modified(self, value: bool) -> None:
        self._forced = bool(value)
        self._suppressed = not value

    @property
    def permanent(self) -> bool:
        """Flask's ``session.permanent``; known from the cookie before loading."""
        self.accessed = True
        if "_permanent" in self._values or self._entries is not None:
            return bool(self.get("_permanent", self._permanent_set))
        cookie = self._binding.cookie
        return bool(cookie and cookie.permanent)

    @permanent.setter
    def permanent(self, value: bool) -> None:
        # Many apps set this on every request, to keep active users signed
        # in: not a write, but the expiry is renewed as the cookie would be.
        if self.permanent != bool(value) or "_permanent" in self._dirty:
            self["_permanent"] = bool(value)
            self._permanent_unchecked = None
            return
        self._renew = True
        if "_permanent" not in self._values:
            # The flag agreed, maybe only the cookie's: should the stored
            # session turn out to be gone, the new one must still have it.
            self._permanent_set = bool(value)
            if self._entries is None:
                self._permanent_unchecked = bool(value)

    def regenerate(self) -> None:
        """Give the session a new id, keeping its data (defence against fixation).

        The response carries the new id and the old one is deleted from the
        store, so an old cookie then opens an empty session.
        """
        self.accessed = True
        self._load()
        self._suppressed = False
        if self._replaced_sid is None and self._exists:
            self._replaced_sid = self._id()
        self._renew_id()
