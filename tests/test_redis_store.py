"""The Redis store on real servers: plain, Cluster and Sentinel (issue 3)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import subprocess
import sys
import threading
import time

import flask
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from flask_picklesession import (
    ConfigurationError,
    PickleSession,
    RedisStore,
    StoreUnavailable,
)
from flask_picklesession.appending import APPEND_SLACK_MAX
from flask_picklesession.compression import pack
from flask_picklesession.cookie import make_cookie
from flask_picklesession.ids import new_sid
from flask_picklesession.keys import MAC_SIZE, KeyRing
from flask_picklesession.record import (
    OP_DELETE,
    OP_SET,
    OP_SET_IF_MAC,
    apply_ops,
    build,
    parse_raw,
)
from flask_picklesession.store import TOO_LARGE
from tests.helpers import add_routes, cookie_value, noise, put_cookie, sid_of
from tests.redis_servers import command_counter

#: Inside the merge script, GET and SET are counted by INFO commandstats too;
#: the client still makes one round trip (EVALSHA).
SCRIPT_INNER = ("get", "set", "del")


def redis_app(tmp_path, client=None, **config):
    app = flask.Flask("redis_app", instance_path=str(tmp_path))
    app.config.update({"SECRET_KEY": "k", "PICKLESESSION_STORE": "redis", **config})
    if client is not None:
        app.config["PICKLESESSION_REDIS"] = client
    PickleSession(app)
    return add_routes(app)


@pytest.fixture
def bump_app(tmp_path, redis_client):
    app = redis_app(tmp_path, redis_client)

    @app.route("/bump")
    def bump():
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    return app


# -- 1: how the store is built ------------------------------------------------------


def test_store_from_url_config(tmp_path, redis_server, redis_url):
    app = redis_app(tmp_path, PICKLESESSION_REDIS_URL=redis_url)
    c = app.test_client()
    c.get("/set/a/1")
    assert redis_server.client().exists("session:" + sid_of(c)) == 1


@pytest.mark.parametrize("bad", [object(), "redis://127.0.0.1:1/0", {"host": "x"}])
def test_wrong_client_object_is_a_clear_error(tmp_path, bad):
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SECRET_KEY="k", PICKLESESSION_STORE="redis", PICKLESESSION_REDIS=bad
    )
    with pytest.raises(ConfigurationError, match="PICKLESESSION_REDIS"):
        PickleSession(app)


@pytest.mark.parametrize("kind", ["asyncio", "pipeline"])
def test_clients_that_would_only_seem_to_write_are_refused(
    tmp_path, redis_client, redis_url, kind
):
    """An asyncio client's commands are coroutines nobody awaits, and a
    pipeline's wait for execute(): with either, every write would look done."""
    import redis.asyncio

    client = (
        redis.asyncio.Redis.from_url(redis_url)
        if kind == "asyncio"
        else redis_client.pipeline()
    )
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SECRET_KEY="k", PICKLESESSION_STORE="redis", PICKLESESSION_REDIS=client
    )
    with pytest.raises(ConfigurationError, match=rf"PICKLESESSION_REDIS.*{kind}"):
        PickleSession(app)


