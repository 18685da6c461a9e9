"""The Flask session interface: opens sessions lazily and saves what changed."""

from __future__ import annotations

import operator
import typing as t
import weakref
from datetime import timezone

from flask.sessions import SessionInterface

from .binding import Binding
from .changes import pending_changes
from .cookie import raw_cookie
from .headers import CookieOptions, set_session_cookie, vary_on_cookie
from .keys import normalize_fallbacks
from .saving import save
from .session import ServerSession
from .settings import build_settings, check_arguments, config_source

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from flask import Flask, Request, Response
    from flask.sessions import SessionMixin

    from .settings import Settings
    from .store import Store

#: Flask's methods for the cookie's attributes, and every config key they
#: read on the Flask versions supported (2.2 falls back to SERVER_NAME for
#: the domain, and may write the domain it found back into the config; the
#: path falls back to APPLICATION_ROOT).
_OPTION_METHODS = (
    "get_cookie_domain",
    "get_cookie_path",
    "get_cookie_secure",
    "get_cookie_samesite",
    "get_cookie_httponly",
    "get_cookie_partitioned",
)
_OPTION_CONFIG = (
    "SESSION_COOKIE_DOMAIN",
    "SESSION_COOKIE_PATH",
    "APPLICATION_ROOT",
    "SERVER_NAME",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_SAMESITE",
    "SESSION_COOKIE_HTTPONLY",
    "SESSION_COOKIE_PARTITIONED",
)
_option_config = operator.itemgetter(*_OPTION_CONFIG)
#: Distinct cookie option sets remembered per interface before starting over.
_OPTIONS_CACHE_SIZE = 16

#: The store names ``PICKLESESSION_STORE`` and ``store=`` take, spelled out so
#: that a type checker catches a typo before the app starts.
StoreName = t.Literal["filesystem", "redis"]
#: The serializers ``PICKLESESSION_SERIALIZER`` and ``serializer=`` take.
SerializerName = t.Literal["pickle", "json"]


