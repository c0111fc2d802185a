"""While Redis is down, the lost-work sweep says so once, and once more when it is back: no traceback a second."""

from __future__ import annotations

import structlog
from dramatiq.brokers.redis import RedisBroker

from middleware.job_log.drainer import Drainer
from middleware.job_log.journal import journal_for
from middleware.job_log.lost_work import LostWorkSweeper

from linking_harness import wait_for
from process_harness import free_port
from services import SeparateRedis

KEEPS_NOTHING = ("--appendonly", "no", "--save", "")


def test_a_redis_outage_is_one_warning_and_one_line_when_it_ends(tmp_path, pg_db):
    port = free_port()
    server = SeparateRedis(tmp_path, port, *KEEPS_NOTHING)
    broker = RedisBroker(url=server.url)
    journal = journal_for(broker)
    sweeper = LostWorkSweeper(broker, pg_db, grace_seconds=0, interval_seconds=0.1, journal=journal)
    rounds = []
    maybe_run = sweeper.maybe_run

    def counted_round():
        try:
            result = maybe_run()
        except Exception:
            rounds.append("failed")
            raise
        rounds.append("ok")
        return result

    sweeper.maybe_run = counted_round
    drainer = Drainer(journal, pg_db, sweeper=sweeper)
    try:
        with structlog.testing.capture_logs() as logs:
            drainer.start()
            wait_for(lambda: "ok" in rounds, timeout=30, interval=0.05)
            server.stop()
            wait_for(lambda: rounds[-3:] == ["failed"] * 3, timeout=60, interval=0.05)
            server = SeparateRedis(tmp_path, port, *KEEPS_NOTHING)  # back, on the same port
            wait_for(lambda: any(e["event"].startswith("lost-work-sweeper: the service is back") for e in logs),
                     timeout=60, interval=0.05)
    finally:
        drainer.stop(timeout=5)
        server.stop()
        broker.close()

    sweep = [e for e in logs if e["event"].startswith("lost-work-sweeper")]
    assert [e["log_level"] for e in sweep] == ["warning", "warning"], sweep
    down, back = sweep
    assert down["event"].startswith("lost-work-sweeper: a service it needs is down")
    assert "ConnectionError" in down["error"] and "exc_info" not in down
    assert back["down_for_seconds"] > 0
    assert not [e for e in logs if e.get("exc_info")]  # no traceback from any thread
