"""Stored payloads are authenticated before anything is decoded (contract 8, 9, 13)."""

from __future__ import annotations

import datetime
import logging
import pickle
import re
import time
import uuid

import flask
import pytest
from markupsafe import Markup

from flask_picklesession import SerializationError
from flask_picklesession.keys import KeyRing
from flask_picklesession.record import build, parse_raw
from flask_picklesession.sealing import seal
from tests.helpers import add_routes, put_cookie, sid_of

EXPLOITED = []


class Exploit:
    """Records that it ran when unpickled: what an attacker would inject."""

    def __reduce__(self):
        return (EXPLOITED.append, ("pwned",))


@pytest.fixture
def spy_unpickle(monkeypatch):
    """Every call into pickle.loads, with the bytes it was given."""
    calls = []
    real = pickle.loads

    def spy(data, *args, **kwargs):
        calls.append(bytes(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(pickle, "loads", spy)
    return calls


def _write(raw_store, sid, record):
    """Replace what is stored for ``sid`` as someone with store access could."""
    key = "session:" + sid
    raw_store.delete(key)
    assert raw_store.create(key, record, 60_000)


def _forged(secret, sid, values):
    ring = KeyRing(secret)
    return build(
        {k.encode(): seal(ring, sid, k.encode(), v) for k, v in values.items()}
    )


def _stored_session(app):
    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    return c, sid_of(c)


def test_payload_forged_without_keys_is_never_unpickled(
    app, raw_store, spy_unpickle, caplog
):
    c, sid = _stored_session(app)
    evil = b"p" + pickle.dumps(Exploit(), protocol=5)
    _write(raw_store, sid, _forged("attacker's guess", sid, {"a": evil}))
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert c.get("/dump").data == b"[]"
    assert EXPLOITED == [] and spy_unpickle == []
    assert "MAC" in caplog.text and sid not in caplog.text


def test_raw_pickle_in_store_is_never_unpickled(app, raw_store, spy_unpickle, caplog):
    c, sid = _stored_session(app)
    _write(raw_store, sid, pickle.dumps({"a": Exploit()}))
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert c.get("/dump").data == b"[]"
    assert EXPLOITED == [] and spy_unpickle == []
    assert "ignoring stored session" in caplog.text


def test_payload_moved_from_another_session_is_refused(app, raw_store):
    add_routes(app)
    alice, bob = app.test_client(), app.test_client()
    alice.get("/set/role/admin")
    bob.get("/set/role/guest")
    alice_record = raw_store.load("session:" + sid_of(alice))
    _write(raw_store, sid_of(bob), alice_record)
    assert bob.get("/dump").data == b"[]"


def test_entry_moved_to_another_key_is_refused(app, raw_store):
    c, sid = _stored_session(app)
    c.get("/set/role/guest")
    entries = parse_raw(raw_store.load("session:" + sid))
    entries[b"admin"] = entries.pop(b"role")
    _write(raw_store, sid, build(entries))
    assert c.get("/dump").data == b"[]"


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x01",
        b"\x02garbage",
        b"\x01\xff\xff\xff\xff\xff",
        b"\x01\x05ab",
        b"\x01\x01a\x7f" + b"x" * 20,
    ],
    ids=[
        "empty",
        "header-only-is-empty",
        "wrong-version",
        "huge-length",
        "truncated-key",
        "short-value",
    ],
)
def test_corrupt_record_gives_empty_session(app, raw_store, record, caplog):
    c, sid = _stored_session(app)
    if record == b"":
        raw_store.delete("session:" + sid)
        raw_store.create("session:" + sid, b"", 60_000)
    else:
        _write(raw_store, sid, record)
    rv = c.get("/dump")
    assert rv.status_code == 200 and rv.data == b"[]"


