"""Hostile input: arbitrary cookies and arbitrary stored bytes (hypothesis).

Whatever a client sends as its cookie and whatever someone with write access
writes into the store under a session's key, a request gets the right
session (possibly minus whole entries: each entry carries its own MAC, so
dropping one is possible, as documented) or a new empty one, and never an
exception. Every input that reaches the unpickler is recorded and must be
exactly a pickled value the app itself stored: bytes without a valid MAC are
never unpickled.

The number of inputs tried is printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import os
import struct
import typing as t

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_picklesession import FileSystemStore, RedisStore
from flask_picklesession.keys import KeyRing
from flask_picklesession.record import build, parse_raw
from flask_picklesession.redis_scripts import MOVED_MARKER
from flask_picklesession.store import GONE
from tests.fuzz.harness import (
    MAC_SIZE,
    MODES,
    PREFIX,
    TTL_MS,
    RecordingStore,
    UnpickleSpy,
    apply_program,
    build_app,
    cookie_of,
    is_right_or_empty,
    parse_entries,
    request_with_cookie,
    seed_values,
)

#: Examples per hypothesis run (each run is one test x store x mode).
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "120"))
#: Inputs tried, per test id; printed when the module ends.
TRIED: dict[str, int] = {}


def _settings(n: int = EXAMPLES) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module", autouse=True)
def _report_inputs_tried(request: pytest.FixtureRequest) -> t.Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not TRIED:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(
            f"hostile inputs tried by hypothesis: {sum(TRIED.values())}"
        )
        for name, count in sorted(TRIED.items()):
            reporter.write_line(f"  {count:6d}  {name}")


def _run(
    request: pytest.FixtureRequest,
    run: t.Callable[[], None],
    tried: list[int],
    minimum: int = EXAMPLES,
) -> None:
    """Run a hypothesis test; record how many inputs it tried, even if it failed."""
    try:
        run()
    finally:
        TRIED[request.node.name] = len(tried)
    assert len(tried) >= minimum, f"hypothesis ran only {len(tried)} inputs"


class Victim(t.NamedTuple):
    app: t.Any
    probes: list[dict[str, t.Any]]
    store: RecordingStore
    cookie: str
    sid: str
    original: dict[str, t.Any]
    record: bytes
    donor_cookie: str
    donor_record: bytes


def _put(raw_store: t.Any, key: str, record: bytes) -> None:
    """Replace what is stored under ``key``, as someone with store access could."""
    raw_store.delete(key)
    assert raw_store.create(key, record, TTL_MS)


def _seed(app: t.Any, token: str) -> tuple[str, str]:
    response = request_with_cookie(app, f"/seed/{token}", None)
    assert response.status_code == 200
    cookie = cookie_of(response)
    assert cookie is not None
    return cookie, response.get_data(as_text=True)


def _victim(raw_store: t.Any, mode: str, **config: t.Any) -> Victim:
    store = RecordingStore(raw_store)
    app, probes = build_app(store, mode, **config)
    cookie, sid = _seed(app, "victim")
    donor_cookie, donor_sid = _seed(app, "donor")
    record = raw_store.load(PREFIX + sid)
    original = seed_values(mode, "victim")
    # The oracle can tell the right session from a wrong one.
    request_with_cookie(app, "/probe", f"session={cookie}")
    assert probes.pop() == original
    return Victim(
        app,
        probes,
        store,
        cookie,
        sid,
        original,
        record,
        donor_cookie,
        raw_store.load(PREFIX + donor_sid),
    )


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


@pytest.fixture
def spy() -> t.Iterator[UnpickleSpy]:
    with UnpickleSpy().active() as active:
        yield active


def _assert_only_app_pickles(spy: UnpickleSpy, victim: Victim, mode: str) -> None:
    assert spy.foreign(victim.store.app_pickles) == [], (
        "unpickled bytes the app never stored"
    )
    if mode == "json":
        assert spy.calls == [], "strict JSON mode reached the unpickler"


# -- strategies ------------------------------------------------------------------------

_latin1 = st.characters(max_codepoint=255, exclude_categories=("Cs",))
_ints = st.integers(min_value=0, max_value=2**16)
_forged_length = st.one_of(
    st.integers(min_value=0, max_value=400),
    st.just(2**34),
    st.integers(min_value=0, max_value=2**35 - 1),
)
_structural_edit = st.one_of(
    st.tuples(st.just("drop"), _ints),
    st.tuples(st.just("dup"), _ints, _ints),
    st.tuples(st.just("move"), _ints, _ints),
    st.tuples(st.just("swap_bodies"), _ints, _ints),
    st.tuples(
        st.just("rename"),
        _ints,
        st.sampled_from([b"user", b"n", b"obj", b"cart", b"x", b""]),
    ),
    st.tuples(st.just("mac"), _ints, st.binary(min_size=16, max_size=16)),
    st.tuples(st.just("value"), _ints, st.binary(max_size=40)),
    st.tuples(st.just("donor"), _ints, _ints),
    st.tuples(
        st.just("forge"),
        _ints,
        st.sampled_from(["k", "v"]),
        _forged_length,
        st.integers(min_value=0, max_value=5),
    ),
)
_byte_edit = st.one_of(
    st.tuples(st.just("flip"), _ints, st.integers(0, 7)),
    st.tuples(st.just("set"), _ints, st.integers(0, 255)),
    st.tuples(st.just("truncate"), _ints),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("insert"), _ints, st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("delete"), _ints, st.integers(1, 24)),
)


@st.composite
def _layout_valid_records(draw: st.DrawFn) -> bytes:
    """Well-formed records whose MACs are anything but the app's."""
    entries = draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"user", b"obj", b"cart", b"n", b"\xff\xfe"]),
                st.binary(min_size=16, max_size=16),
                st.one_of(
                    st.binary(max_size=60),
                    st.sampled_from(
                        [b"p\x80\x05K\x01.", b"p\x80\x05\x8c\x02os\x94.", b"j[1]"]
                    ),
                ),
            ),
            max_size=5,
        )
    )
    return b"\x01" + b"".join(
        bytes([len(k)]) + k + bytes([len(v)]) + mac + v for k, mac, v in entries
    )


