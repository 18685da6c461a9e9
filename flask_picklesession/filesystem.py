"""The filesystem store: one file per session, safe for several processes.

Each file is an 8-byte big-endian expiry (milliseconds since the epoch)
followed by the record. Readers take no lock: files are replaced atomically
(written to a temporary file in the same folder, then ``os.replace``), so a
reader sees the old or the new file, never half of one. Writers of one
session serialize on an ``flock`` of one of a fixed set of lock files, held
only while merging a save, never from loading to saving, and waited for at
most :data:`.lock_files.LOCK_TIMEOUT` seconds. Files are never followed
through symbolic links.

The parts are modules of their own: a session file's header and every
system call that reads or changes one (:mod:`.session_files`), and the lock
files (:mod:`.lock_files`).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import typing as t

from .errors import StoreUnavailable
from .lock_files import locked
from .record import CorruptRecord
from .session_files import (
    OPEN_READ,
    OPEN_RW,
    VERSION,
    now_ms,
    open_entry,
    read_open_file,
    refresh_open_file,
    refuse_other_links,
    remove_stale_temps,
    unlink,
    write_file,
)
from .store import CORRUPT, EntryInfo, Store, merge_record

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from .record import Op

_NAME = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,199}")


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

    # -- paths -------------------------------------------------------------

    def _path(self, key: str) -> str:
        if _NAME.fullmatch(key) is None:
            raise ValueError(f"not a valid store key: {key!r}")
        return os.path.join(self.directory, key)

    # -- reading -----------------------------------------------------------

    def _read_file(self, path: str) -> tuple[int, bytes] | None:
        """Return ``(expiry, record)`` of a file, or None if there is none."""
        fd = open_entry(path, OPEN_READ)
        if fd is None:
            return None
        try:
            return read_open_file(fd)
        finally:
            os.close(fd)

    def _read_live(self, key: str) -> bytes | None:
        """Read a record, removing it if it has expired."""
        path = self._path(key)
        found = self._read_file(path)
        if found is None:
            return None
        expiry, record = found
        if expiry > now_ms():
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
        with locked(self.directory, key, timeout):
            path = self._path(key)
            try:
                found = self._read_file(path)
            except CorruptRecord:
                return False
            if found is None or found[0] > now_ms() or found[1][:1] != VERSION:
                return False
            unlink(path)
            return True

    def load(self, key: str, ttl: int | None = None) -> bytes | None:
        if ttl is None:
            return self._read_live(key)
        # Read and refresh the same file: with two opens, a save replacing
        # the file in between made the refresh miss, and the read report
        # the session as gone.
        fd = open_entry(self._path(key), OPEN_RW)
        if fd is None:
            return None
        try:
            expiry, record = read_open_file(fd)
            live = expiry > now_ms()
            if live:
                refuse_other_links(fd)
                # Not refreshed if no record of ours: returned all the same,
                # for the caller to report as it reports unreadable records.
                refresh_open_file(fd, ttl)
        finally:
            os.close(fd)
        if live:
            return record
        self._tidy(key)
        return None

    def info(self, key: str) -> EntryInfo | None:
        found = self._read_file(self._path(key))
        if found is None or found[0] <= now_ms():
            return None
        return EntryInfo(len(found[1]), found[0] - now_ms())

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
            fd = open_entry(self._path(key), OPEN_RW)
        except CorruptRecord:
            return False
        if fd is None:
            return False
        try:
            return refresh_open_file(fd, ttl)
        finally:
            os.close(fd)

    def create(self, key: str, record: bytes, ttl: int) -> bool:
        with locked(self.directory, key):
            try:
                if self._read_live_locked(key) is not None:
                    return False
            except CorruptRecord:
                pass  # overwritten below; an id is never reused anyway
            write_file(self.directory, self._path(key), record, ttl)
            return True

    def _read_live_locked(self, key: str) -> bytes | None:
        found = self._read_file(self._path(key))
        if found is None or found[0] <= now_ms():
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
        with locked(self.directory, key):
            try:
                current = self._read_live_locked(key)
            except CorruptRecord:
                return CORRUPT
            merged = merge_record(current, ops, max_size)
            if merged.record is not None:
                write_file(self.directory, self._path(key), merged.record, ttl)
            elif merged.result == 0:
                unlink(self._path(key))
            return merged.result

    def delete(self, key: str) -> bool:
        """Remove a session file; True only if it held a live session."""
        with locked(self.directory, key):
            path = self._path(key)
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    return False  # not a session file; never removed recursively
                live = self._read_live_locked(key) is not None
            except FileNotFoundError:
                return False
            except CorruptRecord:
                live = False
            return unlink(path) and live

    def take(self, key: str) -> bytes | None:
        with locked(self.directory, key):
            record = self._read_live_locked(key)
            if record is not None:
                unlink(self._path(key))
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
        removed += remove_stale_temps(self.directory)
        return removed
