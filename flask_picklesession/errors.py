"""Every error the package raises on purpose shares one base class.

Callers can catch :class:`SessionError` to handle them all, or a subclass for
one situation. Errors coming from a store client or a serializer are chained
(``raise ... from exc``) so the original cause stays in the traceback.
"""

from __future__ import annotations


class SessionError(Exception):
    """Base class of the errors raised by flask-picklesession."""


class ConfigurationError(SessionError, ValueError):
    """A ``PICKLESESSION_*`` setting, a secret key or a store client is unusable.

    Raised at ``init_app``, or on the first request that uses the setting
    (a value set or changed after ``init_app``, the secret keys).
    """


class StoreUnavailable(SessionError):
    """The store could not be reached, refused a command or could not be written.

    A save that raised this did not happen: nothing is reported as stored when
    it was not.
    """

    def __init__(self, message: str, *, reached: bool = True) -> None:
        super().__init__(message)
        #: False when the store did not answer at all (connection refused or
        #: timed out): another command sent at once would only wait again.
        self.reached = reached


class SessionTooLarge(SessionError, ValueError):
    """A serialized session is larger than ``PICKLESESSION_MAX_SIZE``.

    Raised before anything is written, so the stored session stays as it was.
    """

    def __init__(
        self,
        size: int | None,
        limit: int,
        largest_key: str | None = None,
        largest_size: int | None = None,
    ) -> None:
        what = f"{size} bytes" if size is not None else "larger"
        largest = ""
        if largest_key is not None:
            largest = f"; the largest value is session[{largest_key!r:.60}]"
            if largest_size is not None:
                largest += f", {largest_size} bytes"
        super().__init__(
            f"the serialized session would be {what}, over the limit of"
            f" {limit} bytes (PICKLESESSION_MAX_SIZE){largest}"
        )
        #: Size in bytes the session would have had, if known.
        self.size = size
        #: The configured limit in bytes.
        self.limit = limit
        #: The session key holding the largest value, if known.
        self.largest_key = largest_key


class SerializationError(SessionError, TypeError):
    """A session value cannot be held by the configured serializer.

    The message names the session key and the type of its value.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        #: The top-level session key whose value could not be serialized.
        self.key = key
