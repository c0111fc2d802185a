"""One statement on a benchmark's PostgreSQL, in autocommit (CREATE/DROP DATABASE, counters)."""

from __future__ import annotations

import psycopg2


def admin(url: str, sql: str, params=None, fetch: bool = False):
    """Run ``sql`` on ``url`` in autocommit; its rows when ``fetch``."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if fetch else None
    finally:
        conn.close()
