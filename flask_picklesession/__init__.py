"""Server-side sessions for Flask with a signed id cookie and MAC-checked storage."""

from .errors import ConfigurationError as ConfigurationError
from .errors import SerializationError as SerializationError
from .errors import SessionError as SessionError
from .errors import SessionTooLarge as SessionTooLarge
from .errors import StoreUnavailable as StoreUnavailable
from .filesystem import FileSystemStore as FileSystemStore
from .interface import PickleSession as PickleSession
from .redis_store import RedisStore as RedisStore
from .session import ServerSession as ServerSession
from .store import Store as Store

__version__ = "0.1.0"

#: What ``from flask_picklesession import *`` brings: the public names, not
#: the submodules, one of which (``session``) would shadow Flask's.
__all__ = [
    "ConfigurationError",
    "FileSystemStore",
    "PickleSession",
    "RedisStore",
    "SerializationError",
    "ServerSession",
    "SessionError",
    "SessionTooLarge",
    "Store",
    "StoreUnavailable",
]
