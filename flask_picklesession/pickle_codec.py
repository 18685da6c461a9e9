"""Pickle mode's codec, and the allowlist that limits what it unpickles.

The allowlist is checked on both sides: the pickler refuses a global the
unpickler would refuse, so that nothing stored is unreadable, and a pickle
read is walked by :mod:`.pickle_guard` before it is loaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import pickle
import types
import typing as t

from .codec import Codec, describe, locate, raises
from .compression import unpack
from .errors import SerializationError
from .pickle_guard import UnsafePickle, check_no_shared_object_changed
from .record import CorruptRecord
from .tags import PICKLE, ZPICKLE, CorruptEntry

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from .record import Entry

_PICKLE_PREFIX = pickle.PROTO + bytes([pickle.HIGHEST_PROTOCOL])

#: Pickles remembered as passed by the guard; about 50 bytes each.
_GUARDED_DIGESTS = 4096


def _refuse_unlisted(allowed: frozenset[str], module: str, name: str) -> None:
    if f"{module}.{name}" not in allowed:
        raise CorruptEntry(
            f"global {module}.{name} is not in PICKLESESSION_PICKLE_ALLOWLIST"
        )


def _find_listed(allowed: frozenset[str], module: str, name: str) -> object:
    """The global an allowlist unpickler would load, found the same way."""
    _refuse_unlisted(allowed, module, name)
    found: object = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


class _AllowlistUnpickler(pickle.Unpickler):
    allowed: frozenset[str] = frozenset()

    def find_class(self, module: str, name: str) -> t.Any:
        _refuse_unlisted(self.allowed, module, name)
        return super().find_class(module, name)


class _NotAllowed(Exception):
    """A global the allowlist does not list; carries its ``module.Name``."""


def _global_name(obj: t.Any) -> str | None:
    """``module.Name`` of an object pickle stores by reference, else None."""
    if isinstance(obj, (type, types.FunctionType)):
        name = obj.__qualname__
    elif isinstance(obj, types.BuiltinFunctionType) and isinstance(
        obj.__self__, types.ModuleType
    ):
        name = obj.__name__
    else:
        return None  # reduced to a callable and arguments, each seen in turn
    module = getattr(obj, "__module__", None)
    return f"{module}.{name}" if module else None  # else: checked on loading


class _AllowlistPickler(pickle.Pickler):
    """Refuses, while pickling, a global the unpickler would refuse to load.

    Pickle calls ``reducer_override`` for every object but the plain
    builtins (str, int, list, dict...), so sessions of plain data pay
    nothing for the check.
    """

    allowed: frozenset[str] = frozenset()

    def reducer_override(self, obj: t.Any) -> t.Any:
        name = _global_name(obj)
        if name is not None and name not in self.allowed:
            raise _NotAllowed(name)
        return NotImplemented


class PickleCodec(Codec):
    """Pickle mode: any picklable value, at the highest protocol."""

    name = "pickle"

    def __init__(self, allowlist: Iterable[str] | None = None) -> None:
        self._unpickler: type[_AllowlistUnpickler] | None = None
        self._pickler: type[_AllowlistPickler] | None = None
        #: Digests of pickles the guard passed, so each is walked once.
        self._guarded: set[bytes] = set()
        if allowlist is not None:
            names = frozenset(allowlist)
            self._unpickler = type(
                "_Unpickler", (_AllowlistUnpickler,), {"allowed": names}
            )
            self._pickler = type("_Pickler", (_AllowlistPickler,), {"allowed": names})

    def _dumps(self, value: object) -> bytes:
        if self._pickler is None:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        out = io.BytesIO()
        self._pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        return out.getvalue()

    def _encode_other(self, key: str, value: object) -> bytes:
        try:
            data = self._dumps(value)
        except _NotAllowed as exc:
            # Stored, it could never be read back: refuse it now, by name.
            allowed = t.cast(type[_AllowlistPickler], self._pickler).allowed
            path, _ = locate(
                value,
                raises(self._dumps),
                lambda part: _global_name(type(part)) in allowed,
            )
            raise SerializationError(
                f"session[{key!r}]{path} holds a {exc}, which"
                " PICKLESESSION_PICKLE_ALLOWLIST does not list, so it could not"
                f" be loaded again; add {str(exc)!r} to the allowlist or store"
                " something else",
                key,
            ) from None
        except Exception as exc:  # pickle raises TypeError, AttributeError, ...
            path, part = locate(value, raises(self._dumps))
            raise SerializationError(
                f"session[{key!r}]{path} holds a {describe(part)}, which cannot be"
                f" pickled ({type(exc).__name__}: {exc}); store plain data: open"
                " files, sockets, locks, connections, lambdas and classes defined"
                " inside functions cannot be pickled",
                key,
            ) from exc
        body = _strip_pickle_header(data)
        if self._pickler is not None:
            # Pickled here from live objects: loading it changes nothing
            # shared, so this process need not walk it when reading it back.
            self._remember_guarded(_guard_digest(body))
        return PICKLE + body

    def check(self, entries: Iterable[Entry]) -> None:
        """Under an allowlist, refuse the whole record if any pickled value
        names a global the allowlist does not list (or no longer loads).

        Values are otherwise decoded one key at a time, when read; a
        refused one would then empty the session only for the requests that
        read it, while the others went on merging into the record. Each
        value's globals are looked up through the allowlist by the guard's
        walk, nothing is unpickled, and a value walked once in this process
        is not walked again.
        """
        unpickler = self._unpickler
        if unpickler is None:
            return
        for entry in entries:
            if entry.value[:1] in (PICKLE, ZPICKLE):
                try:
                    self._guard(unpack(entry.value)[1:], unpickler)
                except Exception as exc:  # refused, unreadable, or gone
                    raise CorruptRecord(f"{type(exc).__name__}: {exc}") from None

    def _load_pickle(self, body: bytes) -> object:
        unpickler = self._unpickler
        if unpickler is None:
            return pickle.loads(body, fix_imports=False)
        self._guard(body, unpickler)
        return unpickler(io.BytesIO(body), fix_imports=False).load()

    def _guard(self, body: bytes, unpickler: type[_AllowlistUnpickler]) -> None:
        """Refuse a pickle that would change an allowed global, or an
        existing object reached through one, as it loads."""
        digest = _guard_digest(body)
        if digest in self._guarded:
            return
        resolve = functools.partial(_find_listed, unpickler.allowed)
        try:
            check_no_shared_object_changed(body, resolve)
        except UnsafePickle as exc:
            raise CorruptEntry(
                f"{exc}; PICKLESESSION_PICKLE_ALLOWLIST refuses it"
            ) from None
        self._remember_guarded(digest)

    def _remember_guarded(self, digest: bytes) -> None:
        if len(self._guarded) >= _GUARDED_DIGESTS:
            self._guarded.clear()
        self._guarded.add(digest)


def _guard_digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


def _strip_pickle_header(data: bytes) -> bytes:
    """Drop the PROTO and FRAME opcodes, which the unpickler does not need.

    Saves 11 bytes per stored value; decoding reads the opcodes that remain.
    """
    if data.startswith(_PICKLE_PREFIX):
        data = data[2:]
        if data[:1] == pickle.FRAME:
            data = data[9:]
    return data
