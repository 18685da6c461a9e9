"""Throughput under gunicorn: requests/second, ours next to Flask-Session.

Each contender is served by gunicorn (4 sync workers by default) on a free
loopback port, all backed by one private redis-server, and driven for a fixed
time by ``wrk``, whose Lua script rotates through many established session
cookies; without wrk, a small threaded Python load generator stands in.

Usage: ``python benchmarks/load.py [--duration 30] [--quick]``. Gunicorn imports
``create_app`` from this file in every worker, configured by BENCH_* variables.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contenders as cs

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
DEFAULT_CONTENDERS = ("none", "flask-session redis", "ours redis pickle")
REFERENCE = "flask-session redis"
QUICK_SECONDS = 5
X = "\N{MULTIPLICATION SIGN}"
NA = "\N{EM DASH}"


def create_app() -> Any:
    """Gunicorn entry point: build the contender named in the environment."""
    env = cs.Env(
        redis_port=int(os.environ["BENCH_REDIS_PORT"]),
        db=int(os.environ["BENCH_DB"]),
        workdir=Path(os.environ["BENCH_WORKDIR"]),
    )
    payload = cs.make_payload(os.environ["BENCH_PAYLOAD"])
    return cs.contender(os.environ["BENCH_CONTENDER"]).build(env, payload)


# --------------------------------------------------------------------------
# Serving one contender


def http_get(port: int, path: str, cookie: str = "") -> tuple[int, list[Any]]:
    """One GET on a fresh connection; returns status and headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheaders()
    finally:
        conn.close()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):
            if http_get(port, "/untouched")[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn not ready in 30 s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def gunicorn(name: str, env: cs.Env, args: argparse.Namespace) -> Iterator[int]:
    """Serve one contender on a free loopback port; yield the port."""
    port = cs.free_port()
    log = env.workdir.parent / f"gunicorn-{env.db}.log"
    environ = dict(
        os.environ,
        BENCH_CONTENDER=name,
        BENCH_REDIS_PORT=str(env.redis_port),
        BENCH_DB=str(env.db),
        BENCH_WORKDIR=str(env.workdir),
        BENCH_PAYLOAD=args.payload,
    )
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(args.workers),
        "--bind", f"127.0.0.1:{port}",
        "--pythonpath", str(HERE),
        "--log-level", "warning",
        "--backlog", "512",
        "load:create_app()",
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, env=environ, stdout=sink, stderr=sink)
        try:
            _wait_ready(proc, port, log)
            yield port
        finally:
            proc.terminate()  # SIGTERM: gunicorn stops its workers gracefully
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def establish_sessions(port: int, count: int) -> list[str]:
    """Log in `count` times; return each session's Cookie header."""
    cookies = []
    for _ in range(count):
        status, headers = http_get(port, "/login")
        if status != 200:
            raise RuntimeError(f"/login answered {status}")
        pairs = [v.split(";", 1)[0] for k, v in headers if k.lower() == "set-cookie"]
        cookies.append("; ".join(pairs))
    return cookies


# --------------------------------------------------------------------------
# Load generators


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    tool: str


Runner = Callable[[int, str, "list[str]", int, int], LoadResult]


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lua_script(path: str, cookies: list[str]) -> str:
    """A wrk script that sends the cookies in turn, one per request."""
    listed = ",\n".join("  " + _lua_string(c) for c in cookies)
    request = f"wrk.format('GET', {_lua_string(path)}, {{['Cookie'] = cookies[i]}})"
    return (
        f"local cookies = {{\n{listed}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #cookies + 1\n"
        f"  return {request}\n"
        "end\n"
    )


def _wrk_ms(text: str) -> float:
    """Convert wrk's '812.00us' / '1.20ms' / '1.01s' to milliseconds."""
    number = float(re.match(r"[\d.]+", text).group(0))  # type: ignore[union-attr]
    if text.endswith("us"):
        return number / 1000
    if text.endswith("ms"):
        return number
    return number * 1000


def _wrk_errors(out: str) -> int:
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_line = re.search(r"Socket errors:.*", out)
    if socket_line:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_line.group(0)))
    return errors


