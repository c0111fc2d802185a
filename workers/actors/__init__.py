"""Every actor, declared on the broker of ``workers``.

Actors send each other messages by name (``workers.jobs.send``); modules
import one another only for shared helpers (``images.send_cover_cache``,
``artist.image_lookup``), and ``cooldowns`` holds the rules of when a later
run may ask an upstream again.
"""

from . import album, artist, checks, discogs, images, spotify, track  # noqa: F401
