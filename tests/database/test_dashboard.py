"""The web dashboard over HTTP (httpx, through Starlette's test client, against the ASGI app).

Pages, the JSON API, filters, bad input, authentication, headers and
escaping, on rows written as the middleware writes them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest
import redis

from dashboard import create_app
from dashboard.security import CSP, bind_problem
from middleware.job_log.journal import redis_journal
from models import Artist, EnrichmentLog, Settings, load_settings, utcnow
from models.timeline import get_tree
from workers import app
from workers.cli.main import main as enrich_main

from dashboard_data import album, album_tree, insert, job
from services import REDIS_TEST_URL
from web_client import Web, basic


def client(**settings) -> Web:
    """The dashboard on these settings; with its actions on, they send through this process's app broker."""
    settings = Settings(**settings)
    return Web(create_app(settings, app.broker() if settings.dashboard_actions else None))


def enrich(*args: str) -> int:
    """The ``enrich`` command in this process, on its database and logs (the test's)."""
    return enrich_main(list(args), settings=load_settings())


@pytest.fixture
def catalog(db):
    """Three album trees: OK Computer (success), Homogenic (degraded), Dummy (running)."""
    now = utcnow()
    ok, homogenic, dummy = album("OK Computer", "Radiohead"), album("Homogenic", "Björk"), album("Dummy", "Portishead")
    album_tree("root-ok", ok, at=now - dt.timedelta(minutes=30))
    album_tree("root-homogenic", homogenic, at=now - dt.timedelta(minutes=20), failed_child=True)
    insert(job("root-dummy", at=now - dt.timedelta(minutes=1), status="running", entity=("album", dummy.id)))
    return {"ok": ok, "homogenic": homogenic, "dummy": dummy}


def roots_in(html: str) -> list[str]:
    """The root job ids a roots table links to, in order."""
    return re.findall(r'<a href="/trees/([^"]+)">', html)


# -- the roots page ---------------------------------------------------------------------------


def test_roots_page_lists_roots_newest_first_with_children_entities_and_liveness(catalog):
    answer = client().get("/")
    assert answer.status_code == 200
    assert roots_in(answer.text) == ["root-dummy", "root-homogenic", "root-ok"]
    assert "Homogenic</a>" in answer.text and f'href="/albums/{catalog["homogenic"].id}"' in answer.text
    assert "1 failed" in answer.text and "1 success" in answer.text
    assert 'data-active="1"' in answer.text  # Dummy runs: the page refreshes itself
    assert "running</span>" in answer.text


def test_roots_filters_status_operation_search_and_time_window(catalog):
    web = client()
    assert roots_in(web.get("/?status=degraded").text) == ["root-homogenic"]
    assert roots_in(web.get("/?operation=check:album-enrichment&status=running").text) == ["root-dummy"]
    assert roots_in(web.get("/?operation=nothing:like-this").text) == []
    assert roots_in(web.get("/?q=homo").text) == ["root-homogenic"]  # part of a title, any case
    assert roots_in(web.get("/?q=ok%20COMPUTER").text) == ["root-ok"]
    assert roots_in(web.get("/?q=100%25").text) == []  # LIKE's wildcards are plain characters
    assert roots_in(web.get("/?last=15m").text) == ["root-dummy"]
    since = (utcnow() - dt.timedelta(minutes=25)).isoformat(timespec="minutes")
    until = (utcnow() - dt.timedelta(minutes=10)).isoformat(timespec="minutes")
    assert roots_in(web.get(f"/?since={since}&until={until}").text) == ["root-homogenic"]
    # The form shows what was asked for.
    page = web.get("/?status=degraded&q=homo").text
    assert '<option value="degraded" selected>' in page and 'value="homo"' in page


def test_search_finds_roots_by_artist_name(catalog):
    artist = Artist.get(Artist.name == "Björk")
    insert(job("root-bjork", at=utcnow(), operation="check:artist-enrichment", entity=("artist", artist.id)))
    assert roots_in(client().get("/?q=bjö").text) == ["root-bjork"]


