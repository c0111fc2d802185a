"""The ``enrich`` command as a user sees it: run as a real process, output and exit status asserted.

Rows are put in place directly (catalog and job-log models) where a test is
about reading; nothing here needs the network.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import signal
import subprocess
import sys
import time
import uuid

import pytest
import redis

from models import Album, AlbumArtist, Artist, EnrichmentLog, Track, album_artists, utcnow

from services import REDIS_TEST_URL

UNREACHABLE_DB = "postgresql://root@127.0.0.1:1/x"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
BJORK_MBID = "87c5dedd-371d-4a53-9f7f-80522fb7f3cb"


def enrich(*args: str, env: dict | None = None, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    """``python -m workers.cli ARGS`` with only the environment this test gives it."""
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "LOG_LEVEL", "NO_COLOR")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], env=full, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def said(result: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr meant for a person (JSON log lines left out)."""
    return [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("{")]


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = said(result)
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], lines[0]


# -- help -------------------------------------------------------------------------------


def test_every_command_has_help_with_an_example():
    from workers.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"migrate", "add-album", "add-artist", "album", "artist", "track", "sync-new-releases", "roots",
            "timeline", "run", "demo"} <= set(commands)
    for name, sub in commands.items():
        assert "example:\n  enrich" in sub.format_help() or "example:\n  REDIS_URL" in sub.format_help(), name
    result = enrich("timeline", "--help")
    assert result.returncode == 0 and "example" in result.stdout


# -- the catalog ------------------------------------------------------------------------------


def test_add_album_prints_an_id_and_is_idempotent(url):
    env = {"DATABASE_URL": url}
    first = enrich("add-album", "  Homogenic ", "--artist", "Björk", "--artist", "Mark Bell",
                   "--mbid", "810272E0-AEF1-3D85-B2D3-E512E87FC38C", env=env)
    assert first.returncode == 0, first.stderr
    album_id = first.stdout.strip()
    assert uuid.UUID(album_id)
    # The same album by title and first artist, in another case (non-ASCII too).
    again = enrich("add-album", "HOMOGENIC", "--artist", "BJÖRK", env=env)
    assert again.returncode == 0 and again.stdout.strip() == album_id
    assert "already in the catalog" in again.stderr
    album = Album.get_by_id(album_id)
    assert album.title == "Homogenic" and album.musicbrainz_id == "810272e0-aef1-3d85-b2d3-e512e87fc38c"
    assert [a.name for a in album_artists(album)] == ["Björk", "Mark Bell"]
    assert Album.select().count() == 1 and Artist.select().count() == 2 and AlbumArtist.select().count() == 2

    artist = enrich("add-artist", "björk", "--mbid", BJORK_MBID, env=env)
    assert artist.returncode == 0 and artist.stdout.strip() == str(album_artists(album)[0].id)
    assert Artist.get_by_id(artist.stdout.strip()).musicbrainz_id == BJORK_MBID


def test_add_album_finds_by_spotify_id(url):
    env = {"DATABASE_URL": url}
    first = enrich("add-album", "OK Computer OKNOTOK 1997 2017", "--artist", "Radiohead",
                   "--spotify-id", "0tzfI6NFJqcJkWb23R3lRZ", "--cover-url", "https://i.scdn.co/image/ab67", env=env)
    second = enrich("add-album", "OKNOTOK", "--artist", "Radiohead", "--spotify-id", "0tzfI6NFJqcJkWb23R3lRZ", env=env)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert Album.get_by_id(first.stdout.strip()).cover_art_url == "https://i.scdn.co/image/ab67"


