"""Configuration is checked once per app, with errors that name the key."""

from __future__ import annotations

import datetime
import re
import time
from email.utils import parsedate_to_datetime

import flask
import pytest

from flask_picklesession import (
    ConfigurationError,
    FileSystemStore,
    PickleSession,
    RedisStore,
    SessionTooLarge,
)

BAD = [
    ("PICKLESESSION_STORE", "memcached"),
    ("PICKLESESSION_STORE", 42),
    ("PICKLESESSION_SERIALIZER", "yaml"),
    ("PICKLESESSION_MAX_SIZE", "big"),
    ("PICKLESESSION_MAX_SIZE", 0),
    ("PICKLESESSION_MAX_SIZE", True),
    ("PICKLESESSION_KEY_PREFIX", "../"),
    ("PICKLESESSION_KEY_PREFIX", 5),
    ("PICKLESESSION_PICKLE_ALLOWLIST", "datetime.date"),
    ("PICKLESESSION_PICKLE_ALLOWLIST", ["no_dot"]),
    ("PICKLESESSION_REDIS_URL", ""),
    ("PICKLESESSION_FILE_DIR", ""),  # not the current folder
    ("PICKLESESSION_FILE_DIR", 7),
    ("PICKLESESSION_PICKLE_ALLOWLIST", iter(["datetime.date"])),  # used up later
]


def make(tmp_path, **config):
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="k", **config)
    return app


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_bad_setting_fails_at_init_naming_the_key(tmp_path, key, value):
    config = {key: value}
    if key == "PICKLESESSION_REDIS_URL":
        config["PICKLESESSION_STORE"] = "redis"
    with pytest.raises(ConfigurationError, match=key):
        PickleSession(make(tmp_path, **config))


def test_a_wrong_redis_client_is_refused_even_without_the_redis_store(tmp_path):
    with pytest.raises(ConfigurationError, match="PICKLESESSION_REDIS"):
        PickleSession(make(tmp_path, PICKLESESSION_REDIS=object()))


@pytest.mark.parametrize("key", ["PICKLESESSION_REDIS", "PICKLESESSION_REDIS_URL"])
def test_redis_configured_without_the_redis_store_is_logged(
    tmp_path, redis_client, caplog, key
):
    value = redis_client if key == "PICKLESESSION_REDIS" else "redis://127.0.0.1:1/0"
    app = make(tmp_path, **{key: value})
    with caplog.at_level("WARNING", logger="flask_picklesession"):
        settings = PickleSession(app).settings_for(app)
    assert isinstance(settings.store, FileSystemStore)
    (record,) = [r for r in caplog.records if r.name == "flask_picklesession"]
    assert key in record.getMessage()
    assert "PICKLESESSION_STORE = 'redis'" in record.getMessage()


def test_an_allowlist_in_json_mode_is_logged_as_unused(tmp_path, caplog):
    app = make(
        tmp_path,
        PICKLESESSION_SERIALIZER="json",
        PICKLESESSION_PICKLE_ALLOWLIST=["datetime.date"],
    )
    with caplog.at_level("WARNING", logger="flask_picklesession"):
        PickleSession(app)
    assert "PICKLESESSION_PICKLE_ALLOWLIST is not used" in caplog.text


def test_an_allowlisted_module_that_cannot_be_found_is_logged(tmp_path, caplog):
    app = make(
        tmp_path,
        PICKLESESSION_PICKLE_ALLOWLIST=["datetime.date", "shop_modles.Cart"],
    )
    with caplog.at_level("WARNING", logger="flask_picklesession"):
        PickleSession(app)
    assert "'shop_modles', which cannot be found" in caplog.text
    assert "datetime" not in caplog.text


ARGUMENT_BAD = [
    ("store", "memcached"),
    ("serializer", "yaml"),
    ("key_prefix", 5),
    ("max_size", -1),
    ("pickle_allowlist", "datetime.date"),
]


@pytest.mark.parametrize(("name", "value"), ARGUMENT_BAD)
def test_bad_argument_fails_at_construction_naming_it(name, value):
    with pytest.raises(ConfigurationError, match=f"the {name} argument"):
        PickleSession(**{name: value})


def test_a_misspelt_key_is_logged_with_the_likely_one(tmp_path, caplog):
    app = make(tmp_path, PICKLESESSION_SERIALISER="json")
    with caplog.at_level("WARNING", logger="flask_picklesession"):
        PickleSession(app)
    (record,) = [r for r in caplog.records if r.name == "flask_picklesession"]
    assert "PICKLESESSION_SERIALISER is not a flask-picklesession setting" in (
        record.getMessage()
    )
    assert "did you mean PICKLESESSION_SERIALIZER?" in record.getMessage()


def test_a_relative_folder_stays_where_the_app_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make(tmp_path, PICKLESESSION_FILE_DIR="relative")
    settings = PickleSession(app).settings_for(app)
    assert settings.store.directory == str(tmp_path / "relative")


