"""``enrich demo`` on a fresh folder: what a new user sees on their first run.

The demo starts its own fake upstream server and uses its own SQLite file and
in-memory broker, so this test needs neither the network, PostgreSQL nor
Redis; it runs the real actors and middleware end to end (about half a minute).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time


def test_demo_enriches_the_sample_albums_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "LOG_LEVEL")}
    # Real-looking settings the demo must ignore: it never leaves the machine.
    env.update(REDIS_URL="redis://127.0.0.1:1/0", MUSICBRAINZ_URL="http://127.0.0.1:1/ws/2", DISCOGS_TOKEN="real")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, (out[-3000:], result.stderr[-3000:])
    assert "Traceback" not in out + result.stderr
    assert "SAMPLE DATA" in out and "not the real APIs" in out
    assert took < 90, took

    match = re.search(r"(\d+) of (\d+) albums enriched, (\d+) tracks, (\d+) jobs, (\d+) retried, (\d+) degraded", out)
    assert match, out[-2000:]
    enriched, albums, tracks, jobs, retried, degraded = map(int, match.groups())
    assert albums == 6 and enriched >= 5 and tracks > 50 and jobs > albums
    assert retried >= 1 and degraded >= 1

    # The tables and timelines show it too: a degraded root, a retried job, Discogs' refusal.
    assert re.search(r"^\S+\s+\S+\s+degraded\s+check:album-enrichment", out, re.M)
    assert "↻1" in out
    assert "upstream_400" in out

    # Everything is in the demo database, in the folder it was run from.
    db = sqlite3.connect(tmp_path / "enrichment-demo.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM enrichment_logs WHERE is_root_job AND status = 'degraded'").fetchone()[0] >= 1
        assert db.execute("SELECT COUNT(*) FROM enrichment_logs WHERE status IN ('running', 'retrying')").fetchone()[0] == 0
    finally:
        db.close()
    assert (tmp_path / "enrichment-demo.log").stat().st_size > 0
