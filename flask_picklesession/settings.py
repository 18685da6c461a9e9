"""Per-app settings, read from ``app.config`` and validated there.

Flask's own cookie keys (``SESSION_COOKIE_*``, ``SESSION_REFRESH_EACH_REQUEST``,
``PERMANENT_SESSION_LIFETIME``) and the secret keys are read on every request,
as Flask does. The ``PICKLESESSION_*`` keys build a store and a codec, so
they are read once, and again only when one of them is given a new value.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import logging
import os
import re
import sys
import typing as t

from .codec import Codec
from .errors import ConfigurationError
from .filesystem import FileSystemStore
from .json_codec import JSONCodec
from .keys import KeyRing, keyring_cache
from .pickle_codec import PickleCodec
from .store import Store

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from flask import Flask

#: Defaults of the ``PICKLESESSION_*`` keys (the file folder depends on the app).
DEFAULTS: dict[str, t.Any] = {
    "PICKLESESSION_STORE": "filesystem",
    "PICKLESESSION_FILE_DIR": None,
    "PICKLESESSION_REDIS_URL": "redis://127.0.0.1:6379/0",
    "PICKLESESSION_REDIS": None,
    "PICKLESESSION_KEY_PREFIX": "session:",
    "PICKLESESSION_SERIALIZER": "pickle",
    "PICKLESESSION_MAX_SIZE": 256 * 1024,
    "PICKLESESSION_PICKLE_ALLOWLIST": None,
}
#: The keys whose values :class:`Settings` are built from.
WATCHED_KEYS = tuple(DEFAULTS)
logger = logging.getLogger("flask_picklesession")
_FILE_PREFIX = re.compile(r"(?:[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,99})?")
_GLOBAL_NAME = re.compile(r"[\w.]+\.\w+")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the interface needs about one app besides Flask's own keys."""

    store: Store
    codec: Codec
    key_prefix: str
    max_size: int
    #: The values of :data:`WATCHED_KEYS` these settings were built from.
    source: tuple[object, ...] = dataclasses.field(default=(), compare=False)
    keyring: t.Callable[[object, object], KeyRing] = dataclasses.field(
        default_factory=keyring_cache, compare=False
    )


def _option(app: Flask, overrides: dict[str, t.Any], name: str) -> t.Any:
    if overrides.get(name) is not None:
        return overrides[name]
    return app.config.get(name, DEFAULTS[name])


def config_source(config: t.Mapping[str, t.Any]) -> tuple[object, ...]:
    """The values settings depend on, to tell when they must be rebuilt."""
    return tuple(map(config.get, WATCHED_KEYS))


def build_settings(app: Flask, overrides: dict[str, t.Any]) -> Settings:
    """Read and check the ``PICKLESESSION_*`` keys; explicit arguments win."""
    source = config_source(app.config)
    _warn_unknown_keys(app.config)
    serializer = _option(app, overrides, "PICKLESESSION_SERIALIZER")
    _check_serializer(serializer, "PICKLESESSION_SERIALIZER")
    allowlist = _allowlist(_option(app, overrides, "PICKLESESSION_PICKLE_ALLOWLIST"))
    if allowlist is not None and serializer == "json":
        logger.warning(
            "PICKLESESSION_PICKLE_ALLOWLIST is not used: with PICKLESESSION_SERIALIZER"
            " = 'json' nothing is ever unpickled"
        )
    elif allowlist:
        _warn_unknown_modules(allowlist)
    store = _store(app, overrides)
    prefix = _option(app, overrides, "PICKLESESSION_KEY_PREFIX")
    _check_prefix(prefix, "PICKLESESSION_KEY_PREFIX")
    if isinstance(store, FileSystemStore) and not _FILE_PREFIX.fullmatch(prefix):
        raise ConfigurationError(
            "PICKLESESSION_KEY_PREFIX must be letters, digits and _ . : - (not"
            f" starting with '.') with the filesystem store, not {prefix!r}"
        )
    max_size = _option(app, overrides, "PICKLESESSION_MAX_SIZE")
    _check_max_size(max_size, "PICKLESESSION_MAX_SIZE")
    codec = make_codec(serializer, allowlist)
    return Settings(store, codec, prefix, max_size, source)


def make_codec(name: str, allowlist: Iterable[str] | None = None) -> Codec:
    """Return the codec for a ``PICKLESESSION_SERIALIZER`` value."""
    if name == "pickle":
        return PickleCodec(allowlist)
    if name == "json":
        return JSONCodec()
    raise ValueError(name)


#: Constructor arguments, by the config key each stands for.
ARGUMENTS = {
    "PICKLESESSION_STORE": "store",
    "PICKLESESSION_SERIALIZER": "serializer",
    "PICKLESESSION_KEY_PREFIX": "key_prefix",
    "PICKLESESSION_MAX_SIZE": "max_size",
    "PICKLESESSION_PICKLE_ALLOWLIST": "pickle_allowlist",
}


def check_arguments(overrides: dict[str, t.Any]) -> None:
    """Check the constructor's arguments when given, naming each argument."""
    checks: dict[str, t.Callable[[t.Any, str], object]] = {
        "PICKLESESSION_STORE": _check_store_choice,
        "PICKLESESSION_SERIALIZER": _check_serializer,
        "PICKLESESSION_KEY_PREFIX": _check_prefix,
        "PICKLESESSION_MAX_SIZE": _check_max_size,
        "PICKLESESSION_PICKLE_ALLOWLIST": _allowlist,
    }
    for key, value in overrides.items():
        if value is not None:
            checked = checks[key](value, f"the {ARGUMENTS[key]} argument")
            if key == "PICKLESESSION_PICKLE_ALLOWLIST":
                overrides[key] = checked  # an iterator would be empty next time


