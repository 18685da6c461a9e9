"""Session files on disk: their header, and every system call on one.

A file is an 8-byte big-endian expiry (milliseconds since the epoch)
followed by the record. Apart from the store because every way into or out
of a file goes through here: opened without following links, refused unless
a regular file of sane size, read whole, refreshed by rewriting the header
alone, written to a temporary file and renamed into place, removed; and the
temporary files a crash left behind are swept up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import tempfile
import time

from .errors import StoreUnavailable
from .record import FORMAT_VERSION, CorruptRecord

EXPIRY = struct.Struct(">Q")
#: What a record starts with: tells a session file from any other file.
VERSION = bytes([FORMAT_VERSION])
# O_NONBLOCK: a FIFO planted in the folder must not block the open; it is
# then refused as not a regular file. Regular files ignore the flag.
_OPEN_FLAGS = (
    getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)
)
OPEN_READ = os.O_RDONLY | _OPEN_FLAGS
OPEN_RW = os.O_RDWR | _OPEN_FLAGS
#: Largest file :meth:`.FileSystemStore.load` reads: a file that claims more is
#: refused as corrupt before memory is allocated for it.
MAX_FILE_SIZE = 64 * 1024 * 1024
#: Opens of a session file that a save replaced meanwhile, before giving up.
_REOPEN_TRIES = 8
#: Temporary files older than this are leftovers of a crash.
_STALE_TEMP_SECONDS = 3600


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def read_open_file(fd: int) -> tuple[int, bytes]:
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
    if len(data) < EXPIRY.size:
        raise CorruptRecord("session file is shorter than its header")
    return EXPIRY.unpack_from(data)[0], data[EXPIRY.size :]


def refuse_other_links(fd: int) -> None:
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


def open_entry(path: str, flags: int) -> int | None:
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


def refresh_open_file(fd: int, ttl: int) -> bool:
    """Set a live session file's expiry; False if it is none to refresh.

    A save that replaces the file after it was opened writes its own,
    fresh expiry: this one then lands in the replaced file, unseen.
    """
    try:
        header = os.pread(fd, EXPIRY.size + 1, 0)
        if (
            len(header) <= EXPIRY.size
            or header[EXPIRY.size] != FORMAT_VERSION
            or EXPIRY.unpack_from(header)[0] <= now_ms()
            or os.fstat(fd).st_nlink > 1
        ):
            return False
        os.pwrite(fd, EXPIRY.pack(now_ms() + ttl), 0)
        return True
    except OSError as exc:
        raise StoreUnavailable(f"cannot refresh session file: {exc}") from exc


def write_file(directory: str, path: str, record: bytes, ttl: int) -> None:
    """Write a file atomically: temporary file first, then ``os.replace``."""
    data = EXPIRY.pack(now_ms() + ttl) + record
    try:
        fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    except OSError as exc:
        raise StoreUnavailable(f"cannot write to the session folder: {exc}") from exc
    try:
        with open(fd, "wb") as handle:  # mkstemp made it 0600
            handle.write(data)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise StoreUnavailable(f"cannot write session file: {exc}") from exc


def unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreUnavailable(f"cannot delete session file: {exc}") from exc
    return True


def remove_stale_temps(directory: str) -> int:
    """Remove the temporary files of writes that a crash left; return how many."""
    removed = 0
    cutoff = time.time() - _STALE_TEMP_SECONDS
    try:
        entries = os.scandir(directory)
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