def test_corrupt_session_then_write_starts_new_session(app, raw_store):
    c, sid = _stored_session(app)
    _write(raw_store, sid, b"\x02junk")
    c.get("/set/b/2")
    assert sid_of(c) != sid
    assert c.get("/dump").data == b"[('b', '2')]"


def test_record_corrupted_between_load_and_save_keeps_the_write(
    app, store, raw_store, monkeypatch, caplog
):
    """The merge finds the record unreadable: the write lands in a new
    session (new id, warning) instead of being lost or merged into junk."""
    c, sid = _stored_session(app)
    real_patch = store.patch

    def patch_after_corruption(key, *args, **kwargs):
        _write(raw_store, sid, b"\x02junk")
        return real_patch(key, *args, **kwargs)

    monkeypatch.setattr(store, "patch", patch_after_corruption)
    with caplog.at_level(logging.WARNING, "flask_picklesession"):
        assert c.get("/set/b/2").status_code == 200
    assert "unreadable; starting a new one" in caplog.text
    assert sid_of(c) != sid
    monkeypatch.undo()
    assert c.get("/dump").data == b"[('b', '2')]"


def test_rotation_rewrites_payload_mac_on_next_save(make_app):
    old = add_routes(make_app(SECRET_KEY="old key"))
    c = old.test_client()
    c.get("/set/a/1")
    c.get("/set/b/2")
    rotated = add_routes(
        make_app(SECRET_KEY="new key", SECRET_KEY_FALLBACKS=["old key"])
    )
    rc = rotated.test_client()
    from tests.helpers import cookie_value

    put_cookie(rc, cookie_value(c))
    assert rc.get("/get/a").data == b"'1'"  # read-only: nothing rewritten yet
    rc.get("/set/c/3")  # the next save re-MACs a and b with the current key
    current_only = add_routes(make_app(SECRET_KEY="new key"))
    cc = current_only.test_client()
    put_cookie(cc, cookie_value(rc))
    assert cc.get("/dump").data == b"[('a', '1'), ('b', '2'), ('c', '3')]"


@pytest.mark.parametrize("route", ["/get/a", "/untouched"])
def test_expiry_refresh_during_rotation_rekeys_the_payload(make_app, route):
    """A permanent session kept alive by reads alone has its expiry pushed
    back without a save; during a rotation that refresh re-keys it, so
    dropping the old key after a lifetime loses no returning user."""
    lifetime = datetime.timedelta(seconds=5)  # a refresh is due after 50 ms
    old = add_routes(
        make_app(SECRET_KEY="old key", PERMANENT_SESSION_LIFETIME=lifetime)
    )
    c = old.test_client()
    c.get("/permanent/a/1")
    rotated = add_routes(
        make_app(
            SECRET_KEY="new key",
            SECRET_KEY_FALLBACKS=["old key"],
            PERMANENT_SESSION_LIFETIME=lifetime,
        )
    )
    rc = rotated.test_client()
    from tests.helpers import cookie_value

    put_cookie(rc, cookie_value(c))
    time.sleep(0.06)
    assert rc.get(route).status_code == 200
    current_only = add_routes(
        make_app(SECRET_KEY="new key", PERMANENT_SESSION_LIFETIME=lifetime)
    )
    cc = current_only.test_client()
    put_cookie(cc, cookie_value(rc))
    assert cc.get("/get/a").data == b"'1'"


def test_modified_true_alone_is_a_save_that_rekeys_the_payload(make_app):
    """``session.modified = True`` with nothing read is a save too (contract
    8: re-keyed no later than the next save)."""
    old = add_routes(make_app(SECRET_KEY="old key"))
    c = old.test_client()
    c.get("/set/a/1")
    rotated = add_routes(
        make_app(SECRET_KEY="new key", SECRET_KEY_FALLBACKS=["old key"])
    )

    @rotated.route("/touch")
    def touch():
        flask.session.modified = True
        return "ok"

    rc = rotated.test_client()
    from tests.helpers import cookie_value

    put_cookie(rc, cookie_value(c))
    rc.get("/touch")
    current_only = add_routes(make_app(SECRET_KEY="new key"))
    cc = current_only.test_client()
    put_cookie(cc, cookie_value(rc))
    assert cc.get("/dump").data == b"[('a', '1')]"


