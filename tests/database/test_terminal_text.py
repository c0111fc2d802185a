"""Text printed for a person shows control characters and bidirectional marks instead of obeying them.

Names and titles come from the catalog and upstream services, errors and
operations from messages: any of them may hold ESC sequences (clear the
screen, set the terminal title), BEL, C1 controls or U+202E (reverse the
line).  ``enrich add-album``, ``roots`` and ``timeline`` print them made
visible; ``--json`` keeps the exact text, escaped as JSON.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from models import Album, EnrichmentLog, utcnow
from workers.cli.common import visible

from test_hostile_input import enrich

# Every class of character a terminal obeys, each in a name, title, operation, reason or error.
OBEYED = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
TITLE = "T\x1b[2Jx \u202eesreveR\u202c \x9b31m C1"
ARTIST = "Art\x1b]0;pwned\x07ist \u2066iso\u2069 \u200fmark"
OPERATION = "check:\x1b[31mred\x1b[0m\x7f"
REASON = "reason \u2028 next line \x85 nel \u061c"
ERROR = "Err\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\ \r overwrite \x08\x08"


@pytest.mark.parametrize("text, shown", [
    ("a\x1bb", "a\\x1bb"), ("\x07", "\\x07"), ("\x7f", "\\x7f"), ("\x9b", "\\x9b"), ("\x00", "\\x00"),
    ("\u202e", "\\u202e"), ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"), ("\u200e\u200f", "\\u200e\\u200f"),
    ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"), ("\u2028\u2029\u061c", "\\u2028\\u2029\\u061c"),
    ("Björk 👩‍👩‍👧 עברית", "Björk 👩‍👩‍👧 עברית"),  # letters, emoji (with their joiners) and right-to-left script stay
])
def test_visible_escapes_what_a_terminal_obeys_and_nothing_else(text, shown):
    assert visible(text) == shown


def _assert_nothing_obeyed(output: str) -> None:
    found = OBEYED.findall(output.replace("\n", ""))
    assert not found, (found, output)


def test_add_album_roots_and_timeline_print_hostile_text_visibly(url):
    added = enrich("add-album", TITLE, "--artist", ARTIST, url=url)
    assert added.returncode == 0, added.stderr
    _assert_nothing_obeyed(added.stderr)
    assert "T\\x1b[2Jx" in added.stderr and "Art\\x1b]0;pwned\\x07ist" in added.stderr
    album_id = added.stdout.strip()
    assert Album.get_by_id(album_id).title == TITLE  # stored exactly

    root_id = str(uuid.uuid4())
    now = utcnow()
    common = dict(created_at=now, updated_at=now, started_at=now, completed_at=now, duration_ms=5)
    EnrichmentLog.create(job_id=root_id, is_root_job=True, operation=OPERATION, entity_type="album",
                         entity_id=album_id, status="degraded", reason=REASON, failed_children=1, **common)
    EnrichmentLog.create(job_id=str(uuid.uuid4()), parent_job_id=root_id, operation="enrichment:artist",
                         status="failed", error_code="upstream\x1b[5m", last_error=ERROR, **common)

    roots = enrich("roots", url=url)
    assert roots.returncode == 0, roots.stderr
    _assert_nothing_obeyed(roots.stdout)
    assert "check:\\x1b[31mred\\x1b[0m\\x7f" in roots.stdout

    timeline = enrich("timeline", root_id, url=url)
    assert timeline.returncode == 0, timeline.stderr
    _assert_nothing_obeyed(timeline.stdout + timeline.stderr)
    assert "\\x1b]8;;http://evil.example/" in timeline.stdout and "overwrite \\x08\\x08" in timeline.stdout
    assert 'album "T\\x1b[2Jx \\u202e' in timeline.stdout

    # --json: the real text, escaped as JSON (so nothing raw reaches the terminal either).
    as_json = enrich("timeline", root_id, "--json", url=url)
    _assert_nothing_obeyed(as_json.stdout)
    items = {item["operation"]: item for item in json.loads(as_json.stdout)["items"]}
    assert items[OPERATION]["reason"] == REASON
    assert items["enrichment:artist"]["last_error"] == ERROR
    page = json.loads(enrich("roots", "--json", url=url).stdout)
    assert page["roots"][0]["operation"] == OPERATION


def test_an_error_quoting_hostile_input_is_printed_visibly(url):
    result = enrich("timeline", "job\x1b[2J\u202eid", url=url)
    assert result.returncode == 1
    _assert_nothing_obeyed(result.stderr)
    assert "job\\x1b[2J\\u202eid" in result.stderr
