"""Secret keys: cookie signing, payload MACs, and their rotation.

Keys follow Flask's ``SECRET_KEY_FALLBACKS`` (oldest to newest) and
``SECRET_KEY`` (current). The current key alone signs and MACs new data;
every key verifies, the current one first and then the fallbacks newest first,
so the common case costs a single MAC. The package does this itself, so
rotation works on every Flask version, not only Flask >= 3.1.

Cookies are signed with HMAC-SHA256 in itsdangerous's format (a ``Signer``
with ``key_derivation="hmac"`` reads and writes the same values), computed
with one-shot :func:`hmac.digest`, which costs a third of itsdangerous's
per-call work on every request that verifies a cookie. Stored entries are
authenticated with keyed BLAKE2b, a MAC by design that costs a third of an
HMAC per entry, which matters because every entry of a record is checked on
load.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import typing as t

from .errors import ConfigurationError

#: Salt that namespaces cookie signatures to this package.
COOKIE_SALT = b"flask-picklesession.cookie"
#: Salt of the key that authenticates stored payloads; distinct from the
#: cookie salt so that a cookie signature can never pass as a payload MAC.
PAYLOAD_SALT = b"flask-picklesession.payload-mac"
_blake2b = hashlib.blake2b
#: Bytes of MAC per stored entry (128 bits).
MAC_SIZE = 16


def _derive(secret: bytes, salt: bytes) -> bytes:
    """itsdangerous's "hmac" key derivation: HMAC-SHA256(secret, salt)."""
    return hmac.digest(secret, salt, "sha256")


def _signature(key: bytes, value: bytes) -> bytes:
    """URL-safe base64 of HMAC-SHA256, unpadded, as itsdangerous writes it."""
    return base64.urlsafe_b64encode(hmac.digest(key, value, "sha256")).rstrip(b"=")


def _as_bytes(key: str | bytes, name: str) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes) or not key:
        raise ConfigurationError(f"{name} must be a non-empty str or bytes")
    return key


def normalize_fallbacks(value: object) -> tuple[bytes, ...]:
    """Validate ``SECRET_KEY_FALLBACKS`` and return it as bytes, oldest first.

    A single string is refused: iterating it would make every character a key.
    """
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        raise ConfigurationError(
            "SECRET_KEY_FALLBACKS must be a list of keys, not a single string;"
            " write SECRET_KEY_FALLBACKS = [old_key]"
        )
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError("SECRET_KEY_FALLBACKS must be a list of keys")
    return tuple(_as_bytes(k, "each key in SECRET_KEY_FALLBACKS") for k in value)


class KeyRing:
    """The keys of one app: sign with the current key, verify with all."""

    def __init__(self, secret_key: str | bytes, fallbacks: object = None) -> None:
        current = _as_bytes(secret_key, "SECRET_KEY")
        # Verification order is security-relevant: current key first, then the
        # fallbacks from newest to oldest. Signing uses the current key only.
        ordered = (current, *reversed(normalize_fallbacks(fallbacks)))
        self._cookie_keys = [_derive(k, COOKIE_SALT) for k in ordered]
        mac_keys = [_derive(k, PAYLOAD_SALT) for k in ordered]
        # Keyed BLAKE2b states with the key block already absorbed: copying
        # one is cheaper than keying a new hash for every entry.
        self._macs = [_blake2b(key=k, digest_size=MAC_SIZE) for k in mac_keys]

    @property
    def has_fallbacks(self) -> bool:
        """True while a rotation is in progress."""
        return len(self._macs) > 1

    def sign(self, value: str) -> str:
        """Sign ``value`` with the current key: ``value.signature``."""
        data = value.encode("ascii")
        return f"{value}.{_signature(self._cookie_keys[0], data).decode('ascii')}"

    def unsign(self, signed: str) -> tuple[str, bool] | None:
        """Return ``(value, verified_by_fallback)``, or None if no key verifies.

        Signatures are compared as text in constant time; only the canonical
        encoding, the one :meth:`sign` writes, is accepted.
        """
        value, sep, sig = signed.rpartition(".")
        if not sep:
            return None
        try:
            data, expected = value.encode("ascii"), sig.encode("ascii")
        except UnicodeEncodeError:
            return None
        compare = hmac.compare_digest
        for index, key in enumerate(self._cookie_keys):
            if compare(_signature(key, data), expected):
                return value, index > 0
        return None

    def mac(self, message: bytes) -> bytes:
        """MAC ``message`` with the current key (keyed BLAKE2b, 128 bits)."""
        state = self._macs[0].copy()
        state.update(message)
        return state.digest()

    def mac_states(self, prefix: bytes) -> list[t.Any]:
        """MAC states of every key, current first, that absorbed ``prefix``.

        For checking many messages that start alike (a session's entries all
        start with its id): copy a state, feed it the rest, take its digest.
        """
        states = []
        for keyed in self._macs:
            state = keyed.copy()
            state.update(prefix)
            states.append(state)
        return states

    def check_mac(self, message: bytes, tag: bytes) -> int | None:
        """Return the index of the key that made ``tag`` (0 is current), or None."""
        return which_key(self._macs, message, b"", tag)


def which_key(states: list[t.Any], head: bytes, rest: bytes, tag: bytes) -> int | None:
    """Index of the MAC state that, fed ``head`` then ``rest``, gives ``tag``.

    ``states`` come from :meth:`KeyRing.mac_states`, current key first; None
    if no key made ``tag``. Comparison is constant time for each key tried.
    """
    compare = hmac.compare_digest
    for index, keyed in enumerate(states):
        state = keyed.copy()
        state.update(head)
        state.update(rest)
        if compare(state.digest(), tag):
            return index
    return None


def keyring_cache() -> t.Callable[[object, object], KeyRing]:
    """Return a function that builds a :class:`KeyRing`, reusing the last one.

    Apps rarely change keys at run time, but tests and key rotation do; the
    config is compared on every call. The fallbacks are compared by value,
    as a copy: a key removed from the list in place (a revoked key) must stop
    verifying at once.
    """
    last: list[t.Any] = [None, None, None]

    def get(secret_key: object, fallbacks: object) -> KeyRing:
        listed = tuple(fallbacks) if isinstance(fallbacks, list) else fallbacks
        if last[0] is not secret_key or last[1] != listed:
            ring = KeyRing(t.cast("str | bytes", secret_key), fallbacks)
            last[:] = [secret_key, listed, ring]
        return t.cast(KeyRing, last[2])

    return get
