"""Strict JSON mode's codec: Flask's tagged JSON types, never a pickle."""

from __future__ import annotations

import pickle
import typing as t

from .codec import Codec, describe, locate, raises
from .errors import SerializationError
from .record import CorruptRecord
from .tagged_json import json_text
from .tags import JSON, PICKLE, ZPICKLE

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from .record import Entry


class JSONCodec(Codec):
    """Strict mode: Flask's tagged JSON types only; nothing is ever unpickled."""

    name = "json"

    def check(self, entries: Iterable[Entry]) -> None:
        if any(entry.value[:1] in (PICKLE, ZPICKLE) for entry in entries):
            raise CorruptRecord("a pickled entry is refused in strict JSON mode")

    def fingerprint(self, value: object) -> bytes | None:
        """The value's pickle, compared and never loaded.

        Tagging and writing JSON runs in Python and costs ten times as much;
        a pickle tells as exactly whether anything changed, types included
        (``True`` for ``1``, a tuple for a list, Markup for str).
        """
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an unpicklable object put in: compare by JSON
            return None

    def _encode_other(self, key: str, value: object) -> bytes:
        try:
            text = json_text(value)
        except (TypeError, ValueError, RecursionError) as exc:
            path, part = locate(value, raises(json_text), lambda _: False)
            raise SerializationError(
                f"session[{key!r}]{path} holds a {describe(part)}, which strict"
                f" JSON mode cannot store ({exc}); store JSON types, tuples, bytes,"
                " Markup, UUID or datetime, or use PICKLESESSION_SERIALIZER ="
                " 'pickle'",
                key,
            ) from exc
        return JSON + text.encode("utf-8")
