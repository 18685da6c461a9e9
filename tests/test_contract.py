"""The public contract, end to end through ``app.test_client()``, on every store.

Each test names the contract item it proves. Store traffic is counted by the
``store`` fixture, which wraps a real store.
"""

from __future__ import annotations

import ast
import base64
import copy
import datetime
import pickle
import re
import time

import flask
import pytest
from markupsafe import Markup

from flask_picklesession import PickleSession, SessionTooLarge, StoreUnavailable
from tests.helpers import (
    add_routes,
    cookie_value,
    noise,
    put_cookie,
    set_cookie_headers,
    sid_of,
)


@pytest.fixture
def client(app):
    add_routes(app)
    return app.test_client()


def writes(counts):
    return {
        k: v for k, v in counts.items() if k in ("create", "patch", "touch", "delete")
    }


# -- 1, 2: the cookie holds only a signed random id ---------------------------


def test_cookie_is_signed_id_only(client, store):
    client.get("/set/card/4111-1111-secret")
    value = cookie_value(client)
    sid, meta, _signature = value.split(".")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)  # 32 random bytes
    assert len(base64.urlsafe_b64decode(sid + "=")) == 32
    assert re.fullmatch(r"[0-9a-f]+[ps]", meta)
    assert "secret" not in value and b"secret" not in base64.urlsafe_b64decode(
        sid + "="
    )
    assert client.get("/sid").data.decode() == sid


def test_ids_are_random_per_session(app):
    add_routes(app)
    ids = set()
    for _ in range(5):
        c = app.test_client()
        c.get("/set/a/1")
        ids.add(sid_of(c))
    assert len(ids) == 5


def test_store_key_is_prefix_plus_sid(make_app, raw_store):
    app = add_routes(make_app(PICKLESESSION_KEY_PREFIX="myapp:"))
    c = app.test_client()
    c.get("/set/a/1")
    sid = sid_of(c)
    assert raw_store.load("myapp:" + sid) is not None
    assert raw_store.load("session:" + sid) is None


# -- 3, 4: no needless store traffic or cookies ---------------------------------


def test_untouched_request_costs_nothing(client, store):
    client.get("/set/a/1")
    store.reset()
    rv = client.get("/untouched")
    assert store.reset() == {}
    assert set_cookie_headers(rv) == []
    assert "Cookie" not in rv.headers.get("Vary", "")


def test_new_session_that_stays_empty_is_never_stored(client, store):
    rv = client.get("/get/a")
    assert rv.data == b"None"
    assert store.reset() == {}
    assert set_cookie_headers(rv) == []


def test_new_session_with_only_permanent_flag_is_not_stored(app, store):
    @app.route("/perm-only")
    def perm_only():
        flask.session.permanent = True
        return "ok"

    rv = app.test_client().get("/perm-only")
    assert writes(store.reset()) == {}
    assert set_cookie_headers(rv) == []


def test_read_only_request_reads_once_and_writes_nothing(client, store):
    client.get("/set/a/1")
    store.reset()
    rv = client.get("/get/a")
    assert rv.data == b"'1'"
    assert store.reset() == {"load": 1}
    assert set_cookie_headers(rv) == []


def test_store_operations_per_request_type(client, store):
    client.get("/set/a/1")
    assert store.reset() == {"create": 1}
    client.get("/set/b/2")  # blind write: the record is read (verified) first
    assert store.reset() == {"load": 1, "patch": 1}
    client.get("/dump")
    assert store.reset() == {"load": 1}
    client.get("/clear")
    assert store.reset() == {"delete": 1}


def test_read_then_write_is_one_load_and_one_patch(app, store):
    @app.route("/bump")
    def bump():
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    c = app.test_client()
    assert c.get("/bump").data == b"1"
    store.reset()
    assert c.get("/bump").data == b"2"
    assert store.reset() == {"load": 1, "patch": 1}


def test_permanent_read_refreshes_cookie_but_not_data(make_app, store, raw_store):
    app = add_routes(make_app(PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=4)))
    c = app.test_client()
    c.get("/permanent/a/1")
    sid = sid_of(c)
    stored = raw_store.load("session:" + sid)
    time.sleep(0.1)  # past 1% of the lifetime: the stored expiry is due a refresh
    before = raw_store.info("session:" + sid).ttl
    store.reset()
    rv = c.get("/get/a")
    assert rv.data == b"'1'"
    assert store.reset() == {"load": 1}  # GETEX-style load, no rewrite
    assert raw_store.info("session:" + sid).ttl > before
    assert raw_store.load("session:" + sid) == stored
    assert len(set_cookie_headers(rv)) == 1
    assert sid_of(c) == sid


@pytest.mark.parametrize(
    ("flag", "persistent"), [(True, True), (False, False), ("yes", True), (0, False)]
)
def test_a_read_only_request_keeps_the_stored_permanence(app, flag, persistent):
    """The permanent flag is read as stored, bool or not, whatever the cookie says."""

    @app.route("/flag")
    def set_flag():
        flask.session["a"] = "1"
        flask.session["_permanent"] = flag
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/flag")
    rv = c.get("/get/a")
    assert rv.data == b"'1'"
    (header,) = set_cookie_headers(rv) or [""]
    assert ("Expires=" in header) is persistent
    # The cookie was made as the flag says, so a read re-sends it only when
    # permanent; the flag itself is left unread.
    assert bool(header) is persistent


