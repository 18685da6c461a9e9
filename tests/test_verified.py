"""Verified cookies and records are remembered, and only ever as exact matches."""

from __future__ import annotations

import logging

import flask
import pytest

from flask_picklesession import verified
from flask_picklesession.keys import KeyRing
from flask_picklesession.record import CorruptRecord, build, parse_raw
from flask_picklesession.sealing import open_record, seal
from tests.helpers import add_routes, cookie_value, put_cookie, sid_of

SID = "s" * 43


@pytest.fixture(autouse=True)
def fresh_caches():
    verified.forget()
    yield
    verified.forget()


@pytest.fixture
def verifications(monkeypatch):
    """How often a cookie and a record were really verified."""
    counts = {"cookie": 0, "record": 0}
    real_cookie, real_record = verified.read_cookie, verified.open_record

    def cookie(*args):
        counts["cookie"] += 1
        return real_cookie(*args)

    def record(*args):
        counts["record"] += 1
        return real_record(*args)

    monkeypatch.setattr(verified, "read_cookie", cookie)
    monkeypatch.setattr(verified, "open_record", record)
    return counts


def _record(ring, values, sid=SID):
    return build({k: seal(ring, sid, k, v) for k, v in values.items()})


def _add_counter(app):
    @app.route("/bump/<key>")
    def bump(key):
        flask.session[key] = flask.session.get(key, 0) + 1
        return str(flask.session[key])


def test_repeat_reads_verify_once_until_the_session_changes(app, verifications):
    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    verified.forget()  # as in a worker that did not write the record
    verifications.update(cookie=0, record=0)
    for _ in range(3):
        assert c.get("/get/a").data == b"'1'"
    assert verifications == {"cookie": 1, "record": 1}
    c.get("/set/a/2")
    verified.forget()  # written by another worker, as far as this one knows
    assert c.get("/get/a").data == b"'2'"
    assert verifications["record"] == 2  # new bytes: verified again


def test_records_this_process_wrote_are_not_verified_again(app, store, verifications):
    """A created record, and one an appending store extended, are known."""
    _add_counter(app)
    c = app.test_client()
    assert c.get("/bump/n").data == b"1"  # created
    for expected in (b"2", b"3", b"4"):
        assert c.get("/bump/n").data == expected
    # The filesystem store rewrites the record on each save, in bytes of its
    # own: the requests after the first two saves verify what they load.
    assert verifications["record"] == (0 if store.appends else 2)


def test_writes_to_a_remembered_record_measure_only_their_changes(
    app, store, monkeypatch
):
    from flask_picklesession import sizes, writing

    measured = []
    real_measure = sizes.measure

    def measure(values):
        measured.append(sorted(values))
        return real_measure(values)

    # Replaced where it is called: at create, and when a load is measured.
    monkeypatch.setattr(sizes, "measure", measure)
    monkeypatch.setattr(writing, "measure", measure)
    _add_counter(app)
    c = app.test_client()
    # Names longer than one byte: a new key whose bytes occur by chance in
    # the record (in a random MAC, say) is, rightly, not remembered.
    c.get("/bump/visits")
    c.get("/bump/clicks")
    assert measured == [["visits"]]  # at create; the next write finds sizes kept
    measured.clear()
    for _ in range(3):
        c.get("/bump/clicks")
    # Records the store rewrote are measured once per write, on load.
    assert measured == ([] if store.appends else [["clicks", "visits"]] * 3)


def test_a_record_changed_meanwhile_is_verified_and_merged(make_app, verifications):
    """Another request's save between this one's load and its append leaves
    other bytes than this process remembers: they are verified, not trusted,
    and both saves are there."""
    app = make_app()
    other = make_app()
    add_routes(other)
    neighbour = other.test_client()

    @app.route("/bump-racing/<key>")
    def bump_racing(key):
        value = flask.session.get(key, 0) + 1
        put_cookie(neighbour, flask.request.cookies["session"])
        assert neighbour.get("/set/m/x").data == b"ok"
        flask.session[key] = value
        return str(value)

    add_routes(app)
    _add_counter(app)
    c = app.test_client()
    c.get("/bump/n")
    c.get("/bump/n")
    before = verifications["record"]
    assert c.get("/bump-racing/n").data == b"3"
    assert c.get("/dump").data == b"[('m', 'x'), ('n', 3)]"
    assert verifications["record"] > before


