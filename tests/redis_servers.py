"""Pytest plugin that runs real, throw-away Redis servers for the test suite.

Why: fakeredis cannot show how the session store behaves against a real
server (Lua scripts, cluster slot routing, sentinel discovery, a server that
goes away and comes back, round trips per request).  This plugin starts
private ``redis-server`` processes on free 127.0.0.1 ports, without
persistence, each in its own temporary directory, and never touches any Redis
already running on the machine.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.redis_servers"]``
or on the command line with ``-p tests.redis_servers``.  It uses no relative
imports, so it also works as ``redis_servers`` with ``tests/`` on ``sys.path``.

Fixtures:

* ``redis_server`` (session): :class:`RedisServer` -- one standalone server.
* ``redis_url`` / ``redis_client`` (function): flushed standalone server,
  restarted first if an earlier test stopped it.
* ``redis_cluster`` (session): :class:`RedisClusterSetup` -- 3 masters.
* ``redis_cluster_client`` (function): flushed cluster, new ``RedisCluster``.
* ``redis_sentinel`` (session): :class:`RedisSentinelSetup` -- 1 master and
  1 sentinel monitoring it as ``mymaster`` with quorum 1.
* ``redis_sentinel_client`` (function): flushed master, ``master_for`` client.
* ``count_commands`` (function): the :func:`command_counter` factory.

If ``redis-server`` is missing the fixtures skip, or fail when ``CI=true``
(CI must not silently skip the real-server tests).
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

import pytest

if TYPE_CHECKING:  # redis is an optional extra: import it lazily at run time.
    import redis
    import redis.cluster
    import redis.sentinel

HOST = "127.0.0.1"
#: How long a server may take to answer PING after being started.
START_TIMEOUT = 10.0
#: How long a cluster may take to report ``cluster_state:ok`` everywhere.
#: Redis itself waits 2 s after start-up before a master turns the state ok.
CLUSTER_TIMEOUT = 20.0
#: How long the sentinel may take to report the monitored master.
SENTINEL_TIMEOUT = 10.0
#: How long SIGTERM gets before SIGKILL.
STOP_TIMEOUT = 5.0
#: Sleep between readiness polls: short, so fixtures are ready quickly.
POLL_INTERVAL = 0.02
#: Lines of a server log quoted in start-up error messages.
LOG_TAIL_LINES = 40
#: Commands a new redis-py connection may send before the caller's first
#: command; pass as ``ignore=`` to :meth:`CommandCounter.delta` when a test
#: may open new connections while being measured.
HANDSHAKE_COMMANDS = frozenset(
    {"hello", "auth", "select", "client|setinfo", "client|setname", "readonly"}
)
#: What a sentinel itself sends to its master (PING every second, PUBLISH
#: hello every 2 s, INFO every 10 s); pass as ``ignore=`` when counting there.
SENTINEL_TRAFFIC = frozenset({"ping", "publish", "info", "subscribe", "client|setname"})

CLUSTER_SLOTS = 16384
MASTER_NAME = "mymaster"

# Ports handed out by this process and still meant for one of our servers,
# so a server stopped by a test cannot lose its port to a new fixture.
_RESERVED_PORTS: set[int] = set()
_LINUX = sys.platform.startswith("linux")


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _require_redis_py() -> None:
    """Skip/fail cleanly without redis-py; this module itself imports without it."""
    try:
        import redis.cluster
        import redis.sentinel  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the env
        _missing(f"redis-py is not installed ({exc})")


def _missing(reason: str) -> None:
    """Skip locally, but fail on CI (CI=true), so CI never skips silently."""
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{reason}; CI=true, so this is an error, not a skip", pytrace=False
        )
    pytest.skip(reason)


def _require_redis_server() -> str:
    """Return the path of ``redis-server`` or skip/fail the requesting test."""
    path = shutil.which("redis-server")
    if path is None:
        _missing("redis-server is not installed (not found on PATH)")
    assert path is not None
    _require_redis_py()
    return path


def _free_ports(count: int) -> list[int]:
    """Pick ``count`` distinct free 127.0.0.1 ports by binding to port 0.

    All sockets stay open until every port is chosen so the kernel cannot hand
    out the same port twice; ports reserved by our stopped servers are skipped.
    """
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
            if port not in _RESERVED_PORTS:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    _RESERVED_PORTS.update(ports)
    return ports


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING with +PONG (not -LOADING etc.).

    A raw socket keeps readiness polling independent of redis-py's retries.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty log>"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGKILL the server if pytest dies without running teardown."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def _wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    on_timeout: Callable[[], str],
) -> None:
    """Poll ``predicate`` with short sleeps; raise with details at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}"
            )
        time.sleep(POLL_INTERVAL)