def test_permanent_untouched_request_resends_the_cookie_as_flask_does(make_app, store):
    """Flask re-sends a permanent cookie on every response under
    SESSION_REFRESH_EACH_REQUEST, whether the view used the session or not.
    Before the refresh is due, that is the cookie the browser holds, and the
    store is not asked."""
    app = add_routes(make_app())
    c = app.test_client()
    first = set_cookie_headers(c.get("/permanent/a/1"))
    store.reset()
    rv = c.get("/untouched")
    assert store.reset() == {}
    assert set_cookie_headers(rv) == first
    assert rv.headers["Vary"] == "Cookie"


def test_untouched_request_with_a_forged_permanent_cookie_sends_nothing(
    make_app, store
):
    app = add_routes(make_app())
    c = app.test_client()
    c.get("/permanent/a/1")
    value = cookie_value(c)
    put_cookie(c, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    store.reset()
    rv = c.get("/untouched")
    assert store.reset() == {}
    assert set_cookie_headers(rv) == []


def test_permanent_untouched_request_refreshes_when_due(make_app, store, raw_store):
    app = add_routes(make_app(PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=4)))
    c = app.test_client()
    c.get("/permanent/a/1")
    sid, before = sid_of(c), cookie_value(c)
    stored = raw_store.load("session:" + sid)
    time.sleep(0.05)  # past 1% of the lifetime
    store.reset()
    rv = c.get("/untouched")
    assert store.reset() == {"touch": 1}  # expiry pushed back, data not rewritten
    assert raw_store.load("session:" + sid) == stored
    assert len(set_cookie_headers(rv)) == 1
    assert "Cookie" in rv.headers["Vary"]
    assert sid_of(c) == sid and cookie_value(c) != before  # a newer stamp


def test_write_keeps_a_fresh_cookie_and_restamps_a_due_one(make_app, raw_store):
    app = add_routes(make_app(PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=4)))
    c = app.test_client()
    c.get("/permanent/a/1")
    sid, first = sid_of(c), cookie_value(c)
    rv = c.get("/set/b/2")  # within 1% of the lifetime: same cookie, same expiry
    assert len(set_cookie_headers(rv)) == 1 and cookie_value(c) == first
    time.sleep(0.05)  # past 1% of the lifetime
    before = raw_store.info("session:" + sid).ttl
    c.get("/set/b/3")
    assert sid_of(c) == sid and cookie_value(c) != first  # a newer stamp
    assert raw_store.info("session:" + sid).ttl > before


def test_no_refresh_without_refresh_each_request(make_app, store):
    app = add_routes(make_app(SESSION_REFRESH_EACH_REQUEST=False))
    c = app.test_client()
    c.get("/permanent/a/1")
    rv = c.get("/get/a")
    assert set_cookie_headers(rv) == []


def test_setting_permanent_again_is_not_a_write(app, store):
    @app.route("/keep-permanent")
    def keep_permanent():
        flask.session.permanent = True
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/permanent/a/1")
    store.reset()
    c.get("/keep-permanent")
    assert writes(store.reset()) == {}


# -- 5: clear ---------------------------------------------------------------------


def test_clear_deletes_store_entry_and_cookie(client, raw_store):
    client.get("/set/a/1")
    sid = sid_of(client)
    rv = client.get("/clear")
    assert raw_store.load("session:" + sid) is None
    assert any(
        "Max-Age=0" in h or "Expires=Thu, 01 Jan 1970" in h
        for h in set_cookie_headers(rv)
    )
    assert cookie_value(client) is None


def test_data_set_after_clear_goes_to_a_new_id(app, raw_store):
    @app.route("/logout-and-note")
    def logout_and_note():
        flask.session.clear()
        flask.session["note"] = "bye"
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/set/user/alice")
    old = sid_of(c)
    c.get("/logout-and-note")
    assert raw_store.load("session:" + old) is None
    assert sid_of(c) != old
    assert c.get("/dump").data == b"[('note', 'bye')]"


# -- 6: bad cookies --------------------------------------------------------------

BAD_COOKIES = {
    "garbage": "not-a-session",
    "empty": "",
    "truncated": None,  # filled from a real cookie
    "tampered": None,
    "unsigned": "A" * 43,
    "non_ascii": "\u00e9t\u00e9." + "A" * 40,
    "huge": "A" * 10_000,
}


@pytest.mark.parametrize("kind", sorted(BAD_COOKIES))
def test_bad_cookie_gives_new_empty_session(kind, app, store):
    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    good = cookie_value(c)
    value = BAD_COOKIES[kind]
    if kind == "truncated":
        value = good[:-5]
    elif kind == "tampered":
        value = ("B" if good[0] != "B" else "C") + good[1:]
    store.reset()
    # A raw header: the test client's own cookie jar would refuse a huge value.
    rv = app.test_client().get("/dump", headers={"Cookie": f"session={value}"})
    assert rv.status_code == 200
    assert rv.data == b"[]"
    assert store.reset() == {}  # nothing in the store touched


def test_cookie_signed_with_unknown_key_is_ignored(app, store):
    from tests.helpers import signed

    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    sid = sid_of(c)
    put_cookie(c, signed("someone else's key", f"{sid}.0s"))
    store.reset()
    assert c.get("/dump").data == b"[]"
    assert store.reset() == {}


def test_well_signed_but_malformed_id_never_reaches_store(app, store):
    from tests.helpers import signed

    add_routes(app)
    c = app.test_client()
    put_cookie(c, signed("current secret", "../../etc/passwd.0s"))
    assert c.get("/dump").data == b"[]"
    assert store.reset() == {}