def test_decode_responses_client_is_refused_with_reason(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisStore(client)


def test_unreachable_url_never_falls_back(tmp_path):
    app = redis_app(tmp_path, PICKLESESSION_REDIS_URL="redis://127.0.0.1:1/0")
    app.testing = True
    with pytest.raises(StoreUnavailable):
        app.test_client().get("/set/a/1")


# -- 3: round trips, counted on the server ------------------------------------------


def test_round_trips_per_request_type(bump_app, redis_client):
    c = bump_app.test_client()
    c.get("/bump")  # creates: SET NX
    c.get("/bump")  # first append of this store: EVAL, which caches the script
    with command_counter(redis_client) as counter:
        c.get("/untouched")
    assert counter.counts == {}
    with command_counter(redis_client) as counter:
        c.get("/get/n")
    assert counter.counts == {"get": 1}
    with command_counter(redis_client) as counter:
        c.get("/bump")
    assert counter.counts.pop("get") == 1  # the read
    # one round trip: a script that appends the changed entry, O(change)
    assert counter.counts == {
        "evalsha": 1,
        "strlen": 1,
        # not a marker of a session being moved; still the record loaded
        "getrange": 2,
        "append": 1,
        "pexpire": 1,
    }
    with command_counter(redis_client) as counter:
        c.get("/set/b/2")  # blind write: reads the record, then one script
    scripts = counter.counts.get("evalsha", 0) + counter.counts.get("eval", 0)
    assert scripts == 1 and counter.counts["get"] == 1
    assert "hello" not in counter.counts
    with command_counter(redis_client) as counter:
        c.get("/clear")
    assert counter.counts == {"del": 1}


def test_a_server_that_lost_its_scripts_still_saves(bump_app, redis_client):
    """After a restart, SCRIPT FLUSH or failover, EVALSHA answers NOSCRIPT:
    the save sends the script's source once more and nothing is lost."""
    c = bump_app.test_client()
    for _ in range(3):  # create, then appends through EVAL and EVALSHA
        c.get("/bump")
    redis_client.script_flush()
    with command_counter(redis_client) as counter:
        c.get("/bump")
    assert counter.counts.get("evalsha") == 1 and counter.counts.get("eval") == 1
    assert c.get("/get/n").data == b"4"
    with command_counter(redis_client) as counter:
        c.get("/bump")
    assert "eval" not in counter.counts  # cached again
    assert c.get("/get/n").data == b"5"


def test_new_session_is_one_set(tmp_path, redis_client):
    app = redis_app(tmp_path, redis_client)
    c = app.test_client()
    redis_client.ping()  # open the connection before counting
    with command_counter(redis_client) as counter:
        c.get("/set/a/1")
    assert counter.counts == {"set": 1}


def test_forged_or_unknown_cookie_costs_nothing(tmp_path, redis_client):
    app = redis_app(tmp_path, redis_client)
    c = app.test_client()
    put_cookie(c, "forged.value.sig")
    with command_counter(redis_client) as counter:
        assert c.get("/dump").data == b"[]"
    assert counter.counts == {}


def test_refresh_is_one_getex(tmp_path, redis_client):
    app = redis_app(
        tmp_path, redis_client, PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=2)
    )
    c = app.test_client()
    c.get("/permanent/a/1")
    key = "session:" + sid_of(c)
    redis_client.pexpire(key, 1000)  # as if half the lifetime had passed
    import time

    time.sleep(0.03)
    with command_counter(redis_client) as counter:
        c.get("/get/a")
    assert counter.counts == {"getex": 1}
    assert redis_client.pttl(key) > 1500


# -- 4: TTL on every entry -----------------------------------------------------------


@pytest.mark.parametrize("route", ["/set/a/1", "/permanent/a/1"])
def test_every_entry_has_the_lifetime_as_ttl(tmp_path, redis_client, route):
    app = redis_app(
        tmp_path,
        redis_client,
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(minutes=10),
    )
    c = app.test_client()
    c.get(route)
    ttl = redis_client.pttl("session:" + sid_of(c))
    assert 599_000 < ttl <= 600_000
    c.get("/set/b/2")
    assert 599_000 < redis_client.pttl("session:" + sid_of(c)) <= 600_000


# -- 5: failures and recovery ---------------------------------------------------------


def _fragile_client(redis_server):
    return redis.Redis(
        host="127.0.0.1",
        port=redis_server.port,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )


