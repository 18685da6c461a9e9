"""Throughput under gunicorn: requests/second, ours next to Flask-Session.

Each contender is served by gunicorn (4 sync workers by default) on a free
loopback port, all backed by one private redis-server (one db each), and
driven for a fixed time by ``wrk``, whose Lua script rotates through many
established session cookies; without wrk, a small threaded Python load
generator stands in.

``--app example`` (the default) serves the real example app
(``example_app.app.create_app``): ours as the app ships it, and the very same
app with Flask-Session 0.8 installed over it here, never in example_app.
``--app bench`` serves the small benchmark apps of ``contenders.py`` instead
(the views that ``bench.py`` times).

Usage: ``python benchmarks/load.py [--app example|bench] [--duration 30]
[--quick]``. Gunicorn imports ``create_app`` from this file in every worker,
configured by BENCH_* (and, for the example app, EXAMPLE_*) variables.
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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis
from markupsafe import Markup

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # example_app

import contenders as cs
import counting

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
APPS = ("example", "bench")
DEFAULT_CONTENDERS = {
    "example": ("cookie", "flask-session redis", "ours redis pickle"),
    "bench": ("none", "flask-session redis", "ours redis pickle"),
}
REFERENCE = "flask-session redis"
QUICK_SECONDS = 5
WRK_THREADS = 2
#: What every write request adds to the cart (any CATALOG key would do).
WRITE_ITEM = "coffee"
#: msgpack extension code under which Flask-Session stores Markup (workaround).
MARKUP_EXT = 1
X = "\N{MULTIPLICATION SIGN}"
NA = "\N{EM DASH}"


@dataclass(frozen=True)
class Route:
    """One request shape to drive, and the status every answer must have."""

    name: str
    method: str
    path: str
    body: str = ""
    expect: int = 200

    def headers(self, cookie: str) -> dict[str, str]:
        headers = {"Cookie": cookie} if cookie else {}
        if self.body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers


ROUTES = {
    "example": {
        "read": Route("read", "GET", "/cart"),
        "write": Route("write", "POST", "/cart/add", f"item={WRITE_ITEM}", 302),
    },
    "bench": {name: Route(name, "GET", f"/{name}") for name in cs.ROUTES},
}
#: A page each app answers with 200 without touching a store.
READY_PATH = {"example": "/login", "bench": "/untouched"}


# --------------------------------------------------------------------------
# Gunicorn entry point (runs in every worker)


def create_app() -> Any:
    """Build the contender named in the environment."""
    name = os.environ["BENCH_CONTENDER"]
    if os.environ["BENCH_APP"] == "example":
        return build_example(name, os.environ["EXAMPLE_REDIS_URL"])
    env = cs.Env(
        redis_port=int(os.environ["BENCH_REDIS_PORT"]),
        db=int(os.environ["BENCH_DB"]),
        workdir=Path(os.environ["BENCH_WORKDIR"]),
    )
    payload = cs.make_payload(os.environ["BENCH_PAYLOAD"])
    return cs.contender(name).build(env, payload)


def build_example(name: str, redis_url: str) -> Any:
    """The example app as deployed (EXAMPLE_STORE=redis), then its session swapped."""
    from flask.sessions import SecureCookieSessionInterface

    from example_app.app import create_app as create_example

    app = create_example()
    if name == "flask-session redis":
        install_flask_session(app, redis_url)
    elif name == "cookie":
        app.session_interface = SecureCookieSessionInterface()
    elif name != "ours redis pickle":
        raise ValueError(f"{name!r} cannot serve the example app")
    return app


def install_flask_session(app: Any, redis_url: str) -> None:
    """Flask-Session 0.8 with its defaults, replacing ours on the same app."""
    from flask_session import Session

    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.from_url(redis_url))
    Session(app)
    keep_markup(app.session_interface.serializer)


def keep_markup(serializer: Any) -> None:
    """Workaround: Flask-Session's msgspec cannot encode the app's Markup flashes.

    Without it, every POST /cart/add answers 500 and the cart is lost. Its own
    msgpack encoder and decoder get one extension type that carries Markup as
    UTF-8 text, so flashes come back as Markup; nothing else changes.
    """
    from msgspec.msgpack import Decoder, Encoder, Ext

    def to_ext(value: Any) -> Ext:
        if isinstance(value, Markup):
            return Ext(MARKUP_EXT, str(value).encode())
        raise NotImplementedError(f"cannot encode {type(value).__name__}")

    def from_ext(code: int, data: memoryview) -> Markup:
        if code != MARKUP_EXT:
            raise NotImplementedError(f"unknown msgpack extension {code}")
        return Markup(bytes(data).decode())

    serializer.encoder = Encoder(enc_hook=to_ext)
    serializer.decoder = Decoder(ext_hook=from_ext)


# --------------------------------------------------------------------------
# Serving one contender


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: str


def http_request(port: int, route: Route, cookie: str = "", body: str = "") -> Answer:
    """One request on a fresh connection (gunicorn's sync workers close it anyway)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = (body or route.body) or None
        conn.request(route.method, route.path, body=data, headers=route.headers(cookie))
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        return Answer(response.status, response.getheaders(), text)
    finally:
        conn.close()


def _wait_ready(
    proc: subprocess.Popen[bytes], port: int, ready: Route, log: Path
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):
            if http_request(port, ready).status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn not ready in 30 s:\n{log.read_text()[-4000:]}")


def _gunicorn_environ(
    name: str, env: cs.Env, args: argparse.Namespace
) -> dict[str, str]:
    """What create_app() reads; EXAMPLE_* is how the example app is deployed."""
    return dict(
        os.environ,
        BENCH_APP=args.app,
        BENCH_CONTENDER=name,
        BENCH_REDIS_PORT=str(env.redis_port),
        BENCH_DB=str(env.db),
        BENCH_WORKDIR=str(env.workdir),
        BENCH_PAYLOAD=args.payload,
        EXAMPLE_STORE="redis",
        EXAMPLE_REDIS_URL=env.redis_url(),
        SECRET_KEY=cs.SECRET_KEY,
    )


@contextlib.contextmanager
def gunicorn(name: str, env: cs.Env, args: argparse.Namespace) -> Iterator[int]:
    """Serve one contender on a free loopback port; yield the port."""
    port = cs.free_port()
    log = env.workdir.parent / f"gunicorn-{env.db}.log"
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(args.workers),
        "--bind", f"127.0.0.1:{port}",
        "--pythonpath", f"{HERE},{ROOT}",
        "--log-level", "warning",
        "--backlog", "512",
        "load:create_app()",
    ]  # fmt: skip
    environ = _gunicorn_environ(name, env, args)
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, env=environ, stdout=sink, stderr=sink)
        try:
            _wait_ready(proc, port, Route("ready", "GET", READY_PATH[args.app]), log)
            yield port
        finally:
            proc.terminate()  # SIGTERM: gunicorn stops its workers gracefully
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------
# Establishing sessions


