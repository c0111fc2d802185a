"""The upstream clients against the fake upstream server: real HTTP, no mocks."""

from __future__ import annotations

import base64
import email.utils
import os
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

import pytest
import redis
from dramatiq.rate_limits.backends import StubBackend

from models.settings import Settings, load_settings
from workers.fake_upstream import FakeUpstream
from workers.upstream import (
    DiscogsClient,
    ImageClient,
    MissingCredentials,
    MusicBrainzClient,
    PermanentUpstreamError,
    RetryableUpstreamError,
    SpacingLimiter,
    SpotifyClient,
    SpotifyTokenCache,
    build_rate_limiter_backend,
    sniff_image,
    store_image,
)
from workers.upstream.http import parse_retry_after
from workers.upstream.rate_limit import KEY_PREFIX

from services import REDIS_TEST_URL

MUSICBRAINZ_INTERVAL = Settings().musicbrainz_interval

REDIS_URL = REDIS_TEST_URL.rsplit("/", 1)[0] + "/14"
ROOT = Path(__file__).resolve().parents[2]

OK_COMPUTER = "b1392450-e666-3926-a536-22c65f834433"
DISCOVERY = "48117b90-a16e-34ca-a514-19c702df1158"
RADIOHEAD = "a74b1b7f-71a5-4011-9441-d0b5e4122711"
BJORK = "87c5dedd-371d-4a53-9f7f-80522fb7f3cb"
OKNOTOK_SPOTIFY = "0tzfI6NFJqcJkWb23R3lRZ"
MB_ARTIST_PATH = f"/musicbrainz/ws/2/artist/{RADIOHEAD}"


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake):
    fake.reset()
    yield
    fake.reset()


def make_settings(fake, tmp_path, *, cloudflare=False, **overrides):
    env = {**fake.env(cloudflare=cloudflare), "HTTP_TIMEOUT": "0.5", "IMAGE_CACHE_DIR": str(tmp_path / "cache")}
    env.update({k: v for k, v in overrides.items() if v is not None})
    for name in [k for k, v in overrides.items() if v is None]:
        env.pop(name, None)
    return load_settings(env)


@pytest.fixture
def settings(fake, tmp_path):
    return make_settings(fake, tmp_path)


def fast_limiter():
    """A limiter that does not slow the tests down (own key, 1 ms spacing)."""
    return SpacingLimiter(StubBackend(), f"test-{uuid.uuid4()}", interval=0.001)


@pytest.fixture
def mb(settings):
    with MusicBrainzClient(settings, rate_limiter=fast_limiter()) as client:
        yield client


@pytest.fixture
def spotify(settings):
    with SpotifyClient(settings, token_cache=SpotifyTokenCache()) as client:
        yield client


# -- MusicBrainz ------------------------------------------------------------------------


def test_release_group_lookup_sends_json_and_user_agent(fake, mb, settings):
    group = mb.get_release_group(OK_COMPUTER)
    assert group["title"] == "OK Computer"
    assert group["artist-credit"][0]["artist"]["id"] == RADIOHEAD
    assert group["releases"] and group["genres"] and group["tags"]
    (request,) = fake.requests("musicbrainz")
    assert "fmt=json" in request["query"] and "inc=artist-credits+releases+tags+genres" in request["query"]
    assert request["headers"]["user-agent"] == settings.musicbrainz_user_agent


def test_release_group_search_scores_and_unknown_title(mb):
    hits = mb.search_release_groups("ok computer", "RADIOHEAD")
    assert [(h["title"], h["score"]) for h in hits] == [("OK Computer", 100), ("OK Computer OKNOTOK 1997 2017", 80)]
    assert mb.search_release_groups("An Album Nobody Made", "Radiohead") == []


def test_release_has_ordered_tracks_with_millisecond_lengths_and_isrcs(mb):
    release_id = mb.get_release_group(OK_COMPUTER)["releases"][0]["id"]
    release = mb.get_release(release_id)
    tracks = release["media"][0]["tracks"]
    assert [t["position"] for t in tracks] == list(range(1, 13))
    assert tracks[1]["title"] == "Paranoid Android" and 380_000 < tracks[1]["length"] < 385_000
    assert tracks[1]["recording"]["isrcs"]


