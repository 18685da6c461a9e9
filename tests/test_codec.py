"""Value encodings: natives, pickle, strict JSON, the allowlist."""

from __future__ import annotations

import copyreg
import datetime
import enum
import json
import os
import pickle
import threading
import uuid
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from flask_picklesession import compression, pickle_codec, tagged_json
from flask_picklesession.compression import plain_size, unpack
from flask_picklesession.errors import SerializationError
from flask_picklesession.json_codec import JSONCodec
from flask_picklesession.pickle_codec import PickleCodec
from flask_picklesession.record import CorruptRecord, Entry, encode_varint, read_varint
from flask_picklesession.settings import make_codec
from flask_picklesession.tags import CorruptEntry

NATIVES = [
    "",
    "text",
    "\u00e9\ud83d\ude00",
    0,
    -5,
    2**100,
    1.5,
    float("inf"),
    b"",
    b"\x00\xff",
    True,
    False,
    None,
]


@pytest.mark.parametrize("codec", [PickleCodec(), JSONCodec()], ids=["pickle", "json"])
@pytest.mark.parametrize("value", NATIVES, ids=repr)
def test_natives_round_trip_with_exact_type(codec, value):
    decoded = codec.decode(codec.encode("k", value))
    assert decoded == value and type(decoded) is type(value)


def test_natives_never_touch_pickle():
    codec = PickleCodec()
    for value in NATIVES:
        assert codec.encode("k", value)[:1] != b"p"


def test_huge_int_falls_back_to_pickle():
    codec = PickleCodec()
    value = 10**5000
    encoded = codec.encode_plain("k", value)
    assert encoded[:1] == b"p" and codec.decode(encoded) == value


def test_pickle_uses_highest_protocol_without_frame_header():
    codec = PickleCodec()
    encoded = codec.encode("k", {"a": [1, 2, 3]})
    assert encoded[:1] == b"p" and not encoded[1:].startswith(b"\x80")
    assert codec.decode(encoded) == {"a": [1, 2, 3]}
    big = list(range(1000))
    assert codec.decode(codec.encode("k", big)) == big
    assert len(codec.encode("k", big)) < len(
        pickle.dumps(big, protocol=pickle.HIGHEST_PROTOCOL)
    )


def test_subclasses_of_natives_keep_their_type():
    codec = PickleCodec()
    value = Markup("<b>x</b>")
    assert type(codec.decode(codec.encode("k", value))) is Markup


def test_json_matches_flask_tagged_types():
    codec = JSONCodec()
    values = [
        (1, 2),
        Markup("<i>"),
        uuid.UUID(int=5),
        datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        {"nested": (1, b"x")},
        [1, {" t": "not a tag"}],
    ]
    for value in values:
        assert codec.decode(codec.encode("k", value)) == value


@pytest.mark.parametrize("value", [{1, 2}, object(), frozenset(), complex(1, 2)])
def test_json_refuses_other_types_naming_the_key(value):
    with pytest.raises(SerializationError, match="'basket'") as info:
        JSONCodec().encode("basket", value)
    assert info.value.key == "basket" and isinstance(info.value, TypeError)


class Level(enum.Enum):
    EASY = "easy"
    HARD = "hard"


class Holder:
    def __init__(self, held):
        self.held = held


@pytest.mark.parametrize(
    ("codec", "value", "where", "what"),
    [
        (PickleCodec(), {"a": [1, threading.Lock()]}, "['a'][1]", "_thread.lock"),
        (PickleCodec(), Holder((2, threading.Lock())), ".held[1]", "_thread.lock"),
        (PickleCodec(), [lambda: 1], "[0]", "builtins.function"),
        (JSONCodec(), {"d": [datetime.date(2024, 1, 1)]}, "['d'][0]", "datetime.date"),
        # JSON stores no object: the object is named, not its attributes
        (JSONCodec(), {"c": [Level.EASY]}, "['c'][0]", f"{__name__}.Level"),
        (JSONCodec(), [Holder(1)], "[0]", f"{__name__}.Holder"),
        # a global the allowlist lacks, where it sits
        (
            PickleCodec([f"{__name__}.Holder"]),
            Holder([Level.HARD]),
            ".held[0]",
            f"{__name__}.Level",
        ),
        (
            PickleCodec(["builtins.int"]),
            [(1, Level.HARD)],
            "[0][1]",
            f"{__name__}.Level",
        ),
    ],
)
def test_an_unstorable_part_is_named_where_it_sits(codec, value, where, what):
    with pytest.raises(SerializationError) as info:
        codec.encode("basket", value)
    assert f"session['basket']{where} holds a {what}," in str(info.value)