def _set_cookies(answer: Answer) -> dict[str, str]:
    pairs = [v.split(";", 1)[0] for k, v in answer.headers if k.lower() == "set-cookie"]
    return dict(pair.split("=", 1) for pair in pairs)


def _cookie(jar: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def establish_bench(port: int, count: int) -> list[str]:
    """Log in `count` times; return each session's Cookie header."""
    cookies = []
    for _ in range(count):
        answer = http_request(port, Route("login", "GET", "/login"))
        if answer.status != 200:
            raise RuntimeError(f"/login answered {answer.status}")
        cookies.append(_cookie(_set_cookies(answer)))
    return cookies


def _expect(answer: Answer, status: int, what: str, ok: bool = True) -> None:
    if answer.status != status or not ok:
        raise RuntimeError(f"{what}: {answer.status}\n{answer.body[-2000:]}")


def _fill_cart(port: int, items: list[str]) -> str:
    """Add the items, then view the cart once: that pops the flash messages."""
    jar: dict[str, str] = {}
    add, view = ROUTES["example"]["write"], ROUTES["example"]["read"]
    for item in items:
        answer = http_request(port, add, _cookie(jar), f"item={item}")
        _expect(answer, 302, f"POST /cart/add item={item}")
        jar.update(_set_cookies(answer))
    answer = http_request(port, view, _cookie(jar))
    rows = answer.body.count('class="cart-item"')
    # Markup must survive the store: the flash renders as HTML, not escaped.
    flashed = "Added <strong>" in answer.body
    _expect(
        answer, 200, f"first GET /cart ({rows} rows)", rows == len(items) and flashed
    )
    jar.update(_set_cookies(answer))
    return _cookie(jar)


def _check_read_only(port: int, cookie: str, items: int) -> None:
    """A second view shows the whole cart and no flash: reads change nothing."""
    answer = http_request(port, ROUTES["example"]["read"], cookie)
    rows = answer.body.count('class="cart-item"')
    clean = rows == items and 'class="flashes"' not in answer.body
    _expect(answer, 200, f"second GET /cart ({rows} rows)", clean)


def establish_example(port: int, count: int, items: int) -> list[str]:
    """Fill `count` carts with `items` products each; return the Cookie headers."""
    from example_app.app import CATALOG

    catalog = list(CATALOG)
    chosen = [catalog[n % len(catalog)] for n in range(items)]
    cookies = [_fill_cart(port, chosen) for _ in range(count)]
    for cookie in cookies:
        _check_read_only(port, cookie, items)
    return cookies


# --------------------------------------------------------------------------
# Load generators


@dataclass
class LoadResult:
    requests_per_s: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    tool: str
    redis_per_request: dict[str, float] = field(default_factory=dict)
    stored_bytes: float | None = None


Runner = Callable[[int, Route, "list[str]", int, int], LoadResult]


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lua_script(route: Route, cookies: list[str]) -> str:
    """A wrk script: thread k sends cookies k, k+T, ... in turn; counts bad statuses.

    Disjoint cookies per thread, so no two requests of one session overlap.
    """
    listed = ",\n".join("  " + _lua_string(c) for c in cookies)
    headers = "{['Cookie'] = c"
    if route.body:
        headers += ", ['Content-Type'] = 'application/x-www-form-urlencoded'"
    headers += "}"
    body = _lua_string(route.body) if route.body else "nil"
    fmt = f"wrk.format({_lua_string(route.method)}, {_lua_string(route.path)}"
    return f"""local cookies = {{
{listed}
}}
local threads = {{}}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  i = id
  unexpected = 0
end
function request()
  local c = cookies[i % #cookies + 1]
  i = i + {WRK_THREADS}
  return {fmt}, {headers}, {body})
end
function response(status, headers, body)
  if status ~= {route.expect} then unexpected = unexpected + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("unexpected") end
  io.write(string.format("Unexpected status: %d\\n", n))
end
"""


def _wrk_ms(text: str) -> float:
    """Convert wrk's '812.00us' / '1.20ms' / '1.01s' to milliseconds."""
    number = float(re.match(r"[\d.]+", text).group(0))  # type: ignore[union-attr]
    if text.endswith("us"):
        return number / 1000
    if text.endswith("ms"):
        return number
    return number * 1000


def _wrk_int(pattern: str, out: str) -> int:
    found = re.search(pattern, out)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return int(found.group(1))


def _wrk_errors(out: str) -> int:
    """Answers with another status than expected, plus socket errors."""
    errors = _wrk_int(r"Unexpected status:\s+(\d+)", out)
    socket_line = re.search(r"Socket errors:.*", out)
    if socket_line:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_line.group(0)))
    return errors