def test_payload_from_dropped_key_is_refused(make_app):
    old = add_routes(make_app(SECRET_KEY="old key", SECRET_KEY_FALLBACKS=["older"]))
    c = old.test_client()
    c.get("/set/a/1")
    from tests.helpers import cookie_value

    # Cookie re-signed with the current key, but the payload MAC is from "old key".
    new = add_routes(make_app(SECRET_KEY="new key"))
    sid = sid_of(c)
    stamp_flag = cookie_value(c).split(".")[1]
    nc = new.test_client()
    put_cookie(nc, KeyRing("new key").sign(f"{sid}.{stamp_flag}"))
    assert nc.get("/dump").data == b"[]"


def _flip_a_mac_byte(record):
    """The record with one byte of its first entry's MAC changed."""
    key_len = record[1]  # one-byte varints: short key, short value
    at = 1 + 1 + key_len + 1
    return record[:at] + bytes([record[at] ^ 1]) + record[at + 1 :]


def test_blind_write_over_a_record_failing_its_mac_is_kept(app, raw_store, caplog):
    """A view that only assigns reads the record before merging into it: a
    record that fails its MAC would otherwise swallow every such write, and
    each later load would refuse it with them in it (contracts 8, 13)."""
    c, sid = _stored_session(app)
    record = raw_store.load("session:" + sid)
    _write(raw_store, sid, _flip_a_mac_byte(record))
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert c.get("/set/b/2").status_code == 200
    assert "MAC" in caplog.text
    assert sid_of(c) != sid
    assert c.get("/dump").data == b"[('b', '2')]"
    assert c.get("/set/c/3").status_code == 200
    assert c.get("/dump").data == b"[('b', '2'), ('c', '3')]"


def test_blind_write_after_the_old_key_was_dropped_is_kept(make_app):
    """The record is MACed with a key no longer configured, the cookie with
    the current one: the first write, made without reading, is kept."""
    old = add_routes(make_app(SECRET_KEY="old key"))
    c = old.test_client()
    c.get("/set/a/1")
    from tests.helpers import cookie_value

    new = add_routes(make_app(SECRET_KEY="new key"))
    stamp_flag = cookie_value(c).split(".")[1]
    nc = new.test_client()
    put_cookie(nc, KeyRing("new key").sign(f"{sid_of(c)}.{stamp_flag}"))
    nc.get("/set/lang/fr")
    assert nc.get("/dump").data == b"[('lang', 'fr')]"


# -- strict JSON mode (contract 9) ---------------------------------------------------


@pytest.fixture
def json_app(make_app):
    return add_routes(make_app(PICKLESESSION_SERIALIZER="json"))


def test_json_mode_round_trips_flask_tagged_types(json_app):
    the_uuid = uuid.uuid4()
    now = datetime.datetime(2026, 11, 29, 8, 30, 5, tzinfo=datetime.timezone.utc)

    @json_app.route("/types")
    def types():
        flask.session.update(
            t=(1, 2),
            b=b"\xff",
            m=Markup("<b>hi</b>"),
            u=the_uuid,
            d=now,
            n={"nested": [1, {"x": None}]},
            f=1.5,
            i=7,
        )
        return "ok"

    @json_app.route("/check")
    def check():
        s = flask.session
        assert s["t"] == (1, 2) and s["b"] == b"\xff"
        assert s["m"] == Markup("<b>hi</b>") and isinstance(s["m"], Markup)
        assert s["u"] == the_uuid and s["d"] == now
        assert s["n"] == {"nested": [1, {"x": None}]} and s["f"] == 1.5 and s["i"] == 7
        return "ok"

    c = json_app.test_client()
    c.get("/types")
    assert c.get("/check").data == b"ok"


