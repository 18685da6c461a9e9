"""Self-tests of the real-Redis fixtures in ``tests/redis_servers.py``.

Why: every store test relies on these fixtures; if they silently pointed at
the wrong server, or a restart changed the port, store tests would prove
nothing.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest

try:
    from tests.redis_servers import (
        SENTINEL_TRAFFIC,
        CommandCounter,
        RedisClusterSetup,
        RedisSentinelSetup,
        RedisServer,
        _free_ports,
        _keys_on_distinct_slots,
        _require_redis_server,
        command_counter,
    )
except ImportError:  # loaded with tests/ itself on sys.path
    from redis_servers import (  # type: ignore[no-redef]
        SENTINEL_TRAFFIC,
        CommandCounter,
        RedisClusterSetup,
        RedisSentinelSetup,
        RedisServer,
        _free_ports,
        _keys_on_distinct_slots,
        _require_redis_server,
        command_counter,
    )

if TYPE_CHECKING:
    from redis import Redis

redis = pytest.importorskip("redis")
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = _free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_missing_binary_skips_locally(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="redis-server is not installed"):
        _require_redis_server()


def test_missing_binary_fails_on_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        _require_redis_server()


def test_failed_start_quotes_the_log() -> None:
    binary = _require_redis_server()
    (port,) = _free_ports(1)
    server = RedisServer(port, binary=binary, extra_args=["--no-such-directive", "1"])
    try:
        with pytest.raises(RuntimeError, match="no-such-directive") as info:
            server.start()
        assert "exited with code" in str(info.value)
        assert not server.running
    finally:
        server.close()
    assert not server.dir.exists()


def test_server_answers_ping(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.port != 6379  # never the machine's own Redis
    with redis_server.client() as client:
        assert client.ping() is True
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}


def test_redis_client_starts_empty(redis_client: Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("left-behind", "1")  # the next test must not see it


def test_redis_url_is_flushed(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


def test_stop_start_keeps_port(redis_server: RedisServer, redis_client: Redis) -> None:
    port = redis_server.port
    redis_server.stop()
    assert not redis_server.running
    # No retries: redis-py 8 otherwise backs off for ~2.5 s before giving up.
    down = redis_server.client(retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            down.ping()
    finally:
        down.close()
    redis_server.start()
    assert redis_server.port == port
    assert redis_client.ping() is True  # the old client reconnects


def test_stopped_server_is_running_again_for_next_test(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()  # left stopped on purpose


def test_function_fixture_restarted_server(redis_client: Redis) -> None:
    assert redis_client.ping() is True


def test_counter_counts_one_get(redis_client: Redis) -> None:
    redis_client.ping()  # connect before the baseline
    counter = command_counter(redis_client)
    try:
        redis_client.get("missing")
        assert counter.delta() == {"get": 1}
        assert counter.delta() == {"get": 1}  # our own INFO calls stay invisible
        redis_client.set("k", "v")
        redis_client.get("k")
        assert counter.delta() == {"get": 2, "set": 1}
        counter.reset()
        assert counter.delta() == {}
    finally:
        counter.close()


def test_count_commands_fixture_with_url(
    redis_url: str, count_commands: Callable[..., CommandCounter]
) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.ping()
        with count_commands(redis_url) as counted:
            client.set("a", "1")
            client.mget("a", "b")
        assert counted.counts == {"mget": 1, "set": 1}


def test_counter_sees_new_connection_handshake(redis_url: str) -> None:
    counter = command_counter(redis_url)
    try:
        with redis.Redis.from_url(redis_url) as client:
            client.get("x")
        delta = counter.delta()
        assert delta["get"] == 1
        assert counter.delta(ignore=delta.keys() - {"get"}) == {"get": 1}
    finally:
        counter.close()


@pytest.mark.cluster
def test_cluster_is_ok_and_spreads_keys(redis_cluster: RedisClusterSetup) -> None:
    assert len(redis_cluster.startup_nodes) == 3
    for info in redis_cluster.cluster_info():
        assert info["cluster_state"] == "ok"
        assert info["cluster_size"] == "3"
    keys = _keys_on_distinct_slots(3)
    with redis_cluster.client() as client:
        slots = {client.keyslot(key) for key in keys}
        owners = {client.get_node_from_key(key).port for key in keys}
        assert len(slots) == 3
        assert owners == set(redis_cluster.ports)
        for key in keys:
            client.set(key, "v")
        assert [client.get(key) for key in keys] == [b"v"] * 3
        counter = command_counter(client)
        try:
            for key in keys:
                client.get(key)
            assert counter.delta() == {"get": 3}  # summed over the masters
        finally:
            counter.close()
    redis_cluster.flush()
    for node in redis_cluster.nodes:
        with node.client() as client:
            assert client.dbsize() == 0


@pytest.mark.cluster
def test_cluster_client_fixture_is_flushed(redis_cluster_client: object) -> None:
    assert redis_cluster_client.dbsize() == 0  # type: ignore[attr-defined]


@pytest.mark.sentinel
def test_sentinel_master_for_set_get(redis_sentinel: RedisSentinelSetup) -> None:
    assert redis_sentinel.master_name == "mymaster"
    sentinel = redis_sentinel.sentinel()  # not a context manager in redis-py 4
    try:
        host, port = sentinel.discover_master("mymaster")
    finally:
        for connection in sentinel.sentinels:
            connection.close()
    assert (host, port) == ("127.0.0.1", redis_sentinel.master_port)
    assert port != redis_sentinel.sentinel_port
    client = redis_sentinel.client()
    try:
        client.set("s", "1")
        assert client.get("s") == b"1"
    finally:
        client.close()
    redis_sentinel.flush()
    with redis_sentinel.master.client() as direct:
        assert direct.dbsize() == 0


@pytest.mark.sentinel
def test_sentinel_counter_ignores_sentinel_traffic(
    redis_sentinel_client: Redis, count_commands: Callable[..., CommandCounter]
) -> None:
    redis_sentinel_client.ping()  # connect (and discover) before the baseline
    counter = count_commands(redis_sentinel_client)
    redis_sentinel_client.set("k", "v")
    assert counter.delta(ignore=SENTINEL_TRAFFIC) == {"set": 1}
