"""Flask's tagged JSON, with fast paths for values that are plain JSON.

A module of its own because both sides need it: every codec decodes JSON
values (:class:`.codec.Codec`), and strict JSON mode writes them
(:class:`.json_codec.JSONCodec`).
"""

from __future__ import annotations

import json
import typing as t

from flask.json.tag import TaggedJSONSerializer

_JSON_TAGGER = TaggedJSONSerializer()
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def load_json(text: str) -> object:
    """Flask's tagged JSON ``loads``, skipping the per-object hook when no
    object can be a tag: a tag is a one-key object whose key starts with a
    space, which only shows in the text as ``{" `` (inside a JSON string a
    quote is escaped)."""
    if '{" ' not in text:
        return json.loads(text)
    return _JSON_TAGGER.loads(text)


def _tag(value: object) -> object:
    """Flask's ``TaggedJSONSerializer.tag``, with a fast path for plain JSON.

    Lists and dicts of plain JSON values are walked here; everything else
    (tuples, bytes, Markup, UUID, datetimes, a one-key dict whose key could
    pass for a tag) goes to Flask's tagger, so the output is the same.
    """
    kind = type(value)
    if kind in _JSON_SCALARS:
        return value
    # Scalars are tested inline: most items of a session's lists and dicts
    # are scalars, and a call per item would double the cost.
    scalars = _JSON_SCALARS
    if kind is list:
        items = t.cast("list[object]", value)
        return [v if type(v) in scalars else _tag(v) for v in items]
    if kind is dict and len(t.cast("dict[object, object]", value)) != 1:
        pairs = t.cast("dict[object, object]", value).items()
        return {k: v if type(v) in scalars else _tag(v) for k, v in pairs}
    return _JSON_TAGGER.tag(value)


def json_text(value: object) -> str:
    """Strict mode's JSON for one value, as Flask's tagged serializer writes it."""
    return json.dumps(_tag(value), separators=(",", ":"))
