"""enrichment:track: a recording by ISRC, else a scored recording search.

The search scores MusicBrainz's score, title similarity and a duration
within 5 seconds (MusicBrainz ``length`` is already in milliseconds); a
recording more than 5 s off is never accepted.
"""

from __future__ import annotations

from typing import Optional

from middleware import record
from models import Track, album_artists

from ..field_changes import apply_changes, better_quality, fields_of, save_changes
from ..jobs import clients, enrichment_actor, load
from ..matching import durations_close, similarity
from ..upstream import PermanentUpstreamError
from .musicbrainz_scoring import ACCEPT_SCORE, best_match, quality_for


def score_recording(candidate: dict, title: str, duration_ms: Optional[int]) -> float:
    close = durations_close(duration_ms, candidate.get("length"))
    if close is False:
        return 0.0
    mb = (candidate.get("score") or 0) / 100
    title_sim = similarity(title, candidate.get("title"))
    if close is None:  # no duration to compare: the other two must carry it
        return 0.5 * mb + 0.5 * title_sim
    return 0.4 * mb + 0.4 * title_sim + 0.2


def _by_isrc(track: Track) -> Optional[dict]:
    if not track.isrc:
        return None
    try:
        recordings = clients.musicbrainz().lookup_isrc(track.isrc)
    except PermanentUpstreamError as exc:
        if exc.error_code in ("not_found", "upstream_404"):
            return None  # an ISRC MusicBrainz does not know: fall back to search
        raise
    best, _ = best_match(recordings, lambda c: 1.0 + similarity(track.title, c.get("title")))
    return best


@enrichment_actor("enrichment:track", entity=("track", "track_id"))
def enrich_track(track_id: str):
    track = load(Track, track_id)
    quality_before = track.data_quality
    record(data_quality_before=quality_before)
    recording, score, how = _by_isrc(track), 1.0, "ISRC"
    if recording is None:
        artists = album_artists(track.album)
        candidates = clients.musicbrainz().search_recordings(track.title, artists[0].name if artists else None)
        recording, score = best_match(candidates, lambda c: score_recording(c, track.title, track.duration_ms))
        how = "search"
        if recording is None or score <= ACCEPT_SCORE:
            record(status="no_data", reason=f"no MusicBrainz recording scored above {ACCEPT_SCORE}",
                   data_quality_after=quality_before, details={"match_score": round(score, 3)})
            return

    values = {
        "duration_ms": recording.get("length"),
        "isrc": None if track.isrc else (recording.get("isrcs") or [None])[0],
        "data_quality": better_quality(track.data_quality, quality_for(score)),
    }
    taken = Track.select().where(
        (Track.album == track.album_id) & (Track.musicbrainz_id == recording["id"]) & (Track.id != track.id)
    ).exists()
    if not taken:
        values["musicbrainz_id"] = recording["id"]
    changes = apply_changes(track, values)
    save_changes(track, changes)
    record(
        status="success",
        reason=f"matched by {how}",
        fields_enriched=fields_of(changes),
        data_quality_after=track.data_quality,
        details={"musicbrainz_id": recording["id"], "match_score": round(score, 3), "field_changes": changes,
                 "data_quality_before": quality_before, "data_quality_after": track.data_quality},
    )