@pytest.mark.parametrize(("digits", "kept"), [(11, True), (12, False)])
def test_cookie_stamp_far_in_the_future_never_breaks_a_request(make_app, digits, kept):
    """Even signed with the app's own key, a stamp past the year 2527 is
    refused, so the refreshed cookie's expiry always fits a datetime."""
    from tests.helpers import signed

    app = add_routes(make_app())
    c = app.test_client()
    c.get("/permanent/a/1")
    put_cookie(c, signed("current secret", f"{sid_of(c)}.{'f' * digits}p"))
    response = c.get("/get/a")
    assert response.status_code == 200
    assert response.data == (b"'1'" if kept else b"None")


def test_unknown_but_well_formed_id_gives_empty_session(app, store):
    from tests.helpers import signed

    add_routes(app)
    c = app.test_client()
    put_cookie(c, signed("current secret", "A" * 43 + ".0s"))
    assert c.get("/dump").data == b"[]"
    c.get("/set/a/1")
    assert sid_of(c) != "A" * 43  # a client-chosen id is never adopted


# -- 7: key rotation --------------------------------------------------------------


def test_rotation_old_cookie_loads_and_is_reissued(make_app):
    old_app = add_routes(make_app(SECRET_KEY="old key"))
    c = old_app.test_client()
    c.get("/set/a/1")
    old_cookie = cookie_value(c)

    rotated = add_routes(
        make_app(SECRET_KEY="new key", SECRET_KEY_FALLBACKS=["old key"])
    )
    rc = rotated.test_client()
    put_cookie(rc, old_cookie)
    rv = rc.get("/get/a")
    assert rv.data == b"'1'"
    assert len(set_cookie_headers(rv)) == 1  # re-issued on that same response
    new_cookie = cookie_value(rc)
    assert new_cookie != old_cookie
    assert new_cookie.split(".")[0] == old_cookie.split(".")[0]

    # The re-issued cookie verifies with the current key alone.
    from flask_picklesession.keys import KeyRing

    assert KeyRing("new key").unsign(new_cookie) == (
        new_cookie.rsplit(".", 1)[0],
        False,
    )
    assert KeyRing("old key").unsign(new_cookie) is None


def test_rotation_current_key_cookie_does_not_verify_with_old_key(make_app):
    app = add_routes(make_app(SECRET_KEY="new key", SECRET_KEY_FALLBACKS=["old key"]))
    c = app.test_client()
    c.get("/set/a/1")
    old_only = add_routes(make_app(SECRET_KEY="old key"))
    oc = old_only.test_client()
    put_cookie(oc, cookie_value(c))
    assert oc.get("/sid").data.decode() != sid_of(c)


@pytest.mark.parametrize("fallbacks", ["old key", b"old key"])
def test_fallbacks_as_single_string_are_refused(make_app, fallbacks):
    """Iterated, a string would make each character a key: refused when the
    app is set up, or, set later, by the first request that needs the keys."""
    with pytest.raises(ValueError, match="SECRET_KEY_FALLBACKS must be a list"):
        make_app(SECRET_KEY="k", SECRET_KEY_FALLBACKS=fallbacks)
    app = add_routes(make_app(SECRET_KEY="k"))
    app.testing = True
    app.config["SECRET_KEY_FALLBACKS"] = fallbacks
    with pytest.raises(ValueError, match="SECRET_KEY_FALLBACKS must be a list"):
        app.test_client().get("/get/a")


def test_missing_secret_key_says_to_set_it(make_app):
    app = add_routes(make_app(SECRET_KEY=None))
    app.testing = True
    with pytest.raises(RuntimeError, match="secret"):
        app.test_client().get("/set/a/1")


# -- 10: expiry ---------------------------------------------------------------------


def test_permanent_cookie_and_store_live_the_lifetime(make_app, raw_store):
    lifetime = datetime.timedelta(days=3)
    app = add_routes(make_app(PERMANENT_SESSION_LIFETIME=lifetime))
    c = app.test_client()
    rv = c.get("/permanent/a/1")
    header = set_cookie_headers(rv)[0]
    expires = re.search(r"Expires=([^;]+)", header).group(1)
    when = datetime.datetime.strptime(expires, "%a, %d %b %Y %H:%M:%S GMT")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    expected = now + lifetime  # naive UTC, like `when`
    assert abs((when - expected).total_seconds()) < 5
    ttl = raw_store.info("session:" + sid_of(c)).ttl
    assert abs(ttl - lifetime.total_seconds() * 1000) < 5000


def test_lifetime_changed_at_run_time_applies_to_the_next_save(make_app, raw_store):
    app = add_routes(make_app(PERMANENT_SESSION_LIFETIME=datetime.timedelta(days=3)))
    c = app.test_client()
    c.get("/permanent/a/1")
    app.config["PERMANENT_SESSION_LIFETIME"] = 3600  # seconds, as Flask allows
    c.get("/set/b/2")
    ttl = raw_store.info("session:" + sid_of(c)).ttl
    assert abs(ttl - 3_600_000) < 5000


def test_browser_session_cookie_but_store_still_expires(make_app, raw_store):
    lifetime = datetime.timedelta(hours=2)
    app = add_routes(make_app(PERMANENT_SESSION_LIFETIME=lifetime))
    c = app.test_client()
    rv = c.get("/set/a/1")
    assert "Expires=" not in set_cookie_headers(rv)[0]
    ttl = raw_store.info("session:" + sid_of(c)).ttl
    assert abs(ttl - lifetime.total_seconds() * 1000) < 5000


