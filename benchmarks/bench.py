"""Per-request cost of server-side Flask sessions, all contenders in one run.

Contenders: no session, Flask's cookie session, Flask-Session 0.8 (Redis and
cachelib FileSystemCache), flask_picklesession (Redis and filesystem, pickle
and JSON) and the raw redis-py floor (a plain GET; a GET then a SET of a
payload-sized value), against a private redis-server this script starts.

Every request goes straight into ``app.wsgi_app`` with a pre-built environ, so
each contender pays the same, minimal harness overhead. Usage:
``python benchmarks/bench.py [--quick] [--strict]``; see README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis
from flask import Flask
from werkzeug.test import EnvironBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contenders as cs
import counting

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_HAS_LOADAVG = hasattr(os, "getloadavg")
X = "\N{MULTIPLICATION SIGN}"
NA = "\N{EM DASH}"


@dataclass(frozen=True)
class Settings:
    """How hard to measure: --quick trades precision for a < 60 s run."""

    rounds: int
    batch_ms: float  # target wall time of one timed batch
    warmup: int
    count_requests: int
    quick: bool


FULL = Settings(rounds=31, batch_ms=20.0, warmup=200, count_requests=200, quick=False)
QUICK = Settings(rounds=15, batch_ms=6.0, warmup=60, count_requests=50, quick=True)


# --------------------------------------------------------------------------
# Driving the WSGI app directly


def _ignore_start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    return None


class Caller:
    """Calls one route of one app with a fixed, pre-built environ."""

    def __init__(self, app: Flask, path: str, cookie: str) -> None:
        headers = [("Cookie", cookie)] if cookie else []
        builder = EnvironBuilder(path=path, method="GET", headers=headers)
        self.base = builder.get_environ()
        builder.close()
        self.wsgi: Any = app.wsgi_app  # typed loosely: plain WSGI calls below

    def request(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """One request, keeping status, headers and body (never timed)."""
        seen: dict[str, Any] = {}

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            seen["status"], seen["headers"] = status, list(headers)

        env = dict(self.base)
        env["wsgi.input"] = io.BytesIO()
        body_iter = self.wsgi(env, start_response)
        try:
            body = b"".join(body_iter)
        finally:
            body_iter.close()
        return seen["status"], seen["headers"], body

    def timed(self, n: int) -> int:
        """Run n requests back to back; return the elapsed nanoseconds."""
        wsgi, base, start_response = self.wsgi, self.base, _ignore_start_response
        begin = time.perf_counter_ns()
        for _ in range(n):
            env = base.copy()
            env["wsgi.input"] = io.BytesIO()
            body_iter = wsgi(env, start_response)
            for _chunk in body_iter:
                pass
            body_iter.close()
        return time.perf_counter_ns() - begin


def cookie_header(headers: list[tuple[str, str]]) -> str:
    """Turn Set-Cookie response headers into the Cookie header a browser sends."""
    pairs = []
    for name, value in headers:
        if name.lower() == "set-cookie":
            pair = value.split(";", 1)[0].strip()
            if pair.partition("=")[2]:
                pairs.append(pair)
    return "; ".join(pairs)


# --------------------------------------------------------------------------
# Setup: one app per (payload, contender), each with its own Redis db and dir


@dataclass
class Subject:
    """A built contender app with an established session."""

    payload_kind: str
    contender: cs.Contender
    env: cs.Env
    app: Flask
    cookie: str = ""
    stored: dict[str, Any] = field(default_factory=dict)
    callers: dict[str, Caller] = field(default_factory=dict)

    @property
    def has_session(self) -> bool:
        return self.contender.family not in ("none", "floor")


def _file_sizes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _redis_sizes(client: redis.Redis) -> dict[str, Any]:
    """STRLEN (value bytes) and MEMORY USAGE of every session key in the db."""
    strlen = memory = keys = 0
    for key in client.scan_iter(match="session:*"):
        kind = client.type(key)
        if kind == b"string":
            strlen += client.strlen(key)
        elif kind == b"hash":
            fields = client.hkeys(key)
            strlen += sum(len(f) + client.hstrlen(key, f) for f in fields)
        memory += client.memory_usage(key) or 0
        keys += 1
    return {"bytes": strlen, "memory": memory, "units": keys}


def establish(subject: Subject) -> None:
    """Log in once, keep the cookie, and record what the store now holds."""
    store = subject.contender.store
    before = _file_sizes(subject.env.workdir) if store == "fs" else {}
    status, headers, _ = Caller(subject.app, "/login", "").request()
    if not status.startswith("200"):
        raise RuntimeError(f"{subject.contender.name}: /login answered {status}")
    if not subject.has_session:
        return
    subject.cookie = cookie_header(headers)
    if store == "redis":
        subject.stored = _redis_sizes(subject.env.redis_client())
    elif store == "fs":
        after = _file_sizes(subject.env.workdir)
        # new non-empty files only: shared lock or counter files are per store
        new = [size for path, size in after.items() if path not in before and size]
        subject.stored = {"bytes": sum(new), "memory": None, "units": len(new)}
    subject.stored["cookie"] = len(subject.cookie)


def verify(subject: Subject, expected_summary: str) -> None:
    """Fail loudly if a contender does not really round-trip the session."""
    name = subject.contender.name
    for route, caller in subject.callers.items():
        status, _, body = caller.request()
        if not status.startswith("200"):
            raise RuntimeError(f"{name} /{route}: {status}")
        if route == "read" and body.decode() != expected_summary:
            got = body.decode()
            raise RuntimeError(f"{name} /read: {got!r}, expected {expected_summary!r}")
    # the harness never updates the cookie, so only server-side stores count up
    if "write" in subject.callers and subject.contender.family in cs.SERVER_SIDE:
        first = int(subject.callers["write"].request()[2])
        second = int(subject.callers["write"].request()[2])
        if second != first + 1:
            raise RuntimeError(f"{name}: /write did not persist ({first}, {second})")


def _skip_reason(item: cs.Contender, payload_kind: str) -> str | None:
    reason = item.unavailable()
    if reason is None and item.family == "cookie" and payload_kind == "large":
        reason = "a ~100 KB cookie is far over the 4 KB browsers keep"
    return reason


def build_subjects(
    server: cs.RedisServer, workroot: Path, wanted: Callable[[cs.Contender], bool]
) -> tuple[list[Subject], dict[str, str]]:
    """Build, log in and verify every available contender for every payload."""
    subjects: list[Subject] = []
    skipped: dict[str, str] = {}
    db = 0
    for payload_kind in cs.PAYLOAD_KINDS:
        payload = cs.make_payload(payload_kind)
        expected = cs.summarize(payload, tuple(payload))
        for item in filter(wanted, cs.CONTENDERS):
            label = f"{item.name} ({payload_kind})"
            reason = _skip_reason(item, payload_kind)
            if reason is not None:
                skipped[label] = reason
                continue
            db += 1
            workdir = workroot / f"{payload_kind}-{db}"
            workdir.mkdir(parents=True)
            env = cs.Env(redis_port=server.port, db=db, workdir=workdir)
            try:
                subject = Subject(payload_kind, item, env, item.build(env, payload))
                establish(subject)
                subject.callers = {
                    r: Caller(subject.app, f"/{r}", subject.cookie) for r in item.routes
                }
                verify(subject, expected)
            except Exception as exc:
                if item.family != "ours":
                    raise
                skipped[label] = f"failed: {type(exc).__name__}: {exc}"
                continue
            subjects.append(subject)
    return subjects, skipped


# --------------------------------------------------------------------------
# Counting pass: store work per request (never during timing)


@dataclass
class OpCount:
    """Store work per request: commands or file ops, round trips, server time."""

    commands: float
    round_trips: float | None
    detail: dict[str, float]
    server_us: float | None = None  # Redis CPU time spent on the request's commands

    def describe(self) -> str:
        parts = (f"{k} {v:g}" for k, v in sorted(self.detail.items()))
        return ", ".join(parts) or "none"


def _per_request(counts: dict[str, int], n: int) -> dict[str, float]:
    return {k: v / n for k, v in counts.items() if v}


def count_ops(subject: Subject, route: str, n: int, admin: redis.Redis) -> OpCount:
    """Run n requests with counters on and return the store work per request."""
    caller = subject.callers[route]
    if subject.contender.store == "fs":
        files = counting.count_file_ops(subject.env.workdir)
        with files as ops, counting.count_round_trips() as rt:
            for _ in range(n):
                caller.request()
        detail = _per_request(ops, n)
        return OpCount(sum(detail.values()), rt["round trips"] / n, detail)
    with counting.redis_commands(admin) as stats, counting.count_round_trips() as rt:
        for _ in range(n):
            caller.request()
    detail = _per_request(stats["calls"], n)
    server_us = sum(stats["usec"].values()) / n
    return OpCount(sum(detail.values()), rt["round trips"] / n, detail, server_us)


# --------------------------------------------------------------------------
# Timed pass

Cell = tuple[str, str, str]  # payload kind, route, contender name


def calibrate(caller: Caller, warmup: int, batch_ms: float) -> int:
    """Warm the path up and pick a batch size worth about batch_ms of wall time."""
    per_request = max(caller.timed(warmup) / warmup, 1.0)
    return max(3, min(500, int(batch_ms * 1e6 / per_request)))


def run_timing(
    cells: dict[Cell, Caller], settings: Settings, log: Callable[[str], None]
) -> dict[Cell, list[float]]:
    """Interleaved rounds; the cell order rotates each round so drift is shared."""
    batches = {
        cell: calibrate(caller, settings.warmup, settings.batch_ms)
        for cell, caller in cells.items()
    }
    order = list(cells)
    samples: dict[Cell, list[float]] = {cell: [] for cell in order}
    for rnd in range(settings.rounds):
        shift = rnd * len(order) // settings.rounds
        gc.collect()
        for cell in order[shift:] + order[:shift]:
            n = batches[cell]
            samples[cell].append(cells[cell].timed(n) / n / 1000.0)
        if (rnd + 1) % max(1, settings.rounds // 4) == 0:
            log(f"  round {rnd + 1}/{settings.rounds}")
    return samples


# --------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One table row: a contender on one route with one payload."""

    payload: str
    route: str
    name: str
    family: str
    store: str
    median: float
    iqr_pct: float
    ops: OpCount
    added: float = 0.0
    fs_total: float | None = None
    fs_added: float | None = None
    floor_total: float | None = None
    floor_added: float | None = None


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 4:
        return min(values), statistics.median(values), max(values)
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def floor_for(route: str) -> str:
    """The raw floor a route is compared with."""
    return "floor GET+SET" if route == "write" else "floor GET"


