"""Faults: a store that dies, stalls, fills up, turns read-only or is tampered with.

Each fault must surface as :class:`flask_picklesession.StoreUnavailable`,
chained from its cause, answered 503 by the handler the README suggests; the
session stored before the fault must be intact; and the same app object must
work again as soon as the store does. Session files replaced by directories,
symbolic links or FIFOs must never be followed out of the folder nor hang a
request. ``PICKLESESSION_MAX_SIZE`` is enforced before anything is written,
and a stored length that claims gigabytes allocates nothing.

Mechanisms (this machine runs the tests as root, which bypasses permission
bits): disk full is a real 64 KiB tmpfs when ``mount`` is allowed, and an
ENOSPC injected into the filesystem store's write otherwise (both run when
possible); a read-only folder is a read-only bind mount when ``mount`` is
allowed, ``chmod 0500`` when not root, and an injected EROFS always.
"""

from __future__ import annotations

import builtins
import datetime
import errno
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import tracemalloc
import typing as t

import flask
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import flask_picklesession.filesystem as filesystem_module
import flask_picklesession.lock_files as lock_files_module
import flask_picklesession.session_files as session_files_module
from flask_picklesession import (
    FileSystemStore,
    PickleSession,
    RedisStore,
    SessionTooLarge,
    StoreUnavailable,
)
from flask_picklesession.keys import KeyRing
from flask_picklesession.record import CorruptRecord, encode_varint
from tests.helpers import (
    add_routes,
    cookie_value,
    noise,
    put_cookie,
    set_cookie_headers,
    sid_of,
)

SECRET = "faults secret"
#: Client timeouts for outage tests: short, so a dead or stalled server is
#: noticed fast; no retries, so one request makes one attempt.
TIMEOUT = 0.25
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