def test_expired_entry_is_never_returned(make_app, raw_store):
    app = add_routes(
        make_app(PERMANENT_SESSION_LIFETIME=datetime.timedelta(milliseconds=300))
    )
    c = app.test_client()
    c.get("/set/a/1")
    sid = sid_of(c)
    time.sleep(0.4)
    assert c.get("/get/a").data == b"None"
    assert raw_store.load("session:" + sid) is None


@pytest.mark.parametrize("read_first", [False, True], ids=["blind", "read_first"])
def test_made_permanent_again_after_the_stored_session_is_gone(
    make_app, raw_store, read_first
):
    """The browser still sends the cookie of a permanent session whose entry
    expired, was evicted or deleted. A login that sets ``permanent = True``,
    as the cookie already says, must get a new session that is permanent."""
    app = add_routes(make_app())

    @app.route("/login")
    def login():
        flask.session.permanent = True
        if read_first:
            flask.session.get("user")
        flask.session["user"] = "alice"
        return repr(flask.session.permanent)

    c = app.test_client()
    c.get("/permanent/user/bob")
    assert raw_store.delete("session:" + sid_of(c))
    rv = c.get("/login")
    assert rv.data == b"True"
    assert "Expires=" in set_cookie_headers(rv)[0]
    assert c.get("/get/_permanent").data == b"True"
    assert c.get("/get/user").data == b"'alice'"


@pytest.mark.parametrize("how", ["read_first", "blind_write", "read_after"])
@pytest.mark.parametrize("flag", [True, False])
def test_permanent_set_as_a_stale_cookie_says_still_wins_as_the_later_save(
    make_app, how, flag
):
    """Tab B changed the flag; tab A's request still carries the cookie from
    before and sets the flag back, as that cookie says. A's save is the
    later one, so its flag wins, as for any key (contract 16), whenever A's
    request reads or writes the session anyway."""
    app = add_routes(make_app())

    @app.route("/flag/<int:value>")
    def set_flag(value):
        flask.session.permanent = bool(value)
        return "ok"

    @app.route("/a")
    def tab_a():
        if how == "read_first":
            flask.session.get("user")
        flask.session.permanent = flag
        if how == "blind_write":
            flask.session["seen"] = "yes"
        if how == "read_after":
            flask.session.get("user")
        return "ok"

    @app.route("/is_permanent")
    def is_permanent():
        dict(flask.session)  # loaded: the stored flag, not the cookie's
        return repr(flask.session.permanent)

    a = app.test_client()
    a.get("/set/user/alice")
    a.get(f"/flag/{int(flag)}")
    b = app.test_client()
    put_cookie(b, cookie_value(a))
    b.get("/set/user/alice")  # a read, then the flag changes in tab B:
    b.get(f"/flag/{int(not flag)}")
    assert b.get("/is_permanent").data == repr(not flag).encode()
    a.get("/a")  # with the cookie from before
    assert a.get("/is_permanent").data == repr(flag).encode()


@pytest.mark.parametrize(
    ("permanent", "lifetime", "pause"), [(True, 2, 0.75), (False, 1, 0.4)]
)
def test_setting_permanent_on_every_request_keeps_the_session_alive(
    make_app, permanent, lifetime, pause
):
    """With ``SESSION_REFRESH_EACH_REQUEST`` off, Flask's session renews its
    cookie whenever ``permanent`` is set, even to the value it has (the
    assignment marks it modified), so apps set it in ``before_request`` to
    keep active users signed in. The stored expiry must follow."""
    app = add_routes(
        make_app(
            SESSION_REFRESH_EACH_REQUEST=False,
            PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=lifetime),
        )
    )

    @app.before_request
    def keep_signed_in():
        flask.session.permanent = permanent

    c = app.test_client()
    c.get("/set/user/alice")
    for _ in range(3):  # outlives the lifetime, one request every 40% of it
        time.sleep(pause)
        assert c.get("/get/user").data == b"'alice'"


@pytest.mark.parametrize("route", ["/permanent/user/alice", "/set/user/alice"])
def test_a_shortened_lifetime_applies_to_sessions_made_before(make_app, route):
    """Flask checks a cookie's age against the lifetime of the moment, so
    shortening ``PERMANENT_SESSION_LIFETIME`` ends older sessions at once;
    their stored entries still carry the longer lifetime."""
    app = add_routes(make_app(PERMANENT_SESSION_LIFETIME=3600))
    c = app.test_client()
    c.get(route)
    app.config["PERMANENT_SESSION_LIFETIME"] = datetime.timedelta(seconds=1)
    assert c.get("/get/user").data == b"'alice'"
    time.sleep(1.05)
    assert c.get("/get/user").data == b"None"


def test_a_lengthened_lifetime_keeps_sessions_in_use(make_app, monkeypatch):
    """Entries stored under the old lifetime expire by it: a refresh must
    fall due before that, even when 1% of the new lifetime is longer than
    the old one (its interval is capped, at a minute; here, 100 ms)."""
    from flask_picklesession import binding

    monkeypatch.setattr(binding, "_LONGEST_REFRESH_INTERVAL", 100, raising=False)
    app = add_routes(make_app(PERMANENT_SESSION_LIFETIME=1))
    c = app.test_client()
    c.get("/permanent/user/alice")
    app.config["PERMANENT_SESSION_LIFETIME"] = 600  # 1%: 6 s
    for _ in range(6):  # reads only, past the old lifetime
        time.sleep(0.25)
        assert c.get("/get/user").data == b"'alice'"


