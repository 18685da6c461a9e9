"""pytest plugin: run Flask's own test suite with PickleSession installed.

Load it with ``-p picklesession_plugin`` (its folder on ``PYTHONPATH``) while
running the ``tests/`` folder of a Flask sdist; Flask's files are not edited.

* Every test gets a fresh ``PickleSession()`` set as the class attribute
  ``flask.Flask.session_interface``, so the ``app`` fixture of Flask's
  conftest and every ``Flask(...)`` a test builds itself use it (with the
  default filesystem store under ``<app.instance_path>/sessions``). Tests that
  set their own ``app.session_interface`` keep theirs.
* ``--picklesession-baseline`` keeps Flask's own interface (the baseline run);
  ``--picklesession-serializer json`` runs the strict JSON mode instead.
* ``PICKLESESSION_XFAIL`` (node ids, one per line) marks tests that cannot
  apply to a server-side session as strict xfail: they must fail, and a pass
  is reported as an error so the list stays accurate.
* The summary says how many tests really opened or saved a PickleSession, so
  a green run cannot hide that the interface was never used.
* Compatibility shim, not a behaviour change: Flask's conftest uses
  ``_pytest.monkeypatch.notset``, which newer pytest dropped (it is
  ``_pytest.compat.NOTSET``); the alias is put back when missing.
"""

from __future__ import annotations

import os

import pytest

try:  # before Flask's conftest is imported
    import _pytest.monkeypatch as _mp

    if not hasattr(_mp, "notset"):
        from _pytest.compat import NOTSET

        _mp.notset = NOTSET  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    pass

_USED = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("picklesession")
    group.addoption(
        "--picklesession-baseline",
        action="store_true",
        help="do not install PickleSession (Flask's own session interface)",
    )
    group.addoption(
        "--picklesession-serializer",
        choices=("pickle", "json"),
        default=None,
        help="PickleSession(serializer=...); default: the package default (pickle)",
    )


def _baseline(config: pytest.Config) -> bool:
    return bool(config.getoption("--picklesession-baseline"))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_USED] = {}


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if _baseline(config):
        return
    wanted = {
        line.strip()
        for line in os.environ.get("PICKLESESSION_XFAIL", "").splitlines()
        if line.strip() and not line.strip().startswith("#")
    }
    for item in items:
        if item.nodeid in wanted:
            item.add_marker(
                pytest.mark.xfail(
                    strict=True,
                    reason="inspects Flask's signed-cookie session format;"
                    " does not apply to a server-side session",
                )
            )


@pytest.fixture(autouse=True)
def _picklesession_everywhere(request: pytest.FixtureRequest):
    if _baseline(request.config):
        yield None
        return

    import flask

    from flask_picklesession import PickleSession

    calls = {"open": 0, "save": 0}

    class CountingPickleSession(PickleSession):
        def open_session(self, app, req):  # type: ignore[no-untyped-def]
            calls["open"] += 1
            return super().open_session(app, req)

        def save_session(self, app, session, response):  # type: ignore[no-untyped-def]
            calls["save"] += 1
            return super().save_session(app, session, response)

    interface = CountingPickleSession(
        serializer=request.config.getoption("--picklesession-serializer")
    )
    mp = pytest.MonkeyPatch()
    mp.setattr(flask.Flask, "session_interface", interface)
    try:
        yield interface
    finally:
        mp.undo()
        if calls["open"] or calls["save"]:
            request.config.stash[_USED][request.node.nodeid] = dict(calls)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if _baseline(config):
        terminalreporter.write_line(
            "picklesession: baseline run (Flask's own interface)"
        )
        return
    used = config.stash[_USED]
    terminalreporter.write_line(
        f"picklesession: {len(used)} tests opened or saved a PickleSession"
    )
    path = os.environ.get("PICKLESESSION_USED_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            for nodeid, calls in sorted(used.items()):
                handle.write(f"{nodeid}\topen={calls['open']}\tsave={calls['save']}\n")
