"""The stored record format: layout, bounds, merges, MACs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_picklesession.keys import KeyRing
from flask_picklesession.record import (
    OP_DELETE,
    OP_SET,
    OP_SET_IF_MAC,
    CorruptRecord,
    appended_entries,
    appendix,
    apply_ops,
    build,
    encode_varint,
    parse_raw,
    record_size,
    varint_size,
)
from flask_picklesession.sealing import open_entries, open_record, seal

SID = "A" * 43
bodies = st.dictionaries(
    st.binary(max_size=20), st.binary(min_size=17, max_size=300), max_size=8
)


@given(bodies)
def test_build_and_parse_are_inverse(entries):
    data = build(entries)
    assert parse_raw(data) == entries
    assert record_size(entries.items()) == len(data)


@given(st.integers(min_value=0, max_value=2**34))
def test_varint_round_trip(number):
    from flask_picklesession.record import read_varint

    encoded = encode_varint(number)
    assert read_varint(encoded + b"rest", 0) == (number, len(encoded))
    assert varint_size(number) == len(encoded)


def test_declared_lengths_are_checked_before_slicing():
    for data in (
        b"\x01\xff\xff\xff\xff\x0f",
        b"\x01\x01k\xff\xff\xff\x7f",
        b"\x01\x80",
        b"\x01\x01k\x01" + b"m" * 16,
        b"\x00",
        b"",
    ):
        with pytest.raises(CorruptRecord):
            parse_raw(data)


def test_apply_ops_semantics():
    mac_a, mac_b = b"a" * 16, b"b" * 16
    base = build({b"x": mac_a + b"1", b"y": mac_b + b"2"})
    merged = apply_ops(
        base,
        [
            (OP_SET, b"z", mac_a + b"3"),
            (OP_DELETE, b"x", b""),
            (OP_SET_IF_MAC, b"y", mac_a + mac_b + b"stale"),  # MAC differs: skipped
        ],
    )
    assert merged == {b"y": mac_b + b"2", b"z": mac_a + b"3"}
    rekeyed = apply_ops(base, [(OP_SET_IF_MAC, b"y", mac_b + mac_a + b"2")])
    assert rekeyed[b"y"] == mac_a + b"2"
    assert apply_ops(None, [(OP_SET, b"z", mac_a)]) is None


def test_mac_binds_session_key_and_value():
    ring = KeyRing("secret")
    sealed = seal(ring, SID, b"role", b"sadmin")
    assert open_entries(ring, SID, {b"role": sealed})[0]["role"].value == b"sadmin"
    for sid, key, body in [
        ("B" * 43, b"role", sealed),
        (SID, b"rolf", sealed),
        (SID, b"role", sealed[:16] + b"sguest"),
        (SID, b"role", bytes([sealed[0] ^ 1]) + sealed[1:]),
    ]:
        with pytest.raises(CorruptRecord, match="MAC"):
            open_entries(ring, sid, {key: body})


def test_open_entries_reports_fallback_keys():
    old, new = KeyRing("old"), KeyRing("new", ["old"])
    raw = {b"a": seal(old, SID, b"a", b"s1"), b"b": seal(new, SID, b"b", b"s2")}
    entries, stale = open_entries(new, SID, raw)
    assert set(entries) == {"a", "b"} and stale == {"a"}
    with pytest.raises(CorruptRecord):
        open_entries(KeyRing("new"), SID, raw)


ops_strategy = st.lists(
    st.one_of(
        st.tuples(
            st.just(OP_SET), st.binary(max_size=6), st.binary(min_size=17, max_size=40)
        ),
        st.tuples(st.just(OP_DELETE), st.binary(max_size=6), st.just(b"")),
    ),
    max_size=8,
)


@given(bodies, st.lists(ops_strategy, max_size=4))
def test_appended_saves_read_like_merged_ones(entries, saves):
    """Appending saves and rewriting the merge give the same session."""
    appended = merged = build(entries)
    for ops in saves:
        appended += appendix(ops)
        merged = build(apply_ops(merged, ops))
    assert parse_raw(appended) == parse_raw(merged)


_keys = st.sampled_from([b"a", b"b", b"cart", b"\xc3\xa9t\xc3\xa9", b"x" * 130])
_sealed_ops = st.lists(
    st.tuples(
        st.sampled_from([OP_SET, OP_DELETE]), _keys, st.binary(min_size=1, max_size=9)
    ),
    max_size=6,
)


@given(st.lists(_sealed_ops, min_size=1, max_size=4), _sealed_ops)
def test_appended_entries_are_what_a_load_of_the_appended_record_finds(history, save):
    """Predicted entries match a full parse and MAC check of the new bytes:
    superseded entries, tombstones, re-set keys, keys named twice."""
    ring = KeyRing("k")

    def sealed(ops):
        return [
            (op, key, seal(ring, SID, key, value) if op == OP_SET else b"")
            for op, key, value in ops
        ]

    record = build({})
    for ops in history:
        record += appendix(sealed(ops))
    entries, _ = open_record(ring, SID, record)
    ops = sealed(save)
    predicted = appended_entries(entries, record, ops)
    if predicted is not None:
        loaded, stale = open_record(ring, SID, record + appendix(ops))
        assert list(predicted.items()) == list(loaded.items())
        assert not stale
    elif len({key for _, key, _ in ops}) == len(ops):
        # Only a key new to the entries yet present in the bytes makes it unsure.
        assert any(
            op == OP_SET and key.decode() not in entries and key in record
            for op, key, _ in ops
        )


def test_appended_entries_give_up_on_a_key_named_twice():
    """A key set, deleted and set again keeps its first place, before a key
    set in between: a dict of entries could not tell."""
    ring = KeyRing("k")
    ops = [
        (OP_SET, b"x", seal(ring, SID, b"x", b"s1")),
        (OP_DELETE, b"x", b""),
        (OP_SET, b"y", seal(ring, SID, b"y", b"s2")),
        (OP_SET, b"x", seal(ring, SID, b"x", b"s3")),
    ]
    record = build({})
    assert list(open_record(ring, SID, record + appendix(ops))[0]) == ["x", "y"]
    assert appended_entries({}, record, ops) is None


def test_appended_entries_refuse_conditional_sets():
    with pytest.raises(ValueError):
        appended_entries({}, build({}), [(OP_SET_IF_MAC, b"a", b"M" * 32 + b"s")])


def test_last_entry_wins_and_tombstones_delete():
    record = build({b"a": b"M" * 16 + b"s1", b"b": b"M" * 16 + b"s2"})
    record += appendix([(OP_SET, b"a", b"N" * 16 + b"s3"), (OP_DELETE, b"b", b"")])
    assert parse_raw(record) == {b"a": b"N" * 16 + b"s3"}
    record += appendix([(OP_SET, b"b", b"O" * 16 + b"s4")])
    assert list(parse_raw(record)) == [b"a", b"b"]


def test_conditional_sets_are_never_appended():
    with pytest.raises(ValueError):
        appendix([(OP_SET_IF_MAC, b"a", b"M" * 32 + b"s")])


def _outcome(func, *args):
    try:
        return func(*args)
    except CorruptRecord as exc:
        return str(exc)


@given(
    st.dictionaries(
        st.text(max_size=140).map(str.encode) | st.binary(max_size=4),
        st.tuples(
            st.sampled_from(["new", "old", "other"]),
            st.binary(min_size=1, max_size=200),
        ),
        max_size=6,
    ),
    st.lists(st.binary(max_size=4), max_size=3),
)
def test_open_record_is_parse_then_open(spec, deleted):
    """The one-pass load path agrees with the two steps on every record:
    values, fallback keys, tombstones, long keys, forged and non-UTF-8 keys."""
    rings = {"new": KeyRing("new"), "old": KeyRing("old"), "other": KeyRing("x")}
    record = build(
        {key: seal(rings[who], SID, key, value) for key, (who, value) in spec.items()}
    )
    record += appendix([(OP_DELETE, key, b"") for key in deleted])
    ring = KeyRing("new", ["old"])
    two_step = _outcome(lambda: open_entries(ring, SID, parse_raw(record)))
    assert _outcome(open_record, ring, SID, record) == two_step


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=140),
        st.binary(min_size=1, max_size=300)
        | st.binary(max_size=300).map(lambda b: b"Z" + encode_varint(len(b) * 9) + b),
    )
)
def test_measured_entry_sizes_add_up_to_the_record(values):
    """What a save measures of the loaded entries is what the compact record
    really takes, and what the filesystem store's merge counts against the
    size limit."""
    from flask_picklesession.compression import serialized_size
    from flask_picklesession.sizes import measure

    ring = KeyRing("k")
    record = build(
        {k.encode(): seal(ring, SID, k.encode(), v) for k, v in values.items()}
    )
    entries, _ = open_record(ring, SID, record)
    loaded = {key: entry.value for key, entry in entries.items()}
    assert measure(loaded)[:2] == (len(record), serialized_size(parse_raw(record)))


_values = st.dictionaries(
    st.sampled_from(["a", "cart", "été", "x" * 130]),
    st.binary(min_size=1, max_size=200)
    | st.binary(max_size=300).map(lambda b: b"P" + encode_varint(len(b) * 7) + b),
)


@given(_values, _values, st.sets(st.sampled_from(["a", "cart", "gone"])))
def test_sizes_after_a_save_are_measured_from_the_changes_alone(loaded, sets, deletes):
    """Updating the loaded sizes with a save's changes gives what measuring
    the whole session after it would."""
    from flask_picklesession.regenerating import _with_changes
    from flask_picklesession.sizes import _changed_sizes, measure

    deletes -= set(sets)
    after = _with_changes(dict(loaded), sets, deletes)
    assert _changed_sizes(measure(loaded), sets, deletes) == measure(after)
