"""The app of this process: its settings, and its broker with every actor declared on it.

Importing ``workers`` (or any module under it) reads nothing and builds
nothing.  An entry point loads the settings once and starts the app, before
anything needs it:

* ``workers/worker.py``: the module ``dramatiq workers.worker`` loads in every worker process;
* the ``enrich`` command (``workers/cli/main.py``), only for the commands that send or run jobs;
* the dashboard (``dashboard.create_app``), only when its actions are on.

``start(settings)`` builds the broker (``workers.broker.build_broker``), makes
it Dramatiq's global broker, then imports ``workers.actors``: Dramatiq declares
an actor on the global broker when its module is imported, so the actors come
last.  Actors and upstream clients then read ``settings()``, never the
environment.  ``use_settings`` changes what they read from then on (the tests
point the actors at a fake upstream this way); the broker keeps the settings
it was built with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from models import Settings

if TYPE_CHECKING:  # imported by start(): `enrich roots` and friends never load Dramatiq
    import dramatiq

_settings: Optional[Settings] = None
_broker: Optional[dramatiq.Broker] = None


class NotStarted(RuntimeError):
    """Something needs the app before an entry point started it."""


def start(settings: Settings) -> dramatiq.Broker:
    """Build the broker from ``settings``, set it as Dramatiq's, declare every actor on it; once per process.

    ConfigError (one line) when a setting the broker reads is wrong.
    """
    global _broker
    if _broker is not None:
        raise RuntimeError("the app is already started in this process: use workers.app.broker()")
    import dramatiq

    from .broker import build_broker

    built = build_broker(settings)
    dramatiq.set_broker(built)
    _broker = built
    use_settings(settings)
    from . import actors  # noqa: F401  (declared on the broker set above)

    return built


def started() -> bool:
    return _broker is not None


def broker() -> dramatiq.Broker:
    """The broker ``start`` built."""
    if _broker is None:
        raise NotStarted("the app is not started: an entry point calls workers.app.start(settings) first")
    return _broker


def use_settings(settings: Settings) -> None:
    """What ``settings()`` returns from now on in this process."""
    global _settings
    _settings = settings


def settings() -> Settings:
    """The settings the entry point loaded (for actors and clients, read at each use: no environment read)."""
    if _settings is None:
        raise NotStarted("no settings in this process: an entry point calls workers.app.start(settings) first")
    return _settings
