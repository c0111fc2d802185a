"""JobLinking checks an actor's ``operation`` and ``entity`` options when it is declared: a typo stops the
declaration (and so the process's start) with one line, instead of rows that silently lack their entity."""

from __future__ import annotations

import subprocess
import sys

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from middleware import JobLinking
from middleware.linking_options import BadActorOptions
from models import ConfigError

from process_harness import TESTS, shell_env


@pytest.fixture
def broker():
    broker = StubBroker()
    broker.add_middleware(JobLinking())
    yield broker
    broker.close()


def enrich_album(album_id, force=False):
    pass


def anything(**kwargs):
    pass


@pytest.mark.parametrize("options, expected", [
    ({"operation": ""}, "actor enrich_album: operation='' must be a non-empty string of at most 100 characters"),
    ({"operation": "  "}, "operation='  ' must be a non-empty string"),
    ({"operation": "x" * 101}, "must be a non-empty string of at most 100 characters"),
    ({"operation": ("enrichment", "album")}, "operation=('enrichment', 'album') must be a non-empty string"),
    ({"entity": "album"}, "entity='album' must be None or an (entity_type, argument_name) pair of strings"),
    ({"entity": ("album",)}, "entity=('album',) must be None or an (entity_type, argument_name) pair"),
    ({"entity": ("album", 0)}, "entity=('album', 0) must be None or an (entity_type, argument_name) pair"),
    ({"entity": ("albums", "album_id")}, "actor enrich_album: entity type 'albums' must be one of album, artist, track"),
    ({"entity": ("album", "albumid")},
     "actor enrich_album: entity argument 'albumid' is not a parameter of enrich_album(album_id, force)"),
])
def test_a_malformed_option_stops_the_declaration_in_one_line(broker, options, expected):
    with pytest.raises(BadActorOptions) as raised:
        dramatiq.actor(enrich_album, broker=broker, **options)
    message = str(raised.value)
    assert expected in message and "\n" not in message
    assert isinstance(raised.value, ConfigError)  # entry points print it as they print a bad setting
    assert "enrich_album" not in broker.actors  # never declared: nothing can be sent to it


@pytest.mark.parametrize("fn, options", [
    (enrich_album, {}),
    (enrich_album, {"operation": "enrichment:album", "entity": None}),
    (enrich_album, {"operation": "x" * 100, "entity": ("album", "album_id")}),
    (enrich_album, {"entity": ["album", "album_id"]}),
    (anything, {"entity": ("artist", "artist_id")}),  # **kwargs takes any argument name
])
def test_well_formed_options_declare_the_actor(broker, fn, options):
    actor = dramatiq.actor(fn, broker=broker, **options)
    assert broker.get_actor(fn.__name__) is actor


def test_a_typo_in_an_app_actor_stops_the_worker_start_with_one_line(tmp_path):
    # What `dramatiq workers.worker` imports, with enrichment:track declared on a misspelt argument.
    child = (
        "import workers.jobs as jobs\n"
        "declare = jobs.enrichment_actor\n"
        "def misspelt(operation, entity=None, **options):\n"
        "    if operation == 'enrichment:track':\n"
        "        entity = ('track', 'trackid')\n"
        "    return declare(operation, entity, **options)\n"
        "jobs.enrichment_actor = misspelt\n"
        "import workers.worker\n"
    )
    env = shell_env({"DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "REDIS_URL": "redis://127.0.0.1:1/0",
                     "LOG_FLUSH_MS": "0"})
    result = subprocess.run([sys.executable, "-c", child], env=env, cwd=TESTS, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "enrich: actor enrich_track: entity argument 'trackid' is not a parameter of enrich_track(track_id)"]