def test_redis_down_raises_then_recovers(tmp_path, redis_server, redis_client):
    app = redis_app(tmp_path, _fragile_client(redis_server))
    app.testing = True
    c = app.test_client()
    c.get("/set/a/1")
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable) as info:
            c.get("/get/a")
        assert isinstance(info.value.__cause__, redis.RedisError)
        with pytest.raises(StoreUnavailable):
            c.get("/set/b/2")
    finally:
        redis_server.start()
    # The server came back empty (no persistence): a new session, no restart.
    assert c.get("/get/a").data == b"None"
    c.get("/set/b/2")
    assert c.get("/get/b").data == b"'2'"


def test_repr_of_a_session_whose_store_is_down_does_not_raise(tmp_path):
    """A repr goes to log lines and debuggers: it says the store is down."""
    app = redis_app(tmp_path, PICKLESESSION_REDIS_URL="redis://127.0.0.1:1/0")

    @app.route("/repr")
    def show():
        return repr(flask.session)

    c = app.test_client()
    put_cookie(c, make_cookie(KeyRing("k"), new_sid(), int(time.time() * 1000), False))
    assert b"store unavailable" in c.get("/repr").data


def test_redis_going_away_mid_request_is_not_reported_as_saved(
    tmp_path, redis_server, redis_client
):
    app = redis_app(tmp_path, _fragile_client(redis_server))
    app.testing = True

    @app.route("/read-then-crash")
    def read_then_crash():
        flask.session.get("a")
        redis_server.stop()
        flask.session["a"] = "changed"
        return "ok"

    c = app.test_client()
    c.get("/set/a/1")
    try:
        with pytest.raises(StoreUnavailable):
            c.get("/read-then-crash")
    finally:
        redis_server.start()


def test_503_handler_from_readme(tmp_path, redis_server, redis_client):
    app = redis_app(tmp_path, _fragile_client(redis_server))

    @app.errorhandler(500)
    def session_store_down(e):
        return (
            ("Session store unavailable, try again", 503)
            if isinstance(e.original_exception, StoreUnavailable)
            else e
        )

    c = app.test_client()
    c.get("/set/a/1")
    redis_server.stop()
    try:
        assert c.get("/get/a").status_code == 503  # while loading, in the view
        assert c.get("/set/b/2").status_code == 503  # while saving, after it
    finally:
        redis_server.start()


# -- 6: prefixes, and nothing that lists the whole server ------------------------------


def test_prefixes_isolate_apps(tmp_path, redis_client):
    one = redis_app(tmp_path / "one", redis_client, PICKLESESSION_KEY_PREFIX="one:")
    two = redis_app(tmp_path / "two", redis_client, PICKLESESSION_KEY_PREFIX="two:")
    c1 = one.test_client()
    c1.get("/set/user/alice")
    c2 = two.test_client()
    put_cookie(c2, cookie_value(c1))
    assert c2.get("/dump").data == b"[]"
    assert {k.decode().split(":")[0] for k in redis_client.scan_iter()} == {"one"}


def test_scan_matches_only_the_prefix(redis_client):
    store = RedisStore(redis_client)
    redis_client.set("a*b:1", b"x")
    redis_client.set("aXb:1", b"x")
    assert list(store.scan("a*b:")) == ["a*b:1"]


def test_package_never_uses_keys_or_flush():
    import pathlib

    import flask_picklesession

    source = "".join(
        p.read_text()
        for p in pathlib.Path(flask_picklesession.__file__).parent.glob("*.py")
    )
    for forbidden in (".keys(", "flushdb", "flushall", '"KEYS"', "'KEYS'"):
        assert forbidden not in source.replace("entries.keys(", "")


# -- 7: redis is optional --------------------------------------------------------------


def test_package_imports_without_redis(tmp_path):
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import flask, flask_picklesession as fp\n"
        f"app = flask.Flask('x', instance_path={str(tmp_path)!r})\n"
        "app.config.update(SECRET_KEY='k', PICKLESESSION_STORE='redis')\n"
        "try:\n    fp.PickleSession(app)\n"
        "except fp.ConfigurationError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "flask-picklesession[redis]" in out.stdout
    assert "URL" not in out.stdout  # the URL is fine: redis-py is missing