# -- stored bytes ---------------------------------------------------------------------


def _probe_then_write(
    victim: Victim, raw_store: t.Any, record: bytes, write: str
) -> None:
    """The checks every stored-bytes example makes."""
    _put(raw_store, PREFIX + victim.sid, record)
    victim.store.calls.clear()
    response = request_with_cookie(victim.app, "/probe", f"session={victim.cookie}")
    assert response.status_code == 200
    result = victim.probes.pop()
    assert is_right_or_empty(result, victim.original), result
    if record == victim.record:
        assert result == victim.original

    # A save on top of whatever is stored works and keeps the new value when
    # the save read the session first.
    response = request_with_cookie(
        victim.app, f"/{write}/written/yes", f"session={victim.cookie}"
    )
    assert response.status_code == 200
    cookie = cookie_of(response) or victim.cookie
    request_with_cookie(victim.app, "/probe", f"session={cookie}")
    after = victim.probes.pop()
    if write == "readset":
        assert after.get("written") == "yes", after
    after.pop("written", None)
    assert is_right_or_empty(after, victim.original), after


def test_mutated_real_records(raw_store, mode, spy, request):
    """Bit flips, truncation, extension, forged lengths, moved and spliced entries."""
    victim = _victim(raw_store, mode)
    tried = []

    @_settings()
    @given(
        structural=st.lists(_structural_edit, max_size=3),
        byte_edits=st.lists(_byte_edit, max_size=3),
        write=st.sampled_from(["set", "readset"]),
    )
    @example(structural=[("forge", 0, "v", 2**34, 0)], byte_edits=[], write="set")
    @example(structural=[("forge", 1, "k", 2**34, 0)], byte_edits=[], write="readset")
    @example(structural=[("donor", 3, 0)], byte_edits=[], write="readset")
    @example(structural=[("swap_bodies", 0, 1)], byte_edits=[], write="readset")
    @example(structural=[("drop", 2)], byte_edits=[], write="readset")
    @example(structural=[], byte_edits=[("flip", 40, 0)], write="readset")
    def run(structural, byte_edits, write):
        tried.append(1)
        record = apply_program(
            victim.record, structural, byte_edits, victim.donor_record
        )
        _probe_then_write(victim, raw_store, record, write)
        _assert_only_app_pickles(spy, victim, mode)

    _run(request, run, tried)
    assert spy.calls or mode == "json", (
        "the happy path never unpickled: is the spy wired?"
    )


def test_arbitrary_stored_bytes(raw_store, spy, request):
    """Random bytes and well-formed records with foreign MACs under the key."""
    victim = _victim(raw_store, "pickle")
    tried = []

    @_settings()
    @given(
        record=st.one_of(
            st.binary(max_size=300),
            st.binary(max_size=300).map(lambda b: b"\x01" + b),
            _layout_valid_records(),
        ),
        write=st.sampled_from(["set", "readset"]),
    )
    @example(record=b"", write="set")
    @example(record=b"\x01", write="readset")
    @example(record=b"\x01\xff\xff\xff\xff\x7f", write="set")
    def run(record, write):
        tried.append(1)
        _probe_then_write(victim, raw_store, record, write)
        _assert_only_app_pickles(spy, victim, "pickle")

    _run(request, run, tried)


