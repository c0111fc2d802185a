"""The thresholds and helpers the MusicBrainz jobs share."""

from __future__ import annotations

from typing import Callable, Optional

from ..matching import normalize

ACCEPT_SCORE = 0.8  # a match must score above this to be written
HIGH_QUALITY_SCORE = 0.9


def best_match(candidates: list[dict], scorer: Callable[[dict], float]) -> tuple[Optional[dict], float]:
    """The highest-scoring candidate and its score ((None, 0.0) for no candidates)."""
    best, best_score = None, 0.0
    for candidate in candidates:
        score = scorer(candidate)
        if score > best_score:
            best, best_score = candidate, score
    return best, best_score


def namesakes(best: dict, candidates: list[dict], scorer: Callable[[dict], float]) -> list[dict]:
    """Other candidates bearing the best one's name that also score above ACCEPT_SCORE.

    Two artists can share a name (two GB bands called "Solstice", scoring 100
    and 96): then the name alone cannot tell which one the catalog means.
    """
    name = normalize(best.get("name") or best.get("title"))
    return [
        c for c in candidates
        if c.get("id") != best.get("id") and normalize(c.get("name") or c.get("title")) == name and scorer(c) > ACCEPT_SCORE
    ]


def quality_for(score: float) -> str:
    return "high" if score > HIGH_QUALITY_SCORE else "medium"


def top_genres(entity: dict, limit: int = 5) -> list[str]:
    """Genres (else tags) by vote count, most voted first."""
    votes = entity.get("genres") or entity.get("tags") or []
    ranked = sorted(votes, key=lambda g: (-(g.get("count") or 0), g.get("name") or ""))
    return [g["name"] for g in ranked[:limit] if g.get("name")]
