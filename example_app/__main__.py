"""``python -m example_app``: serve the example on http://127.0.0.1:5000/.

Flask's development server, for trying the package out; deploy behind a real
WSGI server. ``--port`` and ``--host`` change where it listens.
"""

from __future__ import annotations

import argparse
import sys

from flask_picklesession import SessionError

from .app import create_app


def main(argv: list[str] | None = None) -> int:
    """Parse the few options, build the app and serve it until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="default: 5000")
    args = parser.parse_args(argv)
    try:
        app = create_app()
    except (ValueError, SessionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = app.session_interface.settings_for(app)  # type: ignore[attr-defined]
    print(f"Sessions in {settings.store!r}, serializer {settings.codec.name}.")
    app.run(host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