class PickleSession(SessionInterface):
    """Server-side sessions for Flask: a signed id in the cookie, data in a store.

    Use ``app.session_interface = PickleSession()``, ``PickleSession(app)`` or
    ``init_app(app)``. Settings come from ``app.config`` on first use, per app;
    arguments given here win over the config.
    """

    #: Flask's flag for interfaces that may unpickle; False in strict JSON mode.
    pickle_based = True
    #: The class of the session objects handed to views.
    session_class = ServerSession

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: Store | StoreName | None = None,
        serializer: SerializerName | None = None,
        key_prefix: str | None = None,
        max_size: int | None = None,
        pickle_allowlist: Iterable[str] | None = None,
    ) -> None:
        self._overrides: dict[str, t.Any] = {
            "PICKLESESSION_STORE": store,
            "PICKLESESSION_SERIALIZER": serializer,
            "PICKLESESSION_KEY_PREFIX": key_prefix,
            "PICKLESESSION_MAX_SIZE": max_size,
            "PICKLESESSION_PICKLE_ALLOWLIST": pickle_allowlist,
        }
        check_arguments(self._overrides)
        if serializer == "json":
            self.pickle_based = False
        self._settings: weakref.WeakKeyDictionary[Flask, Settings] = (
            weakref.WeakKeyDictionary()
        )
        #: The app asked about last and its settings: one app per process is
        #: the rule, and a weak reference compared costs less than a lookup.
        self._last: tuple[weakref.ref[Flask], Settings] | None = None
        #: Cookie attributes by the config values they come from; only used
        #: while Flask's own methods compute them (a subclass may not).
        self._options: dict[tuple[object, ...], CookieOptions] = {}
        self._stock_options = all(
            getattr(type(self), name, None) is getattr(SessionInterface, name, None)
            for name in _OPTION_METHODS
        )
        #: Flask's cookie hooks a subclass overrides, asked as Flask asks them.
        self._hooks = {
            name
            for name in ("should_set_cookie", "get_expiration_time")
            if getattr(type(self), name) is not getattr(SessionInterface, name)
        }
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install on ``app`` and check its configuration now."""
        app.session_interface = self
        self.settings_for(app)
        # Otherwise refused only once a request needs the keys, after its view.
        normalize_fallbacks(app.config.get("SECRET_KEY_FALLBACKS"))

    def settings_for(self, app: Flask) -> Settings:
        """Return the checked ``PICKLESESSION_*`` settings of ``app``.

        Built on first use and rebuilt when one of those keys changes, so a
        value set after :meth:`init_app` (a test, an app factory) applies
        from the next request on.
        """
        last = self._last
        if (
            last is not None
            and last[0]() is app
            and last[1].source == config_source(app.config)
        ):
            return last[1]
        # current_app is a proxy, which cannot be weakly referenced.
        unwrap = getattr(app, "_get_current_object", None)
        if unwrap is not None:
            app = unwrap()
        settings = self._settings.get(app)
        if settings is None or settings.source != config_source(app.config):
            settings = self._settings[app] = build_settings(app, self._overrides)
            self.pickle_based = settings.codec.name == "pickle"
        self._last = (weakref.ref(app), settings)
        return settings

    def open_session(self, app: Flask, request: Request) -> ServerSession | None:
        """Return a session for the request; nothing is verified or read yet."""
        if not app.config.get("SECRET_KEY"):
            return None  # Flask's null session explains that a key is missing
        cookie = raw_cookie(request, self.get_cookie_name(app))
        return self.session_class(Binding(app, self.settings_for(app), cookie))

    def save_session(
        self, app: Flask, session: SessionMixin, response: Response
    ) -> None:
        """Write what the request changed and update the cookie to match."""
        if not isinstance(session, ServerSession) or session._save_failed:
            return
        try:
            if (
                "should_set_cookie" in self._hooks
                and not session._cleared
                and not session._suppressed
            ):
                accessed = session.accessed
                pending_changes(session)  # for session.modified, which it asks
                allowed = self.should_set_cookie(app, session)
                # Flask's version reads ``permanent``: not a use by the view.
                session.accessed = accessed
                if not allowed:
                    # As Flask (and Flask-Session) would: no cookie, so no save.
                    if accessed:
                        vary_on_cookie(response)
                    return
            update = save(session)
        except BaseException:
            session._save_failed = True
            raise
        if update is None:
            if session.accessed or session._binding.refreshed_stamp is not None:
                vary_on_cookie(response)
            return
        options = self._cookie_options(app)
        name = self.get_cookie_name(app)
        if update.value is None:
            response.delete_cookie(name, **dict(options))
        else:
            expires = update.expires
            if "get_expiration_time" in self._hooks:
                when = self.get_expiration_time(app, session)
                if when is not None and when.tzinfo is None:
                    when = when.replace(tzinfo=timezone.utc)  # as Werkzeug reads it
                expires = None if when is None else int(when.timestamp())
            set_session_cookie(
                response, name, update.value, expires, options, known_plain=True
            )
        vary_on_cookie(response)

    def _cookie_options(self, app: Flask) -> CookieOptions:
        """The cookie's attributes, as Flask's ``get_cookie_*`` methods say.

        Those methods only read config keys, so their answer is remembered
        by the values of those keys: six method calls cost more than the
        rest of setting the cookie.
        """
        if not self._stock_options:
            return self._ask_cookie_options(app)
        config = app.config
        try:
            key = _option_config(config)
        except KeyError:  # a Flask without one of them (2.2: PARTITIONED)
            key = tuple(map(config.get, _OPTION_CONFIG))
        try:
            return self._options[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable config value: ask every time
            return self._ask_cookie_options(app)
        options = self._ask_cookie_options(app)
        if len(self._options) >= _OPTIONS_CACHE_SIZE:
            self._options.clear()
        self._options[key] = options
        return options

    def _ask_cookie_options(self, app: Flask) -> CookieOptions:
        options = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "samesite": self.get_cookie_samesite(app),
            "httponly": self.get_cookie_httponly(app),
        }
        partitioned = getattr(self, "get_cookie_partitioned", None)
        if partitioned is not None:  # Flask >= 3.1
            options["partitioned"] = partitioned(app)
        return tuple(options.items())
