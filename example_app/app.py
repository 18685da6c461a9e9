"""The example app: log in, fill a cart, play and save a game, all in the session.

Every page keeps its state in Flask's ``session``, which flask-picklesession
stores on the server: the cookie carries only a signed random id. The views
use the session the way an app would without thinking about storage: a list
changed in place, a custom object stored as is, ``Markup`` in flash messages.

Configuration comes from the environment (see :func:`create_app`), so the app
runs with one command on the filesystem store and moves to Redis with two
variables.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
import sys
import typing as t

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup

from flask_picklesession import PickleSession, StoreUnavailable
from flask_picklesession.ids import short_hash

from .game import DIRECTIONS, GameState

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from flask_picklesession import ServerSession

#: Used when SECRET_KEY is not in the environment; never deploy with it.
DEV_SECRET_KEY = "example-app-development-key-not-secret"
#: What the shop sells: id -> (name, price in cents).
CATALOG: dict[str, tuple[str, int]] = {
    "apple": ("Apple", 50),
    "bread": ("Sourdough bread", 420),
    "cheese": ("Comté, 200 g", 690),
    "coffee": ("Coffee beans, 250 g", 890),
    "tea": ("Green tea", 350),
}
_USERNAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")

bp = Blueprint("demo", __name__)


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the app; ``config`` overrides what the environment says.

    Environment: ``SECRET_KEY``; ``EXAMPLE_STORE`` (``filesystem``, the
    default, or ``redis``); ``EXAMPLE_REDIS_URL``; ``EXAMPLE_SESSION_DIR``
    (default: ``instance/sessions`` beside this file).
    """
    # The instance folder (sessions on disk) sits beside this file, not in the
    # current directory: the app finds its sessions wherever it is started.
    app = Flask(
        __name__, instance_path=os.path.join(os.path.dirname(__file__), "instance")
    )
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY"),
        SESSION_COOKIE_SAMESITE="Lax",  # the forms below have no CSRF token
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(days=7),
        PICKLESESSION_KEY_PREFIX="example:",
    )
    app.config.update(store_config(os.environ))
    app.config.update(config or {})
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = DEV_SECRET_KEY
        print(
            "WARNING: SECRET_KEY is not set; using the development key, which"
            " anyone can read in the source. Set SECRET_KEY before deploying.",
            file=sys.stderr,
        )
    PickleSession(app)
    app.register_blueprint(bp)
    app.register_error_handler(StoreUnavailable, _store_unavailable)
    app.register_error_handler(500, _server_error)
    return app


def store_config(environ: t.Mapping[str, str]) -> dict[str, t.Any]:
    """The ``PICKLESESSION_*`` keys that the ``EXAMPLE_*`` variables ask for."""
    kind = environ.get("EXAMPLE_STORE", "filesystem")
    if kind == "filesystem":
        folder = environ.get("EXAMPLE_SESSION_DIR")
        return {"PICKLESESSION_STORE": "filesystem", "PICKLESESSION_FILE_DIR": folder}
    if kind == "redis":
        url = environ.get("EXAMPLE_REDIS_URL", "redis://127.0.0.1:6379/0")
        return {"PICKLESESSION_STORE": "redis", "PICKLESESSION_REDIS_URL": url}
    raise ValueError(f"EXAMPLE_STORE must be 'filesystem' or 'redis', not {kind!r}")


def _server_session() -> ServerSession:
    return t.cast("ServerSession", session._get_current_object())  # type: ignore[attr-defined]


def _store_unavailable(error: StoreUnavailable) -> tuple[str, int]:
    return render_template("error.html", message=str(error)), 503


def _server_error(error: t.Any) -> tuple[str, int]:
    """Errors while saving the session arrive here, wrapped by Flask."""
    original = getattr(error, "original_exception", None)
    if isinstance(original, StoreUnavailable):
        return _store_unavailable(original)
    return render_template("error.html", message="Something went wrong."), 500


# -- home, log in and out ----------------------------------------------------