def test_arbitrary_session_file_bytes(tmp_path, spy, request):
    """Filesystem store: the whole file, expiry header included, is hostile."""
    raw_store = FileSystemStore(tmp_path / "sessions")
    victim = _victim(raw_store, "pickle")
    path = tmp_path / "sessions" / (PREFIX + victim.sid)
    real_file = path.read_bytes()
    tried = []

    expiry = st.one_of(
        st.just(real_file[:8]),
        st.binary(min_size=8, max_size=8),
        st.sampled_from([struct.pack(">Q", 0), b"\xff" * 8]),
    )

    @_settings()
    @given(
        content=st.one_of(
            st.binary(max_size=40),
            st.tuples(expiry, st.lists(_byte_edit, max_size=3)).map(
                lambda pair: pair[0] + apply_program(victim.record, [], pair[1])
            ),
        )
    )
    def run(content):
        tried.append(1)
        path.write_bytes(content)
        response = request_with_cookie(victim.app, "/probe", f"session={victim.cookie}")
        assert response.status_code == 200
        result = victim.probes.pop()
        assert is_right_or_empty(result, victim.original)
        if content == real_file:
            assert result == victim.original
        response = request_with_cookie(
            victim.app, "/set/written/yes", f"session={victim.cookie}"
        )
        assert response.status_code == 200
        _assert_only_app_pickles(spy, victim, "pickle")

    _run(request, run, tried)


@pytest.mark.parametrize("redis_type", ["list", "hash", "set"])
def test_redis_key_of_another_type(redis_client, redis_type, spy):
    """WRONGTYPE under a session key: an empty session, and saves still work."""
    victim = _victim(RedisStore(redis_client), "pickle")
    key = PREFIX + victim.sid
    redis_client.delete(key)
    {
        "list": lambda: redis_client.rpush(key, b"\x01"),
        "hash": lambda: redis_client.hset(key, "a", b"\x01"),
        "set": lambda: redis_client.sadd(key, b"\x01"),
    }[redis_type]()
    for path in ["/probe", "/set/a/1", "/readset/b/2", "/untouched"]:
        response = request_with_cookie(victim.app, path, f"session={victim.cookie}")
        assert response.status_code == 200
    assert victim.probes == [{}]
    assert redis_client.type(key).decode() == redis_type
    _assert_only_app_pickles(spy, victim, "pickle")


# -- cookies ---------------------------------------------------------------------------


@st.composite
def _edited_cookie(draw: st.DrawFn, real: str, donor: str) -> str:
    value = real
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(["replace", "truncate", "insert", "swapcase", "splice"])
        )
        pos = draw(st.integers(0, max(len(value) - 1, 0)))
        if kind == "replace" and value:
            value = value[:pos] + draw(_latin1) + value[pos + 1 :]
        elif kind == "truncate":
            value = value[:pos]
        elif kind == "insert":
            value = (
                value[:pos]
                + draw(st.text(_latin1, min_size=1, max_size=8))
                + value[pos:]
            )
        elif kind == "swapcase" and value:
            value = value[:pos] + value[pos].swapcase() + value[pos + 1 :]
        else:  # a part of the donor's cookie in place of the same part of this one
            part = draw(st.integers(0, 2))
            mine, theirs = value.split("."), donor.split(".")
            if len(mine) == 3:
                mine[part] = theirs[part]
                value = ".".join(mine)
    return value


def test_arbitrary_cookies(raw_store, spy, request):
    """Any Cookie header: the right session or an empty one, and no store read
    for a cookie that does not verify."""
    victim = _victim(raw_store, "pickle")
    real, donor = victim.cookie, victim.donor_cookie
    donor_sid = donor.split(".")[0]
    donor_original = seed_values("pickle", "donor")
    other_key = KeyRing("some other secret").sign(real.rsplit(".", 1)[0])
    tried = []

    @_settings()
    @given(
        header=st.one_of(
            st.text(_latin1, max_size=200),
            st.text(_latin1, max_size=200).map(lambda v: "session=" + v),
            _edited_cookie(real, donor).map(lambda v: "session=" + v),
            st.sampled_from(
                [
                    f"session={other_key}",
                    f'session="{real}"',
                    f"session={real}x",
                    f"session={real}; session=junk",
                    f"session=junk; session={real}",
                    f"session={real[:43]}",
                    "session=" + "A" * 200,
                    f"session={real.upper()}",
                ]
            ),
        )
    )
    def run(header):
        tried.append(1)
        victim.store.calls.clear()
        for path in ["/probe", "/untouched"]:
            response = request_with_cookie(victim.app, path, header)
            assert response.status_code == 200
        result = victim.probes.pop()
        # Splicing all three parts of the donor's cookie gives the donor's
        # cookie back, which rightly opens the donor's session.
        right = {victim.sid: victim.original, donor_sid: donor_original}
        assert result == {} or any(
            sid in header and result == value for sid, value in right.items()
        ), result
        if result == {}:
            assert victim.store.calls.get("load", 0) == 0, (
                "an unverified cookie reached the store"
            )
        _assert_only_app_pickles(spy, victim, "pickle")

    _run(request, run, tried)


