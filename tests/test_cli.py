"""The ``flask picklesession`` operator commands, on the filesystem and on real Redis.

Sessions are made the way an app makes them (requests through the test
client) unless a test needs a record no app would write (forged, foreign,
expired, or many at once), which it then writes through the store itself.
"""

from __future__ import annotations

import importlib.metadata
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import time
import typing as t

import pytest
from flask import Flask, request, session

from flask_picklesession import PickleSession, Store, cli_output
from flask_picklesession.cli import picklesession_cli
from flask_picklesession.ids import new_sid, short_hash
from flask_picklesession.keys import KeyRing
from flask_picklesession.pickle_codec import PickleCodec
from flask_picklesession.record import OP_SET, build, parse_raw
from flask_picklesession.sealing import open_entries, seal
from tests.helpers import sid_of

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from flask_picklesession.record import Op
    from flask_picklesession.store import EntryInfo

STORES = ["filesystem", "redis", "sqlite"]
PREFIX = "session:"

#: Values unpickled by :class:`Boom`; must stay empty unless a test allows it.
UNPICKLED: list[str] = []


def _trigger(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Boom:
    """A pickle whose loading has a visible effect: proves what was unpickled."""

    def __reduce__(self) -> tuple[t.Any, tuple[str]]:
        return _trigger, ("unpickled",)


class Point:
    """A custom class, stored pickled as is."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __repr__(self) -> str:
        return f"Point({self.x}, {self.y})"


@pytest.fixture(autouse=True)
def _forget_unpickled() -> Iterator[None]:
    UNPICKLED.clear()
    yield
    UNPICKLED.clear()


# -- app and helpers -----------------------------------------------------------


@pytest.fixture(params=STORES)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, t.Any]:
    """``PICKLESESSION_*`` config of one store, emptied for each test."""
    if request.param == "filesystem":
        return {
            "PICKLESESSION_STORE": "filesystem",
            "PICKLESESSION_FILE_DIR": str(tmp_path / "sessions"),
        }
    if request.param == "sqlite":  # the README's example of a store of one's own
        from example_app.sqlite_store import SQLiteStore

        return {"PICKLESESSION_STORE": SQLiteStore(str(tmp_path / "sessions.db"))}
    return {
        "PICKLESESSION_STORE": "redis",
        "PICKLESESSION_REDIS": request.getfixturevalue("redis_client"),
    }


def build_app(store_config: dict[str, t.Any], **config: t.Any) -> Flask:
    """A minimal app: ``POST /put`` merges JSON into the session."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="current-key", TESTING=True, **store_config)
    app.config.update(config)
    PickleSession(app)

    @app.post("/put")
    def put() -> str:
        session.update(request.get_json())
        return "ok"

    @app.post("/point")
    def point() -> str:
        session["point"] = Point(3, 4)
        return "ok"

    return app


@pytest.fixture
def app(store_config: dict[str, t.Any]) -> Flask:
    return build_app(store_config)


def store_of(app: Flask) -> Store:
    return app.session_interface.settings_for(app).store  # type: ignore[attr-defined,no-any-return]


def new_session(app: Flask, values: dict[str, t.Any] | None = None) -> str:
    """Store a session through a request; return its id."""
    client = app.test_client()
    client.post("/put", json=values if values is not None else {"user": "alice"})
    return sid_of(client)


class Run(t.NamedTuple):
    """What a command did; ``output`` is stdout then stderr."""

    exit_code: int
    stdout: str
    stderr: str
    output: str


def run(app: Flask, *args: str) -> Run:
    """Invoke a command with stdout and stderr apart, on any Click 8."""
    try:  # Click < 8.2 mixes them unless told not to
        runner = app.test_cli_runner(mix_stderr=False)
    except TypeError:  # Click >= 8.2 keeps them apart and has no such argument
        runner = app.test_cli_runner()
    result = runner.invoke(picklesession_cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(
        result.exit_code, result.stdout, result.stderr, result.stdout + result.stderr
    )


def set_entry(
    app: Flask, sid: str, key: str, value: bytes, ring: KeyRing | None = None
) -> None:
    """Write one encoded value into a stored session, MACed with ``ring``."""
    ring = ring or KeyRing(app.config["SECRET_KEY"])
    body = seal(ring, sid, key.encode(), value)
    assert (
        store_of(app).patch(
            PREFIX + sid, [(OP_SET, key.encode(), body)], 60_000, 1 << 20
        )
        > 0
    )


def write_raw_session(
    store: Store, ring: KeyRing, values: dict[str, bytes], sid: str | None = None
) -> str:
    """Create a session record directly, as an app would have."""
    sid = sid or new_sid()
    record = build(
        {k.encode(): seal(ring, sid, k.encode(), v) for k, v in values.items()}
    )
    assert store.create(PREFIX + sid, record, 3_600_000)
    return sid


# -- every command -------------------------------------------------------------


def test_entry_point_declares_the_group() -> None:
    found = importlib.metadata.entry_points()
    if hasattr(found, "select"):  # Python >= 3.10
        points = found.select(group="flask.commands")
    else:
        points = found.get("flask.commands", [])  # type: ignore[attr-defined]
    # Python 3.9 may list one distribution twice (egg-info on sys.path too).
    targets = {p.value: p for p in points if p.name == "picklesession"}
    assert list(targets) == ["flask_picklesession.cli:picklesession_cli"]
    assert targets.popitem()[1].load() is picklesession_cli


def test_refuses_an_app_without_picklesession() -> None:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "k"
    result = run(app, "stats")
    assert result.exit_code == 1
    assert "does not use flask_picklesession" in result.output
    assert "flask.sessions.SecureCookieSessionInterface" in result.output


def test_refuses_an_app_without_secret_key(tmp_path: Path) -> None:
    app = build_app({"PICKLESESSION_FILE_DIR": str(tmp_path)}, SECRET_KEY=None)
    result = run(app, "stats")
    assert result.exit_code == 1
    assert "SECRET_KEY is not set" in result.output


def test_reports_a_store_that_is_down(tmp_path: Path) -> None:
    app = build_app({"PICKLESESSION_FILE_DIR": str(tmp_path / "file")})
    (tmp_path / "file").write_text("not a folder")  # since the app started
    result = run(app, "stats")
    assert result.exit_code == 1
    assert "Error: cannot list the session folder" in result.output
    assert "Traceback" not in result.output


def test_stats_on_an_empty_store(app: Flask) -> None:
    result = run(app, "stats")
    assert result.exit_code == 0, result.output
    assert "sessions:       0" in result.output
    assert "largest" not in result.output


def test_stats_counts_sizes_and_expiries(app: Flask) -> None:
    small = new_session(app, {"a": 1})
    big = new_session(app, {"a": "x" * 500})
    sids = [small, big, new_session(app, {"b": [1, 2]})]
    store = store_of(app)
    infos = [t.cast("EntryInfo", store.info(PREFIX + s)) for s in sids]
    result = run(app, "stats")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "sessions:       3" in out
    assert f"total size:     {sum(i.size for i in infos)} bytes" in out
    assert f"(session {short_hash(big)})" in out.split("largest:")[1].splitlines()[0]
    # Flask's default lifetime is 31 days, of which a few ms have passed (or none).
    assert re.search(r"^expires first:  in (30d 23h 59m|31d) \(session ", out, re.M)
    assert re.search(r"^expires last:   in (30d 23h 59m|31d) \(session ", out, re.M)
    for sid in sids:
        assert sid not in out  # ids are named by their short hash only


def test_stats_skips_keys_that_are_not_sessions(app: Flask) -> None:
    new_session(app)
    store_of(app).create(PREFIX + "not-a-session-id", b"\x01", 60_000)
    result = run(app, "stats")
    assert result.exit_code == 0, result.output
    assert "sessions:       1" in result.output
    assert "other keys under the prefix, not sessions: 1" in result.output


def test_stats_shows_progress_for_many_sessions(app: Flask) -> None:
    store, ring = store_of(app), KeyRing("current-key")
    for _ in range(cli_output.PROGRESS_MIN):
        write_raw_session(store, ring, {"n": b"i1"})
    result = run(app, "stats")
    assert result.exit_code == 0, result.output
    assert f"sessions:       {cli_output.PROGRESS_MIN}" in result.stdout
    assert "Reading sessions" in result.stderr  # off a terminal: the label only
    assert "Reading sessions" not in result.stdout


def test_cleanup_removes_expired_files(tmp_path: Path) -> None:
    app = build_app({"PICKLESESSION_FILE_DIR": str(tmp_path)})
    live, expired = new_session(app), new_session(app)
    with open(tmp_path / (PREFIX + expired), "r+b") as handle:  # expiry header
        handle.write(struct.pack(">Q", time.time_ns() // 1_000_000 - 1000))
    result = run(app, "cleanup")
    assert result.exit_code == 0, result.output
    assert "Removed 1 expired" in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        PREFIX + live
    ]


def test_cleanup_removes_only_this_apps_sessions(tmp_path: Path) -> None:
    """A folder shared by mistake: an expired file of another app holding a
    record, under a name that is no session key of this app, is kept."""
    app = build_app({"PICKLESESSION_FILE_DIR": str(tmp_path)})
    expired = new_session(app)
    past = struct.pack(">Q", time.time_ns() // 1_000_000 - 1000)
    with open(tmp_path / (PREFIX + expired), "r+b") as handle:
        handle.write(past)
    others = {
        "favicon.ico": b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00",
        "app.db": b"\x00" * 4096,
        "cache:page": past + b"\x01cached",  # looks like a record
        PREFIX + "short": past + b"\x01",  # under the prefix, not an id
    }
    for name, data in others.items():
        (tmp_path / name).write_bytes(data)
    result = run(app, "cleanup")
    assert result.exit_code == 0, result.output
    assert "Removed 1 expired" in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == (
        sorted(others)
    )


def test_cleanup_has_nothing_to_do_on_redis(redis_client: t.Any) -> None:
    app = build_app(
        {"PICKLESESSION_STORE": "redis", "PICKLESESSION_REDIS": redis_client}
    )
    new_session(app)
    result = run(app, "cleanup")
    assert result.exit_code == 0, result.output
    assert "Nothing to do" in result.output
    assert "expires sessions by itself" in result.output


def test_inspect_prints_every_value(app: Flask) -> None:
    client = app.test_client()
    client.post("/put", json={"user": "alice", "cart": ["apple", "tea"], "n": 3})
    client.post("/point")
    sid = sid_of(client)
    result = run(app, "inspect", sid)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"session {short_hash(sid)}: 4 key(s), ")
    assert sorted(lines[1:]) == [
        "cart = ['apple', 'tea']",
        "n = 3",
        "point = Point(3, 4)",
        "user = 'alice'",
    ]


def test_inspect_shortens_long_values(app: Flask) -> None:
    sid = new_session(app, {"long": "y" * 1000})
    short = run(app, "inspect", sid)
    assert short.exit_code == 0, short.output
    assert "(1002 characters; --full shows all)" in short.output
    full = run(app, "inspect", "--full", sid)
    assert f"long = {'y' * 1000!r}" in full.output


@pytest.mark.parametrize("command", ["inspect", "delete"])
def test_a_malformed_id_is_a_usage_error(app: Flask, command: str) -> None:
    for bad in ["abc", "x" * 42 + "!", "../../etc/passwd" + "a" * 30]:
        result = run(app, command, bad)
        assert result.exit_code == 2
        assert "Invalid value for 'SID': not a session id" in result.output


@pytest.mark.parametrize("command", ["inspect", "delete"])
@pytest.mark.parametrize("sid", ["A" * 43, "-P" + "a" * 41, "--" + "b" * 41])
def test_an_unknown_id_is_an_error(app: Flask, command: str, sid: str) -> None:
    result = run(app, command, sid)
    assert result.exit_code == 1
    assert f"no session {short_hash(sid)} in the store" in result.output


def test_an_id_may_start_with_a_dash(app: Flask) -> None:
    """One id in 32 does: it is the SID, not an unknown option."""
    ring = KeyRing("current-key")
    sid = write_raw_session(
        store_of(app), ring, {"user": b"sdash"}, sid="-x" + "y" * 41
    )
    inspected = run(app, "inspect", sid, "--full")
    assert inspected.exit_code == 0, inspected.output
    assert "user = 'dash'" in inspected.output
    deleted = run(app, "delete", sid)
    assert deleted.exit_code == 0, deleted.output
    assert store_of(app).info(PREFIX + sid) is None


def test_inspect_refuses_a_forged_entry_without_decoding_anything(app: Flask) -> None:
    sid = new_session(app, {"user": "alice"})
    forged = PickleCodec().encode("boom", Boom())
    set_entry(app, sid, "boom", forged, ring=KeyRing("attacker-key"))
    result = run(app, "inspect", sid)
    assert result.exit_code == 1
    assert "an entry failed its MAC check (keys: 'boom'); nothing was decoded" in (
        result.output
    )
    assert "alice" not in result.output
    assert UNPICKLED == []


def test_inspect_unpickles_an_authentic_entry_in_pickle_mode(app: Flask) -> None:
    """The counterpart of the refusals: the Boom probe does fire when allowed."""
    sid = new_session(app)
    set_entry(app, sid, "boom", PickleCodec().encode("boom", Boom()))
    result = run(app, "inspect", sid)
    assert result.exit_code == 0, result.output
    assert "boom = 'unpickled'" in result.output
    assert UNPICKLED == ["unpickled"]


def test_inspect_never_unpickles_in_json_mode(store_config: dict[str, t.Any]) -> None:
    app = build_app(store_config, PICKLESESSION_SERIALIZER="json")
    sid = new_session(app, {"user": "alice", "cart": ["tea"]})
    set_entry(app, sid, "boom", PickleCodec().encode("boom", Boom()))  # MAC is valid
    result = run(app, "inspect", sid)
    assert result.exit_code == 1
    assert "user = 'alice'" in result.output
    assert "cart = ['tea']" in result.output
    assert (
        "boom = <refused: pickled value refused in strict JSON mode>" in result.output
    )
    assert "1 entry(ies) were refused by the json serializer" in result.output
    assert UNPICKLED == []


@pytest.mark.parametrize("command", ["inspect", "delete"])
def test_a_session_can_be_named_as_logs_and_stats_name_it(
    app: Flask, command: str
) -> None:
    sid, other = new_session(app), new_session(app)
    result = run(app, command, short_hash(sid))
    assert result.exit_code == 0, result.output
    assert short_hash(sid) in result.output
    store = store_of(app)
    assert (store.info(PREFIX + sid) is None) is (command == "delete")
    assert store.info(PREFIX + other) is not None
    missing = run(app, command, "0" * 12)
    assert missing.exit_code == 1
    assert "no session is named 000000000000" in missing.output


def test_delete_removes_one_session(app: Flask) -> None:
    gone, kept = new_session(app), new_session(app)
    result = run(app, "delete", gone)
    assert result.exit_code == 0, result.output
    assert f"Deleted session {short_hash(gone)}." in result.output
    store = store_of(app)
    assert store.info(PREFIX + gone) is None
    assert store.info(PREFIX + kept) is not None


def test_clear_needs_yes(app: Flask) -> None:
    sid = new_session(app)
    result = run(app, "clear")
    assert result.exit_code == 2
    assert "this deletes 1 session(s) under the prefix 'session:'" in result.output
    assert "add --yes to confirm" in result.output
    assert store_of(app).info(PREFIX + sid) is not None


def test_clear_deletes_sessions_and_nothing_else(app: Flask) -> None:
    sids = [new_session(app) for _ in range(3)]
    store = store_of(app)
    store.create(PREFIX + "other", b"\x01", 60_000)
    store.create("elsewhere:" + new_sid(), b"\x01", 60_000)
    result = run(app, "clear", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleted 3 session(s)." in result.output
    assert "Left 1 other key(s) under the prefix alone." in result.output
    assert all(store.info(PREFIX + s) is None for s in sids)
    assert store.info(PREFIX + "other") is not None
    assert list(store.scan("elsewhere:"))


def test_clear_with_an_empty_prefix_leaves_redis_alone(
    store_config: dict[str, t.Any],
) -> None:
    """In Redis (or a store of one's own) a foreign key can look like a
    session id; the session folder holds sessions only, so it can still be
    cleared."""
    app = build_app(store_config, PICKLESESSION_KEY_PREFIX="")
    sid = new_session(app)
    store = store_of(app)
    result = run(app, "clear", "--yes")
    refused = store_config["PICKLESESSION_STORE"] != "filesystem"
    assert result.exit_code == (2 if refused else 0), result.output
    assert ("PICKLESESSION_KEY_PREFIX is empty" in result.output) is refused
    assert (store.info(sid) is not None) is refused


def test_clear_with_progress(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_output, "PROGRESS_MIN", 2)
    for _ in range(3):
        new_session(app)
    result = run(app, "clear", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleting sessions" in result.stderr
    assert list(store_of(app).scan(PREFIX)) == []


# -- rekey ---------------------------------------------------------------------


def rotate(app: Flask) -> None:
    """Step one of a rotation: a new current key, the old one as fallback."""
    app.config["SECRET_KEY_FALLBACKS"] = [app.config["SECRET_KEY"]]
    app.config["SECRET_KEY"] = "next-key"


def stale_keys(app: Flask, sid: str) -> set[str]:
    ring = KeyRing(app.config["SECRET_KEY"], app.config.get("SECRET_KEY_FALLBACKS"))
    data = store_of(app).load(PREFIX + sid)
    assert data is not None
    return open_entries(ring, sid, parse_raw(data))[1]


def test_rekey_moves_every_entry_to_the_current_key(app: Flask) -> None:
    client = app.test_client()
    client.post("/put", json={"user": "alice", "cart": ["tea"]})
    sid = sid_of(client)
    other = new_session(app, {"user": "bob"})
    store_of(app).touch(PREFIX + sid, 3_600_000)  # as if it had aged
    rotate(app)
    assert stale_keys(app, sid) == {"user", "cart"}

    result = run(app, "rekey")
    assert result.exit_code == 0, result.output
    assert "rekeyed:         2" in result.output
    assert "already current: 0" in result.output
    assert "failed MAC:      0" in result.output
    assert stale_keys(app, sid) == stale_keys(app, other) == set()
    ttl_after = t.cast("EntryInfo", store_of(app).info(PREFIX + sid)).ttl
    assert 3_500_000 < ttl_after <= 3_600_000  # the remaining lifetime is kept

    again = run(app, "rekey")
    assert "rekeyed:         0" in again.output
    assert "already current: 2" in again.output

    # The old key can go: the data is still there for the (re-signed) cookie.
    app.config["SECRET_KEY_FALLBACKS"] = None
    inspected = run(app, "inspect", sid)
    assert inspected.exit_code == 0, inspected.output
    assert "cart = ['tea']" in inspected.output


def test_rekey_reports_sessions_no_key_verifies(app: Flask) -> None:
    good = new_session(app)
    bad = new_session(app)
    set_entry(app, bad, "user", b"smallory", ring=KeyRing("unknown-key"))
    before = store_of(app).load(PREFIX + bad)
    rotate(app)
    result = run(app, "rekey")
    assert result.exit_code == 1
    assert "rekeyed:         1" in result.output
    assert "failed MAC:      1" in result.output
    assert "left untouched" in result.output
    assert store_of(app).load(PREFIX + bad) == before
    assert stale_keys(app, good) == set()


def test_rekey_leaves_another_librarys_sessions_alone(app: Flask) -> None:
    """Keys left under the same prefix by the session library used before
    (a pickled dict, a msgpack map) are not sessions whose key was dropped:
    they are counted apart and do not fail the run."""
    good = new_session(app)
    before = {}
    for payload in (pickle.dumps({"_permanent": True}), b"\x81\xa4user\xa5alice"):
        sid = new_sid()
        assert store_of(app).create(PREFIX + sid, payload, 60_000)
        before[sid] = store_of(app).load(PREFIX + sid)
    rotate(app)
    result = run(app, "rekey")
    assert result.exit_code == 0, result.output
    assert "rekeyed:         1" in result.output
    assert "failed MAC:      0" in result.output
    assert "not ours:        2" in result.output
    assert {sid: store_of(app).load(PREFIX + sid) for sid in before} == before
    assert stale_keys(app, good) == set()


def test_rekey_without_fallbacks_only_checks(app: Flask) -> None:
    new_session(app)
    result = run(app, "rekey")
    assert result.exit_code == 0, result.output
    assert "SECRET_KEY_FALLBACKS is empty" in result.output
    assert "already current: 1" in result.output


class RacingStore(Store):
    """A real store in which a request writes just before rekey's patch."""

    def __init__(self, inner: Store, race: t.Callable[[str], None]) -> None:
        self.inner, self.race = inner, race

    def load(self, key: str, ttl: int | None = None) -> bytes | None:
        return self.inner.load(key, ttl)

    def create(self, key: str, record: bytes, ttl: int) -> bool:
        return self.inner.create(key, record, ttl)

    def patch(
        self,
        key: str,
        ops: Sequence[Op],
        ttl: int,
        max_size: int,
        loaded: bytes | None = None,
    ) -> int:
        return self.inner.patch(key, ops, ttl, max_size, loaded)

    def touch(self, key: str, ttl: int) -> bool:
        return self.inner.touch(key, ttl)

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def take(self, key: str) -> bytes | None:
        return self.inner.take(key)

    def scan(self, prefix: str) -> Iterator[str]:
        return self.inner.scan(prefix)

    def info(self, key: str) -> EntryInfo | None:
        self.race(key)
        return self.inner.info(key)


def test_rekey_lets_a_concurrent_write_win(store_config: dict[str, t.Any]) -> None:
    plain = build_app(store_config)
    inner = store_of(plain)
    raced: list[str] = []

    def race(key: str) -> None:
        """What a request under the new key would write between rekey's steps."""
        if raced:
            return
        sid = key[len(PREFIX) :]
        ring = KeyRing("next-key")
        body = seal(ring, sid, b"cart", b"snew")
        assert inner.patch(key, [(OP_SET, b"cart", body)], 60_000, 1 << 20) > 0
        raced.append(sid)

    app = build_app({"PICKLESESSION_STORE": RacingStore(inner, race)})
    sid = new_session(app, {"user": "alice", "cart": "old"})
    rotate(app)
    result = run(app, "rekey")
    assert result.exit_code == 0, result.output
    assert raced == [sid]
    inspected = run(app, "inspect", sid)
    assert "cart = 'new'" in inspected.output  # not reverted to the stale 'old'
    assert "user = 'alice'" in inspected.output
    assert stale_keys(app, sid) == set()


# -- the real ``flask`` command ------------------------------------------------


def test_flask_command_finds_the_group(tmp_path: Path) -> None:
    """Through the installed entry point, as an operator types it."""
    (tmp_path / "opsapp.py").write_text(
        textwrap.dedent(f"""
        from flask import Flask
        from flask_picklesession import PickleSession

        app = Flask(__name__)
        app.config.update(SECRET_KEY="k",
                          PICKLESESSION_FILE_DIR={str(tmp_path / "s")!r})
        PickleSession(app)
    """)
    )
    env = {**os.environ, "FLASK_APP": "opsapp", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "picklesession", "stats"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "sessions:       0" in done.stdout


def test_delete_and_clear_say_so_when_an_entry_is_not_a_file(tmp_path: Path) -> None:
    """The store never removes a folder found where a session file belongs;
    the commands say so instead of reporting it deleted."""
    folder = tmp_path / "sessions"
    app = build_app(
        {"PICKLESESSION_STORE": "filesystem", "PICKLESESSION_FILE_DIR": str(folder)}
    )
    real = new_session(app)
    odd = new_sid()
    (folder / (PREFIX + odd)).mkdir()
    result = run(app, "delete", odd)
    assert result.exit_code == 1
    assert "not a regular file" in result.output
    assert (folder / (PREFIX + odd)).is_dir()
    result = run(app, "clear", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleted 1 session(s)." in result.output
    assert "Left 1 entry(ies) that are not regular files in place" in result.output
    assert store_of(app).info(PREFIX + real) is None
    assert (folder / (PREFIX + odd)).is_dir()