def test_json_refuses_pickled_entries_without_unpickling(monkeypatch):
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(CorruptEntry):
        JSONCodec().decode(b"p" + pickle.dumps(1))


@pytest.mark.parametrize(
    "data", [b"", b"?", b"i12x", b"f\x00", b"pnot a pickle", b"j{bad", b"s\xff\xfe\xff"]
)
def test_undecodable_values_are_corrupt_entries(data):
    with pytest.raises(CorruptEntry):
        PickleCodec().decode(data)


class Point:
    def __init__(self, x):
        self.x = x


def test_allowlist_is_exact_module_and_name():
    encoded = PickleCodec().encode("k", Point(1))
    assert PickleCodec([f"{__name__}.Point"]).decode(encoded).x == 1
    for names in (
        [f"{__name__}.Poin"],
        [f"{__name__}"],
        ["Point"],
        [f"{__name__}.Point2"],
    ):
        with pytest.raises(CorruptEntry, match="ALLOWLIST"):
            PickleCodec(names).decode(encoded)


def test_allowlist_blocks_code_execution_gadgets():
    class Gadget:
        def __reduce__(self):
            return (print, ("pwned",))

    data = b"p" + pickle.dumps(Gadget())
    with pytest.raises(CorruptEntry, match=r"builtins\.print"):
        PickleCodec(["datetime.date"]).decode(data)


#: A pickle naming only an allowed class, whose BUILD sets an attribute on
#: the class itself: ``Markup.escape = Markup`` for the whole process.
_SETS_A_CLASS_ATTRIBUTE = [
    # GLOBAL, then BUILD with state (None, {"escape": Markup})
    b"cmarkupsafe\nMarkup\nN}X\x06\x00\x00\x00escapecmarkupsafe\nMarkup\ns\x86b.",
    # the same through STACK_GLOBAL and the memo
    b"\x8c\x0amarkupsafe\x8c\x06Markup\x93\x94N}\x8c\x06escapeh\x00s\x86b.",
    b"\x8c\x0amarkupsafe\x8c\x06Markup\x93\x94h\x00N}\x8c\x01aK\x01s\x86b0.",
    # SETITEMS and APPEND on the class: calls of its methods
    b"cmarkupsafe\nMarkup\n(X\x01\x00\x00\x00aX\x01\x00\x00\x00bu.",
    b"cmarkupsafe\nMarkup\nX\x01\x00\x00\x00aa.",
]


@pytest.mark.parametrize("body", _SETS_A_CLASS_ATTRIBUTE)
def test_allowlist_refuses_a_pickle_that_changes_an_allowed_class(body):
    before = dict(vars(Markup))
    with pytest.raises(CorruptEntry, match="would change a global"):
        PickleCodec(["markupsafe.Markup"]).decode(b"p" + body)
    assert dict(vars(Markup)) == before
    assert str(Markup("<p>{}</p>").format("<script>")) == "<p>&lt;script&gt;</p>"


def _changes_level(opcodes: bytes) -> bytes:
    """GLOBAL Level, then ``opcodes`` that leave Level.EASY on the stack,
    then BUILD with state {"extra": 7}: the member would gain an attribute."""
    return (
        f"c{__name__}\nLevel\n".encode() + opcodes + b"}X\x05\x00\x00\x00extraK\x07sb."
    )


