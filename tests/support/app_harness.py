"""The real app (workers' broker and actors) on its in-memory broker, against the fake upstream.

The tests' process started the app once (tests/conftest.py); the ``app``
fixture points its actors at a fake upstream of the test's own by giving the
app other settings (``workers.app.use_settings``), from an environment the
test may change (``App.setenv``, ``App.delenv``).
"""

from __future__ import annotations

import os

import dramatiq
import pytest
from dramatiq import Worker

from models import Album, AlbumArtist, Artist, EnrichmentLog, load_settings
from workers import app as workers_app
from workers.fake_upstream import FakeUpstream

from linking_harness import drain


class App:
    def __init__(self, broker, fake, env: dict):
        self.broker = broker
        self.fake = fake
        self.actors = broker.actors
        self.env = env
        self.worker = Worker(broker, worker_timeout=50, worker_threads=4)
        workers_app.use_settings(load_settings(env))

    def setenv(self, name: str, value: str) -> None:
        """The actors' settings from now on: the test's environment with ``name`` set."""
        self.env[name] = value
        workers_app.use_settings(load_settings(self.env))

    def delenv(self, name: str) -> None:
        """The actors' settings from now on: the test's environment without ``name``."""
        del self.env[name]
        workers_app.use_settings(load_settings(self.env))

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
def app(db, fake, tmp_path):
    """The app's actors on a running in-process worker, pointed at the fake upstream (local image cache)."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN")}
    env.update(fake.env(cloudflare=False))
    env.update(IMAGE_CACHE_DIR=str(tmp_path / "images"),
               MUSICBRAINZ_MIN_INTERVAL="0.02", DISCOGS_MIN_INTERVAL="0.02")
    before = workers_app.settings()
    broker = workers_app.broker()
    dramatiq.set_broker(broker)  # another test may have set its own broker
    app = App(broker, fake, env)
    app.worker.start()
    yield app
    app.worker.stop()
    workers_app.use_settings(before)
