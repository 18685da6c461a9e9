"""The filesystem store: modes, atomic writes, expiry, links (issue 2, contract 15)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
import time

import flask
import pytest

import flask_picklesession.lock_files as lock_files_module
from flask_picklesession import FileSystemStore, PickleSession, StoreUnavailable
from flask_picklesession.record import OP_SET, CorruptRecord, build
from tests.helpers import add_routes, sid_of

MAC = b"M" * 16


def record(**values):
    return build({k.encode(): MAC + v for k, v in values.items()})


@pytest.fixture
def fs(tmp_path):
    return FileSystemStore(tmp_path / "sessions")


def test_folder_0700_files_0600(tmp_path):
    app = add_routes(flask.Flask(__name__, instance_path=str(tmp_path / "instance")))
    app.config["SECRET_KEY"] = "k"
    PickleSession(app)
    c = app.test_client()
    c.get("/set/a/1")
    folder = tmp_path / "instance" / "sessions"  # the documented default
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    entry = folder / ("session:" + sid_of(c))
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_no_temporary_files_left_behind(fs):
    fs.create("k", record(a=b"1"), 60_000)
    fs.patch("k", [(OP_SET, b"b", MAC + b"2")], 60_000, 10_000)
    names = os.listdir(fs.directory)
    assert "k" in names and not [n for n in names if n.startswith(".tmp-")]


def test_write_replaces_atomically(fs, monkeypatch):
    """A reader sees the old file or the new one: the write goes to a temp file."""
    fs.create("k", record(a=b"old"), 60_000)
    seen = []
    real_replace = os.replace

    def checking_replace(src, dst):
        seen.append(fs.load("k"))  # mid-write: the old record, whole
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", checking_replace)
    fs.patch("k", [(OP_SET, b"a", MAC + b"new")], 60_000, 10_000)
    assert seen == [record(a=b"old")]
    assert fs.load("k") == record(a=b"new")


def test_failed_write_keeps_previous_file(fs, monkeypatch):
    from flask_picklesession import StoreUnavailable

    fs.create("k", record(a=b"old"), 60_000)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreUnavailable):
        fs.patch("k", [(OP_SET, b"a", MAC + b"new")], 60_000, 10_000)
    monkeypatch.undo()
    assert fs.load("k") == record(a=b"old")
    assert not [n for n in os.listdir(fs.directory) if n.startswith(".tmp-")]


def test_expiry_is_kept_in_file_and_checked(fs):
    fs.create("k", record(a=b"1"), 50)
    assert fs.load("k") is not None
    time.sleep(0.06)
    assert fs.load("k") is None
    assert not os.path.exists(os.path.join(fs.directory, "k"))  # removed on read


def test_expired_entry_is_never_patched_or_touched(fs):
    fs.create("k", record(a=b"1"), 30)
    time.sleep(0.04)
    assert fs.patch("k", [(OP_SET, b"b", MAC + b"2")], 60_000, 10_000) == -1
    assert fs.touch("k", 60_000) is False
    assert fs.load("k") is None


def test_touch_rewrites_only_the_expiry(fs):
    fs.create("k", record(a=b"1"), 1000)
    path = os.path.join(fs.directory, "k")
    inode = os.stat(path).st_ino
    with open(path, "rb") as handle:
        before = handle.read()
    assert fs.touch("k", 60_000)
    with open(path, "rb") as handle:
        after = handle.read()
    assert after[8:] == before[8:] and after[:8] > before[:8]
    assert os.stat(path).st_ino == inode  # the data was not rewritten
    assert fs.info("k").ttl > 59_000


@pytest.mark.parametrize("with_refresh", [True, False], ids=["load+refresh", "load"])
def test_a_save_replacing_the_file_as_it_is_opened_is_read_not_lost(
    fs, monkeypatch, with_refresh
):
    """A save replaces the file just after a reader opened it: the opened
    file has no name any more. The reader must see the session, as it is
    now; a refresh that reported it gone made the request start a new
    session, and its writes went there instead of into this one."""
    fs.create("k", record(a=b"1"), 60_000)
    path = os.path.join(fs.directory, "k")
    real_open, raced = os.open, []

    def open_then_a_save_replaces(name, flags, *args):
        fd = real_open(name, flags, *args)
        # Under refresh, the open that may write: the old code's second one.
        writes = bool(flags & os.O_RDWR) or not with_refresh
        if os.fspath(name) == path and writes and not raced:
            raced.append(True)
            assert fs.patch("k", [(OP_SET, b"b", MAC + b"2")], 60_000, 10_000) == 2
        return fd

    monkeypatch.setattr(os, "open", open_then_a_save_replaces)
    loaded = fs.load("k", 120_000 if with_refresh else None)
    assert raced and loaded == record(a=b"1", b=b"2")
    if with_refresh:
        assert fs.info("k").ttl > 119_000


def test_a_file_replaced_at_every_open_is_still_read(fs, monkeypatch):
    """Opening again is bounded: a file whose every open finds it replaced
    (faked here) is read as it was then, from a descriptor still open."""
    fs.create("k", record(a=b"1"), 60_000)
    real_fstat, opens = os.fstat, []

    def always_replaced(fd):
        opens.append(fd)
        found = list(real_fstat(fd))
        found[stat.ST_NLINK] = 0
        return os.stat_result(found)

    monkeypatch.setattr(os, "fstat", always_replaced)
    assert fs.load("k") == record(a=b"1")
    assert len(opens) > 1


def test_a_hard_linked_file_is_read_but_not_refreshed_through_the_link(fs, tmp_path):
    """A backup by ``cp -al`` links every session file: a refreshing read is
    refused (the caller then reads without it), never reported as no
    session, and nothing is written through the link until a save replaces
    the file."""
    from flask_picklesession import StoreUnavailable

    fs.create("k", record(a=b"1"), 60_000)
    path = os.path.join(fs.directory, "k")
    backup = tmp_path / "backup"
    os.link(path, backup)
    before = backup.read_bytes()
    with pytest.raises(StoreUnavailable, match="other hard links"):
        fs.load("k", 120_000)
    assert fs.load("k") == record(a=b"1")
    assert fs.touch("k", 120_000) is False
    assert backup.read_bytes() == before
    fs.patch("k", [(OP_SET, b"b", MAC + b"2")], 60_000, 10_000)  # ends the link
    assert fs.load("k", 120_000) == record(a=b"1", b=b"2")
    assert fs.info("k").ttl > 60_000 and backup.read_bytes() == before


def test_a_refreshing_read_returns_what_it_cannot_refresh(fs):
    """A live file holding no record of ours is not refreshed, but read as
    it is, so that the caller reports it as it reports any unreadable
    record (a warning), as a plain read and Redis's GETEX do."""
    fs.create("k", record(a=b"1"), 60_000)
    path = os.path.join(fs.directory, "k")
    with open(path, "r+b") as handle:
        handle.seek(8)
        handle.write(b"\x02")  # another format version
    assert fs.load("k", 120_000) == fs.load("k")
    assert fs.load("k")[:1] == b"\x02"


