"""What an installed distribution offers: typing marker, CLI entry point."""

from __future__ import annotations

import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

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


def _build(tmp_path: pathlib.Path) -> tuple[set[str], list[str]]:
    """Names in the sdist (without its top folder) and in the wheel."""
    # Built from a copy: a build writes into its source tree.
    source, out = tmp_path / "source", tmp_path / "dist"
    shutil.copytree(
        pathlib.Path(__file__).resolve().parent.parent,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "*.egg-info", "build", "dist", "__pycache__", "instance", "results"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (sdist,) = out.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return names, archive.namelist()


def test_distributions_carry_the_license_and_a_runnable_test_suite(tmp_path):
    """The sdist holds every file its tests import (not only ``test_*.py``),
    both distributions carry the license, and neither carries caches."""
    sdist, wheel = _build(tmp_path)
    for needed in (
        "LICENSE",
        "tox.ini",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/redis_servers.py",
        "tests/concurrency_worker.py",
        "tests/flask_suite/run_flask_suite.py",
        "example_app/app.py",
    ):
        assert needed in sdist
    assert any(name.rsplit("/", 1)[-1] == "LICENSE" for name in wheel)
    assert "flask_picklesession/py.typed" in wheel
    assert not any(name.startswith("tests/") for name in wheel)
    for name in [*sdist, *wheel]:
        assert "__pycache__" not in name and not name.endswith(".pyc"), name
