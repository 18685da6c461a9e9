"""What the Redis store needs of its client, and of redis-py itself.

Apart from the store because the app's settings check a configured client
too, so that the error names the setting, and check it even when the store
is the folder and no Redis store is made. redis-py is imported only once
Redis is used: the filesystem store needs only Flask.
"""

from __future__ import annotations

import inspect
import typing as t

from .errors import ConfigurationError

_REQUIRED = (
    "get",
    "getex",
    "set",
    "delete",
    "pexpire",
    "pttl",
    "strlen",
    "register_script",
    "scan_iter",
)


def redis_module() -> t.Any:
    try:
        import redis
    except ImportError as exc:
        raise ConfigurationError(
            "the Redis store needs redis-py: pip install 'flask-picklesession[redis]'"
        ) from exc
    return redis


def check_client(client: object, name: str) -> None:
    """Refuse, naming ``name``, what cannot serve as the store's client."""
    if isinstance(client, type):
        raise ConfigurationError(
            f"{name} is the class {client.__qualname__}, not a client; give it"
            f" one: {client.__qualname__}(host=..., port=...)"
        )
    missing = [m for m in _REQUIRED if not callable(getattr(client, m, None))]
    if missing:
        raise ConfigurationError(
            f"{name} must be a redis-py client (redis.Redis, RedisCluster or a"
            f" Sentinel master_for() client); {type(client).__qualname__} lacks"
            f" {', '.join(missing)}"
        )
    if hasattr(client, "command_stack"):
        # A pipeline only queues commands until execute(): writes would look
        # done and store nothing.
        raise ConfigurationError(
            f"{name} is a pipeline ({type(client).__qualname__}); give it the"
            " client itself (redis.Redis, RedisCluster or a Sentinel client)"
        )
    if inspect.iscoroutinefunction(getattr(client, "execute_command", None)):
        # Its commands return coroutines, which are never run: every write
        # would look done and store nothing.
        raise ConfigurationError(
            f"{name} is an asyncio client ({type(client).__module__}."
            f"{type(client).__qualname__}); Flask calls the session interface"
            " synchronously, so give it a redis.Redis, RedisCluster or Sentinel"
            " client from the synchronous API"
        )
    get_kwargs = getattr(client, "get_connection_kwargs", None)
    kwargs = get_kwargs() if callable(get_kwargs) else {}
    if isinstance(kwargs, dict) and kwargs.get("decode_responses"):
        raise ConfigurationError(
            f"{name} was created with decode_responses=True; sessions are stored"
            " as bytes, so give the store a client without it"
        )
