"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against `enrich web` as a process.

No browser is downloaded: Playwright launches /usr/bin/chromium (`.ci/run`
installs it with apt-get).  Screenshots go to $DASHBOARD_SCREENSHOTS when set
(the README's come from `DASHBOARD_SCREENSHOTS=docs`), else to a temporary folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import dramatiq
import httpx
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from playwright.sync_api import expect, sync_playwright

from middleware.job_log.journal import redis_journal
from migrations import apply_migrations
from models import EnrichmentLog, bind_database, utcnow
from models.timeline import get_tree
from workers.cli.catalog import AlbumInput, add_album
from workers.cli.demo import BJORK_DISCOGS_ID, HOMOGENIC_MBID
from workers.fake_upstream import COVER_ART, DISCOGS, FakeUpstream

from dashboard_data import album, insert, job
from process_harness import WorkerProcess
from services import REDIS_TEST_URL

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHBOARD_", "REDIS_URL", "DATABASE_URL"))}
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def enrich_web(database_url: str, **env):
    """`enrich web` on a free port of 127.0.0.1, until the block ends; yields its URL."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", "web", "--port", str(port)],
                               env=_env(DATABASE_URL=database_url, **env), stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/static/live.js", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"enrich web did not start: {process.stderr.read()}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def live_db(tmp_path):
    """A migrated SQLite file that this test writes and `enrich web` reads."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    db = bind_database(url)
    apply_migrations(db)
    yield url
    db.close_all()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> str:
    """The URL of the database `enrich demo` built (once for the module: it takes a while)."""
    folder = tmp_path_factory.mktemp("demo")
    demo = subprocess.run([sys.executable, "-m", "workers.cli", "demo"], cwd=folder, env=_env(),
                          capture_output=True, text=True, timeout=180)
    assert demo.returncode == 0, demo.stderr
    assert "enrich web" in demo.stdout.splitlines()[-1]
    return f"sqlite:///{folder / 'enrichment-demo.db'}"


def test_after_the_demo_the_degraded_tree_shows_its_failed_child(demo_db, page, screenshots):
    with enrich_web(demo_db) as url:
        page.goto(url + "/")
        expect(page.locator("table.roots tbody tr")).to_have_count(6)
        page.screenshot(path=str(screenshots / "dashboard-roots.png"), full_page=True)

        page.select_option("select[name=status]", "degraded")
        page.click("button[type=submit]")
        rows = page.locator("table.roots tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Homogenic")
        expect(rows.first).to_contain_text("1 failed")
        assert "status=degraded" in page.url

        rows.first.locator("a[href^='/trees/']").click()
        alert = page.locator(".alert")
        expect(alert).to_contain_text("Degraded")
        expect(alert).to_contain_text("discogs:get-artist")
        expect(alert).to_contain_text("upstream_400")
        expect(alert).to_contain_text("HTTP 400")
        expect(page.locator("table.waterfall tr.job")).to_have_count(7)
        page.screenshot(path=str(screenshots / "dashboard-tree.png"), full_page=True)


def test_after_the_demo_an_albums_release_date_is_in_its_history(demo_db, page, screenshots):
    with enrich_web(demo_db) as url:
        page.goto(url + "/?q=Homogenic")
        page.locator("table.roots a.entity").first.click()
        expect(page.locator("h1")).to_contain_text("Homogenic")
        catalog = page.locator("section.catalog dl.kv")
        release_date = catalog.locator("dt:text-is('release date') + dd").inner_text()
        assert release_date and release_date != "–"

        history = page.locator("section.history")
        field = history.locator("h3.field:text-is('release date') + table.changes tbody tr")
        expect(field.first.locator("td.after")).to_have_text(release_date)
        expect(field.first.locator("td.source")).to_contain_text("MusicBrainz release")
        expect(field.first.locator("td.source a[href^='https://musicbrainz.org/release/']")).to_have_count(1)
        # The release date's table alone: other fields show the test's own cache paths.
        history.locator("h3.field:text-is('release date') + table.changes").screenshot(
            path=str(screenshots / "dashboard-field-history.png"))

        field.first.locator("a[href^='/trees/']").click()  # the job that set it opens its tree
        changed = page.locator("section#changed")
        expect(changed).to_contain_text("What this tree changed")
        expect(changed.locator("tr", has_text="release date").first).to_contain_text(release_date)


def test_a_running_tree_updates_itself_until_it_is_complete(live_db, page):
    record = album("Dummy", "Portishead")
    now = utcnow()
    insert(job("live-root", at=now, status="running", entity=("album", record.id)),
           job("live-child", "live-root", at=now, status="running", entity=("album", record.id)))
    with enrich_web(live_db) as url:
        page.goto(url + "/trees/live-child")
        expect(page.locator(".summary")).to_contain_text("updating live")
        page.evaluate("window.notReloaded = true")
        page.locator("details").first.click()  # an open details box stays open across updates

        EnrichmentLog.update(status="success", completed_at=utcnow(), duration_ms=800).where(
            EnrichmentLog.job_id == "live-child").execute()
        insert(job("live-late", "live-root", at=utcnow(), status="running", operation="cache:album-cover-art",
                   entity=("album", record.id)))
        expect(page.locator("table.waterfall tr.job")).to_have_count(3, timeout=10_000)
        expect(page.locator("table.waterfall")).to_contain_text("cache:album-cover-art")

        EnrichmentLog.update(status="success", completed_at=utcnow(), duration_ms=300).where(
            EnrichmentLog.job_id.in_(["live-late", "live-root"])).execute()
        expect(page.locator(".summary .complete")).to_have_text("complete", timeout=10_000)
        assert page.evaluate("window.notReloaded") is True
        assert page.locator("details").first.get_attribute("open") is not None
        time.sleep(3)  # two quiet answers, then no more polling
        assert page.locator("#live").get_attribute("data-live") == "done"


def test_the_roots_page_refreshes_itself_keeping_filters_and_scroll(live_db, page):
    record = album("Mezzanine", "Massive Attack")
    insert(*[job(f"old-{n}", at=utcnow() - dt.timedelta(minutes=n + 5), entity=("album", record.id))
             for n in range(40)])
    insert(job("running-root", at=utcnow(), status="running", entity=("album", record.id)))
    with enrich_web(live_db) as url:
        page.set_viewport_size({"width": 1400, "height": 400})
        page.goto(url + "/?operation=check:album-enrichment&q=mezz")
        expect(page.locator("table.roots tbody tr")).to_have_count(41)
        page.evaluate("window.scrollTo(0, 600)")
        EnrichmentLog.update(status="success", completed_at=utcnow(), duration_ms=500).where(
            EnrichmentLog.job_id == "running-root").execute()
        expect(page.locator("table.roots tbody tr").first).to_contain_text("complete", timeout=10_000)
        assert page.evaluate("window.scrollY") == 600
        assert page.url.endswith("?operation=check:album-enrichment&q=mezz")


def test_a_hostile_album_title_renders_as_text(live_db, page):
    hostile = album("<script>alert(1)</script>", "Evil\x1b[31mArtist")
    insert(job("hostile-root", at=utcnow(), status="success", entity=("album", hostile.id)))
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with enrich_web(live_db) as url:
        page.goto(url + "/")
        expect(page.locator("table.roots a.entity")).to_have_text("album <script>alert(1)</script>")
        page.goto(url + "/trees/hostile-root")
        expect(page.locator("h1 a.entity")).to_contain_text("<script>alert(1)</script>")
        page.goto(url + f"/albums/{hostile.id}")
        expect(page.locator(".related")).to_contain_text("Evil␛[31mArtist")
    assert dialogs == []


def test_the_overview_warns_when_the_job_log_is_behind(live_db, page, screenshots):
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    journal = redis_journal(client)  # the workers' journal, dramatiq:job-log, with nobody draining it
    for n in range(5):
        journal.append({"job_id": f"stuck-{n}", "status": "success"})
    try:
        with enrich_web(live_db, REDIS_URL=REDIS_TEST_URL, DASHBOARD_JOURNAL_BEHIND_SECONDS="1") as url:
            time.sleep(1.2)  # the oldest row is now older than the threshold
            page.goto(url + "/overview")
            warning = page.locator(".alert.behind")
            expect(warning).to_be_visible()
            expect(warning).to_contain_text("The job log is behind: 5 rows the workers wrote still wait in the journal")
            expect(warning).to_contain_text("(more than 1 s)")
            assert warning.bounding_box()["y"] < page.locator("figure.chart").bounding_box()["y"]  # above it all
            expect(page.locator("section.journal")).to_contain_text("5 rows waiting for the database")
            page.screenshot(path=str(screenshots / "dashboard-journal-behind.png"), full_page=True)

            journal.ack([entry.id for entry in journal.read("test-drainer", count=5, block_ms=0)])  # drained
            page.reload()
            expect(page.locator(".alert.behind")).to_have_count(0)
            expect(page.locator("section.journal")).to_contain_text("empty, every row the workers wrote is in the")
    finally:
        client.flushdb()
        client.close()


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def degraded_homogenic(live_db: str, tmp_path):
    """A real worker enriches Homogenic while Discogs refuses Björk for good: the tree ends degraded, its
    discogs:get-artist job failed (and dead-lettered: a permanent error is not retried).  Yields the fake
    upstream, the root's id and the failed job."""
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    with FakeUpstream() as fake:
        fake.fail(f"{DISCOGS}/artists/{BJORK_DISCOGS_ID}", "status", status=400, times=None)
        homogenic, _ = add_album(AlbumInput.parse("Homogenic", ["Björk"], HOMOGENIC_MBID, None))
        env = {**fake.env(credentials=True, cloudflare=False), "COVERART_URL": fake.url + COVER_ART,
               "IMAGE_CACHE_DIR": str(tmp_path / "images"), "MUSICBRAINZ_MIN_INTERVAL": "0.05",
               "DISCOGS_MIN_INTERVAL": "0.05", "DATABASE_URL": live_db, "REDIS_URL": REDIS_TEST_URL}
        worker = WorkerProcess("workers.worker", env, tmp_path / "worker.log", processes=1, threads=4)
        try:
            worker.wait_ready()
            started = subprocess.run([sys.executable, "-m", "workers.cli", "album", str(homogenic.id)],
                                     env=_env(**env), capture_output=True, text=True, timeout=60)
            root_id = started.stdout.strip()
            tree = _wait_for(lambda: (t := get_tree(root_id)) and t.complete and t.root.status == "degraded" and t,
                             60, "the Homogenic tree to end degraded")
            failed = [item for item in tree.items if item.status == "failed"]
            assert [item.operation for item in failed] == ["discogs:get-artist"]
            yield fake, root_id, failed[0]
        finally:
            worker.stop()


@contextlib.contextmanager
def dashboard_tab(browser, live_db: str, actions: bool):
    """A tab on `enrich web` over the workers' Redis: read-only, or with actions on and their password."""
    env = {"DASHBOARD_ALLOW_ACTIONS": "1", "DASHBOARD_PASSWORD": "pw-for-the-test"} if actions else {}
    with enrich_web(live_db, REDIS_URL=REDIS_TEST_URL, **env) as url:
        context = browser.new_context(
            http_credentials={"username": "operator", "password": "pw-for-the-test"} if actions else None)
        try:
            yield url, context.new_page()
        finally:
            context.close()


def expect_tree_succeeded(tab, url: str, root_id: str) -> None:
    """The tree completes again, its Discogs job and its root `success` (the root took the failure back)."""
    tab.goto(f"{url}/trees/{root_id}")
    expect(tab.locator(".summary .complete")).to_have_text("complete", timeout=30_000)
    resent = tab.locator("table.waterfall tr.job", has_text="discogs:get-artist")
    expect(resent.locator(".badge")).to_have_text("success")
    expect(tab.locator("h1 .badge")).to_have_text("success")
    expect(tab.locator(".alert")).to_have_count(0)


def test_with_actions_on_a_failed_job_is_sent_again_and_succeeds(live_db, browser, tmp_path):
    with degraded_homogenic(live_db, tmp_path) as (fake, root_id, failed):
        with dashboard_tab(browser, live_db, actions=False) as (url, tab):  # read-only: no button
            tab.goto(f"{url}/trees/{root_id}")
            expect(tab.locator(".alert")).to_contain_text("discogs:get-artist")
            expect(tab.locator("button")).to_have_count(0)

        fake.clear_faults()  # Discogs answers again
        with dashboard_tab(browser, live_db, actions=True) as (url, tab):
            tab.goto(f"{url}/trees/{root_id}")
            tab.locator(".alert button", has_text="Send again").click()
            expect(tab.locator(".notice")).to_contain_text("Sent 1 job again")
            expect_tree_succeeded(tab, url, root_id)
    row = EnrichmentLog.get(EnrichmentLog.job_id == failed.job_id)
    assert (row.status, row.retry_count) == ("success", 1)


def test_a_dead_letter_is_on_the_queues_page_and_requeued_to_success(live_db, browser, tmp_path):
    with degraded_homogenic(live_db, tmp_path) as (fake, root_id, failed):
        _wait_for(lambda: redis.Redis.from_url(REDIS_TEST_URL).zcard("dramatiq:default.XQ") == 1, 30,
                  "the failed job's message in the dead-letter queue")
        before = EnrichmentLog.get(EnrichmentLog.job_id == failed.job_id).retry_count
        with dashboard_tab(browser, live_db, actions=False) as (url, tab):  # read-only: no button
            tab.goto(f"{url}/queues")
            expect(tab.locator('tr[data-queue="default"] a.dead')).to_have_text("1")
            tab.locator('tr[data-queue="default"] a.dead').click()
            row = tab.locator("table.messages tbody tr")
            expect(row).to_have_count(1)
            expect(row).to_contain_text(failed.job_id)
            expect(row.locator(".why")).to_contain_text("400")
            expect(tab.locator("button")).to_have_count(0)

        fake.clear_faults()  # Discogs answers again
        with dashboard_tab(browser, live_db, actions=True) as (url, tab):
            tab.goto(f"{url}/queues/default?state=dead")
            tab.locator("table.messages button", has_text="Requeue").click()
            expect(tab.locator(".notice")).to_contain_text("Requeued 1 message.")
            expect(tab.locator("table.messages tbody tr")).to_have_count(0)
            expect_tree_succeeded(tab, url, root_id)
    row = EnrichmentLog.get(EnrichmentLog.job_id == failed.job_id)
    assert (row.status, row.retry_count) == ("success", before + 1)  # sent again as a resend sends it
    assert EnrichmentLog.select().where(EnrichmentLog.job_id == failed.job_id).count() == 1


def test_a_worker_running_a_slow_job_shows_it_and_shows_as_gone_after_sigkill(live_db, page, tmp_path, screenshots):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    heartbeat = {"REDIS_HEARTBEAT_TIMEOUT_MS": "3000"}  # gone 3 s after its last heartbeat
    worker = WorkerProcess("fault_app", {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": live_db, **heartbeat},
                           tmp_path / "worker.log", threads=2)
    try:
        worker.wait_ready()
        sender = RedisBroker(url=REDIS_TEST_URL)
        slow = dramatiq.Message(queue_name="default", actor_name="fault_sleep", args=(60,), kwargs={}, options={})
        sender.enqueue(slow)
        sender.close()
        with enrich_web(live_db, REDIS_URL=REDIS_TEST_URL, **heartbeat) as url:
            page.goto(f"{url}/workers")
            expect(page.locator("header nav a.here")).to_have_text("Workers")
            worker_box = page.locator(f'section.worker:has(tr[data-job="{slow.message_id}"])')
            expect(worker_box).to_have_count(1, timeout=30_000)  # the page refreshes itself every 2 s
            expect(worker_box.locator(".badge")).to_have_text("live")
            job_row = worker_box.locator(f'tr[data-job="{slow.message_id}"]')
            expect(job_row).to_contain_text("fault_sleep")
            expect(job_row.locator("a").first).to_have_attribute("href", f"/trees/{slow.message_id}")
            page.screenshot(path=str(screenshots / "dashboard-workers.png"), full_page=True)
            worker.kill()  # SIGKILL: its record stays, its heartbeat stops
            expect(worker_box.locator(".badge")).to_have_text("gone", timeout=30_000)
            expect(worker_box.locator(f'tr[data-job="{slow.message_id}"]')).to_have_count(1)  # the job it held
    finally:
        if worker.proc.poll() is None:
            worker.kill()
