#!/usr/bin/env python3
"""Run Flask's own test suite with PickleSession as every app's session interface.

Downloads the sdist of a Flask version from PyPI into a temporary folder,
runs the selected tests of its ``tests/`` folder twice -- a baseline with
Flask's own cookie sessions, then with ``PickleSession()`` installed on every
app by ``picklesession_plugin.py`` (next to this file, loaded with ``-p``; no
Flask file is edited and none is copied into this repository) -- and compares.

Exit status: 0 when every test that passes in the baseline passes with
PickleSession, apart from EXPECTED_FAIL; 1 otherwise (also when a test in
EXPECTED_FAIL passes, so the list stays exact); 2 on a setup error.

Usage (from the repository root)::

    .venv/bin/python tests/flask_suite/run_flask_suite.py
        # the Flask installed in this interpreter, in this interpreter
    .venv/bin/python tests/flask_suite/run_flask_suite.py --flask-version 2.2.5
        # any other version: a throwaway venv in the temp folder, with the
        # sdist's pinned test requirements, Werkzeug of the same minor
        # series, and this repository installed editable
    ... --all                 # Flask's whole suite, not only the selection
    ... --serializer json     # PickleSession(serializer="json")
    ... --keep                # keep the temp folder (sdist, venv, reports)

In a throwaway venv the baseline runs before this package is installed, so
it is Flask's pristine result; in this interpreter the package is already
installed for both runs (its entry points are then loaded by ``flask.cli``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: Test files run by default: every session/flash test lives in these, and
#: test_basic.py and test_testing.py are run whole as asked.
SELECTED = [
    "tests/test_basic.py",
    "tests/test_testing.py",
    "tests/test_reqctx.py",
    "tests/test_session_interface.py",
    "tests/test_signals.py",
    "tests/test_helpers.py",
]

#: Node ids (relative to the sdist root) expected to fail with PickleSession
#: for a documented reason: only tests that inspect the format of Flask's
#: signed-cookie session (SecureCookieSessionInterface, its serializer or
#: signer) may go here, since a server-side session's cookie is only an id.
#: They run as strict xfail: if one passes, the run fails.
#:
#: Empty on purpose: Flask 2.2.5, 2.3.3, 3.0.3 and 3.1.3 have no such test
#: that uses the app's interface. The tests that build on
#: SecureCookieSessionInterface (test_reqctx.py::test_session_dynamic_cookie_name)
#: or bring their own interface (test_reqctx.py::test_session_error_pops_context,
#: test_session_interface.py) set it on the app themselves, so they pass in
#: both runs without exercising PickleSession.
EXPECTED_FAIL: list[str] = []


def log(message: str) -> None:
    print(f"[flask-suite] {message}", flush=True)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def installed_flask_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('flask'))"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"Flask is not installed for {python}:\n{out.stderr}")
    return out.stdout.strip()


def fetch_sdist(version: str, work: Path) -> Path:
    dest = work / "sdist"
    log(f"downloading the Flask {version} sdist")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-binary",
            ":all:",
            "--no-deps",
            f"flask=={version}",
            "-d",
            str(dest),
        ]
    )
    archives = [p for p in dest.iterdir() if p.name.endswith(".tar.gz")]
    if len(archives) != 1:
        raise SystemExit(f"expected one sdist in {dest}, found {archives}")
    with tarfile.open(archives[0]) as tar:
        members = [
            m
            for m in tar.getmembers()
            if not (m.name.startswith("/") or ".." in Path(m.name).parts)
        ]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **safe)
    roots = [p for p in dest.iterdir() if p.is_dir()]
    if len(roots) != 1 or not (roots[0] / "tests").is_dir():
        raise SystemExit(f"no tests/ folder in the Flask {version} sdist")
    return roots[0]


def make_venv(version: str, sdist: Path, work: Path, werkzeug: str | None) -> str:
    """Create a venv with Flask ``version`` and its test requirements."""
    venv = work / "venv"
    log(f"creating a throwaway venv for Flask {version} in {venv}")
    run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    major, minor = (int(x) for x in version.split(".")[:2])
    reqs = [f"flask=={version}", werkzeug or f"werkzeug=={major}.{minor}.*", "greenlet"]
    if (major, minor) < (3, 1):
        reqs.append("click<8.2")  # Flask < 3.1's test_cli passes CliRunner(mix_stderr=)
    pinned = sdist / "requirements" / "tests.txt"
    extra = (
        ["-r", str(pinned)]
        if pinned.is_file()
        else ["pytest", "asgiref", "python-dotenv"]
    )
    run([python, "-m", "pip", "install", "--quiet", *reqs, *extra])
    return python


def install_repo(python: str) -> None:
    log(f"installing {REPO} (editable, no deps) into the venv")
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(REPO)])


def pytest_run(
    python: str, sdist: Path, targets: list[str], report: Path, extra: list[str]
) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PICKLESESSION_XFAIL"] = "\n".join(EXPECTED_FAIL)
    env["PICKLESESSION_USED_REPORT"] = str(report.with_suffix(".used.txt"))
    for name in ("FLASK_APP", "FLASK_DEBUG", "FLASK_ENV_FILE"):
        env.pop(name, None)
    cmd = [
        python,
        "-m",
        "pytest",
        *targets,
        "-p",
        "no:cacheprovider",
        "-p",
        "picklesession_plugin",
        "-q",
        "-rfEX",
        "--junitxml",
        str(report),
        *extra,
    ]
    log("running: " + " ".join(cmd[1:]))
    return subprocess.run(cmd, cwd=sdist, env=env).returncode


def outcomes(report: Path) -> dict[str, str]:
    """Map node ids to passed/failed/skipped/xfailed from a JUnit report."""
    result: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "")
        # classname is "tests.test_basic" or "tests.test_basic.TestClass"
        parts = module.split(".")
        for cut in range(len(parts), 0, -1):
            path = "/".join(parts[:cut]) + ".py"
            if Path(path).name.startswith("test_"):
                nodeid = "::".join([path, *parts[cut:], case.get("name", "")])
                break
        else:
            nodeid = f"{module}::{case.get('name')}"
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                state = "failed"
                break
            if child.tag == "skipped":
                state = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        if result.get(nodeid) != "failed":  # setup/teardown errors add cases
            result[nodeid] = state
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flask-version", help="default: the Flask installed here")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter whose Flask is tested (default: this one)",
    )
    parser.add_argument(
        "--fresh-venv",
        action="store_true",
        help="use a throwaway venv even for the installed version",
    )
    parser.add_argument(
        "--werkzeug", help="requirement for Werkzeug in a throwaway venv"
    )
    parser.add_argument("--all", action="store_true", help="run Flask's whole suite")
    parser.add_argument("--serializer", choices=("pickle", "json"))
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument(
        "pytest_args", nargs="*", help="more pytest arguments (after --)"
    )
    args = parser.parse_args()

    installed = installed_flask_version(args.python)
    version = args.flask_version or installed
    fresh = args.fresh_venv or version != installed
    work = Path(tempfile.mkdtemp(prefix="flask_suite_"))
    try:
        sdist = fetch_sdist(version, work)
        if fresh:
            python = make_venv(version, sdist, work, args.werkzeug)
        else:
            python = args.python
            log(f"using {python} (Flask {installed}, package already installed)")
        targets = (
            ["tests"] if args.all else [t for t in SELECTED if (sdist / t).exists()]
        )
        extra = list(args.pytest_args)

        base_report = work / "baseline.xml"
        log("baseline run: Flask's own session interface")
        pytest_run(
            python, sdist, targets, base_report, ["--picklesession-baseline", *extra]
        )
        if fresh:
            install_repo(python)
        ours_report = work / "picklesession.xml"
        log("PickleSession run")
        if args.serializer:
            extra = ["--picklesession-serializer", args.serializer, *extra]
        pytest_run(python, sdist, targets, ours_report, extra)

        base, ours = outcomes(base_report), outcomes(ours_report)
    except subprocess.CalledProcessError as exc:
        log(f"setup failed: {exc}")
        return 2
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def count(res: dict[str, str], state: str) -> int:
        return sum(1 for s in res.values() if s == state)

    for name, res in (("baseline", base), ("PickleSession", ours)):
        log(
            f"Flask {version} {name}: {count(res, 'passed')} passed, "
            f"{count(res, 'failed')} failed, {count(res, 'skipped')} skipped, "
            f"{count(res, 'xfailed')} xfailed"
        )
    regressions = sorted(
        n for n, s in ours.items() if s == "failed" and base.get(n) != "failed"
    )
    env_failures = sorted(
        n for n, s in ours.items() if s == "failed" and base.get(n) == "failed"
    )
    missing = sorted(n for n in EXPECTED_FAIL if n not in ours)
    if env_failures:
        log("failing in the baseline too (environment, not counted):")
        for n in env_failures:
            log(f"  {n}")
    if missing:
        log("EXPECTED_FAIL entries that were not collected:")
        for n in missing:
            log(f"  {n}")
    if regressions:
        log("FAILED only with PickleSession (or an EXPECTED_FAIL test passed):")
        for n in regressions:
            log(f"  {n}")
        return 1
    log(
        f"OK: no test fails with PickleSession that passes with Flask's interface"
        f" ({len(EXPECTED_FAIL)} expected failures)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