def flask_session_for(store: str) -> str:
    """The Flask-Session contender with the same kind of store."""
    return f"flask-session {store}"


def _add_ratios(row: Row, medians: dict[Cell, float]) -> None:
    none = medians.get((row.payload, row.route, "none"), 0.0)
    row.added = row.median - none
    if not row.store or row.family in ("none", "floor"):
        return
    theirs = medians.get((row.payload, row.route, flask_session_for(row.store)))
    if theirs is not None and row.family != "flask-session":
        row.fs_total = _ratio(row.median, theirs)
        row.fs_added = _ratio(row.added, theirs - none)
    floor = medians.get((row.payload, row.route, floor_for(row.route)))
    if floor is not None:
        row.floor_total = _ratio(row.median, floor)
        row.floor_added = _ratio(row.added, floor - none)


def build_rows(
    samples: dict[Cell, list[float]], ops: dict[Cell, OpCount], subjects: list[Subject]
) -> list[Row]:
    """Medians, cost added over no session, and both kinds of ratio."""
    meta = {(s.payload_kind, s.contender.name): s.contender for s in subjects}
    medians: dict[Cell, float] = {}
    rows = []
    for cell, values in samples.items():
        payload, route, name = cell
        q1, med, q3 = _quartiles(values)
        medians[cell] = med
        item = meta[(payload, name)]
        spread = 100.0 * (q3 - q1) / med
        rows.append(
            Row(payload, route, name, item.family, item.store, med, spread, ops[cell])
        )
    for row in rows:
        _add_ratios(row, medians)
    order = {c.name: i for i, c in enumerate(cs.CONTENDERS)}
    rows.sort(
        key=lambda r: (
            cs.PAYLOAD_KINDS.index(r.payload),
            cs.ROUTES.index(r.route),
            order[r.name],
        )
    )
    return rows


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return NA if value is None else f"{value:{spec}}"


