"""Every actor, declared on the app's broker: ``workers.app.start`` imports this package once it set the broker.

Actors send each other messages by name (``workers.jobs.send``); modules
import one another only for shared helpers (``images.send_cover_cache``,
``artist.image_lookup``), and ``cooldowns`` holds the rules of when a later
run may ask an upstream again.
"""

from .. import app

if not app.started():
    # Dramatiq declares an actor on the global broker at import: before the app set its own, that would be
    # a default broker nobody consumes from.
    raise app.NotStarted("workers.actors is imported before the app set its broker: "
                         "start it first with workers.app.start(settings) (the entry points do)")

from . import album, artist, checks, discogs, images, spotify, track  # noqa: E402,F401