def test_json_mode_flash_markup_works(json_app):
    @json_app.route("/flash")
    def flash():
        flask.flash(Markup("<em>saved</em>"))
        return "ok"

    @json_app.route("/show")
    def show():
        messages = flask.get_flashed_messages()
        assert isinstance(messages[0], Markup)
        return messages[0]

    c = json_app.test_client()
    c.get("/flash")
    assert c.get("/show").data == b"<em>saved</em>"


def _put_route(app, path, key, value):
    """Give ``app`` a view at ``path`` that stores ``value`` under ``key``."""

    def put():
        flask.session[key] = value
        return "ok"

    app.add_url_rule(path, endpoint=path, view_func=put)


@pytest.mark.parametrize(
    "value", [{1, 2}, object(), datetime.date(2020, 1, 1) and Exploit()]
)
def test_json_mode_refuses_non_json_value_naming_key(json_app, raw_store, value):
    json_app.testing = True
    _put_route(json_app, "/bad", "basket", value)
    c = json_app.test_client()
    c.get("/set/a/1")
    sid = sid_of(c)
    before = raw_store.load("session:" + sid)
    with pytest.raises(SerializationError, match="basket") as info:
        c.get("/bad")
    assert isinstance(info.value, TypeError) and info.value.key == "basket"
    assert raw_store.load("session:" + sid) == before


def test_json_mode_never_loads_a_stored_pickle(make_app, spy_unpickle, caplog):
    pickle_app = add_routes(make_app())

    @pickle_app.route("/obj")
    def obj():
        flask.session["obj"] = Exploit()
        return "ok"

    c = pickle_app.test_client()
    c.get("/obj")
    EXPLOITED.clear()
    json_app = add_routes(make_app(PICKLESESSION_SERIALIZER="json"))
    jc = json_app.test_client()
    from tests.helpers import cookie_value

    put_cookie(jc, cookie_value(c))
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert jc.get("/get/obj").data == b"None"
    assert spy_unpickle == [] and EXPLOITED == []
    assert "refused" in caplog.text


def test_json_mode_interface_is_not_pickle_based():
    from flask_picklesession import PickleSession

    assert PickleSession().pickle_based is True
    assert PickleSession(serializer="json").pickle_based is False


# -- pickle mode (issue 2, item 4) ---------------------------------------------------


@pytest.mark.parametrize(
    "make_value",
    [
        lambda tmp: open(tmp / "f.txt", "w"),  # noqa: SIM115 (the open file is the point)
        lambda tmp: __import__("socket").socket(),
        lambda tmp: __import__("threading").Lock(),
        lambda tmp: __import__("sqlite3").connect(":memory:"),
        lambda tmp: lambda: 1,
    ],
    ids=["file", "socket", "lock", "db-connection", "lambda"],
)
def test_unpicklable_value_names_key_and_type(app, raw_store, tmp_path, make_value):
    app.testing = True
    thing = make_value(tmp_path)

    @app.route("/bad")
    def bad():
        flask.session["handle"] = {"inner": thing}
        return "ok"

    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    before = raw_store.load("session:" + sid_of(c))
    try:
        where = re.escape(
            f"session['handle']['inner'] holds a {type(thing).__module__}"
        )
        with pytest.raises(SerializationError, match=where) as info:
            c.get("/bad")
        assert isinstance(info.value, TypeError)
        assert info.value.__cause__ is not None
    finally:
        close = getattr(thing, "close", None)
        if close:
            close()
    assert raw_store.load("session:" + sid_of(c)) == before


class GameState:
    def __init__(self, level):
        self.level = level

    def __eq__(self, other):
        return isinstance(other, GameState) and other.level == self.level


