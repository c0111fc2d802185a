"""Albums from Spotify under concurrency: one album per Spotify id, on the real PostgreSQL."""

from __future__ import annotations

import threading

from models import Album, album_artists
from workers.actors import spotify as spotify_actors

OKNOTOK = "0tzfI6NFJqcJkWb23R3lRZ"


def test_two_syncs_racing_for_one_spotify_album_make_one_album(pg_db, monkeypatch):
    """Both look, find nothing, and insert: the second insert takes the album the first one made."""
    item = {"id": OKNOTOK, "name": "OK Computer OKNOTOK 1997 2017", "album_type": "album", "total_tracks": 23,
            "artists": [{"id": "4Z8W4fKeB5YxbusRsdQVPb", "name": "Radiohead"}]}
    both_looked = threading.Barrier(2, timeout=10)
    insert = spotify_actors.create_or_none

    def insert_once_both_looked(model, **values):
        if model is Album:
            both_looked.wait()
        return insert(model, **values)

    monkeypatch.setattr(spotify_actors, "create_or_none", insert_once_both_looked)
    results, errors = [], []

    def sync():
        try:
            results.append(spotify_actors.upsert_album(item))
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            pg_db.close()

    threads = [threading.Thread(target=sync) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Album.select().where(Album.spotify_id == OKNOTOK).count() == 1
    assert sorted(created for _, created, _ in results) == [False, True]
    assert len({album.id for album, _, _ in results}) == 1
    assert [a.name for a in album_artists(results[0][0])] == ["Radiohead"]