TIMING_HEADER = (
    f"| payload | route | contender | median µs | IQR | +µs over none "
    f"| {X}FS total | {X}FS added | {X}floor total | {X}floor added "
    f"| store cmds/req | round trips/req | Redis server µs/req "
    f"| detail per request |\n"
    f"|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
)


def _timing_line(r: Row) -> str:
    session_less = r.family in ("none", "cookie")
    on_redis = r.store == "redis"
    cells = [
        r.payload,
        r.route,
        r.name,
        f"{r.median:.1f}",
        f"{r.iqr_pct:.0f}%",
        f"{r.added:+.1f}",
        _fmt(r.fs_total),
        _fmt(r.fs_added),
        _fmt(r.floor_total),
        _fmt(r.floor_added),
        NA if session_less else f"{r.ops.commands:.2f}",
        _fmt(r.ops.round_trips) if on_redis else NA,
        _fmt(r.ops.server_us, ".1f") if on_redis else NA,
        NA if session_less else r.ops.describe(),
    ]
    return "| " + " | ".join(cells) + " |"


def timing_table(rows: list[Row]) -> str:
    return TIMING_HEADER + "\n".join(_timing_line(r) for r in rows) + "\n"


def storage_table(subjects: list[Subject]) -> str:
    lines = [
        "| payload | contender | stored bytes | MEMORY USAGE | keys/files "
        "| cookie bytes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in filter(lambda s: s.has_session, subjects):
        st = s.stored
        lines.append(
            f"| {s.payload_kind} | {s.contender.name} | {st.get('bytes', 0)} "
            f"| {_fmt(st.get('memory'), 'd')} | {st.get('units', 0)} "
            f"| {st.get('cookie', 0)} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Targets (informational unless --strict)


@dataclass
class Check:
    ok: bool
    text: str


def _at_most(label: str, value: float | None, limit: float, also: str = "") -> Check:
    ok = value is not None and value <= limit
    return Check(ok, f"{label} = {_fmt(value)} (target ≤ {limit:g}){also}")


def _exactly(label: str, value: float, want: float, also: str = "") -> Check:
    text = f"{label} = {value:g} (target {want:g}){also}"
    return Check(abs(value - want) < 1e-9, text)


def _untouched_checks(tag: str, row: Row) -> list[Check]:
    return [
        _exactly(f"{tag} untouched: store ops/req", row.ops.commands, 0),
        _at_most(f"{tag} untouched: {X}FS added", row.fs_added, 0.05),
    ]


def _redis_read_checks(tag: str, row: Row) -> list[Check]:
    return [
        _exactly(
            f"{tag} read: store cmds/req",
            row.ops.commands,
            1,
            f" ({row.ops.describe()})",
        ),
        _at_most(
            f"{tag} read: {X}floor GET total",
            row.floor_total,
            1.15,
            f"  [{X}floor added {_fmt(row.floor_added)}]",
        ),
        _at_most(
            f"{tag} read: {X}FS added",
            row.fs_added,
            0.45,
            f"  [{X}FS total {_fmt(row.fs_total)}]",
        ),
    ]


def _fs_read_checks(tag: str, row: Row) -> list[Check]:
    writes = sum(row.ops.detail.get(k, 0.0) for k in counting.FILE_WRITES)
    return [
        _exactly(f"{tag} read: file writes/req", writes, 0, f" ({row.ops.describe()})"),
        _at_most(
            f"{tag} read: {X}FS fs added",
            row.fs_added,
            0.5,
            f"  [{X}FS total {_fmt(row.fs_total)}]",
        ),
    ]


def _redis_write_checks(tag: str, read: Row, write: Row) -> list[Check]:
    extra = (write.ops.round_trips or 0.0) - (read.ops.round_trips or 0.0)
    return [
        _exactly(
            f"{tag} write: round trips beyond read",
            extra,
            1,
            f" ({write.ops.describe()})",
        ),
        _at_most(
            f"{tag} write: {X}floor GET+SET total",
            write.floor_total,
            1.1,
            f"  [{X}floor added {_fmt(write.floor_added)}]",
        ),
    ]


def _storage_check(tag: str, ours: Subject, theirs: Subject) -> Check:
    mine, other = ours.stored.get("bytes", 0), theirs.stored.get("bytes", 0)
    ratio = mine / other if other else None
    also = f"  [{mine} vs {other} bytes]"
    return _at_most(f"{tag} stored bytes / Flask-Session's", ratio, 1.0, also)


def evaluate_targets(rows: list[Row], subjects: list[Subject]) -> list[Check]:
    """Every target that applies to each of our contenders, per payload."""
    by_row = {(r.payload, r.route, r.name): r for r in rows}
    by_subject = {(s.payload_kind, s.contender.name): s for s in subjects}
    checks: list[Check] = []
    for (payload, name), ours in by_subject.items():
        if ours.contender.family != "ours":
            continue
        tag, store = f"[{payload}] {name}", ours.contender.store
        untouched = by_row.get((payload, "untouched", name))
        read = by_row.get((payload, "read", name))
        write = by_row.get((payload, "write", name))
        if untouched:
            checks += _untouched_checks(tag, untouched)
        if read and store == "redis":
            checks += _redis_read_checks(tag, read)
        if read and store == "fs":
            checks += _fs_read_checks(tag, read)
        if read and write and store == "redis":
            checks += _redis_write_checks(tag, read, write)
        theirs = by_subject.get((payload, flask_session_for(store)))
        if theirs:
            checks.append(_storage_check(tag, ours, theirs))
        overwrite = by_row.get((payload, "write", "ours redis overwrite"))
        if write and overwrite and name == "ours redis pickle":
            checks.append(_merge_cost_check(tag, write, overwrite))
    return checks


def _merge_cost_check(tag: str, merge: Row, overwrite: Row) -> Check:
    """Issue: merging may cost at most 10% more than a plain overwrite."""
    ratio = _ratio(merge.median, overwrite.median)
    also = f"  [{merge.median:.0f} vs {overwrite.median:.0f} µs]"
    return _at_most(f"{tag} write: merge / plain overwrite", ratio, 1.1, also)


# --------------------------------------------------------------------------
# Report

LEGEND = f"""\
Columns:
- **median µs**: median over rounds of the mean wall time of one request in
  that round's batch, calling `app.wsgi_app` directly: Flask routing, the view
  and the session layer.
- **IQR**: interquartile range of the per-round values, as % of the median.
- **+µs over none**: median µs minus the "none" contender's median (same route
  and payload).
- **{X}FS total** = median µs / Flask-Session's median µs (same store kind,
  route and payload).
- **{X}FS added** = µs added over none / Flask-Session's µs added over none.
- **{X}floor total** = median µs / the raw floor's median µs. The floor is
  "floor GET" for untouched and read, "floor GET+SET" for write: the
  no-session app plus raw redis-py calls on a value the size of the pickled
  payload (no deserialization).
- **{X}floor added** = µs added over none / the floor's µs added over none.
- **store cmds/req**: Redis: INFO commandstats delta / N, INFO excluded;
  commands a Lua script runs count too (a merge shows as evalsha 1 plus its
  get/set). Filesystem: file opens (open_r/open_w), replaces, removes, stats
  and listings under the store directory / N, counted by wrapping `open` and
  `os` functions in a separate, untimed pass.
- **round trips/req**: redis-py socket writes / N (client side; a pipeline is
  one).
- **Redis server µs/req**: commandstats `usec` delta / N: time Redis's single
  thread spent on this request's commands, serving no other client meanwhile.
- Targets use {X}FS **added** for Flask-Session and {X}floor **total** for the
  floors.
"""


def _header(settings: Settings, elapsed: float, placement: str) -> str:
    mode = "quick" if settings.quick else "full"
    versions = " · ".join(f"{k} {v}" for k, v in cs.versions().items())
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if _HAS_LOADAVG else "n/a"
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · mode {mode} · {settings.rounds} rounds"
        f" · {platform.machine()} {X} {os.cpu_count()} CPUs, {placement}"
        f" · load average at the end {load} (other work on the machine shows as IQR)"
        f" · {versions} · run took {elapsed:.0f} s\n"
    )


def render(
    rows: list[Row],
    subjects: list[Subject],
    skipped: dict[str, str],
    checks: list[Check],
    header: str,
) -> str:
    out = ["# Session benchmark\n\n", header]
    out += ["\n## Time and store work per request\n\n", timing_table(rows)]
    out += ["\n## Storage per session (right after login)\n\n", storage_table(subjects)]
    out.append(
        "\nstored bytes: Redis STRLEN of the session key (a hash: field + value bytes);"
        " filesystem: size of the non-empty file(s) the login created. MEMORY USAGE is"
        " Redis's own figure. cookie bytes: the `name=value` the browser sends back.\n"
    )
    if skipped:
        out.append("\n## Not available\n\n")
        out += [f"- {name}: not available ({why})\n" for name, why in skipped.items()]
    out.append("\n## Targets\n\n")
    if not checks:
        out.append("- no flask_picklesession contender ran: nothing to check\n")
    out += [f"- {'PASS' if c.ok else 'FAIL'} {c.text}\n" for c in checks]
    out += ["\n", LEGEND]
    return "".join(out)


# --------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="CI mode: fewer rounds, under 60 s")
    add("--strict", action="store_true", help="exit 1 if a target fails")
    add("--rounds", type=int, help="override the number of timed rounds")
    add("--only", help="comma-separated substrings of extra contender names to run")
    add("--redis-server", help="path to redis-server (default: from PATH)")
    add("--no-pin", action="store_true", help="do not pin to one CPU (noisier)")
    add("--output", type=Path, default=RESULTS_DIR / "latest.md")
    return parser.parse_args(argv)


def _idle_ticks() -> dict[int, int]:
    """Idle+iowait jiffies per CPU from /proc/stat (empty where unavailable)."""
    ticks = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                ticks[int(name[3:])] = int(fields[3]) + int(fields[4])
    return ticks


def quietest_cpu(allowed: set[int], sample_s: float = 0.5) -> int:
    """The allowed CPU that was idle the most over a short sample."""
    before = _idle_ticks()
    time.sleep(sample_s)
    after = _idle_ticks()
    idle = {c: after.get(c, 0) - before.get(c, 0) for c in allowed}
    return max(sorted(allowed), key=lambda c: idle[c])


def pin_to_one_cpu() -> str:
    """Pin this process, and so the redis-server it starts, to one CPU.

    A loopback round trip between two CPUs pays a cross-CPU wake-up whose price
    depends on where the scheduler puts the two processes (on small VMs it
    swings between ~30 and ~150 µs from run to run); on one CPU it is stable,
    so ratios are comparable between runs. The quietest CPU is chosen.
    """
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = quietest_cpu(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"bench and redis-server pinned to CPU {cpu}"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _selector(only: str | None) -> Callable[[cs.Contender], bool]:
    """Baselines, floors and Flask-Session always run; --only filters the rest."""
    wanted = [s.strip() for s in only.split(",")] if only else []

    def keep(item: cs.Contender) -> bool:
        core = item.family in ("none", "floor", "flask-session")
        return not wanted or core or any(s in item.name for s in wanted)

    return keep


def measure(
    server: cs.RedisServer, workroot: Path, args: argparse.Namespace, settings: Settings
) -> tuple[list[Row], list[Subject], dict[str, str]]:
    """Build everything, count store work, then time all cells interleaved."""
    subjects, skipped = build_subjects(server, workroot, _selector(args.only))
    by_cell: dict[Cell, Subject] = {
        (s.payload_kind, r, s.contender.name): s for s in subjects for r in s.callers
    }
    cells = {cell: s.callers[cell[1]] for cell, s in by_cell.items()}
    _log(f"counting store work for {len(cells)} cells")
    admin = server.client()
    ops: dict[Cell, OpCount] = {}
    for cell, subject in by_cell.items():
        cells[cell].timed(max(1, settings.warmup // 4))  # steady state first
        ops[cell] = count_ops(subject, cell[1], settings.count_requests, admin)
    _log(f"timing {len(cells)} cells {X} {settings.rounds} rounds")
    samples: dict[Cell, list[float]] = run_timing(cells, settings, _log)
    return build_rows(samples, ops, subjects), subjects, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = Settings(
            args.rounds, settings.batch_ms, settings.warmup,
            settings.count_requests, settings.quick,
        )  # fmt: skip
    placement = "not pinned" if args.no_pin else pin_to_one_cpu()
    started = time.monotonic()
    workroot = tempfile.TemporaryDirectory(prefix="bench-sessions-")
    with workroot as tmp, cs.RedisServer(args.redis_server) as server:
        _log(f"redis-server on 127.0.0.1:{server.port}; {placement}")
        rows, subjects, skipped = measure(server, Path(tmp), args, settings)
    checks = evaluate_targets(rows, subjects)
    header = _header(settings, time.monotonic() - started, placement)
    report = render(rows, subjects, skipped, checks, header)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    _log(f"written to {args.output}")
    failed = [c for c in checks if not c.ok]
    broken = {k: v for k, v in skipped.items() if v.startswith("failed:")}
    if (broken or cs.OURS_ERROR) and args.quick:
        # The CI smoke run: a contender of ours that fails to set up or
        # loses data is an error, not a footnote.
        _log(f"did not run: {broken or cs.OURS_ERROR}")
        return 1
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