# -- 11: regenerate -------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["too large", "store gone"])
def test_a_regenerate_that_fails_after_taking_the_old_record_undoes_itself(
    tmp_path, failure
):
    """Another request changed the session while a login ran: merging that
    change into the new record can still fail (a store gone). The login then
    fails, and the session is as it was, under its old id, with the other
    request's change, and no copy is left behind. The two changes together
    too large for the limit are kept, with a warning: refusing would mean
    putting the old record back over what a logout did meanwhile."""
    from flask_picklesession import FileSystemStore

    class MeanwhileStore(FileSystemStore):
        meanwhile = None

        def take(self, key):
            if self.meanwhile is not None:
                self.meanwhile, change = None, self.meanwhile
                change()  # a concurrent request saves, just before the take
            return super().take(key)

        def patch(self, key, ops, *args):
            if failure == "store gone" and not self.meanwhile and self.taken:
                raise StoreUnavailable("gone")
            return super().patch(key, ops, *args)

        taken = False

    store = MeanwhileStore(tmp_path / "sessions")
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="k", PICKLESESSION_MAX_SIZE=3000)
    PickleSession(app, store=store)
    add_routes(app)

    @app.route("/big/<key>")
    def big(key):
        flask.session[key] = noise(1200)
        return "ok"

    @app.route("/login")
    def login():
        flask.session.regenerate()
        flask.session["user"] = noise(1200) if failure == "too large" else "alice"
        return "ok"

    c = app.test_client()
    c.get("/big/a")
    other = app.test_client()
    put_cookie(other, cookie_value(c))

    def concurrent_change():
        other.get("/big/b")
        store.taken = True

    store.meanwhile = concurrent_change
    if failure == "too large":
        old_cookie = cookie_value(c)
        assert c.get("/login").status_code == 200
        assert cookie_value(c) != old_cookie
        dump = ast.literal_eval(c.get("/dump").data.decode())
        assert sorted(k for k, _ in dump) == ["a", "b", "user"]
        put_cookie(other, old_cookie)
        assert other.get("/dump").data == b"[]"  # the old id is gone
        assert len(list(store.scan("session:"))) == 1
        return
    assert c.get("/login").status_code == 500
    dump = ast.literal_eval(c.get("/dump").data.decode())  # the old cookie works
    keys = [k for k, _ in dump]
    assert sorted(keys) == ["a", "b"]
    assert len(list(store.scan("session:"))) == 1


def test_regenerate_keeps_data_new_id_old_id_gone(client, raw_store):
    client.get("/set/user/alice")
    old_cookie = cookie_value(client)
    old = sid_of(client)
    rv = client.get("/regenerate")
    new = rv.data.decode()
    assert new != old and sid_of(client) == new
    assert client.get("/get/user").data == b"'alice'"
    assert raw_store.load("session:" + old) is None
    stale = client.application.test_client()
    put_cookie(stale, old_cookie)
    assert stale.get("/dump").data == b"[]"


# -- 12: size limit -----------------------------------------------------------------


def test_too_large_session_raises_and_keeps_previous(make_app, raw_store):
    app = add_routes(make_app(PICKLESESSION_MAX_SIZE=1024))
    app.testing = True
    c = app.test_client()
    c.get("/set/a/small")
    sid = sid_of(c)
    before = raw_store.load("session:" + sid)
    with pytest.raises(SessionTooLarge) as info:
        c.get("/set/b/" + noise(2000))
    assert isinstance(info.value, ValueError)
    assert info.value.largest_key == "b"  # where to look
    assert "the largest value is session['b']" in str(info.value)
    assert raw_store.load("session:" + sid) == before
    assert c.get("/get/a").data == b"'small'"


def test_too_large_new_session_writes_nothing(make_app, store):
    app = add_routes(make_app(PICKLESESSION_MAX_SIZE=1024))
    app.testing = True
    with pytest.raises(SessionTooLarge):
        app.test_client().get("/set/b/" + noise(2000))
    assert store.reset() == {}


def test_the_limit_counts_serialized_bytes_not_compressed_ones(make_app, raw_store):
    """PICKLESESSION_MAX_SIZE is the serialized size: a value that compresses
    to a few bytes is still as large as it is, whichever way it is saved."""
    app = add_routes(make_app(PICKLESESSION_MAX_SIZE=1024))
    app.testing = True

    @app.route("/grow")
    def grow():
        flask.session["a"] += "x" * 1000
        return "ok"

    @app.route("/read-then-set/<key>/<value>")
    def read_then_set(key, value):
        flask.session.get(key)
        flask.session[key] = value
        return "ok"

    fresh = app.test_client()
    with pytest.raises(SessionTooLarge) as info:
        fresh.get("/set/a/" + "x" * 2000)  # a new session
    assert info.value.size > 2000
    c = app.test_client()
    c.get("/set/a/" + "x" * 600)  # stored compressed, in far fewer bytes
    record = raw_store.load("session:" + sid_of(c))
    assert len(record) < 200
    for path in (
        "/grow",  # a value changed in place
        "/set/b/" + "y" * 2000,  # a write that never loaded the session
        "/set/b/" + "y" * 500,  # 600 + 500, measured by the store's merge
        "/read-then-set/b/" + "y" * 500,  # 600 + 500: "a" counts though not read
    ):
        with pytest.raises(SessionTooLarge):
            c.get(path)
        assert raw_store.load("session:" + sid_of(c)) == record
    c.get("/read-then-set/b/" + "y" * 300)
    assert c.get("/get/b").data == b"'" + b"y" * 300 + b"'"


