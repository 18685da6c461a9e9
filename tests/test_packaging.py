"""What an installed distribution offers: typing marker, CLI entry point."""

from __future__ import annotations

import importlib.metadata
import pathlib

import flask

import flask_picklesession


def test_py_typed_is_shipped():
    assert (pathlib.Path(flask_picklesession.__file__).parent / "py.typed").is_file()


def test_flask_command_entry_point_loads():
    points = importlib.metadata.entry_points()
    group = (
        points.select(group="flask.commands")
        if hasattr(points, "select")
        else points["flask.commands"]
    )
    # Python 3.9 lists a distribution once per place it is found on sys.path
    # (the installed one and the source tree's metadata): compare targets.
    ours = {p.value for p in group if p.name == "picklesession"}
    assert ours == {"flask_picklesession.cli:picklesession_cli"}
    point = next(p for p in group if p.name == "picklesession")
    assert point.load().name == "picklesession"


def test_star_import_brings_public_names_only():
    """``session`` must stay Flask's after a star import below it."""
    namespace: dict[str, object] = {}
    exec("from flask import session\nfrom flask_picklesession import *", namespace)
    assert namespace["session"] is flask.session
    assert set(flask_picklesession.__all__) <= set(namespace)
    assert "cookie" not in namespace and "store" not in namespace


def test_public_names():
    for name in (
        "PickleSession",
        "FileSystemStore",
        "RedisStore",
        "SessionError",
        "StoreUnavailable",
        "SessionTooLarge",
        "SerializationError",
    ):
        assert hasattr(flask_picklesession, name)
    assert issubclass(flask_picklesession.SessionTooLarge, ValueError)
    assert issubclass(flask_picklesession.SerializationError, TypeError)
    for name in ("StoreUnavailable", "SessionTooLarge", "SerializationError"):
        assert issubclass(
            getattr(flask_picklesession, name), flask_picklesession.SessionError
        )