def run_wrk(
    port: int, path: str, cookies: list[str], seconds: int, conns: int
) -> LoadResult:
    """Drive with wrk (2 threads); each thread rotates through all cookies."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua_script(path, cookies))
    url = f"http://127.0.0.1:{port}{path}"
    command = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency"]
    try:
        out = subprocess.run(
            [*command, "-s", script.name, url],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return LoadResult(
        float(rps.group(1)),
        _wrk_ms(p50.group(1)) if p50 else None,
        _wrk_ms(p99.group(1)) if p99 else None,
        _wrk_errors(out),
        "wrk",
    )


def run_python(
    port: int, path: str, cookies: list[str], seconds: int, conns: int
) -> LoadResult:
    """Fallback: `conns` threads, one request per connection, stops at a deadline."""
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(conns)]
    errors = [0] * conns

    def worker(index: int) -> None:
        turn = index
        while time.monotonic() < deadline:
            turn = (turn + 1) % len(cookies)
            begin = time.perf_counter()
            try:
                ok = http_get(port, path, cookies[turn])[0] == 200
            except OSError:
                ok = False
            errors[index] += not ok
            latencies[index].append(time.perf_counter() - begin)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(conns)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    flat = sorted(x for per_thread in latencies for x in per_thread)
    cuts = statistics.quantiles(flat, n=100) if len(flat) > 1 else [0.0] * 99
    return LoadResult(
        len(flat) / elapsed, cuts[49] * 1000, cuts[98] * 1000, sum(errors), "python"
    )


# --------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=int, default=30, help="seconds per contender and route")
    add("--quick", action="store_true", help=f"{QUICK_SECONDS} s per run")
    add("--routes", default="read,write", help="comma-separated: untouched,read,write")
    add("--contenders", default=",".join(DEFAULT_CONTENDERS))
    add("--payload", default="realistic", choices=cs.PAYLOAD_KINDS)
    add("--workers", type=int, default=4, help="gunicorn sync workers")
    add("--connections", type=int, default=16, help="concurrent connections")
    add("--sessions", type=int, default=200, help="distinct session cookies")
    add("--python-load", action="store_true", help="use the Python generator")
    add("--output", type=Path, default=RESULTS_DIR / "load.md")
    return parser.parse_args(argv)


def _runner(args: argparse.Namespace) -> Runner:
    if shutil.which("wrk") and not args.python_load:
        return run_wrk
    return run_python


def measure(
    name: str, env: cs.Env, routes: list[str], args: argparse.Namespace
) -> dict[str, LoadResult]:
    """Serve one contender and drive each route for the configured time."""
    seconds = QUICK_SECONDS if args.quick else args.duration
    runner = _runner(args)
    results = {}
    with gunicorn(name, env, args) as port:
        cookies = establish_sessions(port, args.sessions)
        if name == "none":
            cookies = [""]
        for route in routes:
            print(f"  {name} /{route}: {seconds} s", file=sys.stderr, flush=True)
            results[route] = runner(
                port, f"/{route}", cookies, seconds, args.connections
            )
    return results


def _line(route: str, name: str, r: LoadResult, ref: LoadResult | None) -> str:
    ratio = f"{r.requests_per_s / ref.requests_per_s:.2f}" if ref else NA
    p50 = NA if r.p50_ms is None else f"{r.p50_ms:.2f}"
    p99 = NA if r.p99_ms is None else f"{r.p99_ms:.2f}"
    cells = [route, name, f"{r.requests_per_s:.0f}", ratio, p50, p99]
    return "| " + " | ".join([*cells, str(r.errors), r.tool]) + " |"


def render(
    results: dict[str, dict[str, LoadResult]],
    routes: list[str],
    args: argparse.Namespace,
) -> str:
    seconds = QUICK_SECONDS if args.quick else args.duration
    lines = [
        "# Throughput under gunicorn\n",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · gunicorn {args.workers} sync workers"
        f" · {args.connections} connections · {args.sessions} sessions"
        f" · payload {args.payload} · {seconds} s per run · {os.cpu_count()} CPUs"
        " shared by the load generator, gunicorn and redis-server\n",
        f"| route | contender | requests/s | {X} Flask-Session | p50 ms | p99 ms "
        "| errors | tool |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for route in routes:
        ref = results.get(REFERENCE, {}).get(route)
        for name, per_route in results.items():
            if route in per_route:
                lines.append(_line(route, name, per_route[route], ref))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    results: dict[str, dict[str, LoadResult]] = {}
    workroot = tempfile.TemporaryDirectory(prefix="bench-load-")
    with workroot as tmp, cs.RedisServer() as server:
        print(f"redis-server on 127.0.0.1:{server.port}", file=sys.stderr)
        for db, name in enumerate(names, start=1):
            reason = cs.contender(name).unavailable()
            if reason:
                print(f"  {name}: not available ({reason})", file=sys.stderr)
                continue
            workdir = Path(tmp) / f"store-{db}"
            workdir.mkdir()
            env = cs.Env(server.port, db, workdir)
            results[name] = measure(name, env, routes, args)
    report = render(results, routes, args)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
