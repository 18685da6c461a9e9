"""The example app in a real browser: headless Chromium driven by Playwright.

Only a browser shows what the cookie really is once it is stored: its flags
(HttpOnly), its size, and that script cannot read it. The app runs in a
thread on a free loopback port, on the filesystem store in ``tmp_path``.

Chromium comes from Debian (``apt-get install chromium``), never from
``playwright install``. Without it the test skips, except in CI (``CI=true``),
where a missing browser is a failure, not a silent skip.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import typing as t

import pytest
from werkzeug.serving import make_server

from example_app import create_app
from flask_picklesession.ids import is_valid_sid

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from flask import Flask
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Longest wait for any one thing on a page, in ms: the app answers at once.
TIMEOUT_MS = 5000
#: What the session holds and the cookie must never show.
SECRETS = ("alice", "apple", "tea", "GameState", "cart")


def _no_browser(reason: str) -> t.NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser test must run in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("Playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        _no_browser(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    """The example app on a free port of 127.0.0.1, in a background thread."""
    app = create_app(
        {
            "SECRET_KEY": "browser-test-key",
            "PICKLESESSION_FILE_DIR": str(tmp_path / "sessions"),
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def session_cookie(context: BrowserContext, base: str) -> dict[str, t.Any] | None:
    found = [c for c in context.cookies(base) if c["name"] == "session"]
    return dict(found[0]) if found else None


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_cookie_holds_only_an_id(cookie: dict[str, t.Any]) -> str:
    """Check flags and content of the session cookie; return its session id."""
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    value = cookie["value"]
    for word in SECRETS:
        assert word not in value
    sid, meta, signature = value.split(".")
    assert is_valid_sid(sid)
    assert len(b64decode(sid)) == 32  # 256 random bits, nothing else
    assert re.fullmatch(r"[0-9a-f]+[ps]", meta)  # when the expiry was set, a flag
    assert len(b64decode(signature)) == 32  # an HMAC-SHA256
    for part in (b64decode(sid), b64decode(signature), meta.encode()):
        for word in SECRETS:
            assert word.encode() not in part
    return sid


def stored_ids(app: Flask) -> set[str]:
    settings = app.session_interface.settings_for(app)  # type: ignore[attr-defined]
    return {
        key[len(settings.key_prefix) :]
        for key in settings.store.scan(settings.key_prefix)
    }


def test_shop_session_in_a_real_browser(served: tuple[Flask, str], page: Page) -> None:
    from playwright.sync_api import expect

    app, base = served
    context = page.context
    page.goto(base + "/")
    expect(page.locator("h1")).to_have_text("Welcome")
    assert session_cookie(context, base) is None  # looking stores nothing

    # Anonymous cart: the first change creates the session.
    page.goto(base + "/cart")
    page.click("#add-apple")
    expect(page.locator(".flash")).to_contain_text("Added Apple to your cart.")
    anonymous = check_cookie_holds_only_an_id(
        t.cast(dict, session_cookie(context, base))
    )
    assert stored_ids(app) == {anonymous}
    assert "session=" not in page.evaluate("document.cookie")  # HttpOnly

    # Log in: same content, new id, the old id gone from the store.
    page.click("#login-link")
    page.fill("#username", "alice")
    page.click("#login")
    expect(page.locator("#user")).to_have_text("alice")
    expect(page.locator(".flash strong")).to_have_text("alice")  # Markup, as HTML
    logged_in = check_cookie_holds_only_an_id(
        t.cast(dict, session_cookie(context, base))
    )
    assert logged_in != anonymous
    assert stored_ids(app) == {logged_in}

    # The cart, changed in place, survives a reload.
    page.goto(base + "/cart")
    page.click("#add-tea")
    expect(page.locator(".cart-item")).to_have_count(2)
    page.reload()
    expect(page.locator(".cart-item")).to_have_count(2)
    expect(page.locator("#cart-count")).to_have_text("2")

    # The game object: play, save, play on, load.
    page.click("text=Game")
    page.click("#new-game")
    page.click("#move-east")
    expect(page.locator("#moves")).to_have_text("1")
    page.click("#save-game")
    expect(page.locator(".flash")).to_contain_text("Game saved after 1 moves.")
    page.click("#move-south")
    expect(page.locator("#moves")).to_have_text("2")
    page.click("#move-south")
    expect(page.locator("#moves")).to_have_text("3")
    page.click("#load-game")
    expect(page.locator("#moves")).to_have_text("1")
    expect(page.locator(".board td.player")).to_have_count(1)

    # Everything above lives on the server: the cookie is still only an id.
    assert (
        check_cookie_holds_only_an_id(t.cast(dict, session_cookie(context, base)))
        == logged_in
    )
    assert len(t.cast(dict, session_cookie(context, base))["value"]) < 120

    # Log out: the stored session is deleted, then the cookie too.
    page.click("#logout")
    expect(page.locator(".flash")).to_contain_text("Goodbye, alice.")
    expect(page.locator("#login-link")).to_be_visible()
    assert session_cookie(context, base) is None
    assert stored_ids(app) == set()