def run_wrk(
    port: int, route: Route, cookies: list[str], seconds: int, conns: int
) -> LoadResult:
    """Drive with wrk; each thread rotates through its share of the cookies."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua_script(route, cookies))
    url = f"http://127.0.0.1:{port}{route.path}"
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{conns}", f"-d{seconds}s", "--latency"]
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
        _wrk_int(r"(\d+) requests in", out),
        _wrk_ms(p50.group(1)) if p50 else None,
        _wrk_ms(p99.group(1)) if p99 else None,
        _wrk_errors(out),
        "wrk",
    )


def run_python(
    port: int, route: Route, cookies: list[str], seconds: int, conns: int
) -> LoadResult:
    """Fallback: `conns` threads, each with its own share of the cookies."""
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(conns)]
    errors = [0] * conns

    def worker(index: int) -> None:
        mine = cookies[index::conns] or cookies
        turn = 0
        while time.monotonic() < deadline:
            turn += 1
            begin = time.perf_counter()
            try:
                answer = http_request(port, route, mine[turn % len(mine)])
                ok = answer.status == route.expect
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
        len(flat) / elapsed,
        len(flat),
        cuts[49] * 1000,
        cuts[98] * 1000,
        sum(errors),
        "python",
    )


# --------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--app", default="example", choices=APPS, help="what gunicorn serves")
    add("--duration", type=int, default=30, help="seconds per contender and route")
    add("--quick", action="store_true", help=f"{QUICK_SECONDS} s per run")
    add("--routes", default="read,write", help="read,write (bench: also untouched)")
    add("--contenders", help="comma-separated; default depends on --app")
    add("--payload", default="realistic", choices=cs.PAYLOAD_KINDS, help="bench only")
    add("--cart-items", type=int, default=5, help="example: products per cart")
    add("--workers", type=int, default=4, help="gunicorn sync workers")
    add("--connections", type=int, default=16, help="concurrent connections")
    add("--sessions", type=int, default=200, help="distinct session cookies")
    add("--python-load", action="store_true", help="use the Python generator")
    add("--output", type=Path, default=RESULTS_DIR / "load.md")
    args = parser.parse_args(argv)
    if args.contenders is None:
        args.contenders = ",".join(DEFAULT_CONTENDERS[args.app])
    args.routes = _listed(parser, args.routes, tuple(ROUTES[args.app]))
    bench = tuple(c.name for c in cs.CONTENDERS)
    known = DEFAULT_CONTENDERS["example"] if args.app == "example" else bench
    args.contenders = _listed(parser, args.contenders, known)
    return args


def _listed(
    parser: argparse.ArgumentParser, text: str, known: tuple[str, ...]
) -> list[str]:
    """Split a comma-separated option; refuse names this --app cannot serve."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"not available with this --app: {', '.join(unknown)}")
    return names


