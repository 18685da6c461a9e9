"""A small shop-and-game app that shows what pickled server-side sessions are for.

Run it with ``python -m example_app``; see :mod:`example_app.app`.
"""

from __future__ import annotations

from .app import create_app as create_app