# -- the merge script follows record.apply_ops exactly --------------------------------


def test_merge_script_matches_python_merge(redis_client):
    store = RedisStore(redis_client)
    mac = b"M" * 16
    base = build({b"a": mac + b"s1", b"b": mac + b"s2", "é".encode(): mac + b"x" * 300})
    ops = [
        (OP_SET, b"c", b"N" * 16 + b"new"),
        (OP_DELETE, b"a", b""),
        (OP_SET_IF_MAC, b"b", mac + b"R" * 16 + b"rekeyed"),
        (OP_SET_IF_MAC, b"zz", mac + b"R" * 16 + b"ignored"),
        (OP_SET, b"a", b"N" * 16 + b"back"),
    ]
    redis_client.set("k", base)
    assert store.patch("k", ops, 60_000, 10_000) == 4
    expected = apply_ops(base, ops)
    assert (
        dict(
            __import__("flask_picklesession.record", fromlist=["x"]).parse_raw(
                redis_client.get("k")
            )
        )
        == expected
    )


def test_merge_script_refuses_oversize_and_missing(redis_client):
    store = RedisStore(redis_client)
    redis_client.set("k", build({b"a": b"M" * 16 + b"v"}))
    assert store.patch("k", [(OP_SET, b"b", b"N" * 16 + b"x" * 500)], 60_000, 100) == -2
    assert redis_client.get("k") == build({b"a": b"M" * 16 + b"v"})
    assert store.patch("missing", [(OP_SET, b"b", b"N" * 16)], 60_000, 100) == -1
    assert redis_client.exists("missing") == 0
    redis_client.set("bad", b"\x01\x7f")
    assert store.patch("bad", [(OP_SET, b"b", b"N" * 16)], 60_000, 100) == -3
    assert store.patch("k", [(OP_DELETE, b"a", b"")], 60_000, 100) == 0
    assert redis_client.exists("k") == 0


def test_wrong_type_key_is_corrupt_not_unavailable(tmp_path, redis_client):
    app = redis_app(tmp_path, redis_client)
    c = app.test_client()
    c.get("/set/a/1")
    key = "session:" + sid_of(c)
    redis_client.delete(key)
    redis_client.hset(key, "a", "1")
    assert c.get("/dump").data == b"[]"


# -- Cluster and Sentinel --------------------------------------------------------------


def test_contract_basics_on_a_cluster(tmp_path, redis_cluster_client):
    app = redis_app(tmp_path, redis_cluster_client)

    @app.route("/bump")
    def bump():
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    clients = [app.test_client() for _ in range(6)]  # ids spread over the slots
    for c in clients:
        c.get("/bump")
        assert c.get("/bump").data == b"2"
    c = clients[0]
    old = sid_of(c)
    c.get("/regenerate")
    assert redis_cluster_client.exists("session:" + old) == 0
    assert c.get("/get/n").data == b"2"
    store = app.session_interface.settings_for(app).store
    assert len(list(store.scan("session:"))) == 6  # SCAN over every master
    c.get("/clear")
    assert c.get("/dump").data == b"[]"


def test_round_trips_on_a_cluster(tmp_path, redis_cluster_client):
    app = redis_app(tmp_path, redis_cluster_client)
    c = app.test_client()
    c.get("/set/a/1")
    c.get("/get/a")  # warm connections to the node that owns the key
    with command_counter(redis_cluster_client) as counter:
        c.get("/get/a")
    assert counter.counts == {"get": 1}


def test_contract_basics_through_sentinel(tmp_path, redis_sentinel):
    from tests.redis_servers import SENTINEL_TRAFFIC

    client = redis_sentinel.client()
    redis_sentinel.flush()
    app = redis_app(tmp_path, client)
    c = app.test_client()
    c.get("/set/a/1")
    assert c.get("/get/a").data == b"'1'"
    counter = command_counter(client)
    c.get("/get/a")
    assert counter.delta(ignore=SENTINEL_TRAFFIC) == {"get": 1}
    c.get("/clear")
    assert redis_sentinel.master.client().dbsize() == 0


