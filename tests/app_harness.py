"""The real app (workers' broker and actors) on its in-memory broker, against the fake upstream."""

from __future__ import annotations

import pytest
from dramatiq import Worker

from models import Album, AlbumArtist, Artist, EnrichmentLog
from workers.fake_upstream import FakeUpstream

from linking_harness import drain


class App:
    def __init__(self, broker, fake):
        import workers

        self.broker = broker
        self.fake = fake
        self.actors = workers.broker.actors
        self.worker = Worker(broker, worker_timeout=50, worker_threads=4)

    def send(self, actor_name: str, *args, **kwargs):
        return self.broker.get_actor(actor_name).send(*args, **kwargs)

    def run(self, actor_name: str, *args, timeout: float = 60, **kwargs):
        """Send a root job and wait for its whole tree; returns the root's job id."""
        message = self.send(actor_name, *args, **kwargs)
        drain(self.broker, self.worker, timeout)
        return message.message_id


def tree(root_id: str) -> list[EnrichmentLog]:
    """The root's children in start order."""
    return list(
        EnrichmentLog.select().where(EnrichmentLog.parent_job_id == root_id).order_by(EnrichmentLog.started_at)
    )


def add_album(title: str, artist_names: list[str], **fields) -> Album:
    album = Album.create(title=title, **fields)
    for position, name in enumerate(artist_names):
        artist = Artist.get_or_none(Artist.name == name) or Artist.create(name=name)
        AlbumArtist.create(album=album, artist=artist, position=position)
    return album


@pytest.fixture
def fake():
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def app(db, fake, tmp_path, monkeypatch):
    """The app's actors on a running in-process worker, pointed at the fake upstream (local image cache)."""
    for name, value in fake.env(cloudflare=False).items():
        monkeypatch.setenv(name, value)
    for name in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COVERART_URL", fake.url + "/coverartarchive")
    monkeypatch.setenv("IMAGE_CACHE_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("MUSICBRAINZ_MIN_INTERVAL", "0.02")
    monkeypatch.setenv("DISCOGS_MIN_INTERVAL", "0.02")
    import dramatiq
    import workers

    dramatiq.set_broker(workers.broker)  # another test may have set its own broker
    app = App(workers.broker, fake)
    app.worker.start()
    yield app
    app.worker.stop()