# -- 13: unreachable store --------------------------------------------------------


def test_unwritable_session_folder_raises_store_unavailable(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    app = flask.Flask(__name__)
    app.config.update(SECRET_KEY="k", PICKLESESSION_FILE_DIR=str(blocker / "sessions"))
    app.testing = True
    PickleSession(app)
    add_routes(app)
    with pytest.raises(StoreUnavailable):
        app.test_client().get("/set/a/1")


# -- 14, 17: Vary: Cookie when accessed ---------------------------------------------


@pytest.mark.parametrize(
    "use",
    [
        lambda s: "a" in s,
        lambda s: len(s),
        lambda s: bool(s),
        lambda s: list(s),
        lambda s: s.get("a"),
        lambda s: s["a"],
        lambda s: s.keys(),
        lambda s: s.permanent,
        lambda s: s.setdefault("b", 1),
    ],
    ids=[
        "in",
        "len",
        "bool",
        "iter",
        "get",
        "index",
        "keys",
        "permanent",
        "setdefault",
    ],
)
def test_any_read_adds_vary_cookie(app, use):
    @app.route("/use")
    def use_session():
        use(flask.session)
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    assert "Cookie" in c.get("/use").headers.get("Vary", "")


# -- 18: modified and nested changes ------------------------------------------------


def test_nested_change_is_saved_without_modified(app):
    @app.route("/cart/add/<item>")
    def add(item):
        flask.session.setdefault("cart", []).append(item)
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/cart/add/apple")
    c.get("/cart/add/pear")
    assert c.get("/get/cart").data == b"['apple', 'pear']"


def test_modified_true_saves_in_place_change(app):
    @app.route("/touch-cart")
    def touch_cart():
        cart = flask.session["cart"]
        cart.append("x")
        flask.session.modified = True
        return "ok"

    @app.route("/start-cart")
    def start_cart():
        flask.session["cart"] = []
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/start-cart")
    c.get("/touch-cart")
    assert c.get("/get/cart").data == b"['x']"


@pytest.mark.parametrize("permanent", [True, False])
def test_modified_true_alone_refreshes_cookie_and_stored_expiry(
    make_app, store, permanent
):
    """As in Flask, ``modified = True`` re-sends the cookie, with a new expiry
    for a permanent session (how apps extend one without refreshing on every
    request); the stored entry's expiry is pushed back with it."""
    app = add_routes(make_app(SESSION_REFRESH_EACH_REQUEST=False))

    @app.route("/extend")
    def extend():
        flask.session.modified = True
        return "ok"

    c = app.test_client()
    c.get("/permanent/a/1" if permanent else "/set/a/1")
    before = cookie_value(c)
    time.sleep(0.01)  # the new stamp must differ from the first one
    store.reset()
    response = c.get("/extend")
    assert store.reset() == {"touch": 1}
    (cookie,) = set_cookie_headers(response)
    assert ("Expires=" in cookie) == permanent
    assert cookie_value(c) != before  # re-signed with the time of this refresh
    assert c.get("/get/a").data == b"'1'"
    assert c.get("/untouched").headers.get("Set-Cookie") is None


def test_reading_mutable_value_unchanged_writes_nothing(app, store):
    @app.route("/start-cart")
    def start_cart():
        flask.session["cart"] = [{"sku": "A", "qty": 1}]
        flask.session["tags"] = {"x", "y", "z"}
        return "ok"

    @app.route("/look")
    def look():
        return repr((flask.session["cart"], sorted(flask.session["tags"])))

    c = app.test_client()
    c.get("/start-cart")
    store.reset()
    c.get("/look")
    assert store.reset() == {"load": 1}


def _spy_on_codec(app, monkeypatch, method):
    """The arguments of every call of the app codec's ``method`` from now on."""
    codec_class = type(app.session_interface.settings_for(app).codec)
    real = getattr(codec_class, method)
    calls = []

    def spy(self, *args):
        calls.append(args)
        return real(self, *args)

    monkeypatch.setattr(codec_class, method, spy)
    return calls


@pytest.mark.parametrize(
    ("change", "decodes_old", "saved"),
    [
        ("append", False, True),  # length changed: no need to decode the old value
        ("replace-item", True, True),  # same length: the old value is compared
        ("equal-item", True, True),  # -0.0 == 0.0, but it is another value
        ("bool-item", True, True),  # False == 0.0, but it is another value
        ("markup-item", True, True),  # Markup("pear") == "pear", likewise
    ],
)
@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_in_place_changes_decode_the_old_value_only_when_needed(
    make_app, store, monkeypatch, change, decodes_old, saved, serializer
):
    app = make_app(PICKLESESSION_SERIALIZER=serializer)

    @app.route("/start")
    def start():
        flask.session["cart"] = [0.0, "pear"]
        return "ok"

    @app.route("/change")
    def change_view():
        cart = flask.session["cart"]
        if change == "append":
            cart.append("plum")
        elif change == "replace-item":
            cart[0] = "plum"
        elif change == "bool-item":
            cart[0] = False
        elif change == "markup-item":
            cart[1] = Markup("pear")
        else:
            cart[0] = -0.0
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/start")
    decoded = _spy_on_codec(app, monkeypatch, "decode")
    store.reset()
    c.get("/change")
    assert bool(decoded) == decodes_old
    assert ("patch" in store.reset()) == saved
    expected = {
        "append": "[0.0, 'pear', 'plum']",
        "replace-item": "['plum', 'pear']",
        "equal-item": "[-0.0, 'pear']",
        "bool-item": "[False, 'pear']",
        "markup-item": "[0.0, Markup('pear')]",
    }
    assert c.get("/get/cart").data.decode() == expected[change]


def _set_pickling_in_another_order() -> set[str]:
    """A set whose pickle differs from that of its own unpickled copy.

    A set emptied down from many items keeps a large table, so it iterates
    in another order than the small one unpickling builds (as a set stored
    by another process, with another hash seed, would).
    """
    for size in range(3, 40):
        grown = {f"tag-{i}" for i in range(200)}
        for i in range(size, 200):
            grown.discard(f"tag-{i}")
        again = pickle.loads(pickle.dumps(grown))
        if pickle.dumps(again) != pickle.dumps(grown):
            return grown
    raise AssertionError("no set found that pickles in another order")


def _client_holding(app, value):
    """A client whose stored session holds ``value``; ``/look`` reads it."""

    @app.route("/start")
    def start():
        flask.session["value"] = value
        return "ok"

    @app.route("/look")
    def look():
        return str(len(flask.session["value"]))

    c = app.test_client()
    c.get("/start")
    return c


def test_equal_value_encoded_in_another_order_is_not_rewritten(app, store):
    tags = _set_pickling_in_another_order()
    c = _client_holding(app, tags)
    store.reset()
    assert c.get("/look").data == str(len(tags)).encode()
    assert writes(store.reset()) == {}


class Badges:
    """A set of tags in an object without ``__eq__``: equal only to itself."""

    def __init__(self, tags: set[str]) -> None:
        self.tags = tags

    def __len__(self) -> int:
        return len(self.tags)


class Note:
    """Equal when the titles are: ``__eq__`` does not look at ``text``."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.text = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Note) and other.title == self.title

    __hash__ = None  # type: ignore[assignment]


def test_object_without_eq_read_back_unchanged_is_not_rewritten(app, store):
    """Its set pickles in another order once read back, and it is equal to
    no copy of itself: a read-only request must still write nothing (or it
    would overwrite a concurrent change to the object, item 16)."""
    tags = _set_pickling_in_another_order()
    c = _client_holding(app, Badges(tags))
    store.reset()
    assert c.get("/look").data == str(len(tags)).encode()
    assert writes(store.reset()) == {}


def test_change_that_eq_does_not_see_is_saved(app):
    @app.route("/note/<text>")
    def write_note(text):
        flask.session["value"].text = text
        return "ok"

    @app.route("/note")
    def read_note():
        return flask.session["value"].text

    c = _client_holding(app, Note("groceries"))
    c.get("/note/milk")
    assert c.get("/note").data == b"milk"


def test_json_mode_tells_unchanged_values_without_encoding_them(
    make_app, store, monkeypatch
):
    app = make_app(PICKLESESSION_SERIALIZER="json")
    c = _client_holding(app, [{"sku": "A-1", "qty": 1}, ("pear", b"\x00")])
    encoded = _spy_on_codec(app, monkeypatch, "encode_plain")
    store.reset()
    assert c.get("/look").data == b"2"
    assert encoded == []
    assert writes(store.reset()) == {}


# -- the dict operations of Flask's session ---------------------------------------


def test_copies_and_dict_operators_behave_as_on_flasks_session(app, store):
    """Flask's session is a dict: a copy is detached (writing to it saves
    nothing), and ``|``, ``|=`` and ``reversed`` work as on a dict."""

    @app.route("/copies")
    def copies():
        shallow = copy.copy(flask.session)
        shallow["from_copy"] = 1
        deep = copy.deepcopy(flask.session)
        deep["cart"].append("from deep copy")
        merged = flask.session | {"extra": 1}
        merged["cart"] = None
        left = {"first": 0} | flask.session
        assert isinstance(shallow, dict) and isinstance(merged, dict)
        return repr((list(left), list(reversed(flask.session))))

    @app.route("/merge-in-place")
    def merge_in_place():
        session = before = flask.session._get_current_object()
        session |= {"lang": "fr"}
        return repr(session is before)

    @app.route("/fill")
    def fill():
        flask.session["user"] = "alice"
        flask.session["cart"] = ["pear"]
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/fill")
    store.reset()
    assert (
        c.get("/copies").data
        == repr((["first", "user", "cart"], ["cart", "user"])).encode()
    )
    assert writes(store.reset()) == {}
    assert c.get("/dump").data == repr([("cart", ["pear"]), ("user", "alice")]).encode()
    assert c.get("/merge-in-place").data == b"True"
    assert c.get("/get/lang").data == b"'fr'"


def test_popitem_takes_the_last_key_as_on_a_dict(app):
    @app.route("/popitem")
    def popitem():
        return repr(flask.session.popitem())

    @app.route("/fill")
    def fill():
        flask.session["first"] = 1
        flask.session["last"] = 2
        return repr(flask.session.popitem())

    add_routes(app)
    c = app.test_client()
    assert c.get("/fill").data == b"('last', 2)"
    c.get("/set/then/3")
    assert c.get("/popitem").data == b"('then', '3')"
    assert c.get("/dump").data == b"[('first', 1)]"
    c.get("/popitem")
    rv = c.get("/popitem")
    assert rv.status_code == 500


# -- Flask's cookie settings --------------------------------------------------------


@pytest.fixture
def new_york_time(monkeypatch):
    """A local time zone that is not UTC, for naive datetimes to differ."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_flasks_cookie_hooks_overridden_in_a_subclass_are_asked(
    make_app, raw_store, new_york_time
):
    """``should_set_cookie`` and ``get_expiration_time`` are Flask's hooks
    for subclasses: an API that wants no cookie, a fixed expiry."""
    until = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)

    class Hooked(PickleSession):
        def should_set_cookie(self, app, session):
            return not flask.request.path.startswith("/api/")

        def get_expiration_time(self, app, session):
            return until.replace(tzinfo=None)  # naive: UTC, as Werkzeug reads it

    app = make_app()
    Hooked(app)
    add_routes(app)

    @app.route("/api/set/<key>/<value>")
    def api_set(key, value):
        flask.session[key] = value
        return "ok"

    c = app.test_client()
    rv = c.get("/api/set/a/1")
    assert set_cookie_headers(rv) == [] and cookie_value(c) is None
    assert list(raw_store.scan("session:")) == []  # no cookie: nothing stored
    rv = c.get("/set/a/1")
    assert "Expires=Tue, 01 Jan 2030 00:00:00 GMT" in set_cookie_headers(rv)[0]
    assert c.get("/get/a").data == b"'1'"