def test_merge_into_key_of_another_type_is_corrupt_not_an_error(redis_client):
    store = RedisStore(redis_client)
    redis_client.rpush("k", b"x")
    assert store.patch("k", [(OP_SET, b"b", b"N" * 16)], 60_000, 100) == -3
    assert redis_client.lrange("k", 0, -1) == [b"x"]


@pytest.mark.parametrize("stored", [b"\x02a newer format", b"not a record"])
def test_append_to_a_record_of_another_format_is_corrupt(redis_client, stored):
    """Appended after bytes no load can read, the save would answer done
    and be lost: it is refused as corrupt, and the caller starts anew."""
    store = RedisStore(redis_client)
    redis_client.set("k", stored)
    assert store.patch("k", [(OP_SET, b"b", b"N" * 16)], 60_000, 100, stored) == -3
    assert redis_client.get("k") == stored


def test_an_append_onto_a_record_changed_meanwhile_checks_the_whole_limit(
    redis_client,
):
    """Two saves that loaded the same record each fit the limit alone; the
    first appends. The second may not append too, for the record is no
    longer the one it measured (its 150,000 characters compress to a few
    hundred bytes): it is merged, and refused as too large."""
    store = RedisStore(redis_client)
    mac = b"m" * MAC_SIZE
    loaded = build({b"x": mac + b"s" + b"0" * 4000})
    redis_client.set("k", loaded)
    big = pack(b"s" + b"y" * 150_000)
    assert len(big) < 1000
    assert store.patch("k", [(OP_SET, b"a", mac + big)], 60_000, 262_144, loaded) > 0
    second = [(OP_SET, b"b", mac + big)]
    assert store.patch("k", second, 60_000, 262_144, loaded) == TOO_LARGE
    assert set(parse_raw(redis_client.get("k"))) == {b"x", b"a"}


def test_appended_saves_are_compacted(tmp_path, redis_client):
    """Saves append to the record; once it holds a bounded amount more than
    the live session, the next save rewrites it whole (the merge script), so
    a busy session never makes its reads much slower."""
    app = redis_app(tmp_path, redis_client)

    @app.route("/readset/<key>/<value>")
    def readset(key, value):
        flask.session.get(key)  # loaded first: the save knows the live size
        flask.session[key] = value
        return "ok"

    c = app.test_client()
    big = noise(3000)
    c.get("/set/big/" + big)
    key = "session:" + sid_of(c)
    sizes = []
    for i in range(200):
        assert c.get(f"/readset/n/{i:05d}").status_code == 200
        sizes.append(redis_client.strlen(key))
    assert max(sizes) <= sizes[0] + APPEND_SLACK_MAX
    assert any(b < a for a, b in zip(sizes, sizes[1:])), "never compacted"
    assert c.get("/get/n").data == b"'00199'"
    assert c.get("/get/big").data == repr(big).encode()


def test_delete_that_empties_the_session_rewrites(tmp_path, redis_client):
    app = redis_app(tmp_path, redis_client)

    @app.route("/pop/<key>")
    def pop(key):
        flask.session.pop(key, None)
        return "ok"

    c = app.test_client()
    c.get("/set/a/1")
    key = "session:" + sid_of(c)
    with command_counter(redis_client) as counter:
        c.get("/pop/a")
    assert "append" not in counter.counts
    assert redis_client.exists(key) == 0
    assert cookie_value(c) is None


def test_repr_says_where_the_sessions_are_in_a_line() -> None:
    """The CLI prints it; redis-py's own repr runs to hundreds of characters."""
    from redis.sentinel import Sentinel

    store = RedisStore(redis.Redis(host="10.0.0.5", port=6380, db=2))
    assert repr(store) == "RedisStore(Redis 10.0.0.5:6380 db=2)"
    master = Sentinel([("127.0.0.1", 26379)]).master_for("sessions")
    assert (
        repr(RedisStore(master)) == "RedisStore(Redis for Sentinel master 'sessions')"
    )


