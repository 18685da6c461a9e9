"""The example app, page by page, on the filesystem store and on a real Redis.

Besides what the pages show, each test looks into the store: the point of the
example is what ends up there (and what does not end up in the cookie).
"""

from __future__ import annotations

import re
import time
import typing as t

import pytest
from flask import Flask

import example_app.__main__ as example_main
from example_app import create_app
from example_app.app import DEV_SECRET_KEY, store_config
from example_app.game import GameState
from flask_picklesession import FileSystemStore, RedisStore
from flask_picklesession.cookie import make_cookie
from flask_picklesession.ids import is_valid_sid, new_sid, short_hash
from flask_picklesession.keys import KeyRing
from flask_picklesession.record import parse_raw
from flask_picklesession.sealing import open_entries
from tests import helpers
from tests.helpers import cookie_value, put_cookie

if t.TYPE_CHECKING:
    from pathlib import Path

    from flask.testing import FlaskClient

    from flask_picklesession.settings import Settings

SECRET = "example-test-key"
_ENV = ("SECRET_KEY", "EXAMPLE_STORE", "EXAMPLE_REDIS_URL", "EXAMPLE_SESSION_DIR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own EXAMPLE_* settings must not leak into the tests."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["filesystem", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Flask:
    config: dict[str, t.Any] = {"TESTING": True, "SECRET_KEY": SECRET}
    if request.param == "filesystem":
        config["PICKLESESSION_FILE_DIR"] = str(tmp_path / "sessions")
    else:
        config.update(
            PICKLESESSION_STORE="redis",
            PICKLESESSION_REDIS=request.getfixturevalue("redis_client"),
        )
    return create_app(config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def settings_of(app: Flask) -> Settings:
    return app.session_interface.settings_for(app)  # type: ignore[attr-defined,no-any-return]


def sid_of(client: FlaskClient) -> str:
    sid = helpers.sid_of(client)
    assert is_valid_sid(sid)
    return sid


def stored(app: Flask, sid: str) -> dict[str, t.Any] | None:
    """The session as the store holds it, authenticated and decoded."""
    settings = settings_of(app)
    data = settings.store.load(settings.key_prefix + sid)
    if data is None:
        return None
    entries, _ = open_entries(KeyRing(SECRET), sid, parse_raw(data))
    return {key: settings.codec.decode(entry.value) for key, entry in entries.items()}


def stored_keys(app: Flask) -> list[str]:
    settings = settings_of(app)
    return list(settings.store.scan(settings.key_prefix))


def login(client: FlaskClient, name: str = "alice", remember: bool = False) -> str:
    form = {"username": name, **({"remember": "on"} if remember else {})}
    return client.post("/login", data=form, follow_redirects=True).get_data(
        as_text=True
    )


def add(client: FlaskClient, item: str) -> str:
    return client.post(
        "/cart/add", data={"item": item}, follow_redirects=True
    ).get_data(as_text=True)


# -- pages ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/login", "/cart", "/game", "/session"])
def test_every_page_renders_without_storing_anything(
    app: Flask, client: FlaskClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert "picklesession shop" in response.get_data(as_text=True)
    assert cookie_value(client) is None  # a visit alone stores no session
    assert stored_keys(app) == []


def test_static_css_is_served(client: FlaskClient) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200
    assert "text/css" in response.content_type
    response.close()


# -- log in and out ------------------------------------------------------------


def test_login_gives_a_new_id_and_keeps_the_cart(
    app: Flask, client: FlaskClient
) -> None:
    add(client, "apple")
    before = sid_of(client)
    page = login(client)
    after = sid_of(client)
    assert after != before
    assert stored(app, before) is None  # the old id opens nothing any more
    assert stored(app, after) == {"cart": ["apple"], "user": "alice"}
    # Markup in the flash message is rendered as HTML, the name escaped by %.
    assert "Signed in as <strong>alice</strong>" in page
    assert '<strong id="user">alice</strong>' in page


def test_an_old_cookie_after_login_is_worth_nothing(
    app: Flask, client: FlaskClient
) -> None:
    add(client, "tea")
    planted = cookie_value(client)
    login(client)
    attacker = app.test_client()
    put_cookie(attacker, t.cast(str, planted))
    page = attacker.get("/cart").get_data(as_text=True)
    assert 'id="empty"' in page
    assert "alice" not in page


def test_remember_me_makes_the_session_permanent(
    app: Flask, client: FlaskClient
) -> None:
    response = client.post("/login", data={"username": "alice", "remember": "on"})
    (set_cookie,) = response.headers.getlist("Set-Cookie")
    assert "Expires=" in set_cookie and "HttpOnly" in set_cookie
    assert t.cast(dict, stored(app, sid_of(client)))["_permanent"] is True
    page = client.get("/session").get_data(as_text=True)
    assert "permanent session" in page


def test_a_bad_user_name_is_refused(app: Flask, client: FlaskClient) -> None:
    response = client.post("/login", data={"username": "<script>"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "A user name is 1 to 32 letters" in page
    assert "<script>" not in page
    assert stored_keys(app) == []


def test_logout_deletes_the_session(app: Flask, client: FlaskClient) -> None:
    login(client)
    add(client, "bread")
    sid = sid_of(client)
    page = client.post("/logout", follow_redirects=True).get_data(as_text=True)
    assert stored(app, sid) is None
    assert "Goodbye, <strong>alice</strong>" in page
    assert 'id="login-link"' in page
    # The goodbye message lived in a short session of its own, gone once shown.
    assert cookie_value(client) is None
    assert stored_keys(app) == []


# -- cart ----------------------------------------------------------------------


def test_cart_changed_in_place_survives_requests(
    app: Flask, client: FlaskClient
) -> None:
    add(client, "apple")
    add(client, "tea")
    page = add(client, "apple")
    assert "Added <strong>Apple</strong> to your cart." in page
    sid = sid_of(client)
    assert t.cast(dict, stored(app, sid))["cart"] == ["apple", "tea", "apple"]
    for _ in range(2):
        page = client.get("/cart").get_data(as_text=True)
        assert page.count('class="cart-item"') == 3
        assert '<span id="cart-count">3</span>' in page
    assert '<th class="num" id="total">4.50 €</th>' in page
    client.post("/cart/remove", data={"index": "1"})
    assert t.cast(dict, stored(app, sid))["cart"] == ["apple", "apple"]
    client.post("/cart/empty")
    assert "cart" not in t.cast(dict, stored(app, sid) or {})


def test_unknown_products_are_refused(app: Flask, client: FlaskClient) -> None:
    page = add(client, "caviar")
    assert "There is no such product." in page
    assert stored_keys(app) == []


# -- game ----------------------------------------------------------------------


def test_game_object_round_trips(app: Flask, client: FlaskClient) -> None:
    client.post("/game/new")
    client.post("/game/move", data={"direction": "east"})
    client.post("/game/save")
    sid = sid_of(client)
    saved = t.cast(dict, stored(app, sid))["saved_game"]
    assert isinstance(saved, GameState)
    assert (saved.x, saved.y, saved.moves) == (1, 0, 1)

    client.post("/game/move", data={"direction": "south"})
    client.post("/game/move", data={"direction": "south"})
    game = t.cast(dict, stored(app, sid))["game"]
    assert (game.x, game.y, game.moves) == (1, 2, 3)  # changed in place, saved

    page = client.post("/game/load", follow_redirects=True).get_data(as_text=True)
    assert "Saved game loaded: back to move <strong>1</strong>." in page
    session = t.cast(dict, stored(app, sid))
    assert session["game"] == session["saved_game"] == saved
    assert session["game"] is not session["saved_game"]
    assert session["game"].treasures == saved.treasures  # a set, pickled as is
    assert session["game"].started == saved.started  # an aware datetime too
    assert '<strong id="moves">1</strong>' in page


def test_walls_and_loading_without_a_save(app: Flask, client: FlaskClient) -> None:
    client.post("/game/new")
    page = client.post(
        "/game/move", data={"direction": "north"}, follow_redirects=True
    ).get_data(as_text=True)
    assert "A wall blocks the way north." in page
    page = client.post("/game/load", follow_redirects=True).get_data(as_text=True)
    assert "There is no saved game." in page


def test_game_rules() -> None:
    game = GameState.new(seed=7)
    assert len(game.treasures) == 3 and (0, 0) not in game.treasures
    for x, y in sorted(game.treasures):
        game.x, game.y = x - 1 if x else x + 1, y  # step next to it, then onto it
        game.move("east" if x else "west")
    assert game.won and len(game.found) == 3
    assert game.move("east") == "The game is won; start a new one."
    assert game.rows()[game.y][game.x] == "player"


# -- session page --------------------------------------------------------------


def test_session_page_shows_store_serializer_expiry_and_hash(
    app: Flask, client: FlaskClient
) -> None:
    login(client)
    page = client.get("/session").get_data(as_text=True)
    sid = sid_of(client)
    store = settings_of(app).store
    kind = "FileSystemStore" if isinstance(store, FileSystemStore) else "RedisStore"
    assert re.search(rf'<dd id="store"><code>{kind}\(', page)
    assert '<dd id="serializer">pickle</dd>' in page
    assert f'<code id="sid-hash">{short_hash(sid)}</code>' in page
    assert sid not in page
    assert re.search(r'<dd id="expires">\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC', page)
    assert "<code>user</code></td><td>str</td>" in page


# -- configuration and start-up ------------------------------------------------


def test_dev_key_is_used_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app({"PICKLESESSION_FILE_DIR": str(tmp_path)})
    assert app.config["SECRET_KEY"] == DEV_SECRET_KEY
    assert "WARNING: SECRET_KEY is not set" in capsys.readouterr().err


def test_secret_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRET_KEY", "from-env")
    monkeypatch.setenv("EXAMPLE_SESSION_DIR", str(tmp_path / "env-dir"))
    app = create_app()
    assert app.config["SECRET_KEY"] == "from-env"
    assert capsys.readouterr().err == ""
    store = settings_of(app).store
    assert isinstance(store, FileSystemStore)
    assert store.directory == str(tmp_path / "env-dir")


def test_default_folder_is_the_instance_folder() -> None:
    app = create_app({"SECRET_KEY": SECRET})
    store = t.cast(FileSystemStore, settings_of(app).store)
    assert store.directory.endswith("example_app/instance/sessions")


def test_environment_moves_it_to_redis(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAMPLE_STORE", "redis")
    monkeypatch.setenv("EXAMPLE_REDIS_URL", redis_url)
    app = create_app({"TESTING": True, "SECRET_KEY": SECRET})
    store = settings_of(app).store
    assert isinstance(store, RedisStore)
    try:
        client = app.test_client()
        add(client, "coffee")
        assert stored(app, sid_of(client)) == {"cart": ["coffee"]}
        assert store.client.exists("example:" + sid_of(client)) == 1
    finally:
        store.client.close()


def test_an_unknown_store_is_refused() -> None:
    with pytest.raises(
        ValueError, match="EXAMPLE_STORE must be 'filesystem' or 'redis'"
    ):
        store_config({"EXAMPLE_STORE": "memcached"})


def test_a_store_that_is_down_shows_an_error_page() -> None:
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": SECRET,
            "PICKLESESSION_STORE": "redis",
            "PICKLESESSION_REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    client = app.test_client()
    now = time.time_ns() // 1_000_000  # a cookie older than the lifetime is ignored
    put_cookie(client, make_cookie(KeyRing(SECRET), new_sid(), now, False))
    try:
        response = client.get("/cart")
        assert response.status_code == 503
        assert "Redis unavailable" in response.get_data(as_text=True)
    finally:
        t.cast(RedisStore, settings_of(app).store).client.close()


def test_main_serves_on_loopback_port_5000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("EXAMPLE_SESSION_DIR", str(tmp_path))
    calls: list[dict[str, t.Any]] = []
    monkeypatch.setattr(Flask, "run", lambda self, **kwargs: calls.append(kwargs))
    assert example_main.main([]) == 0
    assert calls == [{"host": "127.0.0.1", "port": 5000}]
    assert "serializer pickle" in capsys.readouterr().out


def test_main_reports_a_bad_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAMPLE_STORE", "memcached")
    assert example_main.main([]) == 2
    assert "error: EXAMPLE_STORE must be" in capsys.readouterr().err