def test_roots_pages_through_a_cursor_keeping_the_filters(catalog):
    web = client()
    first = web.get("/?limit=2&operation=check:album-enrichment").text
    assert roots_in(first) == ["root-dummy", "root-homogenic"]
    older = re.search(r'<a class="older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "operation=check" in older and "limit=2" in older
    assert roots_in(web.get("/" + older).text) == ["root-ok"]


def test_the_live_part_alone_when_the_script_asks(catalog):
    answer = client().get("/?status=running", headers={"X-Dashboard-Partial": "1"})
    assert answer.status_code == 200
    assert "<html" not in answer.text and roots_in(answer.text) == ["root-dummy"]


# -- the tree page ------------------------------------------------------------------------------


def test_any_job_of_a_tree_opens_it_with_the_failed_child_at_the_top(catalog):
    web = client()
    for job_id in ("root-homogenic", "root-homogenic-artist"):
        page = web.get(f"/trees/{job_id}").text
        alert = page[page.index('class="alert"'):page.index("</div>", page.index('class="alert"'))]
        assert "discogs:get-artist" in alert and "upstream_400" in alert and "HTTP 400" in alert
        assert "Björk" in alert
    whole = web.get("/trees/root-homogenic").text
    page = whole[whole.index('<table class="waterfall">'):]
    # Start order, every job's details: retries, reason, sources, fields enriched, details as key/values.
    assert page.index("check:album-enrichment") < page.index("enrichment:album") < page.index("discogs:get-artist")
    assert "↻1" in page and "upstream_503" in page and "matched by lookup" in page
    assert "<dd>musicbrainz</dd>" in page and "<dd>genres, release_date</dd>" in page
    assert "<dt>decision</dt><dd>enrich</dd>" in page
    assert 'class="wait"' in page and 'class="run s-failed"' in page  # queue wait and run time apart
    assert 'data-active="0"' in whole and "complete</span>" in whole


def test_a_running_tree_says_so_and_asks_to_be_refreshed(catalog):
    page = client().get("/trees/root-dummy").text
    assert 'data-active="1"' in page and "updating live" in page


# -- entity pages --------------------------------------------------------------------------------


def test_entity_pages_show_the_catalog_and_every_tree_that_touched_it(catalog):
    web = client()
    later = album_tree("root-homogenic-again", catalog["homogenic"], at=utcnow() - dt.timedelta(minutes=2))
    page = web.get(f"/albums/{catalog['homogenic'].id}").text
    assert "Homogenic" in page and "enrichment status" in page and "Björk</a>" in page
    assert roots_in(page) == [later[0]["job_id"], "root-homogenic"]
    # The artist was touched only by a child job: its page still finds the album's trees.
    artist = Artist.get(Artist.name == "Björk")
    assert roots_in(web.get(f"/artists/{artist.id}").text) == ["root-homogenic-again", "root-homogenic"]


# -- overview -------------------------------------------------------------------------------------


def test_overview_draws_jobs_per_minute_and_lists_degraded_roots(catalog):
    page = client().get("/overview").text
    assert page.count('<rect class="s-') >= 3  # success, failed, degraded, running bars
    assert 'class="s-failed"' in page and "degraded 1" in page
    assert roots_in(page) == ["root-homogenic"]
    assert client().get("/overview?window=day").status_code == 200


def journal_part(page: str) -> str:
    """The overview's text about the journal: its warnings and its line, tags and blank lines removed."""
    part = page[page.index("<h1>Overview</h1>"):page.index("</section>")]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", part)).strip()


@pytest.fixture
def journal():
    """The workers' journal (dramatiq:job-log) on the test Redis, empty at the start and the end."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield redis_journal(client)
    client.flushdb()
    client.close()


def test_overview_shows_the_journal_backlog_and_the_rows_the_database_refused(db, journal):
    web = client(redis_url=REDIS_TEST_URL)
    assert "Job-log journal dramatiq:job-log: empty, every row the workers wrote is in the database; " \
           "0 refused rows kept aside." in journal_part(web.get("/overview").text)
    for n in range(3):
        journal.append({"job_id": f"waiting-{n}", "status": "running"})
    refused = journal.read("test-drainer", count=1, block_ms=0)
    journal.put_aside(refused, "value too long for type character varying(10)")
    journal.ack([entry.id for entry in refused])
    text = journal_part(web.get("/overview").text)
    assert re.search(r"Job-log journal dramatiq:job-log: 2 rows waiting for the database, the oldest for \d+ms; "
                     r"1 refused row kept aside\.", text), text
    assert "1 row the database refused is kept aside in the Redis stream dramatiq:job-log:rejected: " \
           "enrich drain --list-rejected lists it; after fixing the cause, enrich drain --replay-rejected " \
           "appends it to the journal again." in text
    assert "behind" not in text  # younger than the default 60 s

    time.sleep(1.1)
    page = client(redis_url=REDIS_TEST_URL, dashboard_journal_behind_seconds=1).get("/overview").text
    assert 'class="alert behind" role="alert"' in page
    assert re.search(r"The job log is behind: 2 rows the workers wrote still wait in the journal, the oldest for "
                     r"1\.\ds \(more than 1 s\)\. Every page may be stale", journal_part(page)), journal_part(page)


def test_overview_without_redis_says_the_journal_cannot_be_inspected(db):
    page = client().get("/overview")
    assert page.status_code == 200
    text = journal_part(page.text)
    assert text.endswith("Job-log journal: not inspectable from here: REDIS_URL is not set, so each process that "
                         "runs jobs (enrich run, enrich demo) keeps its journal in its own memory")
    assert "0 rows" not in text and "behind" not in text and "refused" not in text


def test_overview_with_redis_down_renders_with_a_one_line_notice(catalog):
    started = time.monotonic()
    page = client(redis_url="redis://:pw-Redis-31@127.0.0.1:1/0").get("/overview")  # nothing listens on port 1
    assert page.status_code == 200 and time.monotonic() - started < 5
    notice = re.findall(r'<p class="notice">(.*)</p>', page.text)
    assert notice == ["<strong>Job-log journal:</strong> cannot be read from Redis at redis://:***@127.0.0.1:1/0: "
                      "Error 111 connecting to 127.0.0.1:1. Connection refused."]
    assert "pw-Redis-31" not in page.text
    assert roots_in(page.text) == ["root-homogenic"] and 'class="chart"' in page.text  # the rest is there


# -- the JSON API -----------------------------------------------------------------------------------


def test_api_answers_what_the_cli_prints_as_json(catalog, capsys):
    web = client()
    assert enrich("roots", "--status", "degraded", "--json") == 0
    assert web.get("/api/roots?status=degraded").json() == json.loads(capsys.readouterr().out)
    assert enrich("timeline", "root-homogenic-artist", "--json") == 0
    assert web.get("/api/trees/root-homogenic-artist").json() == json.loads(capsys.readouterr().out)
    entity = web.get(f"/api/entities/album/{catalog['ok'].id}").json()
    assert entity["entity"]["name"] == "OK Computer" and entity["entity"]["fields"]["enrichment_status"] == "pending"
    assert [r["job_id"] for r in entity["roots"]] == ["root-ok"] and entity["next_cursor"] is None
    assert web.get("/api/roots?q=dummy").json()["roots"][0]["job_id"] == "root-dummy"
    tree = web.get("/api/trees/root-ok").json()
    assert tree["items"][1]["sources"] == ["musicbrainz"] and tree == get_tree("root-ok").as_dict()


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, status, message", [
    ("/?status=exploded", 400, "status 'exploded' is not one of"),
    ("/?cursor=not-a-cursor", 400, "malformed cursor"),
    ("/?limit=0", 400, "limit '0' must be a whole number"),
    ("/?limit=abc", 400, "limit 'abc'"),
    ("/?since=yesterday", 400, "since='yesterday' is not a date"),
    ("/?since=2026-01-02&until=2026-01-01", 400, "since must be earlier than until"),
    ("/?last=3y", 400, "last '3y' is not one of"),
    ("/?q=" + "x" * 201, 400, "at most 200"),
    ("/?q=%1b%5b31m", 400, "control characters"),
    ("/trees/no-such-job", 404, "no job with id no-such-job"),
    ("/trees/%00bad", 400, "malformed job id"),
    ("/albums/not-a-uuid", 400, "is not a UUID"),
    ("/artists/6f1c1d6e-0000-4000-8000-000000000000", 404, "no artist with id"),
    ("/overview?window=year", 400, "window 'year'"),
    ("/no/such/page", 404, "no page at /no/such/page"),
    ("/api/roots?cursor=%%%", 400, "malformed cursor"),
    ("/api/trees/no-such-job", 404, "no job with id"),
    ("/api/entities/planet/6f1c1d6e-0000-4000-8000-000000000000", 400, "entity type 'planet'"),
])
def test_bad_input_is_one_short_line_never_a_traceback(db, path, status, message):
    answer = client().get(path)
    assert answer.status_code == status
    body = answer.json()["error"] if path.startswith("/api/") else answer.text
    assert message in body and "Traceback" not in body and len(body.splitlines()) == 1


def test_an_unreachable_database_answers_503(db):
    from models import bind_database

    bind_database("postgresql://root@127.0.0.1:1/x")
    answer = client().get("/api/roots")
    assert answer.status_code == 503 and "cannot be reached" in answer.json()["error"]


# -- escaping, headers, secrets -----------------------------------------------------------------------


def test_stored_text_is_escaped_and_control_characters_shown(db):
    hostile = album("<script>alert(1)</script>", "Evil\x1b[31m\x07Artist")
    album_tree("root-hostile", hostile, failed_child=True)
    EnrichmentLog.update(last_error="<img src=x onerror=alert(2)>").where(
        EnrichmentLog.job_id == "root-hostile-artist").execute()
    web = client()
    for path in ("/", "/trees/root-hostile", f"/albums/{hostile.id}", "/overview"):
        page = web.get(path).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
        assert "\x1b" not in page and "\x07" not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in web.get("/").text
    tree = web.get("/trees/root-hostile").text
    assert "Evil␛[31m␇Artist" in tree and "&lt;img src=x onerror=alert(2)&gt;" in tree


def test_every_answer_carries_a_csp_without_inline_script(db):
    web = client(dashboard_password="s3cret-pass")
    for path, headers in (("/", basic("s3cret-pass")), ("/nowhere", basic("s3cret-pass")), ("/", {}),
                          ("/static/live.js", basic("s3cret-pass"))):
        answer = web.get(path, headers=headers)
        assert answer.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    page = web.get("/", headers=basic("s3cret-pass")).text
    assert "<script>" not in page and "style=" not in page and " on" + "click" not in page


def test_a_roots_page_weighs_under_100_kb_with_its_script_and_style(db):
    record = album("A fairly long album title of the kind people give to deluxe editions", "Some Artist")
    rows = [job(f"root-{n}", at=utcnow() - dt.timedelta(minutes=n), entity=("album", record.id)) for n in range(50)]
    insert(*rows, *[job(f"root-{n}-{k}", f"root-{n}", at=utcnow() - dt.timedelta(minutes=n), status=status)
                    for n in range(50) for k, status in enumerate(("success", "no_data", "failed", "skipped"))])
    web = client()
    sizes = [len(web.get(path).content) for path in ("/", "/static/style.css", "/static/live.js")]
    assert len(roots_in(web.get("/").text)) == 50
    assert sum(sizes) < 100_000, sizes


def test_no_secret_reaches_a_page_or_the_api(catalog):
    secrets = dict(dashboard_password="pw-Zq81xx", discogs_token="tok-Discogs-77", spotify_client_secret="sp-Sec-55")
    web = client(**secrets)
    for path in ("/", "/trees/root-homogenic", f"/albums/{catalog['ok'].id}", "/overview", "/api/roots",
                 "/api/trees/root-ok", f"/api/entities/album/{catalog['ok'].id}", "/nowhere"):
        body = web.get(path, headers=basic("pw-Zq81xx")).text
        assert not any(secret in body for secret in secrets.values()), path


# -- authentication and actions -----------------------------------------------------------------------


def test_with_a_password_every_request_needs_it(catalog):
    web = client(dashboard_password="correct horse")
    assert web.get("/").status_code == 401
    assert web.get("/", headers=basic("wrong")).status_code == 401
    assert web.get("/api/roots", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert web.get("/static/style.css").status_code == 401
    answer = web.get("/", headers=basic("correct horse", user="anyone"))
    assert answer.status_code == 200 and "read-only" in answer.text
    assert 'Basic realm="enrich dashboard"' in web.get("/").headers["www-authenticate"]


@pytest.mark.parametrize("settings", [{}, {"dashboard_password": "pw"}, {"dashboard_allow_actions": True},
                                      {"dashboard_allow_actions": True, "dashboard_password": "pw"},
                                      {"dashboard_allow_actions": True, "redis_url": "redis://127.0.0.1:1/0"}])
def test_without_both_settings_there_are_no_buttons_and_actions_are_refused(catalog, settings):
    web = client(**settings)
    headers = basic("pw") if settings.get("dashboard_password") else {}
    page = web.get("/trees/root-homogenic", headers=headers).text
    assert "<form" not in page and "Send again" not in page
    for path in ("/jobs/root-homogenic-artist/resend", "/trees/root-homogenic/resend"):
        answer = web.post(path, headers=headers, data={"csrf_token": "x"})
        assert answer.status_code == 403 and "actions are off" in answer.text
        assert web.get(path, headers=headers).status_code == 405  # never by GET


def test_listening_beyond_localhost_needs_the_password(db, capsys):
    assert bind_problem("127.0.0.1", None) is None and bind_problem("0.0.0.0", "pw") is None
    assert enrich("web", "--host", "0.0.0.0", "--port", "8999") == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["enrich web: refusing to listen on 0.0.0.0 without DASHBOARD_PASSWORD: anyone who reaches it "
                     "would read the job log; set DASHBOARD_PASSWORD, or listen on 127.0.0.1"]


def test_enrich_web_refuses_a_database_that_is_not_migrated(tmp_path, capsys):
    from models import bind_database

    bind_database(f"sqlite:///{tmp_path / 'empty.db'}")
    assert enrich("web", "--port", "8999") == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "enrich web: the database has no enrichment_logs table: run `enrich migrate` first"]


def test_dashboard_settings_are_read_and_the_password_is_a_secret():
    from models import ConfigError, load_settings

    settings = load_settings({"DASHBOARD_ALLOW_ACTIONS": "1", "DASHBOARD_PASSWORD": "hunter22"})
    assert settings.dashboard_allow_actions and "hunter22" in settings.secrets()
    assert "hunter22" not in repr(settings)
    assert settings.dashboard_journal_behind_seconds == 60
    assert load_settings({"DASHBOARD_JOURNAL_BEHIND_SECONDS": "2.5"}).dashboard_journal_behind_seconds == 2.5
    with pytest.raises(ConfigError, match="DASHBOARD_JOURNAL_BEHIND_SECONDS='soon' is not a number"):
        load_settings({"DASHBOARD_JOURNAL_BEHIND_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="DASHBOARD_ALLOW_ACTIONS='maybe' must be 1 or 0"):
        load_settings({"DASHBOARD_ALLOW_ACTIONS": "maybe"})


ACTIONS = {"dashboard_allow_actions": True, "dashboard_password": "pw", "redis_url": "redis://127.0.0.1:1/0"}


def test_with_actions_on_a_failed_job_is_sent_again_through_a_csrf_checked_post(catalog):
    EnrichmentLog.update(message={"actor": "discogs_get_artist", "queue": "default", "args": ["x"], "kwargs": {},
                                  "options": {}, "resendable": True}).where(
        EnrichmentLog.job_id == "root-homogenic-artist").execute()
    web = client(**ACTIONS)
    page = web.get("/trees/root-homogenic", headers=basic("pw")).text
    token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page).group(1)
    assert 'action="/jobs/root-homogenic-artist/resend"' in page and "Send again" in page
    path = "/jobs/root-homogenic-artist/resend"
    assert web.post(path, headers=basic("pw")).status_code == 403  # no token
    assert web.post(path, headers=basic("pw"), data={"csrf_token": "0" * 64}).status_code == 403
    assert web.post(path, data={"csrf_token": token}).status_code == 401  # the password first
    answer = web.post(path, headers=basic("pw"), data={"csrf_token": token}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/trees/root-homogenic-artist?sent=1"
    row = EnrichmentLog.get(EnrichmentLog.job_id == "root-homogenic-artist")
    assert (row.status, row.retry_count) == ("queued", 1)  # sent again: pending, the tree is not complete
    page = web.get(answer.headers["location"], headers=basic("pw")).text
    assert "Sent 1 job again" in page and 'data-active="1"' in page
    # A job that cannot be sent again is refused in one line, and nothing is sent.
    refused = web.post("/jobs/root-ok/resend", headers=basic("pw"), data={"csrf_token": token})
    assert refused.status_code == 409 and refused.text.strip() == (
        "job root-ok is success: only failed or lost jobs are sent again")
    refused = web.post("/trees/root-ok-album/resend", headers=basic("pw"), data={"csrf_token": token})
    assert refused.status_code == 409 and "is not a root" in refused.text


def test_a_queued_child_shows_its_wait_so_far(db):
    record = album("Mezzanine", "Massive Attack")
    now = utcnow()
    root = job("root-waiting", at=now - dt.timedelta(seconds=10), status="running", entity=("album", record.id))
    queued = job("child-queued", "root-waiting", at=now, entity=("album", record.id), status="queued")
    queued.update(started_at=None, completed_at=None, duration_ms=None,
                  enqueued_at=now - dt.timedelta(seconds=4), created_at=now - dt.timedelta(seconds=4))
    insert(root, queued)
    page = client().get("/trees/child-queued").text
    assert "1 queued, 1 running: updating live" in page
    assert re.search(r'<td class="num">queued</td>\s*<td class="bar"><svg[^>]*><title>queue wait 4\.\ds so far',
                     page)