def _parse_info_text(text: str | bytes | dict[Any, Any]) -> dict[str, str]:
    """Parse ``CLUSTER INFO`` style ``key:value`` lines (or pass a dict on)."""
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    if isinstance(text, bytes):
        text = text.decode()
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            result[key.strip()] = value.strip()
    return result


# --------------------------------------------------------------------------
# one redis-server process
# --------------------------------------------------------------------------


class RedisServer:
    """One private ``redis-server`` process on a fixed 127.0.0.1 port.

    ``stop()``/``start()`` keep the port and the directory, so tests can make
    the store go away and come back at the same address.
    """

    def __init__(
        self,
        port: int,
        *,
        binary: str,
        name: str = "redis",
        extra_args: Sequence[str] = (),
        config_file: Path | None = None,
        directory: Path | None = None,
    ) -> None:
        self.host = HOST
        self.port = port
        self.name = name
        self.binary = binary
        self.extra_args = list(extra_args)
        self.config_file = config_file
        self._own_dir = directory is None
        self.dir = (
            Path(directory)
            if directory
            else Path(tempfile.mkdtemp(prefix=f"{name}-{port}-"))
        )
        self.log_path = self.dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        #: Cluster bus port, for cluster nodes only (set explicitly, not +10000).
        self.bus_port: int | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command_line(self) -> list[str]:
        """Arguments: no persistence, own dir, log to stdout (captured to a file)."""
        args = [self.binary]
        if self.config_file is not None:
            args.append(str(self.config_file))
        options = {
            "port": str(self.port),
            "bind": self.host,
            "dir": str(self.dir),
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "logfile": "",  # stdout, which start() sends to log_path
        }
        for name, value in options.items():
            args += [f"--{name}", value]
        return args + self.extra_args

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process (no-op if running) and wait until it answers PING."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- starting: {' '.join(self.command_line())!r}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command_line(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if _LINUX else None,
            )
        proc = self._proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} on port {self.port} exited with code"
                    f" {proc.returncode} during start-up; log {self.log_path}"
                    f" ends with:\n{_log_tail(self.log_path)}"
                )
            return _ping(self.host, self.port)

        try:
            _wait_until(
                ready,
                timeout,
                f"{self.name} on port {self.port} to answer PING",
                lambda: f"log {self.log_path} ends with:\n{_log_tail(self.log_path)}",
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; waits until the process is gone."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start again if a test stopped (or crashed) the server."""
        if not self.running or not _ping(self.host, self.port):
            self.stop()
            self.start()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` connected to this server (db 0)."""
        import redis

        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def flush(self) -> None:
        """FLUSHALL on this test server only."""
        with self.client() as client:
            client.flushall()

    def command_targets(self) -> list[tuple[str, int]]:
        """Servers whose ``INFO commandstats`` :func:`command_counter` sums."""
        return [self.address]

    def close(self) -> None:
        """Stop the process, release the port and remove the temp dir."""
        self.stop()
        _RESERVED_PORTS.difference_update({self.port, self.bus_port})
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.name} {self.host}:{self.port} {state}>"


def _start_on_free_port(
    make: Callable[[int], RedisServer], attempts: int = 3
) -> RedisServer:
    """Start a server on a fresh free port, retrying if another process won
    the race for the port between our probe and the server's bind()."""
    last: Exception | None = None
    for _ in range(attempts):
        (port,) = _free_ports(1)
        server = make(port)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            server.close()
            last = exc
            if "Address already in use" not in str(exc):
                break
    raise RuntimeError(f"could not start redis-server: {last}")


# --------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------


class RedisClusterSetup:
    """Three ``cluster-enabled`` masters sharing the 16384 slots, no replicas.

    Built with ADDSLOTSRANGE / SET-CONFIG-EPOCH / MEET rather than
    ``redis-cli --cluster create``: no redis-cli needed and no 1 s sleeps.
    """

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes
        self.host = HOST

    @classmethod
    def create(cls, binary: str, size: int = 3) -> RedisClusterSetup:
        nodes: list[RedisServer] = []
        try:
            for index in range(size):
                nodes.append(_start_cluster_node(binary, index))
            setup = cls(nodes)
            setup._form()
            return setup
        except BaseException:
            for node in nodes:
                node.close()
            raise

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    @property
    def startup_nodes(self) -> list[redis.cluster.ClusterNode]:
        """``ClusterNode`` objects, as ``RedisCluster(startup_nodes=...)`` wants."""
        import redis.cluster

        return [redis.cluster.ClusterNode(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """URL of the first node; ``RedisCluster.from_url`` discovers the rest."""
        return self.nodes[0].url

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A new ``redis.cluster.RedisCluster`` (it loads the slot map on creation)."""
        import redis.cluster

        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 2)
        return redis.cluster.RedisCluster(startup_nodes=self.startup_nodes, **kwargs)

    def flush(self) -> None:
        """FLUSHALL on every master."""
        for node in self.nodes:
            node.flush()

    def command_targets(self) -> list[tuple[str, int]]:
        return self.addresses

    def cluster_info(self) -> list[dict[str, str]]:
        """``CLUSTER INFO`` of every node, parsed."""
        infos = []
        for node in self.nodes:
            with node.client(decode_responses=True) as client:
                infos.append(
                    _parse_info_text(client.execute_command("CLUSTER", "INFO"))
                )
        return infos

    def _form(self) -> None:
        """Assign slots, distinct epochs, MEET, then wait for a healthy cluster."""
        size = len(self.nodes)
        for index, node in enumerate(self.nodes):
            first = index * CLUSTER_SLOTS // size
            last = (index + 1) * CLUSTER_SLOTS // size - 1
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
                # Distinct epochs up front: no epoch-collision resolution needed.
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                # Redis 7 takes the bus port in MEET; ours is not port+10000.
                client.execute_command(
                    "CLUSTER", "MEET", node.host, node.port, node.bus_port
                )

        def healthy() -> bool:
            for info in self.cluster_info():
                if (
                    info.get("cluster_state") != "ok"
                    or info.get("cluster_known_nodes") != str(size)
                    or info.get("cluster_slots_assigned") != str(CLUSTER_SLOTS)
                ):
                    return False
            return True

        def details() -> str:
            parts = []
            for node, info in zip(self.nodes, self._safe_infos()):
                parts.append(
                    f"node {node.port}: {info}\n{_log_tail(node.log_path, 15)}"
                )
            return "\n".join(parts)

        _wait_until(healthy, CLUSTER_TIMEOUT, "cluster_state:ok on every node", details)
        self._check_client()

    def _safe_infos(self) -> list[Any]:
        try:
            return list(self.cluster_info())
        except Exception as exc:  # pragma: no cover - only for error messages
            return [repr(exc)] * len(self.nodes)

    def _check_client(self) -> None:
        """Prove a RedisCluster client can write to every master's slots."""
        import redis

        keys = _keys_on_distinct_slots(len(self.nodes))
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while True:
            try:
                with self.client() as client:
                    for key in keys:
                        client.set(key, key)
                        if client.get(key) != key.encode():
                            raise RuntimeError(
                                f"cluster GET {key!r} returned a wrong value"
                            )
                    for key in keys:
                        client.delete(key)
                return
            except (
                redis.exceptions.RedisError,
                redis.exceptions.RedisClusterException,
            ):
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL_INTERVAL * 5)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _start_cluster_node(binary: str, index: int) -> RedisServer:
    """A cluster-enabled server with an explicit bus port (no port+10000 guess)."""

    def make(port: int) -> RedisServer:
        (bus_port,) = _free_ports(1)
        server = RedisServer(
            port,
            binary=binary,
            name=f"cluster{index}",
            extra_args=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                str(bus_port),
                "--cluster-node-timeout",
                "5000",
                "--cluster-announce-ip",
                HOST,
            ],
        )
        server.bus_port = bus_port
        return server

    return _start_on_free_port(make)


def _keys_on_distinct_slots(count: int) -> list[str]:
    """One key in each of ``count`` equal slot ranges (one per master)."""
    _require_redis_py()
    from redis.crc import key_slot

    found: dict[int, str] = {}
    number = 0
    while len(found) < count:
        key = f"probe:{number}"
        found.setdefault(key_slot(key.encode()) * count // CLUSTER_SLOTS, key)
        number += 1
    return [found[index] for index in sorted(found)]


# --------------------------------------------------------------------------
# sentinel
# --------------------------------------------------------------------------


class RedisSentinelSetup:
    """One master plus one sentinel monitoring it as ``mymaster`` (quorum 1)."""

    def __init__(
        self, master: RedisServer, sentinel: RedisServer, master_name: str
    ) -> None:
        self.master = master
        self.sentinel_process = sentinel
        self.master_name = master_name
        self.host = HOST

    @classmethod
    def create(cls, binary: str, master_name: str = MASTER_NAME) -> RedisSentinelSetup:
        master = _start_on_free_port(
            lambda port: RedisServer(port, binary=binary, name="sentinel-master")
        )
        sentinel: RedisServer | None = None
        try:
            sentinel = _start_on_free_port(
                lambda port: _make_sentinel(binary, port, master, master_name)
            )
            setup = cls(master, sentinel, master_name)
            setup._wait_for_master()
            return setup
        except BaseException:
            if sentinel is not None:
                sentinel.close()
            master.close()
            raise

    @property
    def sentinel_port(self) -> int:
        return self.sentinel_process.port

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The ``[(host, port)]`` list ``redis.sentinel.Sentinel`` takes."""
        return [self.sentinel_process.address]

    @property
    def master_port(self) -> int:
        return self.master.port

    def sentinel(self, **kwargs: Any) -> redis.sentinel.Sentinel:
        """A new ``redis.sentinel.Sentinel`` for our one sentinel."""
        import redis.sentinel

        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 2)
        return redis.sentinel.Sentinel(self.sentinels, **kwargs)

    def client(self, **kwargs: Any) -> redis.Redis:
        """``Sentinel(...).master_for(master_name)``: finds the master via sentinel."""
        timeout = kwargs.setdefault("socket_timeout", 5)
        return self.sentinel(socket_timeout=timeout).master_for(
            self.master_name, **kwargs
        )

    def flush(self) -> None:
        """FLUSHALL on the master."""
        self.master.flush()

    def command_targets(self) -> list[tuple[str, int]]:
        """Only the master; the sentinel's own traffic: see ``SENTINEL_TRAFFIC``."""
        return [self.master.address]

    def _wait_for_master(self) -> None:
        """Wait until the sentinel reports the master and considers it up."""
        sentinel_server = self.sentinel_process

        def ready() -> bool:
            with sentinel_server.client(decode_responses=True) as client:
                addr = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                if not addr or int(addr[1]) != self.master.port:
                    return False
                state = client.execute_command("SENTINEL", "MASTER", self.master_name)
                if isinstance(state, list):
                    state = dict(zip(state[::2], state[1::2]))
                # info-refresh is "ms since the last INFO reply" and starts out
                # as the whole epoch: small means the sentinel really reached
                # the master, not just read it from its config file.
                return bool(
                    state.get("flags") == "master"
                    and int(state.get("info-refresh", "-1")) in range(60_000)
                )

        _wait_until(
            ready,
            SENTINEL_TIMEOUT,
            f"sentinel on port {self.sentinel_port} to report {self.master_name}",
            lambda: f"sentinel log:\n{_log_tail(sentinel_server.log_path)}",
        )
        with self.client() as client:
            client.ping()

    def close(self) -> None:
        """Sentinel first, so it does not see its master vanish."""
        self.sentinel_process.close()
        self.master.close()


def _make_sentinel(
    binary: str, port: int, master: RedisServer, master_name: str
) -> RedisServer:
    """A ``redis-server sentinel.conf --sentinel`` process; the conf must be
    a writable file because sentinel rewrites it with what it learns."""
    directory = Path(tempfile.mkdtemp(prefix=f"sentinel-{port}-"))
    conf = directory / "sentinel.conf"
    conf.write_text(
        "\n".join(
            [
                f"sentinel monitor {master_name} {master.host} {master.port} 1",
                f"sentinel down-after-milliseconds {master_name} 5000",
                f"sentinel failover-timeout {master_name} 10000",
                "",
            ]
        )
    )
    server = RedisServer(
        port,
        binary=binary,
        name="sentinel",
        config_file=conf,
        directory=directory,
        extra_args=["--sentinel"],
    )
    server._own_dir = True  # remove the dir we made here on close()
    return server


# --------------------------------------------------------------------------
# command counting
# --------------------------------------------------------------------------


CounterTarget = Union[
    str,
    "redis.Redis",
    "redis.cluster.RedisCluster",
    RedisServer,
    RedisClusterSetup,
    RedisSentinelSetup,
]


class CommandCounter:
    """Per-command call deltas from ``INFO commandstats`` between two points.

    Why: to assert how many round trips a request costs.  It uses its own
    connections (opened at the baseline, so their handshake is not counted)
    and subtracts its own INFO calls.  ``INFO commandstats`` is server-wide:
    other clients' commands on the same server are counted too (for the
    sentinel setup that includes the sentinel's own PING/INFO/PUBLISH).
    """

    def __init__(
        self, addresses: Iterable[tuple[str, int]], **connection_kwargs: Any
    ) -> None:
        import redis

        connection_kwargs.setdefault("socket_timeout", 5)
        self._clients = [
            redis.Redis(host=host, port=port, **connection_kwargs)
            for host, port in addresses
        ]
        if not self._clients:
            raise ValueError("no servers to count commands on")
        self._baseline: collections.Counter[str] = collections.Counter()
        self._own_infos = 0
        self.counts: dict[str, int] = {}
        self.reset()

    def _snapshot(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for client in self._clients:
            for key, stats in client.info("commandstats").items():
                name = key[len("cmdstat_") :] if key.startswith("cmdstat_") else key
                total[name] += int(stats["calls"])
        return total

    def reset(self) -> None:
        """Take a new baseline."""
        self._baseline = self._snapshot()
        # INFO is counted after it runs: this one shows up in the next snapshot.
        self._own_infos = 1

    def delta(self, ignore: Iterable[str] = ()) -> dict[str, int]:
        """``{"get": 1, "evalsha": 1}``: non-zero per-command deltas since the baseline,
        summed over all servers, without our own INFO calls and ``ignore``d names."""
        now = self._snapshot()
        diff = collections.Counter(now)
        diff.subtract(self._baseline)
        diff["info"] -= self._own_infos * len(self._clients)
        self._own_infos += 1
        skip = {name.lower() for name in ignore}
        return {name: n for name, n in sorted(diff.items()) if n and name not in skip}

    def total(self, ignore: Iterable[str] = ()) -> int:
        """All commands since the baseline (see :meth:`delta`)."""
        return sum(self.delta(ignore).values())

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def __enter__(self) -> CommandCounter:
        self.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.counts = self.delta()
        finally:
            self.close()


def _target_addresses(
    target: CounterTarget,
) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Resolve what to count on: the servers and their auth settings."""
    import redis.cluster
    import redis.connection

    if hasattr(target, "command_targets"):
        return list(target.command_targets()), {}
    if isinstance(target, str):
        kwargs = redis.connection.parse_url(target)
        auth = {k: kwargs[k] for k in ("username", "password") if kwargs.get(k)}
        return [(kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))], auth
    if isinstance(target, redis.cluster.RedisCluster):
        nodes = target.get_primaries()
        kwargs = getattr(target.nodes_manager, "connection_kwargs", {}) or {}
        auth = {k: kwargs[k] for k in ("username", "password") if kwargs.get(k)}
        return [(node.host, int(node.port)) for node in nodes], auth
    if isinstance(target, redis.Redis):
        pool = target.connection_pool
        kwargs = pool.connection_kwargs
        auth = {k: kwargs[k] for k in ("username", "password") if kwargs.get(k)}
        if hasattr(pool, "get_master_address"):  # sentinel-managed client
            host, port = pool.get_master_address()
            return [(host, int(port))], auth
        return [(kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))], auth
    raise TypeError(f"cannot count commands on {target!r}")


def command_counter(target: CounterTarget) -> CommandCounter:
    """Start counting commands on the server(s) behind ``target``.

    ``target``: a URL, a ``redis.Redis`` (also ``master_for``), a
    ``RedisCluster`` (sums over primaries) or a fixture object.  Use as::

        counter = command_counter(redis_client)
        redis_client.get("k")
        assert counter.delta() == {"get": 1}

    or ``with command_counter(url) as c: ...`` then read ``c.counts``.
    Create clients before the baseline: a new connection's handshake (HELLO
    in redis-py 8) and a new ``RedisCluster``'s CLUSTER SLOTS/COMMAND count.
    """
    addresses, auth = _target_addresses(target)
    return CommandCounter(addresses, **auth)


# --------------------------------------------------------------------------
# pytest hooks and fixtures
# --------------------------------------------------------------------------

_MARKERS = {
    "redis": "needs a real redis-server started by the fixtures",
    "cluster": "needs a real Redis Cluster started by the fixtures",
    "sentinel": "needs a real Redis Sentinel setup started by the fixtures",
}
_FIXTURE_MARKERS = {
    "redis_server": "redis",
    "redis_url": "redis",
    "redis_client": "redis",
    "redis_cluster": "cluster",
    "redis_cluster_client": "cluster",
    "redis_sentinel": "sentinel",
    "redis_sentinel_client": "sentinel",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, so ``--strict-markers`` works without pyproject."""
    for name, help_text in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the servers they use, so ``-m "not cluster"`` works."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        for marker in {m for f, m in _FIXTURE_MARKERS.items() if f in names}:
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One standalone redis-server for the whole session."""
    binary = _require_redis_server()
    server = _start_on_free_port(lambda port: RedisServer(port, binary=binary))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session server, running again and flushed for this test."""
    redis_server.ensure_running()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str, redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A new client to the flushed session server, closed after the test."""
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterSetup]:
    """A real 3-master Redis Cluster for the whole session."""
    binary = _require_redis_server()
    cluster = RedisClusterSetup.create(binary)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_cluster_client(
    redis_cluster: RedisClusterSetup,
) -> Iterator[redis.cluster.RedisCluster]:
    """A new RedisCluster client to the flushed session cluster."""
    redis_cluster.flush()
    client = redis_cluster.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelSetup]:
    """A master and a sentinel monitoring it as ``mymaster`` for the session."""
    binary = _require_redis_server()
    setup = RedisSentinelSetup.create(binary)
    try:
        yield setup
    finally:
        setup.close()


@pytest.fixture
def redis_sentinel_client(redis_sentinel: RedisSentinelSetup) -> Iterator[redis.Redis]:
    """A ``master_for`` client to the flushed sentinel-managed master."""
    redis_sentinel.flush()
    client = redis_sentinel.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def count_commands() -> Iterator[Callable[[CounterTarget], CommandCounter]]:
    """The :func:`command_counter` factory; counters are closed after the test."""
    counters: list[CommandCounter] = []

    def factory(target: CounterTarget) -> CommandCounter:
        counter = command_counter(target)
        counters.append(counter)
        return counter

    yield factory
    for counter in counters:
        counter.close()