@pytest.mark.parametrize(
    "body",
    [
        _changes_level(b"X\x04\x00\x00\x00easy\x85R"),  # REDUCE: Level("easy")
        _changes_level(b"X\x04\x00\x00\x00easy\x85\x81"),  # NEWOBJ
        f"(X\x04\x00\x00\x00easyi{__name__}\nLevel\n".encode()  # INST
        + b"}X\x05\x00\x00\x00extraK\x07sb.",
    ],
    ids=["reduce", "newobj", "inst"],
)
def test_allowlist_refuses_a_pickle_that_changes_an_enum_member(body):
    """Calling an Enum returns its existing members, shared by every request."""
    with pytest.raises(CorruptEntry, match="would change an Enum member"):
        PickleCodec([f"{__name__}.Level"]).decode(b"p" + body)
    assert not hasattr(Level.EASY, "extra")


def test_allowlist_refuses_extension_codes():
    """An EXT code is answered from copyreg's cache, without asking the
    allowlist once anything in the process has loaded it."""
    copyreg.add_extension(__name__, "Level", 200)
    try:
        with pytest.raises(CorruptEntry, match="by an extension code"):
            PickleCodec([f"{__name__}.Level"]).decode(b"p\x82\xc8.")
    finally:
        copyreg.remove_extension(__name__, "Level", 200)


def test_allowlist_guard_walks_each_foreign_pickle_once(monkeypatch):
    """The walk costs about a pure-Python unpickle: a value is walked once
    per process, and not at all by the process that pickled it."""
    walked = []
    real = pickle_codec.check_no_shared_object_changed

    def counting(body, resolve):
        walked.append(body)
        real(body, resolve)

    monkeypatch.setattr(pickle_codec, "check_no_shared_object_changed", counting)
    writer = PickleCodec([f"{__name__}.Holder"])
    data = writer.encode("k", Holder([1, 2]))
    assert writer.decode(data).held == [1, 2] and walked == []
    reader = PickleCodec([f"{__name__}.Holder"])  # as in another process
    reader.decode(data)
    reader.decode(data)
    assert len(walked) == 1


def test_allowlist_check_of_a_record_unpickles_nothing(monkeypatch):
    """Checking a record's values against the allowlist walks them; their
    objects are built only for the keys a request reads."""
    writer = PickleCodec()
    entries = [Entry(b"M" * 16, writer.encode("k", [Holder(i) for i in range(50)]))]
    codec = PickleCodec([f"{__name__}.Holder"])
    monkeypatch.setattr(
        codec, "_load_pickle", lambda body: pytest.fail("unpickled in the check")
    )
    codec.check(entries)
    narrower = PickleCodec(["builtins.int"])
    with pytest.raises(CorruptRecord, match="Holder is not in"):
        narrower.check(entries)


def test_allowlist_loads_enum_members():
    codec = PickleCodec([f"{__name__}.Level"])
    assert codec.decode(codec.encode("level", [Level.HARD])) == [Level.HARD]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_allowlist_guard_passes_what_pickle_writes(protocol):
    """Instances are built with BUILD and filled with SETITEMS and APPENDS
    all the time: only a global as their target is refused."""
    value = {
        "points": [Point(1), Point([2, {"x": {3}}])] * 2,
        "when": datetime.date(2026, 1, 1),
        "tags": frozenset({"a"}),
        "pair": (Point(0), b"raw"),
        "html": Markup("<b>"),
    }
    codec = PickleCodec(
        [
            f"{__name__}.Point",
            "datetime.date",
            "markupsafe.Markup",
            "builtins.set",
            "builtins.frozenset",
            "builtins.object",
            "builtins.bytes",
            "builtins.str",
            "copyreg._reconstructor",  # what protocols 0 and 1 name
            "_codecs.encode",
        ]
    )
    data = pickle.dumps(value, protocol=protocol, fix_imports=False)
    back = codec.decode(b"p" + data)
    assert back["when"] == value["when"] and back["points"][1].x == [2, {"x": {3}}]
    assert back["html"] == value["html"] and back["pair"][1] == b"raw"


def test_make_codec_names():
    assert make_codec("pickle").name == "pickle" and make_codec("json").name == "json"
    with pytest.raises(ValueError):
        make_codec("yaml")


