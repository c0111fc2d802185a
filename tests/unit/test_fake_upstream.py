"""The fake upstream server itself: sample data, control API, faults, request log, standalone run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from models import load_settings
from workers.fake_upstream import FAULT_KINDS, FakeCredentials, FakeUpstream
from workers.upstream import sniff_image

ROOT = Path(__file__).resolve().parents[2]
UA = {"User-Agent": "music-enrichment-tests/1.0 ( tests@example.com )"}
ALBUMS = {  # release group MBID -> (title, artist, track count); OKNOTOK is Spotify-only
    "b1392450-e666-3926-a536-22c65f834433": ("OK Computer", "Radiohead", 12),
    "48117b90-a16e-34ca-a514-19c702df1158": ("Discovery", "Daft Punk", 14),
    "810272e0-aef1-3d85-b2d3-e512e87fc38c": ("Homogenic", "Björk", 10),
    "48140466-cff6-3222-bd55-63c27e43190d": ("Dummy", "Portishead", 11),
    "6f9f6899-c0d3-311d-ae87-a10ae6bc53a9": ("Mezzanine", "Massive Attack", 11),
}


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def http(fake):
    fake.reset()
    with httpx.Client(base_url=fake.url, headers=UA, timeout=5) as client:
        yield client
    fake.reset()


def mb(http, path, **params):
    return http.get(f"/musicbrainz/ws/2/{path}", params={**params, "fmt": "json"})


def test_every_sample_album_has_artist_release_and_tracks(http):
    for mbid, (title, artist, count) in ALBUMS.items():
        group = mb(http, f"release-group/{mbid}").json()
        assert (group["title"], group["artist-credit"][0]["name"]) == (title, artist)
        release = mb(http, f"release/{group['releases'][0]['id']}").json()
        tracks = release["media"][0]["tracks"]
        assert len(tracks) == count and all(t["length"] > 60_000 and t["recording"]["id"] for t in tracks)
        credited = mb(http, f"artist/{group['artist-credit'][0]['artist']['id']}").json()
        assert credited["country"] and credited["life-span"]["begin"] and credited["genres"]
        has_discogs = any(r["type"] == "discogs" for r in credited["relations"])
        assert has_discogs is (artist != "Björk")  # Björk goes through the Discogs search


def test_spotify_only_album_has_no_musicbrainz_tracks(http):
    (group,) = [g for g in mb(http, "release-group", query='releasegroup:"OKNOTOK"').json()["release-groups"]]
    release = mb(http, f"release/{group['releases'][0]['id']}").json()
    assert release["media"] == []


def test_musicbrainz_rules(http):
    assert http.get("/musicbrainz/ws/2/artist/x", headers={"User-Agent": "python-httpx/0.28"}).status_code == 403
    assert http.get("/musicbrainz/ws/2/artist/a74b1b7f-71a5-4011-9441-d0b5e4122711").status_code == 406
    assert mb(http, "artist/not-an-mbid").json()["error"] == "Invalid mbid."
    assert mb(http, "isrc/GBAYE9999999").status_code == 404
    assert mb(http, "artist", query="Nobody Here").json() == {
        "created": "2024-01-01T00:00:00.000Z", "count": 0, "offset": 0, "artists": []
    }


def test_spotify_token_endpoint_checks_credentials_and_pages(fake, http):
    creds = fake.state.credentials
    bad = http.post("/spotify-accounts/api/token", data={"grant_type": "client_credentials"}, auth=("x", "y"))
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client"
    good = http.post(
        "/spotify-accounts/api/token",
        data={"grant_type": "client_credentials"},
        auth=(creds.spotify_client_id, creds.spotify_client_secret),
    ).json()
    assert good["token_type"] == "Bearer" and good["expires_in"] == 3600
    assert http.get("/spotify/v1/albums/0tzfI6NFJqcJkWb23R3lRZ").status_code == 401
    page = http.get(
        "/spotify/v1/albums/0tzfI6NFJqcJkWb23R3lRZ/tracks",
        params={"limit": 50},
        headers={"Authorization": f"Bearer {good['access_token']}"},
    ).json()
    assert (page["total"], page["limit"], len(page["items"])) == (23, 20, 20)
    assert page["next"].startswith(fake.url + "/spotify/v1/albums/0tzfI6NFJqcJkWb23R3lRZ/tracks?offset=20")


def test_discogs_requires_token_and_ranks_disambiguated_names(fake, http):
    assert http.get("/discogs/database/search", params={"q": "Björk"}).status_code == 401
    headers = {"Authorization": f"Discogs token={fake.state.credentials.discogs_token}"}
    results = http.get("/discogs/database/search", params={"q": "bjork", "type": "artist"}, headers=headers).json()
    assert [r["title"] for r in results["results"]][:2] == ["Björk", "Björk (2)"]
    assert http.get("/discogs/artists/999", headers=headers).status_code == 404


def test_images_are_valid_and_match_their_declared_size(fake, http):
    for path, (content_type, data) in fake.state.catalog.images.items():
        info = sniff_image(data)
        assert info is not None and content_type == info.mime_type, path
    cover = http.get(fake.cover_art_url("810272e0-aef1-3d85-b2d3-e512e87fc38c"), follow_redirects=True)
    assert cover.headers["content-type"] == "image/jpeg" and sniff_image(cover.content).width == 500
    assert http.get(fake.cover_art_url("00000000-0000-0000-0000-000000000000")).status_code == 404


def test_cloudflare_upload_shape_and_checks(fake, http):
    creds = fake.state.credentials
    path = f"/cloudflare/client/v4/accounts/{creds.cloudflare_account_id}/images/v1"
    png = fake.state.catalog.images["covers/48117b90-a16e-34ca-a514-19c702df1158.png"][1]
    auth = {"Authorization": f"Bearer {creds.cloudflare_api_token}"}
    assert http.post(path, files={"file": ("a.png", png)}).status_code == 401
    assert http.post(path, files={"file": ("a.txt", b"hello")}, headers=auth).status_code == 415
    body = http.post(path, files={"file": ("a.png", png, "image/png")}, headers=auth).json()
    assert body["success"] is True and body["errors"] == [] and body["result"]["filename"] == "a.png"
    assert http.get(body["result"]["variants"][0]).content == png


def test_faults_over_http_control_api(fake, http):
    created = http.post(
        "/_control/faults", json={"path": "^/musicbrainz/.*/artist/", "kind": "rate_limit", "times": 2, "retry_after": 9}
    )
    assert created.status_code == 201
    for _ in range(2):
        limited = mb(http, "artist/a74b1b7f-71a5-4011-9441-d0b5e4122711")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "9")
    assert mb(http, "artist/a74b1b7f-71a5-4011-9441-d0b5e4122711").status_code == 200
    assert http.get("/_control/faults").json()["faults"][0]["hits"] == 2
    assert http.post("/_control/faults", json={"path": "/x", "kind": "explode"}).status_code == 400
    forever = http.post("/_control/faults", json={"path": "/discogs", "kind": "server_error", "times": None}).json()
    assert [http.get("/discogs/artists/1").status_code for _ in range(3)] == [503] * 3
    assert http.delete(f"/_control/faults/{forever['id']}").json() == {"removed": True}
    http.post("/_control/faults", json={"path": "/images", "kind": "disconnect"})
    assert http.delete("/_control/faults").status_code == 200 and http.get("/_control/faults").json()["faults"] == []


def test_request_log_redacts_and_orders(fake, http):
    http.get("/discogs/database/search", params={"q": "x", "token": "s3cr3t"}, headers={"Authorization": "Discogs token=s3cr3t"})
    mb(http, "artist", query="Portishead")
    log = http.get("/_control/requests").json()["requests"]
    assert [e["service"] for e in log] == ["discogs", "musicbrainz"]
    assert "s3cr3t" not in repr(log) and log[0]["headers"]["authorization"] == "[redacted]"
    assert log[0]["monotonic"] <= log[1]["monotonic"] and log[0]["status"] == 401
    assert http.get("/_control/requests", params={"service": "musicbrainz"}).json()["requests"][0]["path"].endswith("/artist")
    http.delete("/_control/requests")
    assert fake.requests() == []


@pytest.mark.parametrize("kind", ["malformed_json", "truncated_json", "not_an_image"])
def test_broken_bodies(fake, http, kind):
    fake.fail("/musicbrainz", kind)
    try:
        response = mb(http, "artist/a74b1b7f-71a5-4011-9441-d0b5e4122711")
        with pytest.raises(ValueError):
            response.json()
    except httpx.RemoteProtocolError:
        assert kind == "truncated_json"


def test_stop_is_prompt_while_a_timeout_fault_waits():
    fake = FakeUpstream().start()
    fake.fail("/musicbrainz", "timeout", delay=60)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(fake.url + "/musicbrainz/ws/2/artist", timeout=0.3)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 3


def test_custom_credentials_and_env():
    with FakeUpstream(credentials=FakeCredentials(discogs_token="other")) as fake:
        env = fake.env(cloudflare=False)
        assert env["DISCOGS_TOKEN"] == "other" and "CLOUDFLARE_API_TOKEN" not in env
        assert env["MUSICBRAINZ_URL"] == fake.url + "/musicbrainz/ws/2"
    assert set(FAULT_KINDS) >= {"rate_limit", "server_error", "timeout", "huge_body", "not_an_image"}


def test_standalone_prints_the_environment_and_serves():
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.fake_upstream", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        assert "SAMPLE DATA" in banner
        lines = [process.stdout.readline() for _ in range(12)]
        exports = dict(line[len("export ") :].strip().split("=", 1) for line in lines if line.startswith("export "))
        assert {"MUSICBRAINZ_URL", "DISCOGS_URL", "SPOTIFY_API_URL", "SPOTIFY_ACCOUNTS_URL", "CLOUDFLARE_API_URL",
                "COVERART_URL"} <= set(exports)
        base = exports["MUSICBRAINZ_URL"].rsplit("/musicbrainz", 1)[0]
        assert httpx.get(base + "/_control/health", timeout=5).json()["sample_data"] is True
        # The workers read it: covers come from the fake, never the real Cover Art Archive.
        settings = load_settings(exports)
        assert settings.coverart_url == exports["COVERART_URL"] and settings.coverart_url.startswith(base)
        cover = httpx.get(f"{settings.coverart_url}/release-group/810272e0-aef1-3d85-b2d3-e512e87fc38c/front",
                          timeout=5, follow_redirects=True)
        assert cover.status_code == 200 and cover.headers["content-type"].startswith("image/")
    finally:
        process.terminate()
        process.wait(timeout=5)