def test_cleanup_removes_expired_only(fs):
    fs.create("old", record(a=b"1"), 20)
    fs.create("live", record(a=b"1"), 60_000)
    time.sleep(0.03)
    assert fs.cleanup() == 1
    assert sorted(fs.scan("")) == ["live"]


def test_cleanup_removes_stale_temporary_files(fs):
    fs.create("live", record(a=b"1"), 60_000)
    stale = os.path.join(fs.directory, ".tmp-crashed")
    open(stale, "wb").close()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = os.path.join(fs.directory, ".tmp-writing")
    open(fresh, "wb").close()
    assert fs.cleanup() == 1
    assert os.path.exists(fresh) and not os.path.exists(stale)


#: Files met in a folder shared by mistake: their first 8 bytes, read as an
#: expiry, are in the past.
NOT_SESSIONS = {
    "favicon.ico": b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00",
    "clip.mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
    "app.db": b"\x00" * 4096,
}


def test_cleanup_removes_no_file_that_is_not_a_session(fs):
    fs.create("old", record(a=b"1"), 20)
    for name, data in NOT_SESSIONS.items():
        with open(os.path.join(fs.directory, name), "wb") as handle:
            handle.write(data)
    time.sleep(0.03)
    assert fs.cleanup() == 1
    assert sorted(fs.scan("")) == sorted(NOT_SESSIONS)
    assert fs.load("app.db") is None  # expired: never returned, still not removed
    assert os.path.exists(os.path.join(fs.directory, "app.db"))


def test_cleanup_of_given_keys_leaves_other_names_alone(fs):
    fs.create("session:a", record(a=b"1"), 20)
    fs.create("other:b", record(a=b"1"), 20)
    time.sleep(0.03)
    assert fs.cleanup(["session:a"]) == 1
    assert sorted(fs.scan("")) == ["other:b"]


def test_no_eviction_of_live_sessions(fs):
    for i in range(2000):
        fs.create(f"s{i}", record(a=b"1"), 60_000)
    assert fs.cleanup() == 0
    assert len(list(fs.scan("s"))) == 2000


def test_symlink_entry_is_never_followed(fs, tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"\x00" * 8 + record(a=b"planted"))
    os.makedirs(fs.directory)
    os.symlink(outside, os.path.join(fs.directory, "k"))
    with pytest.raises(CorruptRecord):
        fs.load("k")
    assert fs.patch("k", [(OP_SET, b"a", MAC + b"x")], 60_000, 10_000) == -3
    fs.delete("k")
    assert outside.read_bytes().endswith(b"planted")  # never written through


def test_directory_entry_counts_as_corrupt(fs):
    os.makedirs(os.path.join(fs.directory, "k"))
    with pytest.raises(CorruptRecord):
        fs.load("k")