@pytest.mark.parametrize("codec", [PickleCodec(), JSONCodec()], ids=["pickle", "json"])
@pytest.mark.parametrize(
    "moment",
    [
        datetime.datetime(2024, 5, 17, 12, 30, 45),
        datetime.datetime(
            2024, 5, 17, 12, 30, 45, 123456, tzinfo=datetime.timezone.utc
        ),
        datetime.datetime(1, 1, 1),
        datetime.datetime(
            2024, 2, 29, 23, 59, 59, 999999, tzinfo=datetime.timezone.utc
        ),
    ],
)
def test_datetimes_have_a_compact_exact_native_form(codec, moment):
    data = codec.encode("when", moment)
    assert data[:1] == b"t" and len(data) <= 33
    back = codec.decode(data)
    assert back == moment and back.tzinfo is moment.tzinfo


@pytest.mark.parametrize(
    "moment",
    [
        datetime.datetime(
            2024, 5, 17, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        ),
        datetime.datetime(2024, 5, 17, tzinfo=datetime.timezone.utc).replace(fold=1),
    ],
)
def test_other_datetimes_keep_their_zone_through_pickle(moment):
    data = PickleCodec().encode("when", moment)
    assert data[:1] == b"p"
    back = PickleCodec().decode(data)
    assert back == moment and back.utcoffset() == moment.utcoffset()
    assert back.fold == moment.fold


@pytest.mark.parametrize("codec", [PickleCodec(), JSONCodec()], ids=["pickle", "json"])
def test_long_values_are_compressed_and_round_trip(codec):
    cart = [{"sku": f"SKU-{i:04d}", "qty": i % 3 + 1} for i in range(20)]
    for value in (cart, "ring twice at the side door; " * 10):
        plain = codec.encode_plain("k", value)
        stored = codec.encode("k", value)
        assert stored[:1] in (b"P", b"Z") and len(stored) < len(plain) // 2
        assert codec.decode(stored) == value
        assert unpack(stored) == plain