@bp.route("/")
def index() -> str:
    return render_template("index.html", game=session.get("game"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    if request.method == "GET":
        return render_template("login.html")
    name = request.form.get("username", "").strip()
    if not _USERNAME.fullmatch(name):
        flash("A user name is 1 to 32 letters, digits, '.', '_' or '-'.", "error")
        return render_template("login.html"), 400  # type: ignore[return-value]
    # A new id at every change of privilege: an id planted in the browser
    # before login (session fixation) is worth nothing afterwards.
    _server_session().regenerate()
    session["user"] = name
    session.permanent = request.form.get("remember") == "on"
    flash(
        Markup("Signed in as <strong>%s</strong>; your session has a new id.") % name,
        "success",
    )
    return redirect(url_for("demo.index"))


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    name = session.get("user")
    session.clear()  # deletes the stored session, cart and game included
    if name:
        flash(
            Markup("Goodbye, <strong>%s</strong>. Your session was deleted.") % name,
            "success",
        )
    return redirect(url_for("demo.index"))


# -- shopping cart -------------------------------------------------------------


@bp.route("/cart")
def cart() -> str:
    items = [
        (index, *CATALOG[item]) for index, item in enumerate(session.get("cart", []))
    ]
    total = sum(price for _, _, price in items)
    return render_template("cart.html", items=items, total=total, catalog=CATALOG)


@bp.route("/cart/add", methods=["POST"])
def cart_add() -> Response:
    item = request.form.get("item", "")
    if item not in CATALOG:
        flash("There is no such product.", "error")
        return redirect(url_for("demo.cart"))
    if "cart" not in session:
        session["cart"] = []
    # Changed in place, without session.modified: the save notices.
    session["cart"].append(item)
    flash(
        Markup("Added <strong>%s</strong> to your cart.") % CATALOG[item][0], "success"
    )
    return redirect(url_for("demo.cart"))


@bp.route("/cart/remove", methods=["POST"])
def cart_remove() -> Response:
    items = session.get("cart", [])
    index = request.form.get("index", type=int)
    if index is not None and 0 <= index < len(items):
        removed = items.pop(index)
        flash(Markup("Removed <strong>%s</strong>.") % CATALOG[removed][0], "success")
    return redirect(url_for("demo.cart"))


@bp.route("/cart/empty", methods=["POST"])
def cart_empty() -> Response:
    session.pop("cart", None)
    flash("Your cart is empty.", "success")
    return redirect(url_for("demo.cart"))


# -- saved game ----------------------------------------------------------------


@bp.route("/game")
def game() -> str:
    return render_template(
        "game.html",
        game=session.get("game"),
        saved=session.get("saved_game"),
        directions=DIRECTIONS,
    )


@bp.route("/game/new", methods=["POST"])
def game_new() -> Response:
    session["game"] = GameState.new()
    flash("A new game: find the three treasures.", "success")
    return redirect(url_for("demo.game"))


@bp.route("/game/move", methods=["POST"])
def game_move() -> Response:
    current = session.get("game")
    direction = request.form.get("direction", "")
    if current is not None and direction in DIRECTIONS:
        flash(current.move(direction))  # the object changes in place
    return redirect(url_for("demo.game"))


@bp.route("/game/save", methods=["POST"])
def game_save() -> Response:
    current = session.get("game")
    if current is not None:
        session["saved_game"] = copy.deepcopy(current)
        flash(
            Markup("Game saved after <strong>%d</strong> moves.") % current.moves,
            "success",
        )
    return redirect(url_for("demo.game"))


@bp.route("/game/load", methods=["POST"])
def game_load() -> Response:
    saved = session.get("saved_game")
    if saved is None:
        flash("There is no saved game.", "error")
    else:
        session["game"] = copy.deepcopy(saved)
        flash(
            Markup("Saved game loaded: back to move <strong>%d</strong>.")
            % saved.moves,
            "success",
        )
    return redirect(url_for("demo.game"))


# -- what is stored ------------------------------------------------------------


@bp.route("/session")
def session_info() -> str:
    """Show where the session lives; the id only as a short hash, as in logs."""
    server_session = _server_session()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = app.session_interface.settings_for(app)
    info = settings.store.info(settings.key_prefix + server_session.sid)
    expires = None
    if info is not None and info.ttl >= 0:
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            milliseconds=info.ttl
        )
    cookie = request.cookies.get(current_app.config["SESSION_COOKIE_NAME"], "")
    return render_template(
        "session.html",
        store=settings.store,
        serializer=settings.codec.name,
        prefix=settings.key_prefix,
        info=info,
        expires=expires,
        sid_hash=short_hash(server_session.sid),
        cookie_length=len(cookie),
        contents=[(key, type(value).__name__) for key, value in session.items()],
        lifetime=current_app.permanent_session_lifetime,
    )
