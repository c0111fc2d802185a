"""The one release an album is taken from: the rule of workers/actors/release_choice.py."""

from __future__ import annotations

import pytest

from workers.actors.release_choice import latest_day, pick_release
from workers.matching import credit_similarity


def group(*releases, first=None, title="Album"):
    return {"title": title, "first-release-date": first,
            "releases": [{"id": f"r{i}", "title": title, "status": "Official", **r} for i, r in enumerate(releases)]}


def chosen(g) -> str:
    return pick_release(g).release_id


@pytest.mark.parametrize("dates, earliest", [
    (("1974-02-01", "1973"), "1973"),  # all of 1973 is before February 1974
    (("1973", "1973-03-24"), "1973-03-24"),  # "1973" may be December: the complete date is certainly out by then
    (("1973-03", "1973-03-24"), "1973-03-24"),
    (("1973-04-02", "1973-03"), "1973-03"),
    ((None, "1999"), "1999"),  # undated last
])
def test_partial_dates_are_the_year_or_month_they_stand_for(dates, earliest):
    g = group(*({"date": d} for d in dates))
    assert pick_release(g).release["date"] == earliest


def test_official_before_any_other_status_and_pseudo_release_last():
    g = group({"date": "1970", "status": "Bootleg"}, {"date": "1972", "status": "Pseudo-Release"},
              {"date": "1980"}, {"date": "1971", "status": None})
    assert chosen(g) == "r2"
    g["releases"].pop(2)
    assert chosen(g) == "r3"  # no status before Bootleg...
    g["releases"].pop(2)
    assert chosen(g) == "r0"  # ...and Bootleg before Pseudo-Release


def test_the_release_dated_as_the_groups_first_release_wins():
    g = group({"date": "1973"}, {"date": "1973-03-24"}, {"date": "1973-03-01"}, first="1973-03-01")
    choice = pick_release(g)
    assert choice.release_id == "r2"
    assert choice.reason == "Official, dated as the group's first release (1973-03-01); 1 of 3 releases"


def test_ties_go_to_the_release_titled_as_the_group_then_the_lowest_id():
    g = group({"date": "2001-01-01", "title": "Album (Deluxe Edition)"}, {"date": "2001-01-01"}, {"date": "2001-01-01"})
    assert chosen(g) == "r1"


def test_a_group_without_releases_names_none():
    choice = pick_release({"releases": []})
    assert choice.release is None and choice.reason == "the release group lists no release"


def test_latest_day():
    assert [str(latest_day(d)) for d in ("1973", "1973-02", "2024-02", "1973-03-24")] == [
        "1973-12-31", "1973-02-28", "2024-02-29", "1973-03-24"]
    assert latest_day(None) is None


def test_each_credited_artist_is_scored():
    credit = {"artist-credit": [{"name": "Ed Sheeran", "joinphrase": " feat. ", "artist": {"name": "Ed Sheeran"}},
                                {"name": "Meek Mill", "joinphrase": " & ", "artist": {"name": "Meek Mill"}},
                                {"name": "A Boogie Wit da Hoodie", "joinphrase": "",
                                 "artist": {"name": "A Boogie Wit da Hoodie"}}]}
    assert credit_similarity("Ed Sheeran", credit) == 1.0
    assert credit_similarity("Meek Mill", credit) == 1.0
    assert credit_similarity("Ed Sheeran feat. Meek Mill & A Boogie Wit da Hoodie", credit) == 1.0
    assert credit_similarity("Radiohead", credit) < 0.5