def _check_store_choice(value: object, name: str) -> None:
    if not isinstance(value, Store) and value not in ("filesystem", "redis"):
        raise ConfigurationError(
            f"{name} must be 'filesystem', 'redis' or a Store object, not {value!r}"
        )


def _check_serializer(value: object, name: str) -> None:
    if value not in ("pickle", "json"):
        raise ConfigurationError(f"{name} must be 'pickle' or 'json', not {value!r}")


def _check_prefix(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, not {value!r}")


def _check_max_size(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 64:
        raise ConfigurationError(
            f"{name} must be an int of at least 64 (bytes), not {value!r}"
        )


def _allowlist(
    value: object, name: str = "PICKLESESSION_PICKLE_ALLOWLIST"
) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigurationError(
            f"{name} must be a list of 'module.Name' strings, not {value!r}"
            f" (for one name: [{value!r}])"
        )
    if name == "PICKLESESSION_PICKLE_ALLOWLIST" and iter(value) is value:
        # Read again whenever a PICKLESESSION_* key changes: used up by then.
        raise ConfigurationError(
            f"{name} must be a list, tuple or set, not an iterator ({value!r})"
        )
    names = frozenset(t.cast("t.Iterable[object]", value))
    bad = [n for n in names if not isinstance(n, str) or not _GLOBAL_NAME.fullmatch(n)]
    if bad:
        raise ConfigurationError(
            f"{name} entries must look like 'module.Name': {bad!r}"
        )
    return t.cast("frozenset[str]", names)


def _warn_unknown_modules(allowlist: frozenset[str]) -> None:
    """A misspelt module in the allowlist would otherwise show only as
    sessions read empty. Top-level modules only: finding those imports
    nothing."""
    for top in sorted({name.partition(".")[0] for name in allowlist}):
        if top not in sys.modules and importlib.util.find_spec(top) is None:
            logger.warning(
                "PICKLESESSION_PICKLE_ALLOWLIST names module %r, which cannot"
                " be found: a misspelling?",
                top,
            )


def _store(app: Flask, overrides: dict[str, t.Any]) -> Store:
    choice = _option(app, overrides, "PICKLESESSION_STORE")
    if isinstance(choice, Store):
        return choice
    _check_store_choice(choice, "PICKLESESSION_STORE")
    if choice == "filesystem":
        folder = _option(app, overrides, "PICKLESESSION_FILE_DIR")
        if folder is None:
            folder = os.path.join(app.instance_path, "sessions")
        if not isinstance(folder, (str, os.PathLike)) or not os.fspath(folder):
            raise ConfigurationError(
                f"PICKLESESSION_FILE_DIR must be a folder's path, not {folder!r}"
                " (unset, it is the app's instance folder + /sessions)"
            )
        _warn_unused_redis(app, overrides, folder)
        # Relative to the directory the app started in, and kept there; a
        # value from an environment file has had no shell to expand "~".
        folder = os.path.abspath(os.path.expanduser(folder))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ConfigurationError(
                f"PICKLESESSION_FILE_DIR is {folder!r}, which is a file, not a folder"
            )
        return FileSystemStore(folder)
    return _redis_store(app, overrides)


def _warn_unknown_keys(config: t.Mapping[str, t.Any]) -> None:
    """A misspelt key would otherwise leave its default in place unnoticed."""
    for key in config:
        if key.startswith("PICKLESESSION_") and key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            logger.warning(
                "%s is not a flask-picklesession setting and is ignored%s",
                key,
                f"; did you mean {close[0]}?" if close else "",
            )


def _warn_unused_redis(
    app: Flask, overrides: dict[str, t.Any], folder: str | os.PathLike[str]
) -> None:
    """Say so when Redis is configured but the store is the folder.

    ``PICKLESESSION_STORE`` decides, and defaults to the folder; a client or
    URL set without it is easily meant to be used. A client that is not one
    is refused all the same, never kept for later.
    """
    from .redis_client import check_client

    client = _option(app, overrides, "PICKLESESSION_REDIS")
    if client is not None:
        check_client(client, "PICKLESESSION_REDIS")
    given = [
        key
        for key in ("PICKLESESSION_REDIS", "PICKLESESSION_REDIS_URL")
        if _option(app, overrides, key) is not None and key in app.config
    ]
    if given:
        logger.warning(
            "%s is set, but PICKLESESSION_STORE is 'filesystem': sessions are"
            " kept in %s; set PICKLESESSION_STORE = 'redis' to use Redis",
            " and ".join(given),
            os.fspath(folder),
        )


def _redis_store(app: Flask, overrides: dict[str, t.Any]) -> Store:
    from .redis_client import check_client
    from .redis_store import RedisStore

    client = _option(app, overrides, "PICKLESESSION_REDIS")
    if client is not None:
        check_client(client, "PICKLESESSION_REDIS")  # the error names the key
        return RedisStore(client)
    url = _option(app, overrides, "PICKLESESSION_REDIS_URL")
    if not isinstance(url, str) or not url:
        raise ConfigurationError("PICKLESESSION_REDIS_URL must be a redis:// URL")
    try:
        return RedisStore.from_url(url)
    except ConfigurationError:
        raise  # redis-py is not installed: the URL is not to blame
    except ValueError as exc:
        raise ConfigurationError(
            f"PICKLESESSION_REDIS_URL is not usable: {exc}"
        ) from exc