def test_a_folder_under_the_home_directory_is_expanded(tmp_path, monkeypatch):
    """A setting read from an environment file is not expanded by a shell:
    ``~`` would otherwise become a folder named ``~`` in the working one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    app = make(tmp_path, PICKLESESSION_FILE_DIR="~/sessions")
    settings = PickleSession(app).settings_for(app)
    assert settings.store.directory == str(tmp_path / "home" / "sessions")


def test_a_folder_that_is_a_file_fails_at_init(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    app = make(tmp_path, PICKLESESSION_FILE_DIR=str(tmp_path / "taken"))
    with pytest.raises(ConfigurationError, match=r"is a file, not a folder"):
        PickleSession(app)


def test_a_store_of_no_folder_is_refused():
    with pytest.raises(ValueError, match="folder"):
        FileSystemStore("")


def test_defaults(tmp_path):
    app = make(tmp_path)
    settings = PickleSession(app).settings_for(app)
    assert isinstance(settings.store, FileSystemStore)
    assert settings.store.directory == str(tmp_path / "sessions")
    assert settings.key_prefix == "session:" and settings.max_size == 262144
    assert settings.codec.name == "pickle"


def test_explicit_arguments_win_over_config(tmp_path, redis_client):
    app = make(
        tmp_path, PICKLESESSION_STORE="filesystem", PICKLESESSION_SERIALIZER="pickle"
    )
    store = RedisStore(redis_client)
    ps = PickleSession(store=store, serializer="json")
    ps.init_app(app)
    settings = ps.settings_for(app)
    assert settings.store is store and settings.codec.name == "json"
    assert app.session_interface is ps


def test_one_instance_serves_apps_with_their_own_settings(tmp_path):
    ps = PickleSession()
    one = make(tmp_path / "one", PICKLESESSION_KEY_PREFIX="one:")
    two = make(tmp_path / "two", PICKLESESSION_SERIALIZER="json")
    one.session_interface = two.session_interface = ps
    for app in (one, two):

        @app.route("/")
        def index():
            flask.session["x"] = 1
            return "ok"

        app.test_client().get("/")
    assert ps.settings_for(one).key_prefix == "one:"
    assert ps.settings_for(two).codec.name == "json"
    assert (tmp_path / "one" / "sessions").is_dir() and (
        tmp_path / "two" / "sessions"
    ).is_dir()


def test_settings_read_lazily_on_first_request(tmp_path):
    app = make(tmp_path)
    app.session_interface = PickleSession()
    app.config["PICKLESESSION_KEY_PREFIX"] = "late:"  # set after install

    @app.route("/")
    def index():
        flask.session["x"] = 1
        return "ok"

    app.test_client().get("/")
    assert any(p.name.startswith("late:") for p in (tmp_path / "sessions").iterdir())


def test_keys_changed_after_init_apply_from_the_next_request(tmp_path):
    app = make(tmp_path, TESTING=True)
    ps = PickleSession(app)
    first = ps.settings_for(app)
    assert ps.settings_for(app) is first  # nothing changed: nothing rebuilt

    @app.route("/set/<int:size>")
    def set_blob(size):
        flask.session["blob"] = "x" * size
        return "ok"

    c = app.test_client()
    assert c.get("/set/500").status_code == 200
    app.config.update(PICKLESESSION_MAX_SIZE=200, PICKLESESSION_SERIALIZER="json")
    with pytest.raises(SessionTooLarge):
        c.get("/set/300")
    assert ps.settings_for(app).codec.name == "json" and not ps.pickle_based
    app.config["PICKLESESSION_FILE_DIR"] = str(tmp_path / "elsewhere")
    assert app.test_client().get("/set/10").status_code == 200
    names = [p.name for p in (tmp_path / "elsewhere").iterdir()]
    assert [n for n in names if n.startswith("session:")] != []


def test_a_bad_value_set_after_init_fails_the_next_request(tmp_path):
    app = make(tmp_path, TESTING=True)
    PickleSession(app)
    app.config["PICKLESESSION_SERIALIZER"] = "yaml"

    @app.route("/")
    def index():
        return "ok"

    with pytest.raises(ConfigurationError, match="PICKLESESSION_SERIALIZER"):
        app.test_client().get("/")


@pytest.mark.parametrize("lifetime", [0, -5, datetime.timedelta(0)])
def test_a_lifetime_that_is_not_positive_is_a_clear_error(tmp_path, lifetime):
    app = make(tmp_path, PERMANENT_SESSION_LIFETIME=lifetime)
    PickleSession(app)

    @app.route("/")
    def index():
        return "ok"

    app.testing = True  # let the error through instead of a 500 page
    with pytest.raises(ConfigurationError, match="PERMANENT_SESSION_LIFETIME"):
        app.test_client().get("/")


def test_a_lifetime_changed_at_run_time_applies_to_the_next_request(tmp_path):
    app = make(tmp_path, PERMANENT_SESSION_LIFETIME=3600)
    PickleSession(app)

    @app.route("/")
    def index():
        flask.session.permanent = True
        flask.session["x"] = 1
        return "ok"

    client = app.test_client()
    for seconds in (3600, 7200):
        app.config["PERMANENT_SESSION_LIFETIME"] = seconds
        header = client.get("/").headers["Set-Cookie"]
        expires = re.search(r"Expires=([^;]+)", header).group(1)
        left = parsedate_to_datetime(expires).timestamp() - time.time()
        assert seconds - 5 < left <= seconds


def test_an_allowlist_given_as_an_iterator_is_kept_whole(tmp_path):
    """The argument is typed Iterable: checking it must not use it up."""
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config["SECRET_KEY"] = "k"
    PickleSession(app, pickle_allowlist=iter(["datetime.date"]))

    @app.route("/")
    def save():
        flask.session["day"] = datetime.date(2026, 1, 1)
        return "ok"

    assert app.test_client().get("/").status_code == 200