def fast_client(server: t.Any) -> t.Any:
    return server.client(
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


class FaultApp(t.NamedTuple):
    app: flask.Flask
    #: ``original_exception`` of every request the 500 handler answered.
    errors: list[BaseException | None]


def fault_app(store: t.Any, **config: t.Any) -> FaultApp:
    """An app with the README's handler: StoreUnavailable becomes a 503."""
    app = flask.Flask("faults_app")
    app.config.update(SECRET_KEY=SECRET, PICKLESESSION_STORE=store)
    app.config.update(config)
    PickleSession(app)
    add_routes(app)
    app.logger.disabled = True  # Flask logs each handled 500; the test checks them
    errors: list[BaseException | None] = []

    @app.errorhandler(500)
    def store_down(e: t.Any) -> t.Any:
        original = getattr(e, "original_exception", None)
        errors.append(original)
        if isinstance(original, StoreUnavailable):
            return "Session store unavailable, try again", 503
        return f"unexpected {type(original).__name__}: {original}", 500

    @app.route("/inc")
    def inc() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    @app.route("/json")
    def as_json() -> str:
        return json.dumps(dict(flask.session), sort_keys=True)

    @app.route("/readset/<key>/<value>")
    def read_then_set(key: str, value: str) -> str:
        dict(flask.session)
        flask.session[key] = value
        return "ok"

    return FaultApp(app, errors)


def assert_unavailable(error: BaseException | None, causes: t.Any) -> None:
    """A StoreUnavailable, chained (``raise ... from``) from one of ``causes``."""
    assert isinstance(error, StoreUnavailable), repr(error)
    assert isinstance(error.__cause__, causes), repr(error.__cause__)
    assert str(error)


def session_json(fa: FaultApp, client: t.Any) -> dict[str, t.Any]:
    response = client.get("/json")
    assert response.status_code == 200, (response.status_code, fa.errors[-1:])
    return t.cast("dict[str, t.Any]", json.loads(response.data))


# -- Redis: killed and restarted under load --------------------------------------------


@pytest.fixture(scope="module")
def durable_redis() -> t.Iterator[t.Any]:
    """A private redis-server that survives SIGKILL: AOF, fsync on every write.

    The shared ``redis_server`` runs without persistence, so after a restart
    it would hold nothing and "the previous session is intact" could not be
    told from "the previous session is gone".
    """
    from tests.redis_servers import (
        RedisServer,
        _require_redis_server,
        _start_on_free_port,
    )

    binary = _require_redis_server()
    server = _start_on_free_port(
        lambda port: RedisServer(
            port,
            binary=binary,
            name="durable-redis",
            extra_args=["--appendonly", "yes", "--appendfsync", "always"],
        )
    )
    try:
        with server.client() as admin:
            assert admin.config_get("appendonly")["appendonly"] == "yes"
        yield server
    finally:
        server.close()


def _wait(condition: t.Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.redis
def test_redis_killed_and_restarted_under_load(durable_redis):
    """SIGKILL the server while three clients hammer it, then start it again.

    While it is down every request is a 503 caused by StoreUnavailable from a
    redis ConnectionError; once it is back every request succeeds through the
    same app and store, and each counter continues from its last
    acknowledged value.
    """
    durable_redis.ensure_running()
    with durable_redis.client() as admin:
        admin.flushall()
    fa = fault_app(RedisStore(fast_client(durable_redis)))
    # 0 up, 1 being killed, 2 dead, 3 being started, 4 back. A request is
    # judged by the phases it started and ended in.
    phase = [0]
    stop = threading.Event()
    logs: list[list[tuple[int, int, int, str]]] = [[] for _ in range(3)]
    crashes: list[BaseException] = []

    def worker(log: list[tuple[int, int, int, str]]) -> None:
        client = fa.app.test_client()
        try:
            while not stop.is_set() and len(log) < 5000:
                before = phase[0]
                response = client.get("/inc")
                log.append(
                    (
                        before,
                        phase[0],
                        response.status_code,
                        response.get_data(as_text=True),
                    )
                )
                if response.status_code != 200:
                    time.sleep(0.002)  # a real client would back off too
        except BaseException as exc:  # pragma: no cover - reported below
            crashes.append(exc)

    def count(log: list[tuple[int, int, int, str]], p: int, status: int) -> int:
        return sum(1 for b, a, s, _ in log if b == a == p and s == status)

    threads = [
        threading.Thread(target=worker, args=(log,), daemon=True) for log in logs
    ]
    for thread in threads:
        thread.start()
    try:
        _wait(
            lambda: all(count(log, 0, 200) >= 10 for log in logs),
            10,
            "load before the kill",
        )
        phase[0] = 1
        durable_redis._proc.kill()  # SIGKILL: no shutdown, no final save
        durable_redis.stop()  # reaps the process
        phase[0] = 2
        _wait(
            lambda: all(count(log, 2, 503) >= 3 for log in logs),
            5,
            "requests while Redis is down",
        )
        phase[0] = 3
        durable_redis.start()
        phase[0] = 4
        _wait(
            lambda: all(count(log, 4, 200) >= 10 for log in logs),
            10,
            "requests after the restart",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        durable_redis.ensure_running()
    assert crashes == []

    for log in logs:
        assert all(s == 200 for b, a, s, _ in log if b == a == 0)
        up = [int(body) for b, a, s, body in log if b == a == 0]
        assert up == list(range(1, len(up) + 1))
        dead = [(s, body) for b, a, s, body in log if b == a == 2]
        assert dead and all(s == 503 for s, _ in dead), (
            f"a request succeeded on a dead server: {dead}"
        )
        back = [(s, body) for b, _, s, body in log if b == 4]
        assert all(s == 200 for s, _ in back), f"no recovery: {back[:5]}"
        before_restart = [int(body) for b, _, s, body in log if b < 4 and s == 200]
        first = int(back[0][1])
        # +2 only if a save's reply was lost in the kill after Redis applied it.
        assert first - before_restart[-1] in (1, 2), (before_restart[-3:], back[:3])
        assert [int(body) for _, body in back] == list(range(first, first + len(back)))
    assert fa.errors, "no failure was observed"
    for error in fa.errors:
        assert_unavailable(error, REDIS_ERRORS)


# -- Redis: too slow -------------------------------------------------------------------


@pytest.mark.redis
def test_redis_too_slow_paused_clients(redis_server, redis_url):
    """CLIENT PAUSE: the app's commands time out after socket_timeout; the
    session stored before is intact and the same app works once unpaused."""
    fa = fault_app(RedisStore(fast_client(redis_server)))
    c = fa.app.test_client()
    c.get("/set/a/1")
    with redis_server.client() as admin:
        admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
        try:
            for path in ["/json", "/set/a/2", "/readset/a/3"]:
                started = time.monotonic()
                assert c.get(path).status_code == 503
                assert time.monotonic() - started < 1.5, (
                    "the client waited for the pause"
                )
                assert_unavailable(fa.errors[-1], redis.exceptions.TimeoutError)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
    assert session_json(fa, c) == {"a": "1"}
    c.get("/set/a/4")
    assert session_json(fa, c) == {"a": "4"}


BUSY_SCRIPT = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) * 1000
return 1
"""


@pytest.mark.redis
def test_redis_busy_server_save_that_timed_out_is_whole_either_way(
    redis_server, redis_url
):
    """A server stuck in a slow script for 3 x socket_timeout.

    The save times out with StoreUnavailable (chained from TimeoutError) and
    the app recovers. A command that timed out was already sent: Redis runs
    it once the script ends, so the outcome is the documented ambiguous one
    (README, "Errors"): the stored session is the previous one or the new
    one, whole, never a mix, and never a write reported as done that was not.
    """
    fa = fault_app(RedisStore(fast_client(redis_server)))
    c = fa.app.test_client()
    c.get("/set/a/1")
    busy_ms = int(TIMEOUT * 3000)

    def run_busy_script() -> None:
        with redis_server.client() as admin:
            admin.eval(BUSY_SCRIPT, 0, busy_ms)

    busy = threading.Thread(target=run_busy_script)
    busy.start()
    time.sleep(0.05)  # let the script start before the app's command arrives
    try:
        assert c.get("/set/a/2").status_code == 503
        assert_unavailable(fa.errors[-1], redis.exceptions.TimeoutError)
    finally:
        busy.join(10)
    after = session_json(fa, c)
    assert after in ({"a": "1"}, {"a": "2"}), after  # whole, never a mix
    c.get("/set/b/3")
    assert session_json(fa, c) == {**after, "b": "3"}  # recovered, same app


# -- disk full -------------------------------------------------------------------------


def _mount(*args: str) -> str | None:
    """Run mount; return the error text, or None on success."""
    if os.geteuid() != 0:
        return "not root"
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    return (
        None
        if done.returncode == 0
        else (done.stderr.strip() or f"exit {done.returncode}")
    )


def _umount(path: t.Any) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


#: The filesystem store's modules, each of which calls ``os`` itself.
_FILESYSTEM_MODULES = (filesystem_module, session_files_module, lock_files_module)


class _OsProxy:
    """The ``os`` module as the filesystem store sees it, with some calls replaced."""

    def __init__(self, **replaced: t.Callable[..., t.Any]) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(os, name)


def _raise(code: int) -> t.Callable[..., t.NoReturn]:
    def fail(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise OSError(code, os.strerror(code))

    return fail


def _inject_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC from every data write of the filesystem store (open(...).write
    and os.write), nothing else."""
    real_open = builtins.open

    class FullFile:
        def __init__(self, handle: t.Any) -> None:
            self.handle = handle

        def __enter__(self) -> FullFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str) -> t.Any:
            return getattr(self.handle, name)

    def full_open(file: t.Any, mode: str = "r", *args: t.Any, **kwargs: t.Any) -> t.Any:
        handle = real_open(file, mode, *args, **kwargs)
        return FullFile(handle) if any(m in mode for m in "wax+") else handle

    monkeypatch.setattr(session_files_module, "open", full_open, raising=False)
    full = _OsProxy(write=_raise(errno.ENOSPC))
    for module in _FILESYSTEM_MODULES:
        monkeypatch.setattr(module, "os", full)


@pytest.fixture
def small_tmpfs(tmp_path: t.Any) -> t.Iterator[t.Any]:
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    error = _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint))
    if error:
        pytest.skip(
            f"cannot mount a 64 KiB tmpfs here ({error}); "
            "the injected ENOSPC variant covers it"
        )
    try:
        yield mountpoint
    finally:
        _umount(mountpoint)


