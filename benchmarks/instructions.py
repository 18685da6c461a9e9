"""Instructions per request, counted by callgrind: the same on any machine.

Wall-clock timings move with the machine and its neighbours; instruction
counts do not, so they show what a change to the request path really did.
Each (contender, route) runs in a fresh Python under ``valgrind
--tool=callgrind`` twice, with two request counts; the difference divided by
the difference in requests is the cost of one request, start-up excluded.

The store is an in-memory one that keeps what the login created and
answers every later save without changing it, so every measured request
does the same work and no network or disk is involved:

- ``none``: the app without a session (as in ``bench.py``);
- ``dict``: Flask with a session that is a plain dict and saves nothing,
  the least any session interface can cost;
- ``ours``: ``PickleSession`` in pickle mode on that store.

Usage: ``python benchmarks/instructions.py [--routes read,write,untouched]``
(needs valgrind; runs use every CPU, about a minute per route on two).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import contenders as cs

CONTENDERS = ("none", "dict", "ours")
#: Requests in the short and the long run; their difference is what counts.
COUNTS = (300, 1300)
_COLLECTED = re.compile(r"Collected : (\d+)")


def kept_store() -> t.Any:
    """A store that keeps created records and accepts every save unchanged."""
    from flask_picklesession import Store

    class KeptStore(Store):
        def __init__(self) -> None:
            self.records: dict[str, bytes] = {}

        def load(self, key: str, ttl: int | None = None) -> bytes | None:
            return self.records.get(key)

        def create(self, key: str, record: bytes, ttl: int) -> bool:
            self.records[key] = record
            return True

        def patch(self, key: str, ops: t.Any, *args: t.Any) -> int:
            return 1

        def touch(self, key: str, ttl: int) -> bool:
            return True

        def delete(self, key: str) -> bool:
            return self.records.pop(key, None) is not None

        def take(self, key: str) -> bytes | None:
            return self.records.pop(key, None)

        def scan(self, prefix: str) -> t.Any:
            return iter(list(self.records))

        def info(self, key: str) -> t.Any:
            return None

    return KeptStore()


def build_app(contender: str) -> t.Any:
    """The benchmark app of ``contender`` with the realistic payload."""
    from flask.sessions import SecureCookieSession, SessionInterface

    payload = cs.make_payload("realistic")
    env = cs.Env(0, 0, Path(tempfile.mkdtemp()))
    if contender == "none":
        return cs.build_none(env, payload)
    app = cs._base_app(contender)
    if contender == "dict":

        class DictSessions(SessionInterface):
            def open_session(self, app: t.Any, request: t.Any) -> t.Any:
                return SecureCookieSession(copy.copy(payload))

            def save_session(self, app: t.Any, session: t.Any, response: t.Any) -> None:
                return None

        app.session_interface = DictSessions()
    else:
        from flask_picklesession import PickleSession

        app.session_interface = PickleSession(store=kept_store())
    cs._add_routes(app, cs._session_state, payload)
    return app


def child(contender: str, route: str, requests: int) -> None:
    """Log in, warm up, then make ``requests`` requests (counted by the parent)."""
    import bench

    app = build_app(contender)
    cookie = ""
    if contender == "ours":
        _, headers, _ = bench.Caller(app, "/login", "").request()
        cookie = bench.cookie_header(headers)
    caller = bench.Caller(app, "/" + route, cookie)
    status, _, _ = caller.request()
    if not status.startswith("200"):
        raise SystemExit(f"{contender} /{route} answered {status}")
    caller.timed(200)
    caller.timed(requests)


def count(valgrind: str, contender: str, route: str, requests: int) -> int:
    """Instructions of a whole child run under callgrind."""
    command = [
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        contender,
        route,
        str(requests),
    ]
    # A fixed hash seed: str hashes shape dict and set layouts, and so the count.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(
    valgrind: str, cells: list[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Instructions per request of each (contender, route), runs in parallel."""
    jobs = [(cell, n) for cell in cells for n in COUNTS]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        totals = list(pool.map(lambda job: count(valgrind, *job[0], job[1]), jobs))
    runs = dict(zip(jobs, totals))
    span = COUNTS[1] - COUNTS[0]
    return {c: (runs[c, COUNTS[1]] - runs[c, COUNTS[0]]) // span for c in cells}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", default="read,write,untouched")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CI: make every cell's requests once, uncounted",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    routes = [r for r in args.routes.split(",") if r]
    if args.child:
        contender, route, requests = args.child
        child(contender, route, int(requests))
        return 0
    if args.smoke:
        for route in routes:
            for contender in CONTENDERS:
                child(contender, route, 5)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)")
        return 2
    counts = per_request(valgrind, [(c, r) for r in routes for c in CONTENDERS])
    print("| route | " + " | ".join(CONTENDERS) + " | ours - dict |")
    print("|---|" + "---:|" * (len(CONTENDERS) + 1))
    for route in routes:
        cells = " | ".join(f"{counts[c, route]:,}" for c in CONTENDERS)
        added = counts["ours", route] - counts["dict", route]
        print(f"| {route} | {cells} | {added:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
