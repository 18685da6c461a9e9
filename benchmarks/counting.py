"""Counting store work per request, in a pass that is never timed.

Redis: INFO commandstats deltas (server side, Lua-internal commands included)
and redis-py socket writes (client side: one per command or pipeline, i.e.
round trips). Filesystem: ``open``/``os`` calls on paths under the store's
directory, by wrapping those functions only for the duration of the pass.
"""

from __future__ import annotations

import builtins
import io
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import redis

#: os-level flags that make an open a write.
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
#: Commands the harness itself sends while counting.
_OWN_COMMANDS = ("info",)


@contextmanager
def count_round_trips() -> Iterator[Counter[str]]:
    """Count redis-py socket writes: one per command, one per pipeline."""
    counts: Counter[str] = Counter()
    cls = redis.connection.AbstractConnection
    original: Any = cls.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> Any:
        counts["round trips"] += 1
        return original(self, command, check_health)

    cls.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        cls.send_packed_command = original  # type: ignore[method-assign]


def commandstats(client: redis.Redis) -> tuple[Counter[str], Counter[str]]:
    """Calls and server-side microseconds per command name, from INFO."""
    calls: Counter[str] = Counter()
    usec: Counter[str] = Counter()
    for name, values in client.info("commandstats").items():
        short = name.removeprefix("cmdstat_")
        calls[short] = int(values["calls"])
        usec[short] = int(values["usec"])
    return calls, usec


@contextmanager
def redis_commands(admin: redis.Redis) -> Iterator[dict[str, Counter[str]]]:
    """Yield a dict filled, on exit, with per-command call and usec deltas."""
    out: dict[str, Counter[str]] = {}
    calls_before, usec_before = commandstats(admin)
    yield out
    calls_after, usec_after = commandstats(admin)
    out["calls"] = calls_after - calls_before
    out["usec"] = usec_after - usec_before
    for own in _OWN_COMMANDS:
        out["calls"].pop(own, None)
        out["usec"].pop(own, None)


def _is_under(prefix: str, path: Any) -> bool:
    if path is None or isinstance(path, int):
        return False  # file descriptors are not paths
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        return False
    return os.path.abspath(text).startswith(prefix)


def _open_label(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> str:
    return "open_r" if set(mode) <= set("rbt") else "open_w"


def _os_open_label(path: Any, flags: int, *args: Any, **kwargs: Any) -> str:
    return "open_w" if flags & _WRITE_FLAGS else "open_r"


def _fixed(label: str) -> Callable[..., str]:
    return lambda *args, **kwargs: label


#: (module, function name, how to label a call) for every wrapped function.
_FILE_FUNCTIONS: tuple[tuple[Any, str, Callable[..., str]], ...] = (
    (builtins, "open", _open_label),
    (io, "open", _open_label),  # pathlib and os.fdopen go through io.open
    (os, "open", _os_open_label),  # tempfile.mkstemp goes through os.open
    (os, "replace", _fixed("replace")),
    (os, "rename", _fixed("replace")),
    (os, "remove", _fixed("remove")),
    (os, "unlink", _fixed("remove")),
    (os, "stat", _fixed("stat")),  # os.path.exists/isfile call os.stat
    (os, "lstat", _fixed("stat")),
    (os, "listdir", _fixed("listdir")),
    (os, "scandir", _fixed("listdir")),
)


@contextmanager
def count_file_ops(root: Path) -> Iterator[Counter[str]]:
    """Count opens (read/write), replaces, removes, stats, listings under root."""
    counts: Counter[str] = Counter()
    prefix = str(root.resolve())
    saved = []

    def wrap(original: Callable[..., Any], label: Callable[..., str]) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if args and _is_under(prefix, args[0]):
                counts[label(*args, **kwargs)] += 1
            return original(*args, **kwargs)

        return wrapper

    for owner, name, label in _FILE_FUNCTIONS:
        original = getattr(owner, name)
        saved.append((owner, name, original))
        setattr(owner, name, wrap(original, label))
    try:
        yield counts
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


#: File operations that change the store.
FILE_WRITES = ("open_w", "replace", "remove")
