"""One album per Spotify id.

Two ``spotify:sync-new-releases`` jobs running at once (or one racing
``enrich add-album --spotify-id``) could each find no album for an id and
both create one.  A unique index where the id is set makes the second insert
fail, and ``upsert_album`` then takes the row the first one made.
"""

from migrations.schema_ops import create_index_if_missing, duplicated_values

atomic = False  # the index is built CONCURRENTLY on PostgreSQL


class DuplicateSpotifyAlbums(RuntimeError):
    pass


def up(migrator, db):
    dupes, listing = duplicated_values(db, "albums", "spotify_id")
    if dupes:
        raise DuplicateSpotifyAlbums(
            f"{dupes} Spotify ids have more than one album; the unique spotify_id index cannot be built. "
            f"List them with: {listing}; merge each set into one album (move its tracks and credits), "
            "then run `enrich migrate` again."
        )
    create_index_if_missing(db, "albums", "albums_spotify_id_unique", ["spotify_id"], unique=True,
                            where='"spotify_id" IS NOT NULL')
