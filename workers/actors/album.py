"""enrichment:album: MusicBrainz release group, one release's tracklist, and what follows.

Finds the release group (by its MBID, or by a search scored on MusicBrainz's
score, title and the best-matching credited artist), picks ONE release
(``release_choice``) and takes the album's date, country, status and
tracklist from it, writes the album fields that changed, matches that
release's audio tracks (a medium's pregap at position 0; data tracks and video
recordings left out) to the album's tracks (by position, title and duration)
and creates the missing ones.  Then it sends
``spotify:track-fallback`` when MusicBrainz gives no tracks (found or not) and
the album has a Spotify id (when MusicBrainz found nothing, Spotify is asked
for the album's fields too), and ``cache:album-cover-art`` when there is a
cover and no cached image.
"""

from __future__ import annotations

from typing import Any, Optional

from middleware import record
from models import Album, Track, album_artists

from .. import app
from ..field_changes import apply_changes, better_quality, fields_of, save_changes
from ..jobs import clients, enrichment_actor, load, send
from ..matching import credit_similarity, durations_close, similarity
from .images import send_cover_cache
from .musicbrainz_scoring import ACCEPT_SCORE, best_match, quality_for, top_genres
from .release_choice import pick_release

UNTITLED = "[untitled]"  # MusicBrainz's own title for a track without one
VIDEO_FORMATS = {"DVD-Video", "Blu-ray", "HD-DVD", "VHS", "VCD", "SVCD", "UMD", "LaserDisc", "DVD"}


def score_release_group(candidate: dict, title: str, artist: Optional[str]) -> float:
    """MusicBrainz's own score, title similarity and the best credited artist's similarity, 0..1."""
    mb = (candidate.get("score") or 0) / 100
    title_sim = similarity(title, candidate.get("title"))
    if not artist:
        return 0.5 * mb + 0.5 * title_sim
    return 0.3 * mb + 0.4 * title_sim + 0.3 * credit_similarity(artist, candidate)


def find_release_group(album: Album, artist_name: Optional[str]) -> tuple[Optional[dict], float, str]:
    """(release group, match score, how it was found); (None, best score, reason) when nothing fits."""
    mb = clients.musicbrainz()
    if album.musicbrainz_id:
        return mb.get_release_group(album.musicbrainz_id), 1.0, "lookup by MusicBrainz id"
    candidates = mb.search_release_groups(album.title, artist_name)
    best, score = best_match(candidates, lambda c: score_release_group(c, album.title, artist_name))
    if best is None or score <= ACCEPT_SCORE:
        found = f" (best: {best.get('title')!r}, {score:.2f})" if best else ""
        return None, score, f"no MusicBrainz release group scored above {ACCEPT_SCORE}{found}"
    return mb.get_release_group(best["id"]), score, "search"


def audio_tracks(release: dict) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The release's tracks on audio media, with their disc number, and what was left out.

    A medium's pregap (a hidden track before track 1) comes first, at
    position 0 as MusicBrainz lists it.  Left out and counted: media in a
    video format, the data tracks of enhanced CDs, and video recordings on
    audio media.
    """
    tracks, skipped = [], {"video_media": 0, "data_tracks": 0, "video_recordings": 0}
    for medium in release.get("media") or []:
        if medium.get("format") in VIDEO_FORMATS:
            skipped["video_media"] += 1
            continue
        skipped["data_tracks"] += len(medium.get("data-tracks") or [])
        pregap = [{**medium["pregap"], "position": 0}] if medium.get("pregap") else []
        for track in pregap + (medium.get("tracks") or []):
            if (track.get("recording") or {}).get("video"):
                skipped["video_recordings"] += 1
                continue
            tracks.append({**track, "disc": medium.get("position") or 1})
    return tracks, {what: count for what, count in skipped.items() if count}


_SKIPPED_NAMES = {"video_media": ("video medium", "video media"), "data_tracks": ("data track", "data tracks"),
                  "video_recordings": ("video recording", "video recordings")}


def skipped_phrase(skipped: dict[str, int]) -> str:
    """``{"data_tracks": 1, "video_recordings": 2}`` -> ``"1 data track, 2 video recordings"``."""
    return ", ".join(f"{count} {_SKIPPED_NAMES[what][count != 1]}" for what, count in skipped.items())


def _matching_track(existing: list[Track], mb_track: dict) -> Optional[Track]:
    recording = mb_track.get("recording") or {}
    title = mb_track.get("title") or recording.get("title")
    length = mb_track.get("length") or recording.get("length")
    for track in existing:
        if track.musicbrainz_id and track.musicbrainz_id == recording.get("id"):
            return track
    for track in existing:
        if (track.disc_number, track.track_number) == (mb_track["disc"], mb_track.get("position")):
            if similarity(track.title, title) >= 0.6 and durations_close(track.duration_ms, length) is not False:
                return track
    for track in existing:
        if similarity(track.title, title) >= 0.85 and durations_close(track.duration_ms, length) is not False:
            return track
    return None


def sync_tracks(album: Album, mb_tracks: list[dict]) -> dict[str, int]:
    """Match MusicBrainz tracks to the album's tracks; create the rest (a second run creates none)."""
    existing = list(Track.select().where(Track.album == album))
    used_ids = {t.musicbrainz_id for t in existing if t.musicbrainz_id}
    matched = created = updated = 0
    for mb_track in mb_tracks:
        recording = mb_track.get("recording") or {}
        recording_id = recording.get("id")
        values = {
            "title": mb_track.get("title") or recording.get("title") or UNTITLED,
            "track_number": mb_track.get("position"),
            "disc_number": mb_track["disc"],
            "duration_ms": mb_track.get("length") or recording.get("length"),
            "isrc": (recording.get("isrcs") or [None])[0],
        }
        track = _matching_track(existing, mb_track)
        if track is not None:
            matched += 1
            existing.remove(track)
            if recording_id and not track.musicbrainz_id and recording_id not in used_ids:
                values["musicbrainz_id"] = recording_id
                used_ids.add(recording_id)
            values.pop("title")  # the catalog's own title wins over MusicBrainz's spelling
            changes = apply_changes(track, values)
            if changes:
                save_changes(track, changes)
                updated += 1
            continue
        if recording_id in used_ids:
            recording_id = None  # the same recording twice on one release: keep the first
        inserted = (
            Track.insert(album=album, musicbrainz_id=recording_id, data_quality="medium",
                         enrichment_status="completed", **values)
            .on_conflict_ignore()  # a redelivered job, or a concurrent one, already made it
            .execute()
        )
        if recording_id:
            used_ids.add(recording_id)
        created += 1 if inserted else 0
    return {"tracks_found": len(mb_tracks), "tracks_matched": matched, "tracks_created": created,
            "tracks_updated": updated}


