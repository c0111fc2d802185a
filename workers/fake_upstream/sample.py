"""The sample catalog the fake server answers from, loaded from ``sample_data/``.

The JSON files hold documents shaped as the real services return them.  URLs
inside them are written with placeholders (``{FAKE_URL}``, ``{SPOTIFY_API}``,
``{DISCOGS_API}``) and pointed at the running server when loaded.

A MusicBrainz document's keys starting with ``_`` are notes for the fake,
never served: ``_source`` names the real recording or documentation its shape
comes from, ``_score_as_text`` has searches send its ``score`` as a string.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Optional

from .imagegen import jpeg_bytes, png_bytes

SAMPLE_DIR = Path(__file__).with_name("sample_data")

_DISCOGS_SUFFIX = re.compile(r"\s*\(\d+\)$")
_LUCENE_FIELD = re.compile(r'([\w-]+):(?:"((?:[^"\\]|\\.)*)"|(\S+))')


def normalize(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form of a name: ``"Björk"`` -> ``"bjork"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^\w]+", " ", bare).split())


def match_score(wanted: str, actual: str) -> int:
    """100 for the same name, 80 when one contains the other, 0 otherwise."""
    wanted, actual = normalize(wanted), normalize(actual)
    if not wanted or not actual:
        return 0
    if wanted == actual:
        return 100
    if wanted in actual or actual in wanted:
        return 80
    return 0


def parse_lucene(query: str) -> tuple[dict[str, str], str]:
    """``releasegroup:"OK Computer" AND artist:Radiohead`` -> fields and the leftover free text."""
    fields = {}
    for match in _LUCENE_FIELD.finditer(query):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        fields[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    rest = _LUCENE_FIELD.sub(" ", query)
    free = " ".join(word for word in rest.split() if word not in ("AND", "OR", "NOT"))
    return fields, free


def discogs_base_name(title: str) -> str:
    """A Discogs name without its disambiguation suffix: ``"Björk (2)"`` -> ``"Björk"``."""
    return _DISCOGS_SUFFIX.sub("", title)


def _load(name: str, replacements: dict[str, str]) -> Any:
    text = (SAMPLE_DIR / name).read_text(encoding="utf-8")
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


class SampleImages(Mapping):
    """``{path: (content type, bytes)}`` of the sample images, each generated when first asked for.

    An artist with 22 Discogs images costs nothing until one is downloaded.
    """

    def __init__(self, specs: list[dict]) -> None:
        self._specs = {spec["path"]: spec for spec in specs}
        self._rendered: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()

    def __getitem__(self, path: str) -> tuple[str, bytes]:
        spec = self._specs[path]
        with self._lock:
            if path not in self._rendered:
                self._rendered[path] = _render(spec)
            return self._rendered[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


class SampleCatalog:
    """Every sample document, indexed by id, with URLs pointing at ``base_url``.

    Parameters:
        base_url: ``http://127.0.0.1:<port>`` of the running fake server.
        discogs_prefix, spotify_prefix: path prefixes of those fake services.
    """

    def __init__(self, base_url: str, *, discogs_prefix: str, spotify_prefix: str) -> None:
        replacements = {
            "{FAKE_URL}": base_url,
            "{DISCOGS_API}": base_url + discogs_prefix,
            "{SPOTIFY_API}": base_url + spotify_prefix,
        }
        self.notes: dict[str, dict[str, Any]] = {}  # a MusicBrainz id -> its ``_`` keys
        self.artists = self._musicbrainz("musicbrainz_artists.json", replacements)
        self.release_groups = self._musicbrainz("musicbrainz_release_groups.json", replacements)
        self.releases = self._musicbrainz("musicbrainz_releases.json", replacements)
        self.discogs_artists = {d["id"]: d for d in _load("discogs_artists.json", replacements)}
        self.spotify_albums = {d["id"]: d for d in _load("spotify_albums.json", replacements)}
        self.new_release_ids: list[str] = _load("spotify_new_releases.json", replacements)
        specs = _load("images.json", replacements)
        self.images = SampleImages(specs)
        self.cover_art: dict[str, str] = {}
        for spec in specs:
            for mbid in spec.get("cover_art_for", []):
                self.cover_art[mbid] = spec["path"]

    def _musicbrainz(self, name: str, replacements: dict[str, str]) -> dict[str, dict]:
        documents = {}
        for document in _load(name, replacements):
            self.notes[document["id"]] = {k: v for k, v in document.items() if k.startswith("_")}
            documents[document["id"]] = {k: v for k, v in document.items() if not k.startswith("_")}
        return documents

    def recordings(self) -> list[tuple[dict, dict, dict]]:
        """``(recording, track, release)`` for every track of every release (a pregap too)."""
        return [
            (track["recording"], track, release)
            for release in self.releases.values()
            for medium in release.get("media") or []
            for track in [medium.get("pregap"), *(medium.get("tracks") or [])]
            if track and track.get("recording")
        ]

    def release_group_of(self, release_id: str) -> Optional[dict]:
        for group in self.release_groups.values():
            if any(r["id"] == release_id for r in group.get("releases") or []):
                return group
        return None


def credit_names(document: dict) -> list[str]:
    """What MusicBrainz's search finds a document's credit by: the whole credit, then each credited name."""
    credits = document.get("artist-credit") or []
    whole = "".join((c.get("name") or "") + (c.get("joinphrase") or "") for c in credits)
    return [whole, *(c.get("name") or "" for c in credits)]


def _render(spec: dict) -> tuple[str, bytes]:
    """``(content type, bytes)`` of a generated sample image."""
    if spec["format"] == "png":
        return "image/png", png_bytes(spec["width"], spec["height"], tuple(spec["color"]))
    return "image/jpeg", jpeg_bytes(spec["width"], spec["height"], int(spec["color"]))
