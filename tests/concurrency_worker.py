"""Scripted views for the concurrency tests, and a worker process serving them.

Imported by ``tests/test_concurrency.py``, which serves :func:`add_routes` on
an in-process threaded werkzeug server. Run as a script it is one worker
process of the multi-process filesystem tests::

    python tests/concurrency_worker.py FOLDER SECRET_KEY

It serves the same views on a free loopback port, prints the port on stdout,
and exits when its stdin closes (so it never outlives the test run).

``/steps?name=A&do=load,pause,set:x:1`` runs the comma-separated steps in
order. ``pause`` signals that request ``A`` has reached it (so everything
before it, typically the load, is done) and blocks until ``/gate/A/go``:
this is how the tests force an order such as "A loads, B loads, A saves,
B saves" without sleeping. The session is saved after the view returns, so
once the test has A's response, A's save is done.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import typing as t

import flask
from werkzeug.serving import WSGIRequestHandler, make_server

#: Longest a paused view or a gate query waits before giving up (seconds):
#: only reached when a test is already failing.
GATE_TIMEOUT = 10.0


class Gate:
    """Two events: the paused request has reached its pause; it may go on."""

    def __init__(self) -> None:
        self.paused = threading.Event()
        self.go = threading.Event()


class Gates:
    """Named gates, created on first use by either side."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, Gate] = {}

    def __getitem__(self, name: str) -> Gate:
        with self._lock:
            return self._gates.setdefault(name, Gate())

    def release_all(self) -> None:
        with self._lock:
            gates = list(self._gates.values())
        for gate in gates:
            gate.go.set()


def _run_step(step: str, gate: Gate) -> None:
    session = flask.session
    op, *args = step.split(":")
    if op == "load":  # load the record (counting keys decodes the values)
        len(session)
    elif op == "read":
        session.get(args[0])
    elif op == "pause":
        gate.paused.set()
        if not gate.go.wait(GATE_TIMEOUT):
            raise RuntimeError("paused request was never released")
    elif op == "set":
        session[args[0]] = args[1]
    elif op == "del":
        del session[args[0]]
    elif op == "append":  # in-place change of a nested value, no modified=True
        session.setdefault(args[0], []).append(args[1])
    elif op == "clear":
        session.clear()
    elif op == "regenerate":
        session.regenerate()
    elif op == "permanent":
        session.permanent = True
    else:  # pragma: no cover - a typo in a test
        raise ValueError(f"unknown step {step!r}")


def add_routes(app: flask.Flask, gates: Gates | None = None) -> Gates:
    """Add the scripted views to ``app``; return the gates they pause on."""
    gates = gates if gates is not None else Gates()

    @app.route("/steps")
    def steps() -> str:
        gate = gates[flask.request.args.get("name", "")]
        for step in flask.request.args["do"].split(","):
            _run_step(step, gate)
        return "ok"

    @app.route("/set/<key>")
    def set_key(key: str) -> str:
        """Set one key; with ``?read=1`` load the session first (read-modify-write)."""
        if flask.request.args.get("read"):
            len(flask.session)
        flask.session[key] = "1"
        return "ok"

    @app.route("/dump")
    def dump() -> flask.Response:
        return app.response_class(
            json.dumps(dict(flask.session), sort_keys=True), mimetype="application/json"
        )

    @app.route("/gate/<name>/paused")
    def gate_paused(name: str) -> tuple[str, int]:
        reached = gates[name].paused.wait(GATE_TIMEOUT)
        return ("ok", 200) if reached else ("never paused", 504)

    @app.route("/gate/<name>/go")
    def gate_go(name: str) -> str:
        gates[name].go.set()
        return "ok"

    @app.route("/gates/release-all")
    def release_all() -> str:
        gates.release_all()
        return "ok"

    return gates


class QuietHandler(WSGIRequestHandler):
    """No access log: hundreds of requests per test."""

    def log_request(self, *args: t.Any, **kwargs: t.Any) -> None:
        pass


def serve(app: flask.Flask) -> t.Any:
    """A threaded werkzeug server for ``app`` on a free loopback port (not started)."""
    return make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)


def _exit_when_stdin_closes() -> None:  # pragma: no cover - runs in the worker
    sys.stdin.read()
    os._exit(0)


def main(folder: str, secret: str) -> None:  # pragma: no cover - runs in the worker
    from flask_picklesession import FileSystemStore, PickleSession

    app = flask.Flask("concurrency_worker", instance_path=folder)
    app.config.update(SECRET_KEY=secret, PICKLESESSION_STORE=FileSystemStore(folder))
    PickleSession(app)
    add_routes(app)
    server = serve(app)
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever(0.05)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1], sys.argv[2])
