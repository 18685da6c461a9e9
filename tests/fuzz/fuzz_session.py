"""Atheris fuzz target: hostile cookies and hostile stored records.

Run directly (libFuzzer flags pass through), e.g.::

    .venv/bin/python tests/fuzz/fuzz_session.py -max_total_time=20 -print_final_stats=1

``tests/fuzz/test_fuzz.py`` runs it for a bounded time in the test suite.

Each input picks an app (pickle mode, strict JSON mode, pickle with an
allowlist) and one of four attacks on a seeded session:

0. an arbitrary cookie value, or an arbitrary whole ``Cookie`` header;
1. arbitrary bytes stored under the session's key;
2. an edit program applied to the session's real record: structural edits
   (drop, duplicate, move, rename entries, swap values between keys, replace
   MACs or values, splice in another session's entry, forge declared
   lengths, up to 2**35) then byte edits (flip, set, truncate, extend,
   insert, delete);
3. edits of the session's real cookie.

Then it may save on top (blind or after reading). The checks: no exception
escapes (the apps run with TESTING=True, so any exception is a crash); the
session read is the stored one, possibly minus whole entries, or empty; and
every input that reached the unpickler is exactly a pickled value the app
itself stored (none at all in JSON mode).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import atheris  # noqa: E402

with atheris.instrument_imports(include=["flask_picklesession"]):
    import flask_picklesession
    import flask_picklesession.appending
    import flask_picklesession.binding
    import flask_picklesession.changes
    import flask_picklesession.codec
    import flask_picklesession.compression
    import flask_picklesession.cookie
    import flask_picklesession.json_codec
    import flask_picklesession.pickle_codec
    import flask_picklesession.record
    import flask_picklesession.regenerating
    import flask_picklesession.saving
    import flask_picklesession.sealing
    import flask_picklesession.session
    import flask_picklesession.sizes
    import flask_picklesession.tagged_json
    import flask_picklesession.tags
    import flask_picklesession.writing  # noqa: F401

from tests.fuzz.harness import (  # noqa: E402
    MODES,
    PREFIX,
    MemoryStore,
    RecordingStore,
    UnpickleSpy,
    apply_program,
    build_app,
    cookie_of,
    is_right_or_empty,
    request_with_cookie,
    seed_values,
)


class Seeded:
    """One app with a victim and a donor session in a shared memory store."""

    def __init__(self, store: MemoryStore, mode: str) -> None:
        self.mode = mode
        self.recorder = RecordingStore(store)
        self.app, self.probes = build_app(self.recorder, mode, name=f"fuzz_{mode}")
        self.sessions = []
        for token in ("victim", "donor"):
            response = request_with_cookie(self.app, f"/seed/{token}", None)
            cookie = cookie_of(response)
            sid = response.get_data(as_text=True)
            self.sessions.append(
                (cookie, sid, seed_values(mode, token), store.data[PREFIX + sid])
            )


# Every hostile record logs a warning; thousands a second would only slow the run.
logging.getLogger("flask_picklesession").disabled = True

STORE = MemoryStore()
APPS = [Seeded(STORE, mode) for mode in MODES]
BASELINE = dict(STORE.data)
SPY = UnpickleSpy()
_STACK = contextlib.ExitStack()
_STACK.enter_context(SPY.active())


def _structural(fdp: atheris.FuzzedDataProvider) -> tuple:
    kind = fdp.ConsumeIntInRange(0, 8)
    i, j = fdp.ConsumeIntInRange(0, 15), fdp.ConsumeIntInRange(0, 15)
    if kind == 0:
        return ("drop", i)
    if kind == 1:
        return ("dup", i, j)
    if kind == 2:
        return ("move", i, j)
    if kind == 3:
        return ("swap_bodies", i, j)
    if kind == 4:
        return ("rename", i, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)))
    if kind == 5:
        return ("mac", i, fdp.ConsumeBytes(16))
    if kind == 6:
        return ("value", i, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)))
    if kind == 7:
        return ("donor", i, j)
    length = 2**34 if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 2**35 - 1)
    return ("forge", i, "kv"[j % 2], length, fdp.ConsumeIntInRange(0, 5))


def _byte_edit(fdp: atheris.FuzzedDataProvider) -> tuple:
    kind = fdp.ConsumeIntInRange(0, 5)
    pos = fdp.ConsumeIntInRange(0, 1 << 12)
    if kind == 0:
        return ("flip", pos, fdp.ConsumeIntInRange(0, 7))
    if kind == 1:
        return ("set", pos, fdp.ConsumeIntInRange(0, 255))
    if kind == 2:
        return ("truncate", pos)
    if kind == 3:
        return ("extend", fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))
    if kind == 4:
        return ("insert", pos, fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 24)))
    return ("delete", pos, fdp.ConsumeIntInRange(1, 24))


def _edited_cookie(cookie: str, donor: str, fdp: atheris.FuzzedDataProvider) -> str:
    value = cookie
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        kind = fdp.ConsumeIntInRange(0, 4)
        pos = fdp.ConsumeIntInRange(0, max(len(value) - 1, 0))
        if kind == 0 and value:
            value = value[:pos] + chr(fdp.ConsumeIntInRange(0, 255)) + value[pos + 1 :]
        elif kind == 1:
            value = value[:pos]
        elif kind == 2:
            value = value[:pos] + fdp.ConsumeBytes(8).decode("latin-1") + value[pos:]
        elif kind == 3 and value:
            value = value[:pos] + value[pos].swapcase() + value[pos + 1 :]
        else:
            mine, theirs = value.split("."), donor.split(".")
            if len(mine) == 3:
                part = fdp.ConsumeIntInRange(0, 2)
                mine[part] = theirs[part]
                value = ".".join(mine)
    return value


def _check_cookie(seeded: Seeded, header: str) -> None:
    seeded.recorder.calls.clear()
    for path in ("/probe", "/untouched"):
        response = request_with_cookie(seeded.app, path, header)
        assert response.status_code == 200, response.status_code
    result = seeded.probes.pop()
    if result:
        assert any(
            sid in header and result == original
            for _, sid, original, _ in seeded.sessions
        ), result
    else:
        assert seeded.recorder.calls.get("load", 0) == 0, (
            "an unverified cookie reached the store"
        )


def _check_record(seeded: Seeded, record: bytes, write: int) -> None:
    cookie, sid, original, real = seeded.sessions[0]
    STORE.data[PREFIX + sid] = record
    response = request_with_cookie(seeded.app, "/probe", f"session={cookie}")
    assert response.status_code == 200
    result = seeded.probes.pop()
    assert is_right_or_empty(result, original), result
    if record == real:
        assert result == original
    if write:
        path = "/readset/written/yes" if write == 2 else "/set/written/yes"
        response = request_with_cookie(seeded.app, path, f"session={cookie}")
        assert response.status_code == 200
        after_cookie = cookie_of(response) or cookie
        request_with_cookie(seeded.app, "/probe", f"session={after_cookie}")
        after = seeded.probes.pop()
        if write == 2:
            assert after.get("written") == "yes", after
        after.pop("written", None)
        assert is_right_or_empty(after, original), after


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    action, variant, payload = data[0] % 4, data[1], data[2:]
    seeded = APPS[variant % len(APPS)]
    write = (variant >> 2) % 3
    try:
        if action == 0:
            text = payload.decode("latin-1")
            _check_cookie(seeded, text if variant & 0x40 else "session=" + text)
        elif action == 1:
            _check_record(
                seeded, (b"\x01" + payload) if variant & 0x40 else payload, write
            )
        elif action == 2:
            fdp = atheris.FuzzedDataProvider(payload)
            structural = [_structural(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
            edits = [_byte_edit(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
            record = apply_program(
                seeded.sessions[0][3], structural, edits, seeded.sessions[1][3]
            )
            _check_record(seeded, record, write)
        else:
            fdp = atheris.FuzzedDataProvider(payload)
            cookie = _edited_cookie(seeded.sessions[0][0], seeded.sessions[1][0], fdp)
            _check_cookie(seeded, "session=" + cookie)
        foreign = SPY.foreign(seeded.recorder.app_pickles)
        assert not foreign, f"unpickled bytes the app never stored: {foreign[:1]!r}"
        if seeded.mode == "json":
            assert not SPY.calls, "strict JSON mode reached the unpickler"
    finally:
        SPY.calls.clear()
        seeded.probes.clear()
        STORE.data.clear()
        STORE.data.update(BASELINE)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