def test_add_album_refuses_a_spotify_id_that_is_another_albums(url):
    env = {"DATABASE_URL": url}
    spotify = enrich("add-album", "OKNOTOK", "--artist", "Radiohead", "--spotify-id", "0tzfI6NFJqcJkWb23R3lRZ", env=env)
    mb = enrich("add-album", "OK Computer", "--artist", "Radiohead", "--mbid", "b1392450-e666-3926-a536-22c65f834433",
                env=env)
    assert spotify.returncode == mb.returncode == 0
    # Found by its MusicBrainz id, but the Spotify id is the other album's: refused, nothing changed.
    both = enrich("add-album", "OK Computer", "--artist", "Radiohead", "--mbid", "b1392450-e666-3926-a536-22c65f834433",
                  "--spotify-id", "0tzfI6NFJqcJkWb23R3lRZ", env=env)
    assert_one_line_error(both, "Spotify id 0tzfI6NFJqcJkWb23R3lRZ already belongs to 'OKNOTOK' by Radiohead")
    assert Album.get_by_id(mb.stdout.strip()).spotify_id is None
    assert Album.select().where(Album.spotify_id == "0tzfI6NFJqcJkWb23R3lRZ").count() == 1


@pytest.mark.parametrize(
    "args, expected",
    [
        (["add-album", "X", "--artist", "A", "--mbid", "not-a-uuid"], "malformed MusicBrainz id 'not-a-uuid'"),
        (["add-album", "X", "--artist", "A", "--cover-url", "ftp://host/x.jpg"], "malformed cover URL"),
        (["add-album", "X", "--artist", "A", "--cover-url", "https:///no-host"], "malformed cover URL"),
        (["add-album", "   ", "--artist", "A"], "album title is empty"),
        (["add-album", "x" * 1001, "--artist", "A"], "at most 1,000"),
        (["add-artist", "A", "--mbid", "123"], "malformed MusicBrainz id"),
        (["album", "123"], "malformed album id '123'"),
        (["album", "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"], "no album with id 5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"),
        (["artist", "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"], "no artist with id"),
        (["track", "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"], "no track with id"),
        (["timeline", "no-such-job"], "no job with id no-such-job"),
        (["roots", "--cursor", "garbage"], "malformed cursor"),
        (["run"], "nothing to run"),
        (["run", "--album", "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"], "no album with id"),
    ],
)
def test_wrong_input_is_one_line_and_exit_1(url, args, expected):
    assert_one_line_error(enrich(*args, env={"DATABASE_URL": url}), expected)
    assert Album.select().count() == 0  # nothing half-written


