"""How well two names match, and the rules built on that score."""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher
from typing import Optional

_DISAMBIGUATION = re.compile(r"\s*\(\d+\)$")  # Discogs: "Björk (2)"
_NOT_WORD = re.compile(r"[^\w]+")


def normalize(text: Optional[str]) -> str:
    """Case-, accent- and punctuation-insensitive form: "Björk!" -> "bjork"."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    stripped = stripped.replace("&", " and ")
    return " ".join(_NOT_WORD.sub(" ", stripped).split())


def similarity(a: Optional[str], b: Optional[str]) -> float:
    """0.0 (nothing alike) to 1.0 (the same name once normalized)."""
    left, right = normalize(a), normalize(b)
    if not left or not right:
        return 0.0
    if left == right:
        return 1.0
    return SequenceMatcher(None, left, right).ratio()


def strip_disambiguation(name: str) -> str:
    """Discogs numbers same-named artists: "Björk (2)" -> "Björk"."""
    return _DISAMBIGUATION.sub("", name or "")


def durations_close(a_ms: Optional[int], b_ms: Optional[int], tolerance_ms: int = 5000) -> Optional[bool]:
    """True within the tolerance, False outside, None when either is unknown."""
    if a_ms is None or b_ms is None:
        return None
    return abs(a_ms - b_ms) <= tolerance_ms


def credited_names(entity: dict) -> str:
    """The artist credit of a MusicBrainz object as printed: each name followed by its join phrase."""
    parts = []
    for credit in entity.get("artist-credit") or []:
        if isinstance(credit, dict):
            name = credit.get("name") or (credit.get("artist") or {}).get("name") or ""
            parts.append(name + (credit.get("joinphrase") or ""))
    return "".join(parts).strip()


def credited_artists(entity: dict) -> list[str]:
    """Each credited artist of a MusicBrainz object: the name credited and the artist's own name."""
    names = []
    for credit in entity.get("artist-credit") or []:
        if isinstance(credit, dict):
            for name in (credit.get("name"), (credit.get("artist") or {}).get("name")):
                if name and name not in names:
                    names.append(name)
    return names


def credit_similarity(name: Optional[str], entity: dict) -> float:
    """How well a name matches a MusicBrainz credit: the best of the whole credit and each credited artist.

    "Ed Sheeran" matches "Ed Sheeran feat. Meek Mill & A Boogie Wit da Hoodie"
    through its first artist (1.0), not its joined string (0.32).
    """
    candidates = [credited_names(entity), *credited_artists(entity)]
    return max((similarity(name, candidate) for candidate in candidates), default=0.0)
