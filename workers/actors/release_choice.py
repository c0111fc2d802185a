"""Which one release of a release group an album takes its date, country and tracklist from.

The rule, in order:

1. an ``Official`` release before one with no status, before any other
   status (``Promotion``, ``Bootleg``...), ``Pseudo-Release`` last;
2. the release dated exactly as the group's ``first-release-date``;
3. the release certainly out first: a partial date means "some time in that
   year or month", so ``1973`` is compared as 1973-01-01..1973-12-31 and is
   earlier than ``1974-02-01`` but not than ``1973-03-24``.  Releases are
   ordered by the last day their date allows, then the more precise date;
4. a release without a date after every dated one;
5. a release titled as the group (not a "Deluxe Edition"), then the lowest id.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Optional

from ..matching import normalize

_STATUS_RANK = {"Official": 0, None: 1, "Pseudo-Release": 3}
_OTHER_STATUS = 2


def latest_day(date: Optional[str]) -> Optional[dt.date]:
    """The last day a MusicBrainz date (``1973``, ``1973-03``, ``1973-03-24``) allows; None when undated."""
    if not date:
        return None
    parts = [int(p) for p in date.split("-")]
    year, month, day = parts + [None] * (3 - len(parts))
    month = month or 12
    return dt.date(year, month, day or calendar.monthrange(year, month)[1])


@dataclass(frozen=True)
class ReleaseChoice:
    """The chosen release (None for a group without releases) and why, for the job's details."""

    release: Optional[dict]
    reason: str

    @property
    def release_id(self) -> Optional[str]:
        return self.release["id"] if self.release else None


def _key(release: dict, first_release: Optional[str], group_title: str) -> tuple:
    date = release.get("date")
    last = latest_day(date)
    return (
        _STATUS_RANK.get(release.get("status"), _OTHER_STATUS),
        not (first_release and date == first_release),
        last is None,
        last or dt.date.max,
        -len(date or ""),
        normalize(release.get("title")) != group_title,
        release["id"],
    )


def pick_release(release_group: dict) -> ReleaseChoice:
    """The release the album is taken from, by the rule in this module's docstring.

    ``release_group`` is read by ``musicbrainz_answers.release_group``: every
    release has an id and a well-formed date or None.
    """
    releases = release_group.get("releases") or []
    if not releases:
        return ReleaseChoice(None, "the release group lists no release")
    first_release = release_group.get("first-release-date")
    title = normalize(release_group.get("title"))
    chosen = min(releases, key=lambda r: _key(r, first_release, title))
    status = chosen.get("status") or "no status"
    date = chosen.get("date")
    if date and date == first_release:
        when = f"dated as the group's first release ({date})"
    elif date:
        when = f"the earliest date ({date})"
    else:
        when = "undated"
    return ReleaseChoice(chosen, f"{status}, {when}; 1 of {len(releases)} releases")
