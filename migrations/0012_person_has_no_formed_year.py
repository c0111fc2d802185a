"""A Person's ``formed_year`` is cleared: it was the year of birth.

MusicBrainz's life-span ``begin`` is when a group formed, but for a
``Person`` it is a birth date.  Enrichment used to store that year as
``formed_year``; it now leaves it empty for a Person (``formed_year`` means
the year a group, orchestra or choir formed).  Artists already enriched get
the same: a Person keeps no ``formed_year``.  Data only: no schema change.
"""


def up(migrator, db):
    db.execute_sql("UPDATE artists SET formed_year = NULL WHERE artist_type = 'Person' AND formed_year IS NOT NULL")