def test_pickle_mode_keeps_custom_objects(app):
    @app.route("/save")
    def save():
        flask.session["game"] = GameState(3)
        return "ok"

    @app.route("/level")
    def level():
        flask.session["game"].level += 1  # in place, no modified flag
        return str(flask.session["game"].level)

    c = app.test_client()
    c.get("/save")
    assert c.get("/level").data == b"4"
    assert c.get("/level").data == b"5"


def _cookie_of_session_holding(make_app, **values):
    """The cookie of a session saved with ``values`` under no allowlist."""
    writer = make_app()

    @writer.route("/save")
    def save():
        flask.session.update(values)
        return "ok"

    c = writer.test_client()
    c.get("/save")
    from tests.helpers import cookie_value

    return cookie_value(c)


@pytest.mark.parametrize("read", ["game", "user"])
def test_allowlist_admits_listed_globals_only(make_app, caplog, read):
    """A global outside the allowlist empties the whole session, whichever
    key the request reads (contract 13), and a write then starts a new
    session instead of merging into that record."""
    cookie = _cookie_of_session_holding(
        make_app, user="alice", game=GameState(1), when=datetime.date(2026, 1, 1)
    )
    allowed = add_routes(
        make_app(
            PICKLESESSION_PICKLE_ALLOWLIST=["datetime.date", f"{__name__}.GameState"]
        )
    )
    ac = allowed.test_client()
    put_cookie(ac, cookie)
    assert ac.get("/get/when").data == b"datetime.date(2026, 1, 1)"

    strict = add_routes(make_app(PICKLESESSION_PICKLE_ALLOWLIST=["datetime.date"]))
    sc = strict.test_client()
    put_cookie(sc, cookie)
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert sc.get(f"/get/{read}").data == b"None"
    assert "PICKLESESSION_PICKLE_ALLOWLIST" in caplog.text
    assert sc.get("/dump").data == b"[]"  # the whole session is distrusted
    old_sid = sid_of(sc)
    sc.get("/set/lang/fr")
    assert sid_of(sc) != old_sid
    assert sc.get("/dump").data == b"[('lang', 'fr')]"


def test_a_signed_pickle_cannot_change_an_allowed_class(make_app, raw_store, caplog):
    """Someone holding the secret key and write access to the store, whom
    the allowlist is for, cannot use an allowed class to change that class
    (here: ``Markup.escape``, and so escaping) for every later request."""
    app = make_app(PICKLESESSION_PICKLE_ALLOWLIST=["markupsafe.Markup"])
    c, sid = _stored_session(app)
    body = b"cmarkupsafe\nMarkup\nN}X\x06\x00\x00\x00escapecmarkupsafe\nMarkup\ns\x86b."
    before = dict(vars(Markup))
    _write(raw_store, sid, _forged(app.secret_key, sid, {"a": b"p" + body}))
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert c.get("/dump").data == b"[]"
    assert "would change a global" in caplog.text
    assert dict(vars(Markup)) == before


def test_key_found_by_in_can_then_be_read_even_if_undecodable(make_app, caplog):
    """``key in session`` answers for the decoded value: an entry that cannot
    be decoded (a global outside the allowlist, a class gone after a deploy)
    empties the session there, not in the ``session[key]`` that follows, as
    in Flask's own ``get_flashed_messages``."""
    cookie = _cookie_of_session_holding(make_app, game=GameState(1))
    strict = make_app(PICKLESESSION_PICKLE_ALLOWLIST=["datetime.date"])

    @strict.route("/check-then-read")
    def check_then_read():
        return repr(flask.session["game"]) if "game" in flask.session else "absent"

    sc = strict.test_client()
    put_cookie(sc, cookie)
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert sc.get("/check-then-read").data == b"absent"
    assert "PICKLESESSION_PICKLE_ALLOWLIST" in caplog.text


class RemovedByADeploy:
    """A class that a test takes away, as a deploy that renames it would."""

    def __init__(self, size: int) -> None:
        self.size = size