@contextlib.contextmanager
def _client_denied(redis_client, *commands):
    """A client of the same server whose ACL user may not run ``commands``."""
    user = "no-" + "-".join(commands)
    redis_client.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        commands=["+@all", *(f"-{command}" for command in commands)],
    )
    port = redis_client.connection_pool.connection_kwargs["port"]
    try:
        yield redis.Redis(port=port, username=user, password="pw")
    finally:
        redis_client.acl_deluser(user)


def test_regenerate_refused_halfway_leaves_no_copy_behind(tmp_path, redis_client):
    """The new record is written before the old one is taken: when taking
    it is refused, the save raises and the new copy, which no cookie will
    ever name, is removed again."""
    with _client_denied(redis_client, "eval", "evalsha") as limited:
        c = redis_app(tmp_path, limited, TESTING=True).test_client()
        c.get("/set/a/1")
        with pytest.raises(StoreUnavailable):
            c.get("/regenerate")
        assert redis_client.keys("session:*") == [b"session:" + sid_of(c).encode()]
        assert c.get("/dump").data == b"[('a', '1')]"


def test_a_save_the_acl_refuses_halfway_is_not_done(tmp_path, redis_client):
    """An append is followed by an expiry push: a user who may append but
    not push expiries is refused before the append, not after it."""
    version = redis_client.info("server")["redis_version"]
    if int(version.split(".")[0]) < 7:
        pytest.skip(f"Redis {version} has no redis.acl_check_cmd for scripts")
    c = redis_app(tmp_path, redis_client, TESTING=True).test_client()
    c.get("/set/a/1")
    c.get("/set/b/2")  # the first script call goes by EVAL
    key, cookie = "session:" + sid_of(c), cookie_value(c)
    before = redis_client.get(key)
    with _client_denied(redis_client, "pexpire") as limited:
        c = redis_app(tmp_path, limited, TESTING=True).test_client()
        put_cookie(c, cookie)
        with pytest.raises(StoreUnavailable, match="PEXPIRE"):
            c.get("/set/a/changed")
    assert redis_client.get(key) == before


def test_wrong_client_class_is_a_clear_error(tmp_path):
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SECRET_KEY="k", PICKLESESSION_STORE="redis", PICKLESESSION_REDIS=redis.Redis
    )
    with pytest.raises(ConfigurationError, match="PICKLESESSION_REDIS is the class"):
        PickleSession(app)


# -- 7: a reply lost and the command sent again --------------------------------------

#: Keeps the server busy for ARGV[1] microseconds, as a slow command would.
_BUSY_SCRIPT = """
local t0 = redis.call('TIME')
repeat
  local t = redis.call('TIME')
until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= tonumber(ARGV[1])
"""


def _impatient_client(redis_server):
    """A client that gives up on a reply after 0.25 s and sends it once more."""
    return redis.Redis(
        port=redis_server.port,
        socket_timeout=0.25,
        retry=Retry(NoBackoff(), 1),
        # redis-py before 6 does not resend after a timeout unless told to
        retry_on_error=[redis.exceptions.TimeoutError],
    )


def _stall_before(store, method, redis_server):
    """Make the server busy for 0.4 s just before ``store.method`` runs once.

    The command then times out, redis-py sends it again on a new
    connection, and the server, once free, runs both.
    """
    original = getattr(store, method)

    def stalled(*args):
        del store.__dict__[method]
        busy = threading.Thread(
            target=redis_server.client().eval, args=(_BUSY_SCRIPT, 0, 400_000)
        )
        busy.start()
        time.sleep(0.05)
        try:
            return original(*args)
        finally:
            busy.join()

    store.__dict__[method] = stalled


