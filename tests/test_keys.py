"""Signing keys and rotation order (itsdangerous style: newest verifies first)."""

from __future__ import annotations

import pytest

from flask_picklesession.cookie import make_cookie, read_cookie
from flask_picklesession.errors import ConfigurationError
from flask_picklesession.keys import KeyRing, keyring_cache

SID = "s" * 43


def test_current_key_signs_and_all_verify():
    rotated = KeyRing("new", ["oldest", "old"])
    signed = rotated.sign("value")
    assert KeyRing("new").unsign(signed) == ("value", False)
    assert KeyRing("old").unsign(signed) is None
    assert rotated.unsign(KeyRing("old").sign("v")) == ("v", True)
    assert rotated.unsign(KeyRing("oldest").sign("v")) == ("v", True)
    assert rotated.unsign(KeyRing("other").sign("v")) is None


def test_payload_mac_key_differs_from_cookie_key():
    ring = KeyRing("k")
    signature = ring.sign("x").rsplit(".", 1)[1]
    assert ring.check_mac(b"x", signature.encode()[:16]) is None


def test_check_mac_names_the_key_that_verified():
    ring = KeyRing("new", ["old"])
    assert ring.check_mac(b"m", KeyRing("new").mac(b"m")) == 0
    assert ring.check_mac(b"m", KeyRing("old").mac(b"m")) == 1


@pytest.mark.parametrize("fallbacks", ["old", b"old", 5, [""], [None]])
def test_bad_fallbacks_are_refused(fallbacks):
    with pytest.raises(ConfigurationError):
        KeyRing("k", fallbacks)


@pytest.mark.parametrize("secret", ["", b"", 5])
def test_bad_secret_is_refused(secret):
    with pytest.raises(ConfigurationError):
        KeyRing(secret)


def test_keyring_cache_rebuilds_on_change():
    get = keyring_cache()
    first = get("a", None)
    assert get("a", None) is first
    assert get("b", None) is not first


def test_keyring_cache_sees_a_fallback_removed_in_place():
    """Revoking a key by removing it from the config's list must take
    effect at once, as it does in Flask's own cookie sessions."""
    get = keyring_cache()
    fallbacks = ["old", "older"]
    ring = get("new", fallbacks)
    old_cookie = KeyRing("old").sign(SID + ".1p")
    assert read_cookie(ring, old_cookie) is not None
    assert get("new", fallbacks) is ring
    fallbacks.remove("old")
    assert read_cookie(get("new", fallbacks), old_cookie) is None


def test_cookie_round_trip_and_refusals():
    ring = KeyRing("k")
    value = make_cookie(ring, SID, 0x1234, True)
    assert read_cookie(ring, value) == (SID, 0x1234, True, False)
    assert read_cookie(ring, make_cookie(ring, SID, 7, False)).permanent is False
    for bad in (
        None,
        "",
        "x" * 500,
        "\u00e9",
        value[:-1],
        value + "x",
        ring.sign("short.1p"),
        ring.sign(SID + ".zzp"),
        ring.sign(SID + ".1x"),
        ring.sign(SID),
    ):
        assert read_cookie(ring, bad) is None


def test_cookie_stamp_beyond_any_sane_date_is_refused():
    """11 hex digits reach the year 2527; 12 would reach 10889, past what a
    datetime (the cookie's expiry) can hold."""
    ring = KeyRing("k")
    assert read_cookie(ring, ring.sign(SID + ".ffffffffffffffffp")) is None
    assert read_cookie(ring, ring.sign(SID + ".ffffffffffffp")) is None
    assert read_cookie(ring, ring.sign(SID + ".fffffffffffp")) is not None


def test_cookie_signatures_keep_itsdangerous_format():
    """Cookies issued before the signing was done in-package still verify."""
    import hashlib

    from itsdangerous import Signer

    from flask_picklesession.keys import COOKIE_SALT

    theirs = Signer(
        "k", salt=COOKIE_SALT, key_derivation="hmac", digest_method=hashlib.sha256
    )
    ring = KeyRing("k")
    assert ring.sign("a.b") == theirs.sign("a.b").decode()
    assert ring.unsign(theirs.sign("a.b").decode()) == ("a.b", False)


@pytest.mark.parametrize(
    "signed", ["", "nosep", "v.", ".sig", "v.sig\u00e9", "v\u00e9.x"]
)
def test_malformed_signatures_do_not_verify(signed):
    assert KeyRing("k").unsign(signed) is None


def test_non_canonical_signature_is_refused():
    signed = KeyRing("k").sign("v")
    assert KeyRing("k").unsign(signed + "=") is None
    assert KeyRing("k").unsign(signed[:-1]) is None