@pytest.mark.parametrize("mechanism", ["tmpfs", "injected-ENOSPC"])
def test_disk_full(mechanism, request, tmp_path, monkeypatch):
    root = request.getfixturevalue("small_tmpfs") if mechanism == "tmpfs" else tmp_path
    folder = root / "sessions"
    fa = fault_app(FileSystemStore(folder))
    c = fa.app.test_client()
    c.get("/set/a/1")
    path = folder / ("session:" + sid_of(c))
    before = path.read_bytes()

    filler = root / "filler"
    if mechanism == "tmpfs":
        with open(filler, "wb", buffering=0) as handle:  # noqa: SIM117 (py39)
            with pytest.raises(OSError) as full:
                while True:
                    handle.write(b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
    else:
        _inject_disk_full(monkeypatch)

    big = noise(6000)
    for path_ in [f"/set/b/{big}", f"/readset/b/{big}"]:
        assert c.get(path_).status_code == 503
        assert_unavailable(fa.errors[-1], OSError)
        assert fa.errors[-1].__cause__.errno == errno.ENOSPC
    assert path.read_bytes() == before, "the stored session changed"
    assert [n for n in os.listdir(folder) if n.startswith(".tmp-")] == [], (
        "temporary file left behind"
    )
    assert session_json(fa, c) == {"a": "1"}  # still readable while the disk is full

    if mechanism == "tmpfs":
        filler.unlink()
    else:
        monkeypatch.undo()
    c.get(f"/set/b/{big}")
    assert session_json(fa, c) == {"a": "1", "b": big}


# -- a read-only session folder --------------------------------------------------------


def _make_read_only(
    mechanism: str, folder: t.Any, monkeypatch: pytest.MonkeyPatch
) -> t.Callable[[], None]:
    """Make ``folder`` unwritable; return the undo."""
    if mechanism == "ro-bind-mount":
        error = _mount("--bind", str(folder), str(folder))
        if error:
            pytest.skip(
                f"cannot bind-mount here ({error}); "
                "the injected EROFS variant covers it"
            )
        error = _mount("-o", "remount,bind,ro", str(folder))
        if error:
            _umount(folder)
            pytest.skip(f"cannot remount read-only here ({error})")
        return lambda: _umount(folder)
    if mechanism == "chmod-0500":
        folder.chmod(0o500)
        try:
            (folder / "root-probe").touch()
        except PermissionError:
            return lambda: folder.chmod(0o700)
        (folder / "root-probe").unlink()
        folder.chmod(0o700)
        pytest.skip(
            "running as root, which ignores chmod 0500; "
            "the bind-mount and EROFS variants cover it"
        )

    # injected: whatever would modify the folder fails with EROFS
    def guarded_open(path: t.Any, flags: int, *args: t.Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return os.open(path, flags, *args)

    rofs = _raise(errno.EROFS)
    read_only = _OsProxy(
        open=guarded_open,
        replace=rofs,
        unlink=rofs,
        write=rofs,
        pwrite=rofs,
        mkdir=rofs,
        makedirs=lambda *a, **k: None,
    )
    for module in _FILESYSTEM_MODULES:
        monkeypatch.setattr(module, "os", read_only)
    import tempfile

    class _Tempfile:
        mkstemp = staticmethod(rofs)

        def __getattr__(self, name: str) -> t.Any:
            return getattr(tempfile, name)

    monkeypatch.setattr(session_files_module, "tempfile", _Tempfile())
    return monkeypatch.undo


@pytest.mark.parametrize("mechanism", ["ro-bind-mount", "chmod-0500", "injected-EROFS"])
def test_read_only_session_folder(mechanism, tmp_path, monkeypatch):
    folder = tmp_path / "sessions"
    fa = fault_app(FileSystemStore(folder))
    c = fa.app.test_client()
    c.get("/set/a/1")
    path = folder / ("session:" + sid_of(c))
    before = path.read_bytes()
    undo = _make_read_only(mechanism, folder, monkeypatch)
    try:
        assert session_json(fa, c) == {"a": "1"}  # reading needs no write access
        for route in ["/set/a/2", "/readset/b/2", "/clear", "/regenerate"]:
            assert c.get(route).status_code == 503, route
            assert_unavailable(fa.errors[-1], OSError)
            assert fa.errors[-1].__cause__.errno in (
                errno.EROFS,
                errno.EACCES,
                errno.EPERM,
            )
        assert path.read_bytes() == before
    finally:
        undo()
    assert session_json(fa, c) == {"a": "1"}
    c.get("/set/a/2")
    assert session_json(fa, c) == {"a": "2"}


class _RefusingStore(FileSystemStore):
    """Refuses every write, counting the attempts."""

    attempts = 0

    def create(self, key: str, record: bytes, ttl: int) -> bool:
        self.attempts += 1
        raise StoreUnavailable("refused on purpose")

    patch = create  # type: ignore[assignment]


@pytest.mark.parametrize("handler", ["with a 500 handler", "without"])
def test_a_save_that_failed_is_not_tried_again_for_the_error_page(tmp_path, handler):
    """Flask saves the session once more after handling the error that the
    save raised; that second try would only repeat the failure, its wait
    (a Redis timeout) and its log entry."""
    store = _RefusingStore(tmp_path / "sessions")
    if handler == "without":
        app = add_routes(flask.Flask("refusing_app"))
        app.config.update(SECRET_KEY=SECRET, PICKLESESSION_STORE=store)
        PickleSession(app)
        app.logger.disabled = True
        assert app.test_client().get("/set/a/1").status_code == 500
    else:
        fa = fault_app(store)
        assert fa.app.test_client().get("/set/a/1").status_code == 503
        assert_unavailable(fa.errors[-1], type(None))
    assert store.attempts == 1


class _NoRefreshStore(FileSystemStore):
    """Stores and reads, but refuses to push an expiry back (like Redis
    refusing writes: out of memory, too few replicas)."""

    def touch(self, key: str, ttl: int) -> bool:
        raise StoreUnavailable("refused on purpose")

    def load(self, key: str, ttl: int | None = None) -> bytes | None:
        if ttl is not None:  # a read that refreshes, like Redis's GETEX
            raise StoreUnavailable("refused on purpose")
        return super().load(key)


@pytest.mark.parametrize("route", ["/untouched", "/get/a"])
def test_a_refresh_the_store_refuses_fails_no_view(tmp_path, caplog, route):
    """The expiry refresh is best effort: with a store that reads but
    refuses it, an untouched view and one that reads the session both
    answer, the cookie goes out as it came, and a warning is logged."""
    lifetime = datetime.timedelta(seconds=5)  # a refresh is due after 50 ms
    fa = fault_app(
        _NoRefreshStore(tmp_path / "sessions"), PERMANENT_SESSION_LIFETIME=lifetime
    )
    c = fa.app.test_client()
    c.get("/permanent/a/1")
    cookie = cookie_value(c)
    time.sleep(0.06)
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        rv = c.get(route)
    assert rv.status_code == 200, fa.errors
    assert cookie_value(c) == cookie
    assert "could not push back the expiry" in caplog.text
    assert c.get("/get/a").data == b"'1'"


def test_keeping_permanent_set_on_a_store_refusing_refreshes_fails_no_view(
    tmp_path, caplog
):
    """The keep-signed-in idiom (``permanent = True`` on every request, with
    SESSION_REFRESH_EACH_REQUEST off) renews once a refresh is due; a store
    that refuses it fails no view either."""
    lifetime = datetime.timedelta(seconds=5)  # a refresh is due after 50 ms
    fa = fault_app(
        _NoRefreshStore(tmp_path / "sessions"),
        PERMANENT_SESSION_LIFETIME=lifetime,
        SESSION_REFRESH_EACH_REQUEST=False,
    )

    @fa.app.route("/keep")
    def keep():
        flask.session.permanent = True
        return "ok"

    c = fa.app.test_client()
    c.get("/permanent/a/1")
    time.sleep(0.06)
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        rv = c.get("/keep")
    assert rv.status_code == 200, fa.errors
    assert "could not push back the expiry" in caplog.text
    assert c.get("/get/a").data == b"'1'"


# -- session files replaced by other things --------------------------------------------


def _session_file(
    tmp_path: t.Any, **config: t.Any
) -> tuple[FaultApp, t.Any, t.Any, str]:
    folder = tmp_path / "sessions"
    fa = fault_app(FileSystemStore(folder), **config)
    c = fa.app.test_client()
    c.get("/permanent/a/1")
    sid = sid_of(c)
    return fa, c, folder / ("session:" + sid), sid


def _snapshot(path: t.Any) -> tuple[bytes, int, int]:
    info = os.stat(path)
    return path.read_bytes(), info.st_mtime_ns, info.st_size


def test_session_file_replaced_by_directory(tmp_path):
    fa, c, path, _sid = _session_file(tmp_path)
    path.unlink()
    path.mkdir()
    (path / "inner").write_bytes(b"x")
    assert session_json(fa, c) == {}
    for route in ["/set/b/2", "/readset/c/3", "/clear"]:
        assert c.get(route).status_code == 200, (route, fa.errors)
    assert path.is_dir() and (path / "inner").read_bytes() == b"x"
    assert fa.errors == []


def test_session_folder_replaced_by_a_file_is_unavailable(tmp_path):
    """Not a corrupt entry: reading, like writing, finds no store to use, and
    a user is not shown as logged out while the folder is broken."""
    fa, c, _path, _sid = _session_file(tmp_path)
    folder = tmp_path / "sessions"
    shutil.rmtree(folder)
    folder.write_bytes(b"not a folder")
    for route in ["/json", "/set/b/2"]:
        assert c.get(route).status_code == 503, route
        assert_unavailable(fa.errors[-1], OSError)
    assert folder.read_bytes() == b"not a folder"


def test_symlinked_session_file_is_never_followed(tmp_path):
    """The link points at a file outside the folder that holds this very
    session's valid record: had it been followed, the session would load."""
    fa, c, path, _sid = _session_file(tmp_path)
    outside = tmp_path / "outside" / "record"
    outside.parent.mkdir()
    shutil.copyfile(path, outside)
    path.unlink()
    path.symlink_to(outside)
    before = _snapshot(outside)
    time.sleep(0.002)  # so that a write through the link would change mtime

    assert session_json(fa, c) == {}, "the symbolic link was followed"
    cookie = cookie_value(c)
    for route in ["/set/b/2", "/readset/c/3", "/regenerate", "/clear", "/inc"]:
        put_cookie(c, cookie)  # every write starts from the linked session
        assert c.get(route).status_code == 200, (route, fa.errors)
    assert _snapshot(outside) == before, "a write went through the link"
    assert fa.errors == []


@pytest.mark.parametrize("replacement", ["directory", "symlink", "hardlink", "other"])
def test_expiry_refresh_of_replaced_session_file_does_not_raise(tmp_path, replacement):
    """A permanent session whose stored expiry is due for a refresh, on a
    request that does not touch the session: the store is only asked to
    touch the file, which it refuses to follow or open, or to rewrite in
    place through a hard link or when it is no session file (no 500,
    nothing written).
    """
    fa, c, path, sid = _session_file(tmp_path)
    outside = tmp_path / "outside"
    shutil.copyfile(path, outside)
    path.unlink()
    if replacement == "directory":
        path.mkdir()
    elif replacement == "symlink":
        path.symlink_to(outside)
    elif replacement == "hardlink":
        os.link(outside, path)  # the refresh writes in place: not through this
    else:  # a regular file that is no session file: not rewritten
        outside.write_bytes(b"SECRET_CONFIG=1\n" * 4)
        shutil.copyfile(outside, path)
        outside = path
    before = _snapshot(outside)
    # Expiry last set two days ago: over 1% of the 31-day lifetime, so due.
    stamp = time.time_ns() // 1_000_000 - 2 * 86_400_000
    put_cookie(c, KeyRing(SECRET).sign(f"{sid}.{stamp:x}p"))
    response = c.get("/untouched")
    assert fa.errors == [] and response.status_code == 200, fa.errors
    assert _snapshot(outside) == before


def test_a_backup_by_hard_links_logs_nobody_out(tmp_path, caplog):
    """``cp -al`` or ``rsync --link-dest`` links every session file. A
    permanent session due for a refresh is still read, the refresh is
    skipped with a warning that names the session only by its short hash,
    and the backup is never written through; the next save replaces the
    file, and refreshes resume."""
    fa, c, path, sid = _session_file(tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    os.link(path, backup / path.name)
    before = _snapshot(backup / path.name)
    stamp = time.time_ns() // 1_000_000 - 2 * 86_400_000  # a refresh is due
    cookie = KeyRing(SECRET).sign(f"{sid}.{stamp:x}p")
    put_cookie(c, cookie)
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert c.get("/get/a").data == b"'1'"
    assert "could not push back the expiry" in caplog.text
    assert "hard links" in caplog.text and sid not in caplog.text
    assert cookie_value(c) == cookie  # it tells of the expiry the store has
    assert c.get("/set/b/2").status_code == 200, fa.errors
    assert os.stat(path).st_nlink == 1
    caplog.clear()
    put_cookie(c, cookie)
    with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
        assert c.get("/get/b").data == b"'2'"
    assert caplog.text == "" and cookie_value(c) != cookie
    assert _snapshot(backup / path.name) == before and fa.errors == []


def test_fifo_in_place_of_session_file_does_not_hang(tmp_path):
    """Opening a FIFO for reading blocks until a writer appears, unless it is
    opened non-blocking: the store does that, then refuses the FIFO as not a
    regular file, and the request gets a new empty session.
    """
    fa, c, path, _sid = _session_file(tmp_path)
    path.unlink()
    os.mkfifo(path)
    results: list[t.Any] = []
    request = threading.Thread(
        target=lambda: results.append(session_json(fa, c)), daemon=True
    )
    request.start()
    request.join(2)
    hung = request.is_alive()
    if hung:  # release the reader so no thread is left behind
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        request.join(5)
    assert not hung, "a request hung on a FIFO in the session folder"
    assert results == [{}]
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


def test_socket_in_place_of_session_file_is_a_corrupt_entry(tmp_path, caplog):
    """Opening a Unix socket fails with ENXIO: not a session file (contract
    15), so the request gets a new empty session and a warning, not a 500."""
    fa, c, path, _sid = _session_file(tmp_path)
    path.unlink()
    here = os.getcwd()
    os.chdir(path.parent)  # a socket path must be short: bind it by name
    try:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path.name)
    finally:
        os.chdir(here)
    try:
        with caplog.at_level(logging.WARNING, logger="flask_picklesession"):
            assert session_json(fa, c) == {}
        assert fa.errors == []
        assert "not a regular file" in caplog.text
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        listener.close()


# -- size limits -----------------------------------------------------------------------


def _size_app(make_app: t.Any) -> flask.Flask:
    app = add_routes(make_app(PICKLESESSION_MAX_SIZE=1024))
    app.testing = True

    @app.route("/big/<key>")
    def big(key: str) -> str:
        flask.session[key] = noise(4000)
        return "ok"

    @app.route("/readbig/<key>")
    def read_big(key: str) -> str:
        dict(flask.session)
        flask.session[key] = [noise(4000)]
        return "ok"

    @app.route("/clearbig")
    def clear_big() -> str:
        flask.session.clear()
        flask.session["flash"] = noise(4000)
        return "ok"

    @app.route("/regeneratebig")
    def regenerate_big() -> str:
        flask.session.regenerate()
        flask.session["big"] = noise(4000)
        return "ok"

    return app


def _stored(raw_store: t.Any, sid: str) -> tuple[bytes | None, int | None]:
    key = "session:" + sid
    info = raw_store.info(key)
    return raw_store.load(key), None if info is None else info.ttl


def test_too_large_new_session_writes_nothing(make_app, store, raw_store):
    app = _size_app(make_app)
    c = app.test_client()
    store.reset()
    with pytest.raises(SessionTooLarge):
        c.get("/big/a")
    assert store.reset() == {}, "the store was called"
    assert list(raw_store.scan("")) == []


@pytest.mark.parametrize(
    "route", ["/big/b", "/readbig/b"], ids=["blind-write", "read-then-write"]
)
def test_too_large_save_leaves_stored_session_untouched(
    make_app, store, raw_store, route
):
    app = _size_app(make_app)
    c = app.test_client()
    c.get("/set/a/1")
    sid = sid_of(c)
    before = _stored(raw_store, sid)
    store.reset()
    with pytest.raises(SessionTooLarge):
        c.get(route)
    calls = store.reset()
    assert "create" not in calls and "delete" not in calls
    if route == "/readbig/b":
        assert calls == {"load": 1}, (
            "the size is known before the store is asked to write"
        )
    data, ttl = _stored(raw_store, sid)
    assert data == before[0]
    assert ttl is not None and before[1] - 1000 < ttl <= before[1], (
        "the expiry was rewritten"
    )
    assert c.get("/dump").data == b"[('a', '1')]"


def test_too_large_after_regenerate_keeps_old_session(make_app, raw_store):
    app = _size_app(make_app)
    c = app.test_client()
    c.get("/set/a/1")
    sid = sid_of(c)
    before = _stored(raw_store, sid)[0]
    with pytest.raises(SessionTooLarge):
        c.get("/regeneratebig")
    assert _stored(raw_store, sid)[0] == before
    assert c.get("/dump").data == b"[('a', '1')]"


def test_store_out_of_memory_during_regenerate_keeps_old_session(
    tmp_path, redis_client
):
    """Redis refusing writes (maxmemory, noeviction) when regenerate() saves:
    the new record is refused before the old one is touched, so the request
    fails with StoreUnavailable and the session is still there afterwards."""
    fa = fault_app(RedisStore(redis_client))
    fa.app.testing = True
    c = fa.app.test_client()
    c.get("/set/cart/apple")
    sid = sid_of(c)
    before = redis_client.get("session:" + sid)
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", "1")  # every write is refused
    try:
        with pytest.raises(StoreUnavailable):
            c.get("/regenerate")
        assert redis_client.get("session:" + sid) == before
    finally:
        redis_client.config_set("maxmemory", "0")
    assert c.get("/get/cart").data == b"'apple'"
    assert sid_of(c) == sid


@pytest.mark.parametrize("size", [1, 3000], ids=["append", "rewrite"])
def test_store_out_of_memory_refuses_a_merge_whole(tmp_path, redis_client, size):
    """Redis at its memory limit (noeviction) refuses a save into an existing
    session, whether the save appends or rewrites the record: the request
    fails with StoreUnavailable and the stored session is as before."""
    fa = fault_app(RedisStore(redis_client))
    fa.app.testing = True
    c = fa.app.test_client()
    c.get(f"/set/a/{noise(size)}")
    dump = c.get("/dump").data
    key = "session:" + sid_of(c)
    before = redis_client.get(key)
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", "1")  # every write is refused
    try:
        with pytest.raises(StoreUnavailable):
            # Replacing a large value would leave too much superseded: the
            # save rewrites the record instead of appending to it.
            c.get(f"/set/a/{noise(size)}")
        assert redis_client.get(key) == before
    finally:
        redis_client.config_set("maxmemory", "0")
    assert c.get("/dump").data == dump


def test_redis_refusing_writes_still_serves_reads(tmp_path, redis_client):
    """A master cut off from its replicas (``min-replicas-to-write``) refuses
    every write, GETEX's expiry refresh included: views that read the
    session still answer, without the refresh, and writes raise."""
    lifetime = datetime.timedelta(seconds=5)  # a refresh is due after 50 ms
    fa = fault_app(RedisStore(redis_client), PERMANENT_SESSION_LIFETIME=lifetime)
    c = fa.app.test_client()
    c.get("/permanent/a/1")
    cookie = cookie_value(c)
    time.sleep(0.06)
    redis_client.config_set("min-replicas-to-write", "1")  # there are none
    try:
        for route in ["/get/a", "/untouched"]:
            rv = c.get(route)
            assert rv.status_code == 200, (route, fa.errors)
            assert cookie_value(c) == cookie
        assert c.get("/get/a").data == b"'1'"
        assert c.get("/set/b/2").status_code == 503
    finally:
        redis_client.config_set("min-replicas-to-write", "0")
    assert c.get("/dump").data == b"[('_permanent', True), ('a', '1')]"


def _regenerate_meanwhile(make_app, store, monkeypatch, meanwhile):
    """Regenerate, with ``meanwhile(old_cookie)`` run by another client just
    before the old record is taken; return (client, old cookie, response)."""
    app = add_routes(make_app())
    c, other = app.test_client(), app.test_client()
    c.get("/set/user/alice")
    old = cookie_value(c)
    put_cookie(other, old)
    real_take = store.take

    def take(key):
        meanwhile(other)
        return real_take(key)

    monkeypatch.setattr(store, "take", take)
    response = c.get("/regenerate")
    return c, old, response


def test_regenerate_moves_a_change_saved_just_before_the_take(
    make_app, store, raw_store, monkeypatch
):
    c, old, _ = _regenerate_meanwhile(
        make_app, store, monkeypatch, lambda other: other.get("/set/cart/pear")
    )
    assert sid_of(c) != old.split(".", 1)[0]
    assert c.get("/dump").data == b"[('cart', 'pear'), ('user', 'alice')]"
    assert raw_store.load("session:" + old.split(".", 1)[0]) is None


def test_regenerate_of_a_session_deleted_just_before_the_take_stores_nothing(
    make_app, store, raw_store, monkeypatch
):
    c, _old, response = _regenerate_meanwhile(
        make_app, store, monkeypatch, lambda other: other.get("/clear")
    )
    assert set_cookie_headers(response) == []  # the cookie is left alone
    assert list(raw_store.scan("session:")) == []
    assert c.get("/dump").data == b"[]"


def test_regenerate_of_a_session_corrupted_just_before_the_take_stores_nothing(
    make_app, store, raw_store, monkeypatch
):
    """An old record found unreadable when taken counts as gone: no 500,
    and the new record is not left behind."""
    app = add_routes(make_app())
    c = app.test_client()
    c.get("/set/user/alice")

    def take(key):
        raise CorruptRecord("not a regular file")

    monkeypatch.setattr(store, "take", take)
    response = c.get("/regenerate")
    assert response.status_code == 200
    assert set_cookie_headers(response) == []
    assert list(raw_store.scan("session:")) == ["session:" + sid_of(c)]


def test_too_large_after_clear_keeps_stored_session(make_app, raw_store):
    """SessionTooLarge means nothing was written (README, "Errors").

    After clear(), the new content is built and size-checked before the
    stored session is deleted, so the error leaves the old one in place.
    """
    app = _size_app(make_app)
    c = app.test_client()
    c.get("/set/a/1")
    sid = sid_of(c)
    with pytest.raises(SessionTooLarge):
        c.get("/clearbig")
    assert _stored(raw_store, sid)[0] is not None, "the stored session was deleted"


#: Largest allocation peak a request on a hostile record may reach. A plain
#: load already peaks near 1 MiB: FileSystemStore._read_file reads in 1 MiB
#: chunks, and os.read allocates the whole chunk before shrinking it.
PEAK_LIMIT = 4 << 20


def _huge_claim_record() -> bytes:
    """A record whose first entry declares a 2**34-byte value."""
    return (
        b"\x01"
        + encode_varint(4)
        + b"user"
        + encode_varint(2**34)
        + b"\0" * 16
        + b"s" * 10
    )


def _peak_during(action: t.Callable[[], t.Any]) -> int:
    action()  # warm up caches, so only this request's allocations count
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_declared_huge_length_allocates_nothing(make_app, raw_store):
    app = add_routes(make_app())
    app.testing = True
    c = app.test_client()
    c.get("/set/a/1")
    key = "session:" + sid_of(c)
    raw_store.delete(key)
    assert raw_store.create(key, _huge_claim_record(), 60_000)

    def request() -> None:
        assert c.get("/dump").data == b"[]"

    assert _peak_during(request) < PEAK_LIMIT


def test_huge_session_file_is_refused_unread(tmp_path):
    """A sparse session file just over the store's size cap: refused from its
    size, never read. (Just over, not 16 GiB: a regression must fail this
    test, not exhaust the machine.)"""
    folder = tmp_path / "sessions"
    app = fault_app(FileSystemStore(folder)).app
    app.testing = True
    c = app.test_client()
    c.get("/set/a/1")
    path = folder / ("session:" + sid_of(c))
    try:
        os.truncate(path, getattr(session_files_module, "MAX_FILE_SIZE", 64 << 20) + 1)
    except OSError as exc:
        pytest.skip(f"cannot make a sparse file here: {exc}")

    def request() -> None:
        assert c.get("/dump").data == b"[]"

    assert _peak_during(request) < PEAK_LIMIT


def test_expiry_header_claiming_far_future_is_harmless(tmp_path):
    """The 8-byte expiry of a file is data too: the largest value must not
    overflow anything when the session is read, refreshed and saved."""
    folder = tmp_path / "sessions"
    fa = fault_app(
        FileSystemStore(folder), PERMANENT_SESSION_LIFETIME=datetime.timedelta(days=1)
    )
    c = fa.app.test_client()
    c.get("/permanent/a/1")
    path = folder / ("session:" + sid_of(c))
    path.write_bytes(b"\xff" * 8 + path.read_bytes()[8:])
    assert session_json(fa, c) == {"_permanent": True, "a": "1"}
    for route in ["/untouched", "/set/b/2", "/readset/c/3"]:
        assert c.get(route).status_code == 200, fa.errors
    assert fa.errors == []