@enrichment_actor("enrichment:album", entity=("album", "album_id"))
def enrich_album(album_id: str):
    album = load(Album, album_id)
    quality_before = album.data_quality
    artists = album_artists(album)
    artist_name = artists[0].name if artists else None
    record(data_quality_before=quality_before, details={"search_query": {"title": album.title, "artist": artist_name}})

    release_group, score, how = find_release_group(album, artist_name)
    if release_group is None:
        fallback = bool(album.spotify_id)
        if fallback:
            send("spotify_track_fallback", str(album.id), album_fields=True)
        send_cover_cache(album)
        record(
            status="no_data",
            reason=how + ("; asked Spotify for the tracks and album fields" if fallback else ""),
            data_quality_after=quality_before,
            details={"match_score": round(score, 3), "spotify_fallback": fallback},
        )
        return

    choice = pick_release(release_group)
    release_detail = clients.musicbrainz().get_release(choice.release_id) if choice.release else {}
    mb_tracks, skipped = audio_tracks(release_detail)
    quality = better_quality(album.data_quality, quality_for(score))
    values = {
        "musicbrainz_id": release_group["id"],
        # One release gives date, country, status and tracks; the group's date only when it lists none.
        "release_date": release_detail.get("date") if choice.release else release_group.get("first-release-date"),
        "release_type": release_group.get("primary-type"),
        "secondary_types": release_group.get("secondary-types") or None,
        "genres": top_genres(release_group) or None,
        "release_status": release_detail.get("status"),
        "release_country": release_detail.get("country"),
        "track_count": len(mb_tracks) or None,
        "data_quality": quality,
    }
    if not album.cover_art_url and (release_detail.get("cover-art-archive") or {}).get("front"):
        values["cover_art_url"] = f"{app.settings().coverart_url}/release-group/{release_group['id']}/front"
    if album.musicbrainz_id:
        values.pop("musicbrainz_id")
    elif Album.select().where((Album.musicbrainz_id == release_group["id"]) & (Album.id != album.id)).exists():
        values.pop("musicbrainz_id")  # another album of the catalog already is this release group
    changes = apply_changes(album, values)
    track_summary = sync_tracks(album, mb_tracks)
    save_changes(album, changes)

    fallback = not mb_tracks and bool(album.spotify_id)
    if fallback:
        send("spotify_track_fallback", str(album.id))
    send_cover_cache(album)

    if mb_tracks:
        status, reason = "success", f"matched by {how}"
    else:
        status = "partial_success"
        reason = "MusicBrainz has no audio tracks for this release" + ("; asked Spotify" if fallback else "")
    if skipped:
        reason += f"; left out {skipped_phrase(skipped)}"
    record(
        status=status,
        reason=reason,
        fields_enriched=fields_of(changes),
        data_quality_after=album.data_quality,
        details={
            "musicbrainz_id": release_group["id"],
            "release_id": choice.release_id,
            "release_choice": choice.reason,
            "tracks_skipped": skipped,
            "match_score": round(score, 3),
            "field_changes": changes,
            "data_quality_before": quality_before,
            "data_quality_after": album.data_quality,
            "spotify_fallback": fallback,
            **track_summary,
        },
    )