def test_a_resent_take_still_moves_the_session(
    tmp_path, redis_server, redis_client, caplog
):
    """regenerate() takes the old record; sent twice, the second take used
    to find nothing, and the session, taken for deleted meanwhile, was
    dropped: the login answered 200 with no session at all."""
    client = _impatient_client(redis_server)
    store = RedisStore(client)
    app = redis_app(tmp_path, PICKLESESSION_STORE=store)
    c = app.test_client()
    c.get("/set/cart/book")
    c.get("/set/n/1")
    old = sid_of(c)
    _stall_before(store, "take", redis_server)
    caplog.set_level(logging.INFO, logger="flask_picklesession")
    with command_counter(redis_server.client()) as counter:
        rv = c.get("/regenerate")
    # the busy script, then the take (its first call: EVAL), sent twice
    assert counter.counts.get("eval") == 3, counter.counts
    assert rv.status_code == 200
    assert sid_of(c) != old
    assert c.get("/dump").data == b"[('cart', 'book'), ('n', '1')]"
    keys = redis_server.client().keys("session:*")
    assert keys == [b"session:" + sid_of(c).encode()]
    assert "dropped" not in caplog.text


def test_a_resent_create_stores_one_record(tmp_path, redis_server, redis_client):
    """SET NX sent twice finds its own record the second time: the session
    keeps its id, and no copy is left that no cookie names."""
    store = RedisStore(_impatient_client(redis_server))
    c = redis_app(tmp_path, PICKLESESSION_STORE=store).test_client()
    store.client.ping()  # connected: the stall meets the SET, not the handshake
    _stall_before(store, "create", redis_server)
    with command_counter(redis_server.client()) as counter:
        c.get("/set/a/1")
    assert counter.counts.get("set") == 2, counter.counts  # sent twice
    keys = redis_server.client().keys("session:*")
    assert keys == [b"session:" + sid_of(c).encode()]
    assert c.get("/get/a").data == b"'1'"


def test_a_moved_marker_reads_as_gone(redis_client):
    """While a take's marker stands, the session is gone to every other
    operation: loads, merges and appends, and other takes."""
    store = RedisStore(redis_client)
    key = "session:marked"
    record = build({b"a": os.urandom(16) + b"\x01x"})
    redis_client.set(key, b"\x00" + b"t" * 16 + record, px=60_000)
    assert store.load(key) is None
    assert store.take(key) is None
    # An old cookie keeps neither the marker nor the record in it alive.
    assert store.touch(key, 3_600_000) is False
    assert store.load(key, 3_600_000) is None
    assert 0 < redis_client.pttl(key) <= 60_000
    ops = [(OP_SET, b"b", os.urandom(16) + b"\x01y")]
    assert store.patch(key, ops, 60_000, 1 << 20) == -1
    assert store.patch(key, ops, 60_000, 1 << 20, loaded=record) == -1
    assert redis_client.get(key) == b"\x00" + b"t" * 16 + record


def test_an_unreachable_store_is_asked_once(tmp_path, redis_server, redis_client):
    """A timed-out refreshing read is not followed by a plain read, nor by
    a refresh when the response goes out: each would wait as long again."""
    lifetime = datetime.timedelta(seconds=5)  # a refresh is due after 50 ms
    app = redis_app(
        tmp_path,
        _fragile_client(redis_server),
        PERMANENT_SESSION_LIFETIME=lifetime,
        TESTING=True,
    )
    calls = []
    store = app.session_interface.settings_for(app).store
    for method in ("load", "touch"):
        original = getattr(store, method)
        store.__dict__[method] = lambda *a, _o=original, _m=method: (
            calls.append(_m) or _o(*a)
        )
    c = app.test_client()
    c.get("/permanent/a/1")
    time.sleep(0.06)
    redis_server.stop()
    calls.clear()
    try:
        with pytest.raises(StoreUnavailable):
            c.get("/get/a")
    finally:
        redis_server.start()
    assert calls == ["load"]
