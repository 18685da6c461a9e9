"""The filesystem store: one file per session, safe for several processes.

Each file is an 8-byte big-endian expiry (milliseconds since the epoch)
followed by the record. Readers take no lock: files are replaced atomically
(written to a temporary file in the same folder, then ``os.replace``), so a
reader sees the old or the new file, never half of one. Writers of one
session serialize on an ``flock`` of one of a fixed set of lock files, held
only while merging a save, never from loading to saving, and waited for at
most :data:`LOCK_TIMEOUT` seconds. Files are never followed through
symbolic links.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
import struct
import tempfile
import time
import typing as t

from .errors import StoreUnavailable
from .record import FORMAT_VERSION, CorruptRecord
from .store import CORRUPT, EntryInfo, Store, merge_record

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from .record import Op

_EXPIRY = struct.Struct(">Q")
#: What a record starts with: tells a session file from any other file.
_VERSION = bytes([FORMAT_VERSION])
_NAME = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,199}")
# O_NONBLOCK: a FIFO planted in the folder must not block the open; it is
# then refused as not a regular file. Regular files ignore the flag.
_OPEN_FLAGS = (
    getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)
)
_OPEN_READ = os.O_RDONLY | _OPEN_FLAGS
_OPEN_RW = os.O_RDWR | _OPEN_FLAGS
#: Number of lock files; sessions hash onto them.
LOCK_STRIPES = 64
#: Longest wait, in seconds, for a lock file: a lock held longer is held by a
#: stuck or stopped process, or by anyone who can write in the folder, and a
#: save then fails with StoreUnavailable instead of hanging.
LOCK_TIMEOUT = 10.0
#: First and longest pause between tries to take a lock, in seconds: short
#: at first, so that two writers of one stripe add no noticeable latency.
_LOCK_PAUSES = (0.0001, 0.005)
#: Temporary files older than this are leftovers of a crash.
_STALE_TEMP_SECONDS = 3600
#: Largest file :meth:`FileSystemStore.load` reads: a file that claims more is
#: refused as corrupt before memory is allocated for it.
MAX_FILE_SIZE = 64 * 1024 * 1024
#: Opens of a session file that a save replaced meanwhile, before giving up.
_REOPEN_TRIES = 8


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _read_open_file(fd: int) -> tuple[int, bytes]:
    """``(expiry, record)`` of an open session file."""
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise StoreUnavailable(f"cannot read session file: {exc}") from exc
    data = b"".join(chunks)
    if len(data) < _EXPIRY.size:
        raise CorruptRecord("session file is shorter than its header")
    return _EXPIRY.unpack_from(data)[0], data[_EXPIRY.size :]


def _refuse_other_links(fd: int) -> None:
    """Refuse a refreshing read of a file with other hard links.

    Writing the expiry in place would change the other names too (a backup
    made with ``cp -al`` or ``rsync --link-dest``). Raising, rather than
    reporting the session missing, lets the caller read it without the
    refresh and log why, as for a read-only folder; the next save replaces
    the file, which ends the link.
    """
    if os.fstat(fd).st_nlink > 1:
        raise StoreUnavailable(
            "session file has other hard links (a backup made with cp -al or"
            " rsync --link-dest?), so its expiry is not written in place;"
            " the next save of the session replaces it and ends the link"
        )


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


class FileSystemStore(Store):
    """Keep sessions as files in ``directory`` (created with mode 0700)."""

    needs_cleanup = True

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        if not os.fspath(directory):  # "" would mean whatever folder is current
            raise ValueError("FileSystemStore needs a folder's path, not ''")
        #: Folder that holds the session files.
        self.directory = os.fspath(directory)

    def __repr__(self) -> str:
        return f"FileSystemStore({self.directory!r})"

    # -- paths and locks ---------------------------------------------------

    def _path(self, key: str) -> str:
        if _NAME.fullmatch(key) is None:
            raise ValueError(f"not a valid store key: {key!r}")
        return os.path.join(self.directory, key)

    def _ensure_directory(self) -> None:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except FileExistsError as exc:
            raise StoreUnavailable(
                f"the session folder {self.directory!r} is a file, not a folder"
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the session folder {self.directory!r}: {exc}"
            ) from exc

    @contextlib.contextmanager
    def _locked(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock stripe of ``key``: excludes other threads and processes.

        Waiting is bounded (by :data:`LOCK_TIMEOUT` unless ``timeout`` says
        otherwise): anyone who can write in the folder can hold a lock file,
        and must not hang every save.
        """
        self._ensure_directory()
        stripe = hashlib.sha256(key.encode()).digest()[0] % LOCK_STRIPES
        name = f".lock-{stripe:02d}"
        lock_path = os.path.join(self.directory, name)
        try:
            fd = os.open(lock_path, _OPEN_RW | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailable(f"cannot open lock file: {exc}") from exc
        try:
            _flock(fd, name, LOCK_TIMEOUT if timeout is None else timeout)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # -- reading -----------------------------------------------------------

    def _open_entry(self, path: str, flags: int) -> int | None:
        """Open a session file, refusing links and anything not a regular file.

        A file that a save replaced, or a delete removed, just as it was
        opened has no name any more: it is opened again, so that the caller
        reads, and refreshes, the session's file as it is now.
        """
        tries = _REOPEN_TRIES
        while True:
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                return None
            except OSError as exc:
                # A link, a folder, a socket or a device: not a session file.
                # (ENOTDIR is not among them: the session folder itself is
                # then no folder, and the store is unavailable, as for writes.)
                if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                    raise CorruptRecord("session entry is not a regular file") from exc
                raise StoreUnavailable(f"cannot open session file: {exc}") from exc
            try:
                info = os.fstat(fd)
            except OSError as exc:
                os.close(fd)
                raise StoreUnavailable(f"cannot read session file: {exc}") from exc
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_SIZE:
                os.close(fd)
                raise CorruptRecord("session entry is not a regular file of sane size")
            tries -= 1
            if info.st_nlink or not tries:
                return fd  # after that many replacements, one that was current
            os.close(fd)

    def _read_file(self, path: str) -> tuple[int, bytes] | None:
        """Return ``(expiry, record)`` of a file, or None if there is none."""
        fd = self._open_entry(path, _OPEN_READ)
        if fd is None:
            return None
        try:
            return _read_open_file(fd)
        finally:
            os.close(fd)

    def _read_live(self, key: str) -> bytes | None:
        """Read a record, removing it if it has expired."""
        path = self._path(key)
        found = self._read_file(path)
        if found is None:
            return None
        expiry, record = found
        if expiry > _now_ms():
            return record
        self._tidy(key)
        return None

    def _tidy(self, key: str) -> None:
        """Remove an expired file a read met, if the lock is free.

        Housekeeping only: a lock held elsewhere, or a read-only folder,
        must neither fail nor slow the read, which reports the session gone
        either way.
        """
        with contextlib.suppress(StoreUnavailable):
            self._remove_if_expired(key, timeout=0)

    def _remove_if_expired(self, key: str, timeout: float | None = None) -> bool:
        """Remove an expired session file; any other file is left alone.

        The folder may hold files that are no sessions (it may be shared by
        mistake), and any 8 bytes read as an expiry may be in the past.
        """
        with self._locked(key, timeout):
            path = self._path(key)
            try:
                found = self._read_file(path)
            except CorruptRecord:
                return False
            if found is None or found[0] > _now_ms() or found[1][:1] != _VERSION:
                return False
            self._unlink(path)
            return True

    def load(self, key: str, ttl: int | None = None) -> bytes | None:
        if ttl is None:
            return self._read_live(key)
        # Read and refresh the same file: with two opens, a save replacing
        # the file in between made the refresh miss, and the read report
        # the session as gone.
        fd = self._open_entry(self._path(key), _OPEN_RW)
        if fd is None:
            return None
        try:
            expiry, record = _read_open_file(fd)
            live = expiry > _now_ms()
            if live:
                _refuse_other_links(fd)
                # Not refreshed if no record of ours: returned all the same,
                # for the caller to report as it reports unreadable records.
                self._refresh_open_file(fd, ttl)
        finally:
            os.close(fd)
        if live:
            return record
        self._tidy(key)
        return None

    def info(self, key: str) -> EntryInfo | None:
        found = self._read_file(self._path(key))
        if found is None or found[0] <= _now_ms():
            return None
        return EntryInfo(len(found[1]), found[0] - _now_ms())

    def scan(self, prefix: str) -> Iterator[str]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreUnavailable(f"cannot list the session folder: {exc}") from exc
        for name in names:
            if name.startswith(prefix) and _NAME.fullmatch(name):
                yield name

    # -- writing -----------------------------------------------------------

    def touch(self, key: str, ttl: int) -> bool:
        """Rewrite only the 8-byte expiry header, in place.

        Something other than a session file under the name is not refreshed;
        the next read reports it. Writing in place, unlike a save, would
        reach through a hard link, or into a file that is no session file:
        both are left alone.
        """
        try:
            fd = self._open_entry(self._path(key), _OPEN_RW)
        except CorruptRecord:
            return False
        if fd is None:
            return False
        try:
            return self._refresh_open_file(fd, ttl)
        finally:
            os.close(fd)

    @staticmethod
    def _refresh_open_file(fd: int, ttl: int) -> bool:
        """Set a live session file's expiry; False if it is none to refresh.

        A save that replaces the file after it was opened writes its own,
        fresh expiry: this one then lands in the replaced file, unseen.
        """
        try:
            header = os.pread(fd, _EXPIRY.size + 1, 0)
            if (
                len(header) <= _EXPIRY.size
                or header[_EXPIRY.size] != FORMAT_VERSION
                or _EXPIRY.unpack_from(header)[0] <= _now_ms()
                or os.fstat(fd).st_nlink > 1
            ):
                return False
            os.pwrite(fd, _EXPIRY.pack(_now_ms() + ttl), 0)
            return True
        except OSError as exc:
            raise StoreUnavailable(f"cannot refresh session file: {exc}") from exc

    def _write(self, key: str, record: bytes, ttl: int) -> None:
        """Write a file atomically: temporary file first, then ``os.replace``."""
        data = _EXPIRY.pack(_now_ms() + ttl) + record
        try:
            fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot write to the session folder: {exc}"
            ) from exc
        try:
            with open(fd, "wb") as handle:  # mkstemp made it 0600
                handle.write(data)
            os.replace(temp, self._path(key))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise StoreUnavailable(f"cannot write session file: {exc}") from exc

    def _unlink(self, path: str) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete session file: {exc}") from exc
        return True

    def create(self, key: str, record: bytes, ttl: int) -> bool:
        with self._locked(key):
            try:
                if self._read_live_locked(key) is not None:
                    return False
            except CorruptRecord:
                pass  # overwritten below; an id is never reused anyway
            self._write(key, record, ttl)
            return True

    def _read_live_locked(self, key: str) -> bytes | None:
        found = self._read_file(self._path(key))
        if found is None or found[0] <= _now_ms():
            return None
        return found[1]

    def patch(
        self,
        key: str,
        ops: Sequence[Op],
        ttl: int,
        max_size: int,
        loaded: bytes | None = None,
    ) -> int:
        """Read, merge and replace under the lock (always a compact rewrite)."""
        with self._locked(key):
            try:
                current = self._read_live_locked(key)
            except CorruptRecord:
                return CORRUPT
            merged = merge_record(current, ops, max_size)
            if merged.record is not None:
                self._write(key, merged.record, ttl)
            elif merged.result == 0:
                self._unlink(self._path(key))
            return merged.result

    def delete(self, key: str) -> bool:
        """Remove a session file; True only if it held a live session."""
        with self._locked(key):
            path = self._path(key)
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    return False  # not a session file; never removed recursively
                live = self._read_live_locked(key) is not None
            except FileNotFoundError:
                return False
            except CorruptRecord:
                live = False
            return self._unlink(path) and live

    def take(self, key: str) -> bytes | None:
        with self._locked(key):
            record = self._read_live_locked(key)
            if record is not None:
                self._unlink(self._path(key))
            return record

    def cleanup(self, keys: Iterable[str] | None = None) -> int:
        """Remove expired session files and temporary files left by a crash.

        Only files holding a record are removed as expired, of ``keys`` if
        given (the CLI passes this app's session keys), else of any name.
        """
        removed = 0
        for key in self.scan("") if keys is None else keys:
            with contextlib.suppress(CorruptRecord):
                removed += self._remove_if_expired(key)
        removed += self._remove_stale_temps()
        return removed

    def _remove_stale_temps(self) -> int:
        removed = 0
        cutoff = time.time() - _STALE_TEMP_SECONDS
        try:
            entries = os.scandir(self.directory)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreUnavailable(f"cannot list the session folder: {exc}") from exc
        with entries:
            for entry in entries:
                if not entry.name.startswith(".tmp-"):
                    continue
                # A save may rename its temporary file away at any moment.
                with contextlib.suppress(FileNotFoundError):
                    if (
                        entry.is_file(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff
                    ):
                        os.unlink(entry.path)
                        removed += 1
        return removed
