"""Every actor, declared on the broker of ``workers``.

Actors send each other messages by name (``workers.jobs.send``), so the
modules need not import one another.
"""

from . import album, artist, checks, discogs, images, spotify, track  # noqa: F401