def test_artists_lookup_search_isrc_and_recordings(mb):
    radiohead = mb.get_artist(RADIOHEAD)
    assert (radiohead["country"], radiohead["type"], radiohead["life-span"]["begin"]) == ("GB", "Group", "1985")
    assert any(r["type"] == "discogs" for r in radiohead["relations"])
    assert not any(r["type"] == "discogs" for r in mb.get_artist(BJORK)["relations"])
    assert [(a["name"], a["score"]) for a in mb.search_artists("Bjork")] == [("Björk", 100)]
    (recording,) = mb.lookup_isrc("gbaye9700002")
    assert recording["title"] == "Paranoid Android"
    assert mb.search_recordings("Teardrop", "Massive Attack")[0]["score"] == 100
    assert mb.search_recordings("Teardrop")[0]["releases"][0]["release-group"]["title"] == "Mezzanine"
    with pytest.raises(PermanentUpstreamError) as err:
        mb.get_artist(str(uuid.UUID(int=1)))
    assert err.value.error_code == "not_found"


# -- Discogs ----------------------------------------------------------------------------


def test_discogs_search_and_artist(fake, settings):
    with DiscogsClient(settings, rate_limiter=fast_limiter()) as discogs:
        titles = [r["title"] for r in discogs.search_artists("Björk")]
        assert titles[:2] == ["Björk", "Björk (2)"]
        artist = discogs.get_artist(3272)
    assert artist["profile"] and artist["realname"] == "Björk Guðmundsdóttir"
    image = artist["images"][0]
    assert image["width"] == 500 and image["height"] == 600 and image["uri"].startswith(fake.url)
    assert "genres" not in artist
    assert all(r["headers"]["authorization"] == "[redacted]" for r in fake.requests("discogs"))


def test_discogs_without_token_names_the_variable(fake, tmp_path):
    with pytest.raises(MissingCredentials) as err:
        DiscogsClient(make_settings(fake, tmp_path, DISCOGS_TOKEN=None))
    assert err.value.variable_name == "DISCOGS_TOKEN" and "DISCOGS_TOKEN is not set" in str(err.value)


# -- Spotify ----------------------------------------------------------------------------


def test_album_tracks_follow_every_page(fake, spotify):
    fake.state.spotify_page_size = 5
    try:
        tracks = spotify.get_album_tracks(OKNOTOK_SPOTIFY)
    finally:
        fake.state.spotify_page_size = 20
    assert len(tracks) == 23
    assert [(t["disc_number"], t["track_number"]) for t in tracks][11:13] == [(1, 12), (2, 1)]
    assert len(fake.requests(path=f"/spotify/v1/albums/{OKNOTOK_SPOTIFY}/tracks")) == 5


def test_album_and_new_releases(spotify):
    album = spotify.get_album(OKNOTOK_SPOTIFY)
    assert album["name"] == "OK Computer OKNOTOK 1997 2017" and album["tracks"]["total"] == 23
    assert len(spotify.get_new_releases(limit=2, max_pages=1)) == 2
    assert [a["name"] for a in spotify.get_new_releases(limit=2, max_pages=3)][-1] == "Discovery"


def test_token_is_cached_then_refreshed_after_expiry(fake, settings):
    now = [1000.0]
    cache = SpotifyTokenCache(clock=lambda: now[0])
    counted = []
    with SpotifyClient(settings, token_cache=cache, on_request=counted.append) as client:
        client.get_album(OKNOTOK_SPOTIFY)
        client.get_album_tracks(OKNOTOK_SPOTIFY)
        assert len(fake.requests("spotify_accounts")) == 1
        assert counted == ["spotify"] * 4  # the token, the album, two pages of tracks
        now[0] += 3600 - 60 - 1  # still a second before the 60 s margin
        client.get_album(OKNOTOK_SPOTIFY)
        assert len(fake.requests("spotify_accounts")) == 1
        now[0] += 2
        client.get_album(OKNOTOK_SPOTIFY)
        assert len(fake.requests("spotify_accounts")) == 2