def test_a_should_set_cookie_override_sees_what_flask_would_count(make_app):
    """An override calling Flask's own should_set_cookie asks
    ``session.modified``, which counts a change made inside a value (found
    at save) and an assignment to ``permanent``, as Flask counts it."""

    class NoCookieForApi(PickleSession):
        def should_set_cookie(self, app, session):
            api = flask.request.path.startswith("/api/")
            return not api and super().should_set_cookie(app, session)

    app = make_app(SESSION_REFRESH_EACH_REQUEST=False)
    NoCookieForApi(app)
    add_routes(app)

    @app.route("/cart")
    def new_cart():
        flask.session["cart"] = []
        return "ok"

    @app.route("/cart/<item>")
    def add_to_cart(item):
        flask.session["cart"].append(item)
        return "ok"

    @app.route("/permanent-again")
    def permanent_again():
        flask.session.permanent = flask.session.permanent
        return repr(flask.session.modified)

    c = app.test_client()
    c.get("/cart")
    c.get("/cart/apple")
    assert c.get("/get/cart").data == b"['apple']"
    assert c.get("/permanent-again").data == b"True"
    # Flask's hook reads ``permanent``, which is no use of the session
    assert "Vary" not in c.get("/untouched").headers


# -- Flask's cookie settings --------------------------------------------------------