@pytest.mark.parametrize("size", [200, 600, 5000, 100_000])
def test_compression_window_fits_the_value(size):
    """A small value gets a small zlib window (its state is set up per call);
    values compressed with zlib's defaults, as before, still read back."""
    codec = PickleCodec()
    value = "".join(f"{i % 97:02d}," for i in range(size // 3))
    plain = codec.encode_plain("k", value)
    stored = codec.encode("k", value)
    size, start = read_varint(stored, 1)
    assert size == len(plain)
    window = 1 << ((stored[start] >> 4) + 8)  # CINFO, the first header byte
    assert window == min(max(1 << len(plain).bit_length(), 512), 32768)
    assert window >= min(len(plain), 32768)
    assert unpack(stored) == plain
    assert unpack(_compressed(stored[:1], plain)) == plain


def _compressed(tag, plain, claimed=None):
    """A compressed value as stored, with zlib's defaults; ``claimed`` lies
    about the length before compression."""
    size = len(plain) if claimed is None else claimed
    return tag + encode_varint(size) + zlib.compress(plain, 1)


def test_the_size_before_compression_is_known_without_inflating(monkeypatch):
    codec = PickleCodec()
    value = "ring twice at the side door; " * 100
    stored = codec.encode("k", value)
    monkeypatch.setattr(zlib, "decompressobj", None)  # inflating would fail
    assert len(stored) < 200
    assert plain_size(stored) == len(codec.encode_plain("k", value))
    assert plain_size(b"s-plain") == 7


def test_short_or_incompressible_values_stay_plain():
    codec = PickleCodec()
    assert codec.encode("k", "short")[:1] == b"s"
    noise = os.urandom(300)  # zlib cannot shrink this by an eighth
    assert codec.encode("k", noise)[:1] == b"b"
    assert codec.decode(codec.encode("k", noise)) == noise


def test_json_mode_refuses_a_compressed_pickle_without_opening_it():
    stored = PickleCodec().encode("k", [Markup("x")] * 50)
    assert stored[:1] == b"P"
    entry = Entry(b"M" * 16, stored)
    with pytest.raises(CorruptRecord):
        JSONCodec().check([entry])
    with pytest.raises(CorruptEntry):
        JSONCodec().decode(stored)


@pytest.mark.parametrize(
    "stored",
    [
        b"P" + encode_varint(8) + b"not zlib",
        _compressed(b"P", b"s" + b"x" * 200),  # the tag says pickle, it is not
        _compressed(b"Z", b"p" + pickle.dumps(1)),  # hides a pickle
        _compressed(b"Z", b"s" + b"x" * 200)[:-5],  # truncated
        _compressed(b"Z", b"Z" + zlib.compress(b"s1")),  # nested
        b"Z",  # no length
        b"Z\x80",  # a length cut short
        _compressed(b"Z", b"s" + b"x" * 200, claimed=0),
        _compressed(b"Z", b"s" + b"x" * 200, claimed=150),  # expands further
        _compressed(b"Z", b"s" + b"x" * 200, claimed=250),  # expands less
    ],
)
def test_bad_compressed_values_are_corrupt(stored):
    with pytest.raises(CorruptEntry):
        PickleCodec().decode(stored)


def test_a_compressed_bomb_is_refused_before_expanding(monkeypatch):
    monkeypatch.setattr(compression, "MAX_PLAIN_SIZE", 1000)
    honest = _compressed(b"Z", b"s" + b"\0" * 10**6)
    with pytest.raises(CorruptEntry, match="claims 1000001 bytes"):
        PickleCodec().decode(honest)
    lying = _compressed(b"Z", b"s" + b"\0" * 10**6, claimed=1000)
    with pytest.raises(CorruptEntry, match="not the size it claims"):
        PickleCodec().decode(lying)


@pytest.fixture
def inflations(monkeypatch):
    """Each call that really inflated a value, with an empty memo to start."""
    calls = []
    real = compression._inflate

    def spy(data, tag):
        calls.append(data)
        return real(data, tag)

    monkeypatch.setattr(compression, "_inflate", spy)
    monkeypatch.setattr(compression, "_inflated", {})
    return calls


def test_a_small_compressed_value_read_again_is_inflated_once(inflations):
    stored = PickleCodec().encode("k", "ring twice at the side door; " * 10)
    assert stored[:1] == b"Z"
    for _ in range(3):
        assert unpack(bytes(stored)) == unpack(stored)  # equal bytes, new objects
    assert len(inflations) == 1


def test_large_or_corrupt_values_are_never_remembered(inflations, monkeypatch):
    monkeypatch.setattr(compression, "INFLATED_MEMO_MAX", 100)
    roomy = PickleCodec().encode("k", "x" * 500)  # 500 bytes from a few
    bad = b"Z" + zlib.compress(b"s" + b"x" * 200)[:-5]
    for _ in range(2):
        unpack(roomy)
        with pytest.raises(CorruptEntry):
            unpack(bad)
    assert inflations == [roomy, bad] * 2 and compression._inflated == {}


def test_the_inflation_memo_is_bounded(inflations, monkeypatch):
    monkeypatch.setattr(compression, "INFLATED_MEMO_SIZE", 4)
    values = [PickleCodec().encode("k", f"{i} " + "y" * 300) for i in range(10)]
    for stored in values:
        unpack(stored)
    assert 0 < len(compression._inflated) <= 4
    assert [PickleCodec().decode(v) for v in values] == [
        f"{i} " + "y" * 300 for i in range(10)
    ]


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=5)
        | st.binary(max_size=5)
        | st.uuids()
        | st.sampled_from([" t", " b", " m", " d", " u", " di", "x"]),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(
                st.sampled_from([" t", " b", " di", "a", "b"]), inner, max_size=3
            )
        ),
        max_leaves=20,
    )
)
def test_json_fast_tagging_matches_flask(value):
    """The fast path writes exactly what Flask's tagger writes."""
    assert tagged_json._tag(value) == tagged_json._JSON_TAGGER.tag(value)
    text = json.dumps(tagged_json._tag(value))
    assert tagged_json.load_json(text) == tagged_json._JSON_TAGGER.loads(text)
