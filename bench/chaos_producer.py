"""The chaos soak's producer: sends album, artist and track trees as `enrich album|artist|track --force` does.

    python -m bench.chaos_producer --sent FILE [--seed 1] [--rate 1.0] [--backlog 40]

Runs with the workers' environment (``DATABASE_URL``, ``REDIS_URL``), starts
the app (its broker has JobLinking, so every root gets its ``queued`` row at
send) and sends forced checks (``check_album_enrichment``,
``check_artist_enrichment``, ``check_track_enrichment``) at ``--rate`` trees a
second, pausing while more than ``--backlog`` messages wait in the queue.
Albums and artists come from the catalog; tracks once enrichment:album has
made some.  A send that fails (Redis down) is sent again, the same message,
until Redis takes it; only then is it written to ``--sent`` (one JSON line
per root: ``{"job_id", "kind", "entity_id"}``), so the file lists exactly the
roots the broker accepted.  SIGTERM stops it after the send in progress.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time

import peewee
import redis

KINDS = {  # kind -> (root actor, weight)
    "album": ("check_album_enrichment", 5),
    "artist": ("check_artist_enrichment", 2),
    "track": ("check_track_enrichment", 3),
}


class Catalog:
    """The ids each kind of root is sent for, read again every ``refresh`` seconds (kept while the database is down)."""

    def __init__(self, refresh: float = 20.0) -> None:
        self.refresh = refresh
        self.ids: dict[str, list[str]] = {kind: [] for kind in KINDS}
        self.read_at = float("-inf")
        self.next_album = 0

    def pick(self, rng: random.Random) -> tuple[str, str]:
        if time.monotonic() - self.read_at > self.refresh:
            self._read()
        kinds = [kind for kind in KINDS if self.ids[kind]]
        kind = rng.choices(kinds, weights=[KINDS[k][1] for k in kinds])[0]
        if kind == "album":  # round-robin: two trees of one album rarely run at once
            self.next_album += 1
            return kind, self.ids[kind][self.next_album % len(self.ids[kind])]
        return kind, rng.choice(self.ids[kind])

    def _read(self) -> None:
        from models import Album, Artist, Track, database

        try:
            with database.connection_context():
                self.ids["album"] = [str(i) for (i,) in Album.select(Album.id).order_by(Album.title).tuples()]
                self.ids["artist"] = [str(i) for (i,) in Artist.select(Artist.id).order_by(Artist.name).tuples()]
                self.ids["track"] = [str(i) for (i,) in Track.select(Track.id).order_by(Track.id).limit(2000).tuples()]
            self.read_at = time.monotonic()
        except peewee.DatabaseError:
            database.obj.close_all()  # PostgreSQL is down: keep the lists, read again soon
            self.read_at = time.monotonic() - self.refresh + 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sent", required=True, help="file the accepted roots are appended to (JSON lines)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1.0, help="trees sent per second (default 1)")
    parser.add_argument("--backlog", type=int, default=40, help="pause while more messages wait (default 40)")
    args = parser.parse_args(argv)

    from models import bind_database, load_settings
    from workers import app
    from workers.logging_setup import configure_logging

    settings = load_settings()  # as workers/worker.py does: the logs, the database, then the app
    configure_logging(settings)
    bind_database(settings.database_url)
    broker = app.start(settings)
    queue = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=5)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    rng = random.Random(args.seed)
    catalog = Catalog()
    next_send = time.monotonic()
    with open(args.sent, "a") as sent:
        while not stopping:
            time.sleep(max(0.0, next_send - time.monotonic()))
            next_send = max(next_send + 1 / args.rate, time.monotonic())
            try:
                if queue.llen("dramatiq:default") > args.backlog:
                    continue
            except redis.RedisError:
                continue
            kind, entity_id = catalog.pick(rng)
            message = broker.get_actor(KINDS[kind][0]).message_with_options(
                args=(entity_id, "soak", True), triggered_by="soak")
            while True:  # the same message until Redis takes it
                try:
                    broker.enqueue(message)
                    break
                except redis.RedisError:
                    time.sleep(0.5)
            sent.write(json.dumps({"job_id": message.message_id, "kind": kind, "entity_id": entity_id}) + "\n")
            sent.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