_meta = st.one_of(
    st.integers(min_value=0, max_value=2**80).map(lambda n: f"{n:x}p"),
    st.from_regex(r"[0-9a-fA-F_+ -]{0,72}[ps]", fullmatch=True),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=72),
)


def test_signed_cookies_with_arbitrary_payload(raw_store, spy, request):
    """Cookies that verify (only a holder of SECRET_KEY can make them) but carry
    any payload: still the right session or an empty one, never an exception,
    including a verified stamp too large for a datetime (16 hex digits) on a
    request that refreshes a permanent cookie.
    """
    victim = _victim(raw_store, "pickle")
    ring = KeyRing("hostile test secret")
    tried = []

    @_settings()
    @given(
        sid=st.sampled_from([victim.sid, "A" * 43, victim.sid[:42], ""]),
        meta=_meta,
        dot=st.sampled_from([".", "", ".."]),
    )
    @example(sid=victim.sid, meta="f" * 16 + "p", dot=".")
    @example(sid="A" * 43, meta="-1p", dot=".")
    def run(sid, meta, dot):
        tried.append(1)
        header = f"session={ring.sign(sid + dot + meta)}"
        for path in ["/untouched", "/probe"]:
            response = request_with_cookie(victim.app, path, header)
            assert response.status_code == 200
        assert victim.probes.pop() in ({}, victim.original)
        _assert_only_app_pickles(spy, victim, "pickle")

    _run(request, run, tried)


# -- the two merge implementations agree on hostile records ----------------------------


def test_redis_merge_script_matches_python_merge_on_hostile_records(
    redis_client, tmp_path, request
):
    """RedisStore's Lua merge and FileSystemStore's apply_ops, fed the same
    hostile record and ops, return the same result and leave the same entries."""
    stores = {
        "redis": RedisStore(redis_client),
        "filesystem": FileSystemStore(tmp_path / "s"),
    }
    victim = _victim(stores["filesystem"], "pickle")
    tried = []

    op = st.one_of(
        st.tuples(
            st.just(b"s"),
            st.sampled_from([b"user", b"n", b"new"]),
            st.binary(min_size=16, max_size=40),
        ),
        st.tuples(
            st.just(b"c"),
            st.sampled_from([b"user", b"n"]),
            st.binary(min_size=32, max_size=48),
        ),
        st.tuples(
            st.just(b"d"),
            st.sampled_from([b"user", b"n", b"cart", b"absent"]),
            st.just(b""),
        ),
    )

    @_settings()
    @given(
        record=st.one_of(
            st.tuples(
                st.lists(_structural_edit, max_size=3), st.lists(_byte_edit, max_size=2)
            ).map(
                lambda p: apply_program(victim.record, p[0], p[1], victim.donor_record)
            ),
            st.binary(max_size=80),
        ),
        ops=st.lists(op, max_size=4),
        max_size=st.integers(64, 800),
    )
    def run(record, ops, max_size):
        tried.append(1)
        results, after = {}, {}
        for name, store in stores.items():
            _put(store, "k", record)
            results[name] = store.patch("k", ops, TTL_MS, max_size)
            stored = store.load("k")
            # Entries compared as a mapping: the two may order them differently.
            after[name] = parse_raw(stored) if stored and results[name] > 0 else stored
        if record[:1] == MOVED_MARKER:
            # Redis only: the marker of a session being moved to a new id,
            # gone for every merge (the file store has no such thing).
            assert results["redis"] == GONE and after["redis"] is None
            return
        assert results["redis"] == results["filesystem"], (results, record, ops)
        assert after["redis"] == after["filesystem"]

    _run(request, run, tried)


# -- sanity of the harness itself ------------------------------------------------------


def test_harness_round_trips_and_detects_foreign_pickles(raw_store):
    """The oracle and the spy can fail: a forged pickle under a valid MAC is seen."""
    victim = _victim(raw_store, "pickle")
    entries = parse_entries(victim.record)
    assert entries is not None and build(dict(entries)) == victim.record
    assert apply_program(victim.record, [], []) == victim.record
    assert not is_right_or_empty({"user": "mallory"}, victim.original)
    spy = UnpickleSpy()
    with spy.active():
        from flask_picklesession.pickle_codec import PickleCodec

        PickleCodec().decode(b"p" + b"\x80\x05K\x01.")
    assert spy.foreign(victim.store.app_pickles) == [b"\x80\x05K\x01."]
    assert MAC_SIZE == 16