def test_flask_cookie_settings_are_honoured(make_app):
    app = add_routes(
        make_app(
            SESSION_COOKIE_NAME="sid",
            SESSION_COOKIE_DOMAIN="example.com",
            SESSION_COOKIE_PATH="/app",
            SESSION_COOKIE_HTTPONLY=False,
            SESSION_COOKIE_SECURE=True,
            SESSION_COOKIE_SAMESITE="Strict",
        )
    )
    rv = app.test_client().get("/set/a/1", base_url="https://www.example.com")
    header = set_cookie_headers(rv)[0]
    assert header.startswith("sid=")
    assert "Domain=example.com" in header and "Path=/app" in header
    assert "Secure" in header and "SameSite=Strict" in header
    assert "HttpOnly" not in header


def test_cookie_settings_changed_at_run_time_apply_to_the_next_response(make_app):
    app = add_routes(make_app(SESSION_COOKIE_SAMESITE="Lax"))
    c = app.test_client()
    assert "SameSite=Lax" in set_cookie_headers(c.get("/set/a/1"))[0]
    app.config.update(SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH="/shop")
    header = set_cookie_headers(c.get("/set/a/2"))[0]
    assert "SameSite=Strict" in header and "Path=/shop" in header


def test_a_subclass_deciding_cookie_attributes_is_asked_each_time(make_app):
    paths = iter(["/first", "/second"])

    class PerRequestPath(PickleSession):
        def get_cookie_path(self, app):
            return next(paths)

    app = make_app()
    PerRequestPath(app)
    add_routes(app)
    c = app.test_client()
    assert "Path=/first" in set_cookie_headers(c.get("/set/a/1"))[0]
    assert "Path=/second" in set_cookie_headers(c.get("/set/a/2"))[0]


def test_sid_seen_by_the_view_is_the_stored_key_even_for_a_stale_cookie(app, raw_store):
    @app.route("/write-and-tell")
    def write_and_tell():
        sid = flask.session.sid
        flask.session["x"] = "1"
        return sid

    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    raw_store.delete("session:" + sid_of(c))  # the cookie now points at nothing
    told = c.get("/write-and-tell").data.decode()
    assert told == sid_of(c) != ""
    assert raw_store.load("session:" + told) is not None


def test_delete_without_reading_first(app):
    @app.route("/set-then-del")
    def set_then_del():
        flask.session["x"] = 1
        del flask.session["x"]
        return repr("x" in flask.session)

    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    assert c.get("/set-then-del").data == b"False"
    assert c.get("/dump").data == b"[('a', '1')]"


def test_settings_for_accepts_current_app(app):
    with app.app_context():
        assert app.session_interface.settings_for(
            flask.current_app
        ) is app.session_interface.settings_for(app)


def test_pickle_based_follows_configured_serializer(make_app):
    app = make_app(PICKLESESSION_SERIALIZER="json")
    assert app.session_interface.pickle_based is False