def test_rejected_token_is_refreshed_once(fake, spotify):
    spotify.get_album(OKNOTOK_SPOTIFY)
    fake.expire_spotify_tokens()
    assert spotify.get_album(OKNOTOK_SPOTIFY)["id"] == OKNOTOK_SPOTIFY
    assert len(fake.requests("spotify_accounts")) == 2
    fake.fail("/spotify/v1/albums", "unauthorized", times=None)
    fake.reset_requests()
    with pytest.raises(PermanentUpstreamError) as err:
        spotify.get_album(OKNOTOK_SPOTIFY)
    assert err.value.error_code == "upstream_401"
    assert len(fake.requests("spotify")) == 2  # the call and its one retry


@pytest.mark.parametrize("variable", ["SPOTIFY_CLIENT_ID", "SPOTIFY_CLIENT_SECRET"])
def test_spotify_missing_credentials_name_the_variable(fake, tmp_path, variable):
    with pytest.raises(MissingCredentials) as err:
        SpotifyClient(make_settings(fake, tmp_path, **{variable: None}))
    assert str(err.value) == f"{variable} is not set" and err.value.error_code == "missing_credentials"


# -- images -----------------------------------------------------------------------------


def test_download_follows_cover_art_redirect_and_sniffs(fake, settings):
    counted = []
    with ImageClient(settings, on_request=counted.append) as images:
        jpeg = images.download(fake.cover_art_url(OK_COMPUTER))
        png = images.download(fake.cover_art_url(DISCOVERY))
    assert (jpeg.info.format, jpeg.info.width, jpeg.info.height) == ("jpeg", 500, 500)
    assert (png.info.format, png.info.width) == ("png", 600)
    assert counted == ["image"] * 4  # each download is a redirect plus the image


def test_not_an_image_is_refused(fake, settings):
    fake.fail("/images/", "not_an_image")
    with ImageClient(settings) as images:
        with pytest.raises(PermanentUpstreamError) as err:
            images.download(fake.cover_art_url(OK_COMPUTER))
        assert err.value.error_code == "not_an_image"
        with pytest.raises(PermanentUpstreamError) as err:
            images.download(settings.musicbrainz_url + f"/artist/{RADIOHEAD}?fmt=json")
        assert err.value.error_code == "not_an_image"  # served as application/json
        for url in ("ftp://example.com/a.jpg", "not a url at all"):
            with pytest.raises(PermanentUpstreamError) as err:
                images.download(url)
            assert err.value.error_code == "invalid_url"


@pytest.mark.parametrize("kind", ["huge_body", "huge_body_declared"])
def test_ten_megabyte_body_is_refused_without_reading_it_all(fake, settings, kind):
    fake.fail("/images/", kind, size=200 * 1024 * 1024)
    started = time.monotonic()
    with ImageClient(settings) as images, pytest.raises(PermanentUpstreamError) as err:
        images.download(fake.url + "/images/covers/anything.jpg")
    assert err.value.error_code == "response_too_large"
    assert time.monotonic() - started < 5
    for _ in range(50):  # the server notices the hang-up a moment later
        (entry,) = fake.requests("image")
        if entry["bytes_sent"]:
            break
        time.sleep(0.05)
    assert entry["bytes_sent"] < 32 * 1024 * 1024  # the 10 MiB cap plus socket buffers, not the 200 MiB offered


def test_local_cache_is_content_addressed_and_idempotent(fake, tmp_path, settings):
    with ImageClient(settings) as images:
        image = images.download(fake.cover_art_url(OK_COMPUTER))
        first = images.store(image.data, image.info)
        second = images.store(image.data, image.info)
    assert first == second and first.cache_location == "local" and first.cloudflare_id is None
    assert Path(first.cache_path).read_bytes() == image.data and first.file_size == len(image.data)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{image.sha256}.jpg"]


def test_cloudflare_upload_when_configured(fake, tmp_path):
    settings = make_settings(fake, tmp_path, cloudflare=True)
    counted = []
    with ImageClient(settings, on_request=counted.append) as images:
        image = images.download(fake.cover_art_url(DISCOVERY))
    stored = store_image(image.data, image.info, settings, on_request=counted.append)
    assert stored.cache_location == "cloudflare_images" and stored.cache_path is None
    assert fake.uploads[stored.cloudflare_id]["data"] == image.data
    assert (stored.format, stored.width, stored.height) == ("png", 600, 600)
    assert counted.count("cloudflare") == 1