def _runner(args: argparse.Namespace) -> Runner:
    if shutil.which("wrk") and not args.python_load:
        return run_wrk
    return run_python


def _establish(name: str, port: int, args: argparse.Namespace) -> list[str]:
    if args.app == "example":
        return establish_example(port, args.sessions, args.cart_items)
    cookies = establish_bench(port, args.sessions)
    return [""] if name == "none" else cookies


def stored_bytes(client: redis.Redis) -> float | None:
    """Mean size of the values in this db: how big the sessions have grown."""
    sizes = [int(client.strlen(key)) for key in client.scan_iter(count=1000)]
    return statistics.mean(sizes) if sizes else None


def _per_request(calls: Counter[str], requests: int) -> dict[str, float]:
    return {cmd: n / max(requests, 1) for cmd, n in calls.most_common() if n}


def measure(
    name: str, env: cs.Env, routes: list[Route], args: argparse.Namespace
) -> dict[str, LoadResult]:
    """Serve one contender, establish sessions, drive each route in turn."""
    seconds = QUICK_SECONDS if args.quick else args.duration
    runner = _runner(args)
    admin = env.redis_client()
    results = {}
    with gunicorn(name, env, args) as port:
        cookies = _establish(name, port, args)
        for route in routes:
            print(f"  {name} {route.name}: {seconds} s", file=sys.stderr, flush=True)
            with counting.redis_commands(admin) as counted:
                result = runner(port, route, cookies, seconds, args.connections)
            result.redis_per_request = _per_request(counted["calls"], result.requests)
            result.stored_bytes = stored_bytes(admin)
            results[route.name] = result
    admin.close()
    return results


def _commands(per_request: dict[str, float]) -> str:
    shown = [f"{cmd} {n:.2f}" for cmd, n in per_request.items() if n >= 0.005]
    return ", ".join(shown) or "0"


