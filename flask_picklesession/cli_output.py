"""What the operator commands print: sizes, lifetimes, the stats, progress.

Apart from the commands, which parse, run a task and report, so that the
wording of the output is in one place and each command reads as what it does.
"""

from __future__ import annotations

import contextlib
import sys
import typing as t

import click

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from .operator import Stats, Target

#: Runs over at least this many sessions show a progress bar (on a terminal).
PROGRESS_MIN = 100


@contextlib.contextmanager
def progress(keys: list[str], label: str) -> Iterator[Iterable[str]]:
    """Iterate ``keys``, with a progress bar on stderr when there are many."""
    if len(keys) < PROGRESS_MIN:
        yield keys
        return
    with click.progressbar(keys, label=label, show_pos=True, file=sys.stderr) as bar:
        yield bar


def format_duration(ms: int) -> str:
    """Human form of a remaining lifetime, to the minute (seconds when short)."""
    if ms < 0:
        return "never"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    days, rest = divmod(seconds // 60, 24 * 60)
    hours, minutes = divmod(rest, 60)
    units = ((days, "d"), (hours, "h"), (minutes, "m"))
    parts = [f"{n}{unit}" for n, unit in units if n]
    return " ".join(parts) or "0m"


def format_size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.1f} KiB ({size} bytes)"


def stats_lines(target: Target, stats: Stats, others: int) -> list[str]:
    """Sessions are named by a short hash: output may be pasted where ids must not."""
    lines = [
        f"store:          {target.store!r}",
        f"key prefix:     {target.prefix!r}",
        f"sessions:       {stats.count}",
    ]
    if stats.count:
        lines.append(f"total size:     {format_size(stats.total_size)}")
    if stats.largest:
        size, name = stats.largest
        lines.append(f"largest:        {format_size(size)} (session {name})")
    if stats.first_expiry:
        ms, name = stats.first_expiry
        lines.append(f"expires first:  in {format_duration(ms)} (session {name})")
    if stats.last_expiry:
        ms, name = stats.last_expiry
        lines.append(f"expires last:   in {format_duration(ms)} (session {name})")
    if stats.no_expiry:
        lines.append(f"without expiry: {stats.no_expiry}")
    if stats.unreadable:
        lines.append(f"unreadable:     {stats.unreadable}")
    if others:
        lines.append(f"other keys under the prefix, not sessions: {others}")
    return lines