SMALL_IMAGES = {  # made with Pillow once; the product only reads their headers
    "gif": ("R0lGODdhBwAFAIEAAArIHgAAAAAAAAAAACwAAAAABwAFAAAIDAABCBxIsKDBgwcDAgA7", (7, 5)),
    "webp": ("UklGRh4AAABXRUJQVlA4TBEAAAAvFAACAAdQ5CrUo/+BiOh/AAA=", (21, 9)),
    "webp-lossy": (
        "UklGRkgAAABXRUJQVlA4IDwAAABQAwCdASohABEAPtFmrVEoJaQipWgBABoJZwDKpoAANa6r6AD+Ex/jebzWtb//FodaHWhtjoTKuJ+uAAA=",
        (33, 17),
    ),
}


@pytest.mark.parametrize("name", sorted(SMALL_IMAGES))
def test_sniff_gif_and_webp(name):
    encoded, size = SMALL_IMAGES[name]
    info = sniff_image(base64.b64decode(encoded))
    assert (info.format, info.width, info.height) == (name.split("-")[0], *size)
    assert sniff_image(b"<html>" + bytes(100)) is None


# -- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, options, family, code, retry_after",
    [
        ("rate_limit", {"retry_after": 7}, RetryableUpstreamError, "rate_limited", 7.0),
        ("server_error", {}, RetryableUpstreamError, "upstream_503", 1.0),
        ("server_error", {"status": 502, "retry_after": None}, RetryableUpstreamError, "upstream_502", None),
        ("timeout", {"delay": 3}, RetryableUpstreamError, "upstream_timeout", None),
        ("disconnect", {}, RetryableUpstreamError, "upstream_unreachable", None),
        ("malformed_json", {}, RetryableUpstreamError, "malformed_response", None),
        ("truncated_json", {}, RetryableUpstreamError, "malformed_response", None),
        ("not_found", {}, PermanentUpstreamError, "not_found", None),
        ("status", {"status": 403}, PermanentUpstreamError, "upstream_403", None),
        ("huge_body", {}, PermanentUpstreamError, "response_too_large", None),
    ],
)
def test_fault_maps_to_error(fake, mb, kind, options, family, code, retry_after):
    fake.fail(MB_ARTIST_PATH, kind, **options)
    with pytest.raises(family) as err:
        mb.get_artist(RADIOHEAD)
    assert (err.value.error_code, err.value.retry_after, err.value.service) == (code, retry_after, "musicbrainz")
    assert err.value.retryable is (family is RetryableUpstreamError)
    assert mb.get_artist(RADIOHEAD)["name"] == "Radiohead"  # the fault was for one request


