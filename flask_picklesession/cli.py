"""``flask picklesession``: operator commands for the app's session store.

Installed as a ``flask.commands`` entry point, so every app that uses
:class:`~flask_picklesession.PickleSession` gets them::

    flask --app myapp picklesession stats
    flask --app myapp picklesession inspect SID
    flask --app myapp picklesession rekey

They act on the store, key prefix, serializer and keys the app's requests use.
The work itself is in :mod:`.operator` (and :mod:`.inspection`); this module
only parses, reports progress and turns failures into messages and exit
codes. How sizes, lifetimes, the stats and progress are shown is in
:mod:`.cli_output`.
"""

from __future__ import annotations

import collections
import functools
import re
import typing as t

import click
from flask import current_app
from flask.cli import AppGroup

from .cli_output import format_duration, format_size, progress, stats_lines
from .errors import SessionError
from .filesystem import FileSystemStore
from .ids import is_valid_sid, short_hash
from .inspection import inspect_session
from .operator import (
    CURRENT,
    FAILED,
    FOREIGN,
    GONE_MEANWHILE,
    REKEYED,
    Stats,
    Target,
    add_stats,
    delete_session,
    rekey_session,
    session_keys,
    still_there,
    target_for,
)

#: Longest value repr ``inspect`` prints without ``--full``.
REPR_LIMIT = 300

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: An id may start with '-' (URL-safe base64): take it as the SID, not an option.
_TAKES_SID = {"ignore_unknown_options": True}

picklesession_cli = AppGroup(
    "picklesession",
    help="Inspect and maintain the server-side sessions of the app.",
)


def _reports_errors(func: F) -> F:
    """Show package errors (store down, bad config, refused session) as messages."""

    @functools.wraps(func)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return func(*args, **kwargs)
        except SessionError as exc:
            raise click.ClickException(str(exc)) from exc

    return t.cast(F, wrapper)


def _target() -> Target:
    return target_for(current_app._get_current_object())  # type: ignore[attr-defined]


_SHORT_HASH = re.compile(r"[0-9a-f]{12}")


