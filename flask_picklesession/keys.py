"""Secret keys: cookie signing, payload MACs, and their rotation.

Keys follow Flask's ``SECRET_KEY_FALLBACKS`` (oldest to newest) and
``SECRET_KEY`` (current). The current key alone signs and MACs new data;
every key verifies, the current one first and then the fallbacks newest first,
so the common case costs a single MAC. The package does this itself, so
rotation works on every Flask version, not only Flask >= 3.1.

Cookies are signed with HMAC-SHA256 through itsdangerous. Stored entries are
authenticated with keyed BLAKE2b, a MAC by design that costs a third of an
HMAC per entry, which matters because every entry of a record is checked on
load.
"""

from __future__ import annotations

import hashlib
import hmac
import typing as t

from itsdangerous import BadSignature, Signer

from .errors import ConfigurationError

#: Salt that namespaces cookie signatures to this package.
COOKIE_SALT = b"flask-picklesession.cookie"
#: Salt of the key that authenticates stored payloads; distinct from the
#: cookie salt so that a cookie signature can never pass as a payload MAC.
PAYLOAD_SALT = b"flask-picklesession.payload-mac"
_blake2b = hashlib.blake2b
#: Bytes of MAC per stored entry (128 bits).
MAC_SIZE = 16


class _CachedKeySigner(Signer):
    """An itsdangerous signer that derives its key once instead of per call."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        cache: dict[t.Any, bytes] = self.__dict__.setdefault("_derived", {})
        derived = cache.get(secret_key)
        if derived is None:
            derived = cache[secret_key] = super().derive_key(secret_key)
        return derived


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
        self._signers = [
            _CachedKeySigner(
                k, salt=COOKIE_SALT, key_derivation="hmac", digest_method=hashlib.sha256
            )
            for k in ordered
        ]
        self._mac_keys = [hmac.digest(k, PAYLOAD_SALT, "sha256") for k in ordered]

    @property
    def has_fallbacks(self) -> bool:
        """True while a rotation is in progress."""
        return len(self._mac_keys) > 1

    def sign(self, value: str) -> str:
        """Sign ``value`` with the current key."""
        return self._signers[0].sign(value).decode("ascii")

    def unsign(self, signed: str) -> tuple[str, bool] | None:
        """Return ``(value, verified_by_fallback)``, or None if no key verifies."""
        data = signed.encode("ascii")
        for index, signer in enumerate(self._signers):
            try:
                return signer.unsign(data).decode("ascii"), index > 0
            except BadSignature:
                continue
        return None

    def mac(self, message: bytes) -> bytes:
        """MAC ``message`` with the current key (keyed BLAKE2b, 128 bits)."""
        return _blake2b(message, key=self._mac_keys[0], digest_size=MAC_SIZE).digest()

    def check_mac(self, message: bytes, tag: bytes) -> int | None:
        """Return the index of the key that made ``tag`` (0 is current), or None.

        Comparison is constant time for each key tried.
        """
        compare = hmac.compare_digest
        keys = self._mac_keys
        if compare(_blake2b(message, key=keys[0], digest_size=MAC_SIZE).digest(), tag):
            return 0
        for index in range(1, len(keys)):
            mac = _blake2b(message, key=keys[index], digest_size=MAC_SIZE).digest()
            if compare(mac, tag):
                return index
        return None


def keyring_cache() -> t.Callable[[object, object], KeyRing]:
    """Return a function that builds a :class:`KeyRing`, reusing the last one.

    Apps rarely change keys at run time, but tests and key rotation do; the
    config is compared on every call, which costs two lookups.
    """
    last: list[t.Any] = [None, None, None]

    def get(secret_key: object, fallbacks: object) -> KeyRing:
        if last[0] is not secret_key or last[1] is not fallbacks:
            ring = KeyRing(t.cast("str | bytes", secret_key), fallbacks)
            last[:] = [secret_key, fallbacks, ring]
        return t.cast(KeyRing, last[2])

    return get