def test_a_value_whose_class_is_gone_empties_the_session_however_it_is_counted(
    make_app, caplog, monkeypatch
):
    """Counting or listing the keys decodes them first, so ``len`` and
    iteration agree that the session is empty, with a warning naming the
    key (``bool`` decodes nothing, so ``if session:`` stays cheap). The
    record itself is kept: a rollback that brings the class back finds the
    session whole."""
    cookie = _cookie_of_session_holding(
        make_app, user="alice", gadget=RemovedByADeploy(3)
    )
    app = add_routes(make_app())

    @app.route("/count")
    def count():
        session = flask.session
        return repr((len(session), bool(session), list(session)))

    @app.route("/truthy")
    def truthy():
        return repr(bool(flask.session))

    c = app.test_client()
    put_cookie(c, cookie)
    with monkeypatch.context() as deploy:
        deploy.delattr(f"{__name__}.RemovedByADeploy")
        with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
            assert c.get("/truthy").data == b"True"
            assert caplog.text == ""
            assert c.get("/count").data == b"(0, False, [])"
        assert "session['gadget']" in caplog.text
        assert "RemovedByADeploy" in caplog.text
    put_cookie(c, cookie)
    assert c.get("/count").data == b"(2, True, ['user', 'gadget'])"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (GameState(1), f"{__name__}.GameState"),
        ([("message", Markup("<b>hi</b>"))], "markupsafe.Markup"),  # a flash
        ({"when": datetime.date(2026, 1, 1)}, "datetime.date"),
        ([len], "builtins.len"),
    ],
    ids=["class", "markup", "nested", "function"],
)
def test_a_value_the_allowlist_would_refuse_to_load_is_refused_when_saved(
    make_app, store, value, name
):
    """A value whose pickle holds a global outside the allowlist could never
    be read back: saving it fails at once, naming the key and the global,
    instead of storing a session that will be thrown away unread."""
    app = add_routes(make_app(PICKLESESSION_PICKLE_ALLOWLIST=["builtins.int"]))
    app.testing = True
    _put_route(app, "/put", "thing", value)
    c = app.test_client()
    c.get("/set/plain/data")
    store.reset()
    with pytest.raises(SerializationError, match=r"session\['thing'\]") as info:
        c.get("/put")
    assert repr(name) in str(info.value) and isinstance(info.value, TypeError)
    assert "patch" not in store.reset()

    listed = add_routes(make_app(PICKLESESSION_PICKLE_ALLOWLIST=[name]))
    _put_route(listed, "/put", "thing", value)

    @listed.route("/same")
    def same():
        return str(flask.session["thing"] == value)

    lc = listed.test_client()
    lc.get("/put")
    assert lc.get("/same").data == b"True"


def test_plain_data_under_an_allowlist_is_pickled_without_a_check(make_app):
    """Pickle consults the check only for objects stored by reference."""
    app = add_routes(make_app(PICKLESESSION_PICKLE_ALLOWLIST=[]))

    @app.route("/put")
    def put():
        flask.session["cart"] = [{"sku": "A", "qty": 2, "tags": {"x"}}, (1.5, b"z")]
        return "ok"

    c = app.test_client()
    c.get("/put")
    assert (
        c.get("/get/cart").data
        == b"[{'sku': 'A', 'qty': 2, 'tags': {'x'}}, (1.5, b'z')]"
    )


@pytest.mark.parametrize("key", [42, None, ("a", 1)])
def test_a_key_that_is_not_a_str_is_named(app, store, key):
    """Flask's cookie session turns 42 into "42" on the way; a server-side
    session would then hold two keys for one, so it refuses, saying which."""
    app.testing = True

    @app.route("/put")
    def put():
        flask.session[key] = "v"
        return "ok"

    c = app.test_client()
    with pytest.raises(SerializationError, match=re.escape(f"session[{key!r}]")):
        c.get("/put")
    assert "create" not in store.reset()