def test_symlink_session_gives_empty_session_end_to_end(tmp_path):
    app = add_routes(flask.Flask(__name__, instance_path=str(tmp_path / "i")))
    app.config["SECRET_KEY"] = "k"
    PickleSession(app)
    c = app.test_client()
    c.get("/set/a/1")
    path = tmp_path / "i" / "sessions" / ("session:" + sid_of(c))
    data = path.read_bytes()
    target = tmp_path / "elsewhere"
    target.write_bytes(data)
    path.unlink()
    path.symlink_to(target)
    assert c.get("/dump").data == b"[]"


@pytest.mark.parametrize("key", ["../x", "a/b", ".hidden", "", "x" * 300, "a\x00b"])
def test_store_refuses_keys_that_are_not_plain_names(fs, key):
    with pytest.raises(ValueError):
        fs.load(key)


def test_file_claiming_huge_size_is_refused(fs):
    fs.create("k", record(a=b"1"), 60_000)
    with open(os.path.join(fs.directory, "k"), "r+b") as handle:
        handle.truncate(65 * 1024 * 1024)  # sparse: no real disk used
    with pytest.raises(CorruptRecord):
        fs.load("k")


def hold_lock(fs, key):
    """Hold the lock file of ``key`` as another process would: flock locks
    belong to an open file description, so a second open is another holder."""
    stripe = hashlib.sha256(key.encode()).digest()[0] % lock_files_module.LOCK_STRIPES
    name = f".lock-{stripe:02d}"
    fd = os.open(os.path.join(fs.directory, name), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, name


def test_a_lock_held_for_good_fails_the_save_instead_of_hanging(fs, monkeypatch):
    # raising=False: the code before the timeout fails below, not here
    monkeypatch.setattr(lock_files_module, "LOCK_TIMEOUT", 0.05, raising=False)
    fs.create("k", record(a=b"1"), 60_000)
    fd, name = hold_lock(fs, "k")
    # Released at last: a save that waits for it, as one did, fails the test.
    release = threading.Timer(3, fcntl.flock, (fd, fcntl.LOCK_UN))
    release.start()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=re.escape(name)) as info:
            fs.patch("k", [(OP_SET, b"b", MAC + b"2")], 60_000, 10_000)
        assert time.monotonic() - started < 1
    finally:
        release.cancel()
        os.close(fd)
    assert fs.directory not in str(info.value)
    assert fs.load("k") == record(a=b"1")
    assert fs.patch("k", [(OP_SET, b"b", MAC + b"2")], 60_000, 10_000) == 2


@pytest.mark.parametrize("refresh", [False, True])
def test_an_expired_session_reads_as_gone_while_its_lock_is_held(fs, refresh):
    """Removing the expired file is housekeeping: it must not fail the
    read (it once raised after waiting for the lock twice)."""
    fs.create("k", record(a=b"1"), 20)
    time.sleep(0.03)
    fd, _name = hold_lock(fs, "k")
    try:
        started = time.monotonic()
        assert fs.load("k", 60_000 if refresh else None) is None
        assert time.monotonic() - started < 1  # no wait for the lock either
    finally:
        os.close(fd)
    assert fs.load("k") is None
    assert list(fs.scan("k")) == []  # removed by the read that got the lock


def test_a_lock_held_briefly_is_waited_for(fs):
    fs.create("k", record(a=b"1"), 60_000)
    fd, _name = hold_lock(fs, "k")
    release = threading.Timer(0.05, os.close, (fd,))
    release.start()
    started = time.monotonic()
    assert fs.patch("k", [(OP_SET, b"b", MAC + b"2")], 60_000, 10_000) == 2
    assert 0.04 < time.monotonic() - started < 1
    release.join()


WORKER = textwrap.dedent("""
    import sys
    from flask_picklesession import FileSystemStore
    from flask_picklesession.record import OP_SET
    store = FileSystemStore(sys.argv[1])
    worker = sys.argv[2]
    for i in range(int(sys.argv[3])):
        op = (OP_SET, f"{worker}-{i}".encode(), b"M" * 16 + b"v")
        result = store.patch("shared", [op], 60_000, 10**7)
        assert result > 0, result
""")


def test_several_processes_merge_into_one_file(fs):
    fs.create("shared", record(start=b"1"), 60_000)
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, fs.directory, str(w), "40"])
        for w in range(4)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    from flask_picklesession.record import parse_raw

    keys = set(parse_raw(fs.load("shared")))
    assert len(keys) == 1 + 4 * 40


def test_delete_tells_whether_there_was_a_record(fs, raw_store=None):
    fs.create("k", record(a=b"1"), 60_000)
    assert fs.delete("k") is True
    assert fs.delete("k") is False
    os.makedirs(os.path.join(fs.directory, "d"))
    assert fs.delete("d") is False and os.path.isdir(os.path.join(fs.directory, "d"))