def test_run_with_nothing_pending_says_so(url):
    result = enrich("run", "--pending", env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout


@pytest.mark.parametrize("command", [["roots"], ["timeline", "abc"], ["add-album", "X", "--artist", "A"],
                                     ["album", "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"], ["migrate"]])
def test_unreachable_database_is_one_line(command):
    result = enrich(*command, env={"DATABASE_URL": UNREACHABLE_DB})
    assert_one_line_error(result, "cannot reach the database at postgresql://root@127.0.0.1:1/x")


def test_unreachable_redis_is_one_line(url):
    album = Album.create(title="Dummy")
    result = enrich("album", str(album.id), env={"DATABASE_URL": url, "REDIS_URL": UNREACHABLE_REDIS})
    assert_one_line_error(result, "cannot reach Redis at redis://127.0.0.1:1/0")


@pytest.mark.parametrize("command, actor_name", [("album", "check_album_enrichment"),
                                                 ("artist", "check_artist_enrichment"),
                                                 ("track", "check_track_enrichment")])
def test_a_forced_check_with_redis_queues_the_root_and_prints_its_id(url, command, actor_name):
    album = Album.create(title="Dummy")
    entity = {"album": album, "artist": Artist.create(name="Portishead"),
              "track": Track.create(album=album, title="Sour Times", track_number=3)}[command]
    result = enrich(command, str(entity.id), "--force", env={"DATABASE_URL": url, "REDIS_URL": REDIS_TEST_URL})
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert f"enrich timeline {job_id} --follow" in result.stderr
    ours: list = []
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        # Dramatiq's Redis layout: a hash of messages (keyed by a Redis-side id) and a list of those ids.
        queued = {key: json.loads(raw) for key, raw in client.hscan_iter("dramatiq:default.msgs")}
        ours = [key for key, message in queued.items() if message["message_id"] == job_id]
        assert len(ours) == 1
        message = queued[ours[0]]
        assert message["actor_name"] == actor_name
        assert message["args"] == [str(entity.id)] and message["kwargs"] == {"force": True}
        assert message["options"]["triggered_by"] == "cli"
    finally:  # leave the shared test Redis as it was: remove our message only
        for key in ours:
            client.hdel("dramatiq:default.msgs", key)
            client.lrem("dramatiq:default", 0, key)
        client.close()


def test_dramatiq_workers_without_redis_points_to_enrich_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'w.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "dramatiq", "workers.worker", "--processes", "1", "--threads", "1", "--skip-logging"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "REDIS_URL is not set" in result.stderr and "enrich run" in result.stderr


# -- reading the job log -------------------------------------------------------------------------


def _log_row(job_id, parent=None, *, start=0.0, end=1.0, status="success", operation=None, **extra) -> dict:
    t0 = utcnow().replace(microsecond=0) - dt.timedelta(minutes=5)
    return {
        "id": uuid.uuid4(),
        "job_id": job_id,
        "parent_job_id": parent,
        "is_root_job": parent is None,
        "operation": operation or ("check:album-enrichment" if parent is None else "enrichment:album"),
        "status": status,
        "created_at": t0 + dt.timedelta(seconds=start),
        "updated_at": t0 + dt.timedelta(seconds=start),
        "enqueued_at": t0 + dt.timedelta(seconds=start),
        "started_at": t0 + dt.timedelta(seconds=start),
        "completed_at": None if end is None else t0 + dt.timedelta(seconds=end),
        "duration_ms": None if end is None else round((end - start) * 1000),
        "triggered_by": "cli" if parent is None else None,
        # Every row names every column: insert_many takes its columns from the first row.
        "entity_type": None,
        "entity_id": None,
        "retry_count": 0,
        "error_code": None,
        "last_error": None,
        "failed_children": 0,
        "reason": None,
        **extra,
    }


@pytest.fixture
def degraded_tree(url):
    """A degraded root with a child retried twice and a child that failed for good."""
    album = Album.create(title="Homogenic")
    artist = Artist.create(name="Björk")
    root = f"root-{uuid.uuid4()}"
    EnrichmentLog.insert_many([
        _log_row(root, start=0, end=0.2, status="degraded", entity_type="album", entity_id=album.id, failed_children=1),
        _log_row(f"{root}-album", root, start=0.2, end=3.5, entity_type="album", entity_id=album.id, retry_count=2,
                 reason="12 fields from musicbrainz",
                 error_code="upstream_503",
                 last_error="RetryableUpstreamError: musicbrainz GET /release-group returned HTTP 503"),
        _log_row(f"{root}-discogs", root, start=3.6, end=4.0, status="failed", operation="discogs:get-artist",
                 entity_type="artist", entity_id=artist.id, error_code="upstream_400",
                 last_error="PermanentUpstreamError: discogs GET /artists/3272 returned HTTP 400"),
    ]).execute()
    return root


def test_roots_and_timeline_show_a_degraded_tree(url, degraded_tree):
    env = {"DATABASE_URL": url}
    roots = enrich("roots", env=env)
    assert roots.returncode == 0, roots.stderr
    line = next(line for line in roots.stdout.splitlines() if degraded_tree in line)
    assert "degraded" in line and 'album "Homogenic"' in line and "1 failed" in line and "1 success" in line
    assert "\x1b[" not in roots.stdout  # not a terminal: no colour

    # Any job id of the tree shows the whole tree, the root first, children indented.
    timeline = enrich("timeline", f"{degraded_tree}-discogs", env=env)
    assert timeline.returncode == 0, timeline.stderr
    lines = timeline.stdout.splitlines()
    assert degraded_tree in lines[0] and "degraded" in lines[0] and "3 jobs" in lines[0]
    root_line, album_line, discogs_line = lines[1:4]
    assert "check:album-enrichment" in root_line and "+0ms" in root_line
    assert "  enrichment:album" in album_line and "↻2" in album_line
    assert "12 fields from musicbrainz; retried after upstream_503" in album_line
    assert "failed" in discogs_line and 'artist "Björk"' in discogs_line and "+3.6s" in discogs_line
    assert "upstream_400: PermanentUpstreamError: discogs GET /artists/3272 returned HTTP 400" in discogs_line
    assert root_line.index("check:") < album_line.index("enrichment:")


def test_json_outputs_parse(url, degraded_tree):
    env = {"DATABASE_URL": url}
    page = json.loads(enrich("roots", "--json", "--status", "degraded", env=env).stdout)
    assert [r["job_id"] for r in page["roots"]] == [degraded_tree] and page["next_cursor"] is None
    assert page["roots"][0]["children"] == {"failed": 1, "success": 1}
    tree = json.loads(enrich("timeline", degraded_tree, "--json", env=env).stdout)
    assert tree["root_job_id"] == degraded_tree
    assert [i["status"] for i in tree["items"]] == ["degraded", "success", "failed"]


def test_roots_pages_with_a_cursor(url):
    env = {"DATABASE_URL": url}
    EnrichmentLog.insert_many([_log_row(f"r{i}", start=i) for i in range(3)]).execute()
    first = enrich("roots", "--limit", "2", env=env)
    hint = first.stdout.splitlines()[-1]
    assert hint.startswith("next page: enrich roots --limit 2 --cursor ")
    second = enrich(*hint.removeprefix("next page: enrich ").split(), env=env)
    assert "r0" in second.stdout and "r2" not in second.stdout and "next page" not in second.stdout


def test_timeline_colours_only_on_a_terminal_without_no_color(url, degraded_tree):
    def on_a_terminal(extra: dict) -> str:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NO_COLOR")}
        env.update(DATABASE_URL=url, **extra)
        process = subprocess.Popen([sys.executable, "-m", "workers.cli", "timeline", degraded_tree],
                                   stdout=slave, stderr=subprocess.DEVNULL, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
        os.close(master)
        return b"".join(chunks).decode()

    assert "\x1b[31;1mfailed" in on_a_terminal({})
    assert "\x1b[" not in on_a_terminal({"NO_COLOR": "1"})


def test_follow_waits_until_the_tree_is_finished(url):
    root = f"root-{uuid.uuid4()}"
    EnrichmentLog.insert_many([_log_row(root, end=None, status="running")]).execute()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NO_COLOR")}
    env["DATABASE_URL"] = url
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", "timeline", root, "--follow"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # Until it has shown the tree running (a loaded machine may take seconds to start it).
        first, deadline = [], time.monotonic() + 30
        while not any("running" in line for line in first) and time.monotonic() < deadline:
            first.append(process.stdout.readline())
        time.sleep(1.5)
        assert process.poll() is None  # still following a running tree
        EnrichmentLog.update(status="success", completed_at=utcnow(), duration_ms=100).where(
            EnrichmentLog.job_id == root).execute()
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert any("running" in line for line in first), (first, err)
    assert out.rstrip().splitlines()[-1].lstrip().startswith("success"), out
    assert "Traceback" not in err


def test_ctrl_c_while_following_exits_130_without_a_traceback(url):
    root = f"root-{uuid.uuid4()}"
    EnrichmentLog.insert_many([_log_row(root, end=None, status="running")]).execute()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = url
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", "timeline", root, "--follow"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while root not in process.stdout.readline() and time.monotonic() < deadline:
            pass
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err and "interrupted" in err


# -- running jobs here, without a shared broker ---------------------------------------------------


def in_process_env(fake, tmp_path) -> dict[str, str]:
    """A migrated SQLite catalog and the fake upstream, for commands that run jobs here (no REDIS_URL)."""
    from workers.fake_upstream import COVER_ART

    env = {
        **fake.env(cloudflare=False),
        "COVERART_URL": fake.url + COVER_ART,
        "MUSICBRAINZ_MIN_INTERVAL": "0.2",
        "DISCOGS_MIN_INTERVAL": "0.2",
        "IMAGE_CACHE_DIR": str(tmp_path / "images"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
    }
    assert enrich("migrate", env=env).returncode == 0
    return env


def test_album_without_redis_runs_here_and_prints_the_timeline(tmp_path):
    from workers.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        env = in_process_env(fake, tmp_path)
        album_id = enrich("add-album", "Discovery", "--artist", "Daft Punk", env=env).stdout.strip()
        result = enrich("album", album_id, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert any("REDIS_URL is not set" in line and "in this process" in line for line in said(result))
        tree = result.stdout[result.stdout.index("\n\n"):].strip().splitlines()
        assert "success" in tree[0]
        assert tree[1].split()[:2] == ["success", "check:album-enrichment"]
        assert any(line.split()[:2] == ["success", "enrichment:album"] and 'album "Discovery"' in line for line in tree)
        assert any("enrichment:artist" in line and 'artist "Daft Punk"' in line for line in tree)
        assert "jobs" in result.stdout and "done" in result.stdout  # the progress line

        again = enrich("run", "--pending", env=env)
        assert again.returncode == 0 and "nothing to do" in again.stdout


def test_run_force_enriches_again_what_a_plain_run_skips(tmp_path):
    from workers.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        env = in_process_env(fake, tmp_path)
        album_id = enrich("add-album", "Dummy", "--artist", "Portishead", env=env).stdout.strip()
        assert enrich("run", "--album", album_id, env=env, timeout=120).returncode == 0
        plain = enrich("run", "--album", album_id, env=env, timeout=120)
        forced = enrich("run", "--album", album_id, "--force", env=env, timeout=120)
    assert plain.returncode == 0 and forced.returncode == 0, forced.stderr
    plain_tree = plain.stdout[plain.stdout.index("\n\n"):].strip().splitlines()
    assert plain_tree[1].split()[:2] == ["skipped", "check:album-enrichment"] and "nothing to gain" in plain_tree[1]
    forced_tree = forced.stdout[forced.stdout.index("\n\n"):].strip().splitlines()
    assert forced_tree[1].split()[:2] == ["success", "check:album-enrichment"] and "forced" in forced_tree[1]
    assert any(line.split()[:2] == ["success", "enrichment:album"] for line in forced_tree)
    assert any(line.split()[:2] == ["success", "enrichment:artist"] for line in forced_tree)  # its artist too


def test_run_ignores_redis_url_and_runs_here(tmp_path):
    from workers.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        env = {**in_process_env(fake, tmp_path), "REDIS_URL": UNREACHABLE_REDIS}  # nothing listens there
        album_id = enrich("add-album", "Dummy", "--artist", "Portishead", env=env).stdout.strip()
        result = enrich("run", "--album", album_id, env=env, timeout=120)
        nothing = enrich("run", env=env)
    assert result.returncode == 0, result.stderr
    assert said(result)[0] == "enrich run uses its own in-memory queue: REDIS_URL is ignored"
    tree = result.stdout[result.stdout.index("\n\n"):].strip().splitlines()
    assert tree[1].split()[:2] == ["success", "check:album-enrichment"]
    assert_one_line_error(nothing, "nothing to run")  # the note only for a run that runs


def test_a_tree_that_ends_degraded_gives_exit_status_2(tmp_path):
    from workers.fake_upstream import COVER_ART, FakeUpstream

    with FakeUpstream() as fake:
        env = in_process_env(fake, tmp_path)
        album_id = enrich("add-album", "Discovery", "--artist", "Daft Punk", env=env).stdout.strip()
        fake.fail(COVER_ART, "status", status=400, times=None)  # the cover art fetch fails for good
        result = enrich("run", "--album", album_id, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    tree = result.stdout[result.stdout.index("\n\n"):].strip().splitlines()
    assert tree[0].split()[1] == "degraded"
    assert any(line.split()[:2] == ["failed", "cache:album-cover-art"] for line in tree)
    assert any("1 of 1 tree did not end well (1 degraded)" in line for line in said(result))


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' must be 'json' or 'console'"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD' must be"),
        ("DATABASE_URL", "mysql://x", "unsupported scheme 'mysql'"),
        ("HTTP_TIMEOUT", "soon", "HTTP_TIMEOUT='soon' is not a number"),
    ],
)
def test_a_bad_setting_is_one_line_for_every_command(variable, value, expected):
    result = enrich("roots", env={variable: value})
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