def _sid_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a malformed id before it becomes part of a store key."""
    if not is_valid_sid(value) and not _SHORT_HASH.fullmatch(value):
        raise click.BadParameter(
            "not a session id: expected 43 characters of URL-safe base64, the"
            " part of the cookie before the first '.', or the 12-character name"
            " that logs and stats give a session"
        )
    return value


def _resolve(target: Target, value: str) -> str:
    """The session id that ``value`` is, or that the name ``value`` stands for.

    Logs and ``stats`` name sessions by a short hash of their id; finding the
    id takes one pass over the sessions.
    """
    if is_valid_sid(value):
        return value
    keys, _ = session_keys(target)
    found = {sid for sid in map(target.sid, keys) if short_hash(sid) == value}
    if len(found) != 1:
        raise click.ClickException(
            f"no session is named {value}" if not found else f"{value} is ambiguous"
        )
    return found.pop()


# -- commands ------------------------------------------------------------------


@picklesession_cli.command()
@_reports_errors
def cleanup() -> None:
    """Remove expired sessions from a store that keeps them (the filesystem).

    Only this app's sessions (prefix and session id) are candidates: the
    folder may hold other files too.
    """
    target = _target()
    store = target.store
    if not store.needs_cleanup:
        click.echo(f"Nothing to do: {store!r} expires sessions by itself.")
        return
    keys, _ = session_keys(target)
    removed = store.cleanup(keys)
    click.echo(f"Removed {removed} expired or leftover record(s) from {store!r}.")


@picklesession_cli.command()
@_reports_errors
def stats() -> None:
    """Count the stored sessions and show their sizes and expiries."""
    target = _target()
    keys, others = session_keys(target)
    result = Stats()
    with progress(keys, "Reading sessions") as bar:
        for key in bar:
            add_stats(target, result, key)
    for line in stats_lines(target, result, others):
        click.echo(line)


@picklesession_cli.command(context_settings=_TAKES_SID)
@click.argument("sid", callback=_sid_argument)
@click.option(
    "--full",
    is_flag=True,
    help=f"Print values longer than {REPR_LIMIT} characters whole.",
)
@_reports_errors
def inspect(sid: str, full: bool) -> None:
    """Show the decoded content of session SID, once every entry is authenticated.

    SID is the part of the session cookie before the first '.', or the
    12-character name that logs and stats give the session.
    """
    target = _target()
    sid = _resolve(target, sid)
    result = inspect_session(target, sid)
    click.echo(
        f"session {short_hash(sid)}: {len(result.values)} key(s),"
        f" {format_size(result.size)}, expires in {format_duration(result.ttl)}"
    )
    refused = 0
    for item in result.values:
        note = "  [MACed with a fallback key; run rekey]" if item.stale else ""
        if item.refused is not None:
            refused += 1
            click.echo(f"{item.key} = <refused: {item.refused}>{note}")
            continue
        text = repr(item.value)
        if not full and len(text) > REPR_LIMIT:
            text = f"{text[:REPR_LIMIT]}... ({len(text)} characters; --full shows all)"
        click.echo(f"{item.key} = {text}{note}")
    if refused:
        raise click.ClickException(
            f"{refused} entry(ies) were refused by the"
            f" {target.codec.name} serializer and not decoded"
        )


@picklesession_cli.command(context_settings=_TAKES_SID)
@click.argument("sid", callback=_sid_argument)
@_reports_errors
def delete(sid: str) -> None:
    """Delete session SID (its user is logged out on the next request)."""
    target = _target()
    sid = _resolve(target, sid)
    delete_session(target, sid)
    click.echo(f"Deleted session {short_hash(sid)}.")


@picklesession_cli.command()
@_reports_errors
def rekey() -> None:
    """Re-MAC every stored entry with SECRET_KEY, so a fallback key can be dropped.

    Run it after moving the old key to SECRET_KEY_FALLBACKS and deploying.
    Each rewrite applies only if the entry did not change meanwhile. Cookies
    are re-signed by the app on each user's next request, not by this command.
    """
    target = _target()
    if not target.ring.has_fallbacks:
        click.echo(
            "Note: SECRET_KEY_FALLBACKS is empty, so no entry can be stale;"
            " this run only checks every MAC."
        )
    keys, _ = session_keys(target)
    counts: collections.Counter[str] = collections.Counter()
    with progress(keys, "Re-keying sessions") as bar:
        for key in bar:
            counts[rekey_session(target, key)] += 1
    click.echo(f"rekeyed:         {counts[REKEYED]}")
    click.echo(f"already current: {counts[CURRENT]}")
    click.echo(f"failed MAC:      {counts[FAILED]}")
    if counts[GONE_MEANWHILE]:
        click.echo(f"gone meanwhile:  {counts[GONE_MEANWHILE]}")
    if counts[FOREIGN]:
        # Requests ignore them too; they are no reason to keep a fallback key.
        click.echo(
            f"not ours:        {counts[FOREIGN]} (not in this package's format,"
            " such as another library's sessions under the same prefix; left"
            " alone)"
        )
    if counts[FAILED]:
        raise click.ClickException(
            f"{counts[FAILED]} session(s) failed their MAC check with every"
            " configured key and were left untouched: is SECRET_KEY right, or"
            " was a key dropped too early? Requests ignore such sessions."
        )


@picklesession_cli.command()
@click.option("--yes", is_flag=True, help="Confirm deleting every session.")
@_reports_errors
def clear(yes: bool) -> None:
    """Delete every session under the key prefix (everyone is logged out).

    Only keys of the form PREFIX + session id are deleted; the keys are found
    by listing the folder or by Redis SCAN, never KEYS or FLUSHDB.
    """
    target = _target()
    if not target.prefix and not isinstance(target.store, FileSystemStore):
        # The session folder holds only sessions; a Redis database may hold
        # anything, and another key can look like a session id.
        raise click.UsageError(
            "PICKLESESSION_KEY_PREFIX is empty, so sessions cannot be told from"
            " other keys of the store; delete them by hand (in a database of"
            " their own, FLUSHDB) or set a prefix"
        )
    keys, others = session_keys(target)
    if not yes:
        raise click.UsageError(
            f"this deletes {len(keys)} session(s) under the prefix"
            f" {target.prefix!r} of {target.store!r}; add --yes to confirm"
        )
    left = 0
    with progress(keys, "Deleting sessions") as bar:
        for key in bar:
            if not target.store.delete(key) and still_there(target, key):
                left += 1
    click.echo(f"Deleted {len(keys) - left} session(s).")
    if left:
        click.echo(
            f"Left {left} entry(ies) that are not regular files in place:"
            " remove them by hand."
        )
    if others:
        click.echo(f"Left {others} other key(s) under the prefix alone.")
