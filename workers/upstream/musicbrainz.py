"""MusicBrainz web service (``/ws/2``) client, JSON only, one request per second.

Responses keep MusicBrainz's own keys (hyphenated, such as ``artist-credit``,
``first-release-date``; ``length`` in milliseconds), with the fields the
product reads in their documented types (``musicbrainz_answers``): a field
that cannot be read raises ``BadUpstreamData``.
"""

from __future__ import annotations

from typing import Any, Optional

from models.settings import Settings

from . import musicbrainz_answers as answers
from .http import RateLimitedClient

SERVICE = "musicbrainz"

RELEASE_GROUP_INC = "artist-credits releases tags genres"
RELEASE_INC = "recordings media artist-credits isrcs"
ARTIST_INC = "url-rels tags genres"


def lucene_phrase(field: str, value: str) -> str:
    """``field:"value"`` with the quote and backslash escaped for the search syntax."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{field}:"{escaped}"'



class MusicBrainzClient(RateLimitedClient):
    """Lookups and searches against MusicBrainz.

    Parameters:
        settings: ``musicbrainz_url``, ``musicbrainz_user_agent``, ``http_timeout``
            and ``redis_url`` (for the default limiter) are used.
        rate_limiter: object with ``acquire()``; by default one request per
            1.1 s across every process sharing ``settings.redis_url``.
        on_request: called with ``"musicbrainz"`` for every request sent.
        transport: an httpx transport to use instead of the network.
    """

    service = SERVICE
    interval_setting = "musicbrainz_interval"

    def _endpoint(self, settings: Settings) -> tuple[str, dict[str, str], list[Optional[str]]]:
        headers = {"User-Agent": settings.musicbrainz_user_agent, "Accept": "application/json"}
        return settings.musicbrainz_url, headers, []

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._http.get_json(path, params={**params, "fmt": "json"})

    def _search(self, entity: str, key: str, query: str, limit: int, clean) -> list[dict[str, Any]]:
        return answers.hits(self._get(entity, query=query, limit=limit), key, clean)

    def _search_titled(self, entity: str, field: str, title: str, artist: Optional[str], limit: int,
                       clean) -> list[dict[str, Any]]:
        """Search ``entity`` by ``field:"title"``, narrowed to ``artist:"..."`` when given."""
        query = lucene_phrase(field, title)
        if artist:
            query += " AND " + lucene_phrase("artist", artist)
        return self._search(entity, entity + "s", query, limit, clean)

    def get_release_group(self, mbid: str) -> dict[str, Any]:
        """A release group with its artist credit, releases, tags and genres.

        Parameters:
            mbid: the release group's MBID.
        """
        return answers.release_group(self._get(f"release-group/{mbid}", inc=RELEASE_GROUP_INC))

    def search_release_groups(self, title: str, artist: Optional[str] = None, *, limit: int = 10) -> list[dict[str, Any]]:
        """Release groups matching a title (and artist), best first, each with ``score`` (0-100).

        Parameters:
            title: the album title.
            artist: the credited artist's name, or None for any.
            limit: most results wanted.
        """
        return self._search_titled("release-group", "releasegroup", title, artist, limit, answers.release_group)

    def get_release(self, mbid: str) -> dict[str, Any]:
        """A release with its media, tracks, recordings (with ISRCs) and artist credit.

        Parameters:
            mbid: the release's MBID.
        """
        return answers.release(self._get(f"release/{mbid}", inc=RELEASE_INC))

    def get_artist(self, mbid: str) -> dict[str, Any]:
        """An artist with its URL relations, tags and genres.

        Parameters:
            mbid: the artist's MBID.
        """
        return answers.artist(self._get(f"artist/{mbid}", inc=ARTIST_INC))

    def search_artists(self, name: str, *, limit: int = 10) -> list[dict[str, Any]]:
        """Artists matching a name, best first, each with ``score``.

        Parameters:
            name: the artist's name.
            limit: most results wanted.
        """
        return self._search("artist", "artists", lucene_phrase("artist", name), limit, answers.artist)

    def lookup_isrc(self, isrc: str) -> list[dict[str, Any]]:
        """The recordings carrying an ISRC (``not_found`` when MusicBrainz has none).

        Parameters:
            isrc: the 12-character ISRC.
        """
        return answers.hits(self._get(f"isrc/{isrc.strip().upper()}"), "recordings", answers.recording)

    def search_recordings(self, title: str, artist: Optional[str] = None, *, limit: int = 10) -> list[dict[str, Any]]:
        """Recordings matching a title (and artist), best first, each with ``score``.

        Parameters:
            title: the recording's title.
            artist: the credited artist's name, or None for any.
            limit: most results wanted.
        """
        return self._search_titled("recording", "recording", title, artist, limit, answers.recording)
