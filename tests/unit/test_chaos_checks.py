"""The chaos soak's checks (bench/chaos_checks.py) catch what they name: each one fed a state that breaks it."""

from __future__ import annotations

import datetime as dt
import json

from bench import chaos_checks as checks


def row(job_id, status="success", parent=None, **values):
    base = dict(job_id=job_id, parent_job_id=parent, is_root_job=parent is None, operation="enrichment:album",
                status=status, own_status=None, retry_count=0, error_code=None, failed_children=0,
                last_error=None, due_at=None)
    return {**base, **values}


def by_id(*rows):
    return {r["job_id"]: r for r in rows}


def test_a_sent_root_without_a_row_and_a_pending_job_are_named():
    rows = by_id(row("r1"), row("c1", "retrying", parent="r1", due_at=dt.datetime(2026, 1, 1, 12, 0, 5)))
    missing = checks.every_sent_root_has_a_row(
        [{"job_id": "r1", "kind": "album", "entity_id": "a"}, {"job_id": "r2", "kind": "track", "entity_id": "t"}],
        rows)
    assert missing.violations == ["track root r2 (entity t): no row"]
    pending = checks.every_tree_complete(rows, {"c1": "dramatiq:__acks__.w1.default.DQ"})
    assert len(pending.violations) == 1
    assert "c1 enrichment:album retrying" in pending.violations[0] and "issue 23 item 1" in pending.violations[0]


def test_failed_children_must_match_and_degraded_must_follow_them():
    rows = by_id(
        row("r1", "degraded", own_status="success", failed_children=2), row("c1", "failed", parent="r1"),
        row("r2", "success", failed_children=1), row("c2", "lost", parent="r2"),
        row("r3", "degraded", failed_children=0),
    )
    exact, degraded = checks.failed_children_exact(rows)
    assert exact.violations == ["root r1 enrichment:album: failed_children 2, children failed or lost 1"]
    assert sorted(degraded.violations) == ["root r2: success with failed_children 1",
                                           "root r3: degraded with failed_children 0"]


def test_outage_ended_jobs_and_permanent_errors_that_did_not_fail_are_named():
    rows = by_id(
        row("a", "failed", error_code="retry_not_enqueued", last_error="ConnectionError: closed"),
        row("b", "failed", last_error="OperationalError: connection refused"),
        row("c", "lost", error_code="message_lost"),
        row("d", "failed", error_code="upstream_400"),
        row("e", "retrying", error_code="upstream_400"),
    )
    assert {v.split()[0] for v in checks.no_job_ended_by_an_outage(rows).violations} == {"a", "c"}
    assert [r["job_id"] for r in checks.outage_failures(rows)] == ["b"]  # its retries were spent: a figure
    assert [v.split()[0] for v in checks.permanent_errors_failed(rows).violations] == ["e"]


def test_a_row_that_disagrees_with_its_last_logged_attempt_is_named(tmp_path):
    log = tmp_path / "worker.log"
    lines = [
        {"message": "job started", "job_id": "j1", "retry_count": 0, "timestamp": "2026-01-01T00:00:01Z"},
        {"message": "job finished", "job_id": "j1", "status": "failed", "retry_count": 0,
         "timestamp": "2026-01-01T00:00:02Z"},
        {"message": "job started", "job_id": "j1", "retry_count": 0, "timestamp": "2026-01-01T00:00:15Z"},
        {"message": "job finished", "job_id": "j1", "status": "success", "retry_count": 0,
         "timestamp": "2026-01-01T00:00:16Z"},
        {"message": "job finished", "job_id": "r1", "status": "success", "retry_count": 0,
         "timestamp": "2026-01-01T00:00:03Z"},
        {"message": "job started", "job_id": "j2", "retry_count": 1, "timestamp": "2026-01-01T00:00:04Z"},
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    rows = by_id(row("j1", "failed", parent="r1"), row("r1", "degraded", own_status="success", failed_children=1),
                 row("j2", "success", parent="r1"))
    found = checks.rows_agree_with_last_attempt(rows, checks.log_entries([str(log)]))
    assert len(found.violations) == 2
    assert "j1 enrichment:album failed" in found.violations[0] and "ended success" in found.violations[0]
    assert "j2" in found.violations[1] and "never ended" in found.violations[1]


def test_thread_deaths_and_failed_rounds_are_read_from_the_logs(tmp_path):
    log = tmp_path / "drain.log"
    log.write_text("\n".join([
        json.dumps({"message": "job finished", "timestamp": "t0"}),
        "Exception in thread job-log-drainer:",
        json.dumps({"message": "journal-metrics: a round failed; the next one tries again", "timestamp": "t1",
                    "exception": [{"exc_type": "JournalUnavailable", "exc_value": "refused"}]}),
    ]) + "\n")
    died = checks.no_thread_died([str(log)])
    assert died.violations == ["drain.log:2: Exception in thread job-log-drainer:"]
    rounds = checks.no_background_round_failed([str(log)])
    assert rounds.violations == ["drain.log:3: t1 journal-metrics: a round failed; the next one tries again "
                                 "(JournalUnavailable: refused)"]
