"""The filesystem store's locks: one of a fixed set of lock files per session.

Writers of one session serialize on an ``flock`` of its lock file, held only
while merging a save. Anyone who can write in the folder can hold a lock
file too, so waiting is bounded and polled, as ``flock`` has no timeout of
its own. The lock files live in the session folder, so taking a lock is
where the folder is created: every write takes one first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import typing as t

from .errors import StoreUnavailable
from .session_files import OPEN_RW

if t.TYPE_CHECKING:
    from collections.abc import Iterator

#: Number of lock files; sessions hash onto them.
LOCK_STRIPES = 64
#: Longest wait, in seconds, for a lock file: a lock held longer is held by a
#: stuck or stopped process, or by anyone who can write in the folder, and a
#: save then fails with StoreUnavailable instead of hanging.
LOCK_TIMEOUT = 10.0
#: First and longest pause between tries to take a lock, in seconds: short
#: at first, so that two writers of one stripe add no noticeable latency.
_LOCK_PAUSES = (0.0001, 0.005)


def _flock(fd: int, name: str, timeout: float) -> None:
    """Lock ``fd`` exclusively, waiting at most ``timeout`` seconds.

    Polled, as ``flock`` has no timeout of its own; ``name`` is for the error.
    """
    deadline = time.monotonic() + timeout
    pause, longest = _LOCK_PAUSES
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            raise StoreUnavailable(f"cannot lock {name}: {exc}") from exc
        left = deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailable(
                f"lock file {name} of the session folder was held for over"
                f" {timeout:g} s: is a process holding it stuck or stopped?"
            )
        time.sleep(min(pause, left))
        pause = min(pause * 2, longest)


def _ensure_directory(directory: str) -> None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        raise StoreUnavailable(
            f"the session folder {directory!r} is a file, not a folder"
        ) from exc
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create the session folder {directory!r}: {exc}"
        ) from exc


@contextlib.contextmanager
def locked(directory: str, key: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the lock stripe of ``key``: excludes other threads and processes.

    Waiting is bounded (by :data:`LOCK_TIMEOUT` unless ``timeout`` says
    otherwise): anyone who can write in the folder can hold a lock file,
    and must not hang every save.
    """
    _ensure_directory(directory)
    stripe = hashlib.sha256(key.encode()).digest()[0] % LOCK_STRIPES
    name = f".lock-{stripe:02d}"
    lock_path = os.path.join(directory, name)
    try:
        fd = os.open(lock_path, OPEN_RW | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreUnavailable(f"cannot open lock file: {exc}") from exc
    try:
        _flock(fd, name, LOCK_TIMEOUT if timeout is None else timeout)
        yield
    finally:
        os.close(fd)  # closing releases the flock