def test_retry_after_as_http_date(fake, mb):
    fake.fail(MB_ARTIST_PATH, "rate_limit", retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    with pytest.raises(RetryableUpstreamError) as err:
        mb.get_artist(RADIOHEAD)
    assert 28 <= err.value.retry_after <= 31
    assert parse_retry_after("soon") is None and parse_retry_after("-5") == 0.0


def test_unreachable_service(tmp_path, fake):
    settings = make_settings(fake, tmp_path, MUSICBRAINZ_URL="http://127.0.0.1:9/ws/2")
    with MusicBrainzClient(settings, rate_limiter=fast_limiter()) as client, pytest.raises(RetryableUpstreamError) as err:
        client.get_artist(RADIOHEAD)
    assert err.value.error_code == "upstream_unreachable"


SECRETS = {
    "DISCOGS_TOKEN": "dGsTkN7f3e9a1c5b8d2e4f6a0b9c8d7e6f5a4b3",
    "SPOTIFY_CLIENT_ID": "5f2b9c1e8a7d4f3b6e0c9a8d7b6e5f4a",
    "SPOTIFY_CLIENT_SECRET": "e3a1f9c7b5d2048e6f1a3c5b7d9e2f40",
    "CLOUDFLARE_ACCOUNT_ID": "023e105f4ecef8ad9ca31a8372d0c353",
    "CLOUDFLARE_API_TOKEN": "Y9v2bXQh7KpL3nR8sT1wZ4cF6gJ0mD5eA",
}


def test_secrets_never_appear_in_errors_reprs_or_logs(fake, tmp_path, caplog):
    caplog.set_level("DEBUG")
    settings = make_settings(fake, tmp_path, cloudflare=True, **SECRETS)  # the fake rejects these
    gif = base64.b64decode(SMALL_IMAGES["gif"][0])
    discogs = DiscogsClient(settings, rate_limiter=fast_limiter())
    spotify = SpotifyClient(settings, token_cache=SpotifyTokenCache())
    images = ImageClient(settings)
    fake.fail("/discogs/artists", "server_error")
    attempts = [
        (lambda: discogs.search_artists("Björk"), "upstream_401"),
        (lambda: discogs.get_artist(3272), "upstream_503"),
        (lambda: spotify.get_album(OKNOTOK_SPOTIFY), "upstream_400"),
        (lambda: images.store(gif, sniff_image(gif)), "upstream_401"),
    ]
    errors = []
    for attempt, code in attempts:
        with pytest.raises((PermanentUpstreamError, RetryableUpstreamError)) as err:
            attempt()
        assert err.value.error_code == code
        errors.append(err.value)
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(settings)]
    texts += ["".join(traceback.format_exception(e)) for e in errors]
    texts += [repr(client) for client in (discogs, spotify, images)]
    for client in (discogs, spotify, images):
        client.close()
    leaked = [name for name, secret in SECRETS.items() if any(secret in text for text in texts)]
    assert leaked == []
    # httpx logs request URLs, and the Cloudflare account id is part of the documented URL
    # (like settings.secrets(), it is treated as an identifier there); credentials never are.
    assert [name for name, secret in SECRETS.items() if secret in caplog.text] in ([], ["CLOUDFLARE_ACCOUNT_ID"])
    assert "/accounts/***/images/v1" in str(errors[-1])


# -- rate limiting ------------------------------------------------------------------------


def _gaps(entries):
    times = sorted(e["monotonic"] for e in entries)
    return [b - a for a, b in zip(times, times[1:])]


def test_musicbrainz_spacing_from_two_threads(fake, settings):
    limiter = SpacingLimiter(StubBackend(), f"test-{uuid.uuid4()}", interval=MUSICBRAINZ_INTERVAL)

    def work():
        with MusicBrainzClient(settings, rate_limiter=limiter) as client:
            client.get_artist(RADIOHEAD)
            client.get_artist(BJORK)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gaps = _gaps(fake.requests("musicbrainz"))
    assert len(gaps) == 3 and min(gaps) >= 1.0, gaps


_WORKER = """
from models.settings import load_settings
from workers.upstream import MusicBrainzClient
with MusicBrainzClient(load_settings()) as client:
    client.get_artist("{artist}")
    client.get_artist("{artist}")
"""


def test_musicbrainz_spacing_across_processes_with_redis(fake, settings):
    key = KEY_PREFIX + "musicbrainz"
    connection = redis.Redis.from_url(REDIS_URL)
    connection.delete(key)
    env = {**os.environ, **fake.env(), "REDIS_URL": REDIS_URL, "PYTHONPATH": str(ROOT)}
    try:
        workers = [
            subprocess.Popen([sys.executable, "-c", _WORKER.format(artist=RADIOHEAD)], env=env, cwd=ROOT)
            for _ in range(2)
        ]
        assert [w.wait(timeout=20) for w in workers] == [0, 0]
    finally:
        connection.delete(key)
        connection.close()
    gaps = _gaps(fake.requests("musicbrainz"))
    assert len(gaps) == 3 and min(gaps) >= 1.0, gaps


def test_redis_backend_factory_and_bounded_wait():
    key = f"test-{uuid.uuid4()}"
    backend = build_rate_limiter_backend(REDIS_URL)
    impatient = SpacingLimiter(backend, key, interval=5, max_wait=0.2)
    try:
        impatient.acquire()
        with pytest.raises(RetryableUpstreamError) as err:
            impatient.acquire()
        assert err.value.error_code == "rate_limit_wait" and err.value.retry_after == 5.0
    finally:
        backend.client.delete(impatient.key)
    assert isinstance(build_rate_limiter_backend(None), StubBackend)
