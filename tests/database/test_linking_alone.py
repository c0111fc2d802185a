"""JobLinking without MessageOptions before it: it checks the options it reads itself.

A library user may add ``JobLinking()`` alone.  A producer's bad
``parent_job_id`` (not text, too long for the column, with a NUL) must then
cost a WARNING and make the job a root, never its row.
"""

from __future__ import annotations

import dramatiq
import pytest
import structlog
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from middleware import DatabaseConnections, JobLinking
from models import EnrichmentLog

from linking_harness import drain, rows

HOSTILE_PARENTS = [12345, "p" * 500, "root\x00id", ["a"], ""]


@pytest.fixture
def linking_alone(db):
    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.add_middleware(DatabaseConnections())
    linking = JobLinking()
    broker.add_middleware(linking)
    dramatiq.set_broker(broker)
    worker = Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield broker, worker
    worker.stop()
    linking.job_log.stop()
    broker.close()


def test_hostile_options_with_joblinking_alone_are_dropped_and_every_job_has_its_row(linking_alone):
    broker, worker = linking_alone

    @dramatiq.actor(broker=broker, max_retries=0)
    def works():
        pass

    @dramatiq.actor(broker=broker, max_retries=0)
    def fails():
        raise RuntimeError("boom")

    with structlog.testing.capture_logs() as logs:
        sent = [actor.send_with_options(parent_job_id=bad) for bad in HOSTILE_PARENTS for actor in (works, fails)]
        sent.append(works.send_with_options(first_started_at="yesterday", triggered_by="t" * 500,
                                            started_by="someone", retries="many"))
        drain(broker, worker)

    found = rows()
    assert set(found) == {m.message_id for m in sent}  # one row per job, none lost
    assert EnrichmentLog.select().count() == len(sent)
    for message in sent:
        row = found[message.message_id]
        assert row.status == ("failed" if message.actor_name == "fails" else "success")
        assert (row.is_root_job, row.parent_job_id, row.error_code) == (
            True, None, "runtime_error" if message.actor_name == "fails" else None)
    last = found[sent[-1].message_id]
    assert (last.triggered_by, last.retry_count, last.details) == (None, 0, None)

    dropped = [(e["option"], e["job_id"]) for e in logs if e["event"] == "ignoring bad message option"]
    expected = {("parent_job_id", m.message_id) for m in sent[:-1]}
    expected |= {(name, sent[-1].message_id) for name in ("first_started_at", "triggered_by", "started_by", "retries")}
    assert set(dropped) == expected
    assert all(e["log_level"] == "warning" for e in logs if e["event"] == "ignoring bad message option")