def _line(route: str, name: str, r: LoadResult, ref: LoadResult | None) -> str:
    ratio = f"{r.requests_per_s / ref.requests_per_s:.2f}" if ref else NA
    p50 = NA if r.p50_ms is None else f"{r.p50_ms:.2f}"
    p99 = NA if r.p99_ms is None else f"{r.p99_ms:.2f}"
    share = 100 * r.errors / max(r.requests, 1)
    stored = NA if r.stored_bytes is None else f"{r.stored_bytes:.0f}"
    cells = [route, name, f"{r.requests_per_s:.0f}", ratio, p50, p99]
    cells += [f"{r.errors} ({share:.2f} %)", _commands(r.redis_per_request), stored]
    return "| " + " | ".join([*cells, r.tool]) + " |"


def _example_notes(args: argparse.Namespace) -> list[str]:
    """What the example-app table measures, and the one Flask-Session workaround."""
    read, write = ROUTES["example"]["read"], ROUTES["example"]["write"]
    return [
        "Served: `example_app.app.create_app()` with EXAMPLE_STORE=redis."
        " *ours redis pickle*: the app as it ships. *flask-session redis*: the"
        " same app with Flask-Session 0.8 (defaults: msgpack, refresh each"
        " request) installed over it by load.py. *cookie*: the same app on"
        " Flask's signed-cookie session, no store (baseline; wrk resends the"
        " original cookie, so its writes do not accumulate).\n",
        f"Setup: {args.sessions} sessions per contender, each {args.cart_items}"
        f" {X} `POST /cart/add`, then one `GET /cart` that pops the flash messages"
        " (checked: all items listed, Markup flash rendered as HTML), then a"
        " second `GET /cart` checked to show the cart and no flash.\n",
        f"**read**: `{read.method} {read.path}` (renders the cart; the app"
        f" changes nothing), expects {read.expect}. **write**: `{write.method}"
        f" {write.path}` with `{write.body}`, expects {write.expect}; the"
        " redirect is not followed, so each write adds one item and one flash"
        " message to its session (sessions grow during the run, more for the"
        " faster contender).\n",
        "Workaround for Flask-Session: its msgspec encoder cannot encode the"
        " app's `Markup` flash messages (POST /cart/add answers 500 without"
        " it); load.py gives Flask-Session's own msgpack encoder/decoder one"
        " extension type carrying Markup as UTF-8 text (`enc_hook`/`ext_hook`)."
        " Nothing else is changed.\n",
    ]


def render(
    results: dict[str, dict[str, LoadResult]],
    routes: list[Route],
    args: argparse.Namespace,
) -> str:
    seconds = QUICK_SECONDS if args.quick else args.duration
    what = "the example app" if args.app == "example" else "the benchmark apps"
    lines = [
        f"# Throughput under gunicorn: {what}\n",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · gunicorn {args.workers} sync workers"
        f" · {args.connections} connections · {args.sessions} sessions"
        + (f" · payload {args.payload}" if args.app == "bench" else "")
        + f" · {seconds} s per run · {os.cpu_count()} CPUs"
        " shared by the load generator, gunicorn and redis-server\n",
        *(_example_notes(args) if args.app == "example" else []),
        "errors: answers with another status than expected, plus socket"
        " errors (share of requests). Redis commands/request: INFO"
        " commandstats over the run. stored B: mean stored session after the"
        " run.\n",
        f"| route | contender | requests/s | {X} Flask-Session | p50 ms | p99 ms "
        "| errors | Redis commands/request | stored B | tool |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for route in routes:
        ref = results.get(REFERENCE, {}).get(route.name)
        for name, per_route in results.items():
            if route.name in per_route:
                lines.append(_line(route.name, name, per_route[route.name], ref))
    return "\n".join(lines) + "\n"


def _run_all(
    names: list[str], routes: list[Route], args: argparse.Namespace
) -> dict[str, dict[str, LoadResult]]:
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
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    routes = [ROUTES[args.app][name] for name in args.routes]
    report = render(_run_all(args.contenders, routes, args), routes, args)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