def test_a_remembered_record_changed_in_one_byte_is_refused(app, raw_store, caplog):
    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    assert c.get("/get/a").data == b"'1'"  # now remembered
    key = "session:" + sid_of(c)
    record = raw_store.load(key)
    tampered = record[:-1] + bytes([record[-1] ^ 1])
    raw_store.delete(key)
    raw_store.create(key, tampered, 60_000)
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert c.get("/get/a").data == b"None"
    assert "MAC" in caplog.text


def test_a_key_taken_out_of_service_no_longer_verifies(make_app):
    app = make_app(SECRET_KEY="old key")
    add_routes(app)
    c = app.test_client()
    c.get("/set/a/1")
    old_cookie = cookie_value(c)
    assert c.get("/get/a").data == b"'1'"  # cookie and record remembered
    app.config["SECRET_KEY"] = "new key"
    assert c.get("/get/a").data == b"None"
    # The same bytes under a ring that still trusts the old key verify again.
    app.config["SECRET_KEY_FALLBACKS"] = ["old key"]
    put_cookie(c, old_cookie)
    assert c.get("/get/a").data == b"'1'"


def test_remembered_results_are_read_only():
    ring = KeyRing("k")
    found = verified.verified_record(ring, SID, _record(ring, {b"a": b"i1"}))
    entries, stale = found.entries, found.stale
    assert entries["a"].value == b"i1" and stale == frozenset()
    with pytest.raises(TypeError):
        entries["b"] = entries["a"]  # type: ignore[index]
    assert isinstance(stale, frozenset)


def test_large_records_and_failures_are_not_kept():
    ring = KeyRing("k")
    big = _record(ring, {b"a": b"s" + b"x" * verified.RECORD_CACHE_MAX_BYTES})
    entries = verified.verified_record(ring, SID, big).entries
    assert len(entries["a"].value) > verified.RECORD_CACHE_MAX_BYTES
    assert verified.remembered_records() == 0

    forged = _record(KeyRing("other"), {b"a": b"i1"})
    for _ in range(2):
        with pytest.raises(CorruptRecord):
            verified.verified_record(ring, SID, forged)
    assert verified.remembered_records() == 0

    assert verified.verified_cookie(ring, f"{SID}.1p.bad") is None
    assert verified.verified_cookie(ring, None) is None
    assert verified._cookie.cache_info().currsize == 0


def test_the_same_record_of_another_session_is_not_served_from_memory():
    ring = KeyRing("k")
    record = _record(ring, {b"a": b"i1"})
    verified.verified_record(ring, SID, record)
    with pytest.raises(CorruptRecord):
        verified.verified_record(ring, "t" * 43, record)
    assert parse_raw(record)  # untouched by either call


def test_remembering_from_many_threads_at_once(monkeypatch):
    """The record cache is shared by a server's threads: lookups, inserts and
    evictions racing each other neither fail nor mix records up."""
    import sys
    import threading

    monkeypatch.setattr(verified, "RECORD_CACHE_SIZE", 3)
    old_interval = sys.getswitchinterval()
    # Switch threads as often as possible: a race is caught by chance, and
    # these numbers catch an unguarded eviction in most runs.
    sys.setswitchinterval(1e-6)
    ring = KeyRing("k")
    records = [_record(ring, {b"a": b"i%d" % n}) for n in range(8)]
    errors = []

    def work(offset):
        try:
            for i in range(20000):
                n = (i + offset) % len(records)
                if i % 3:
                    found = verified.verified_record(ring, SID, records[n])
                    assert found.entries["a"].value == b"i%d" % n
                else:
                    entries, _ = open_record(ring, SID, records[n])
                    verified.remember_record(ring, SID, records[n], entries)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert errors == []
    assert verified.remembered_records() <= 3 + len(threads)
