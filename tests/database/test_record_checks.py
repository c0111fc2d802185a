"""record() takes only what a row can hold, the same on PostgreSQL and SQLite.

Each bad value is a ValueError naming the argument, raised in the actor: the
job ends ``failed`` with that message (never stuck ``running``), and values at
the very edge of what is allowed are stored exactly on both back ends.
"""

from __future__ import annotations

import pytest
import structlog

from middleware import JobLinking, current_job, record
from middleware.job_context import count_api_call
from middleware.record_checks import MAX_COUNT, MAX_SOURCES, MAX_TEXT_BYTES

from linking_harness import Harness, rows


@pytest.fixture
def harness(db):
    h = Harness(JobLinking(root_wait=0.3))
    yield h
    h.stop()


BAD = {
    "quality too long": ("data_quality_before", dict(data_quality_before="excellent-ish")),
    "quality unknown": ("data_quality_after", dict(data_quality_after="HIGH")),
    "quality not text": ("data_quality_after", dict(data_quality_after=5)),
    "count beyond INTEGER": ("api_call_count", dict(api_call_count=2**40)),
    "count negative": ("api_call_count", dict(api_call_count=-1)),
    "count as text": ("api_call_count", dict(api_call_count="3")),
    "count as bool": ("api_call_count", dict(api_call_count=True)),
    "count as float": ("api_call_count", dict(api_call_count=1.5)),
    "NaN": ("details", dict(details={"score": float("nan")})),
    "nested infinity": ("details", dict(details={"a": [1, {"b": float("-inf")}]})),
    "integer beyond 64 bits": ("details", dict(details={"n": 2**64})),
    "negative beyond 64 bits": ("details", dict(details={"deep": [[-(2**70)]]})),
    "float beyond 64 bits": ("details", dict(details={"f": 1e308})),
    "details not a mapping": ("details", dict(details=["a"])),
    "details over 256 KB": ("details", dict(details={"x": "y" * MAX_TEXT_BYTES})),
    "details too deep": ("details", dict(details=eval("{'a': " * 30 + "1" + "}" * 30))),
    "reason over 256 KB": ("reason", dict(reason="r" * (MAX_TEXT_BYTES + 1))),
    "reason 10 MB": ("reason", dict(reason="r" * 10 * 1024 * 1024)),
    "reason not text": ("reason", dict(reason=b"bytes")),
    "error code too long": ("error_code", dict(error_code="e" * 51)),
    "entity type unknown": ("entity_type", dict(entity_type="planet")),
    "entity id not a UUID": ("entity_id", dict(entity_id="not-a-uuid")),
    "fields as text": ("fields_enriched", dict(fields_enriched="title")),
    "source not text": ("sources", dict(sources=[5])),
    "source over 1000 bytes": ("sources", dict(sources=["s" * 1001])),
    "too many sources": ("sources", dict(sources=[f"source-{n}" for n in range(MAX_SOURCES + 1)])),
    "status unknown": ("status", dict(status="done")),
    "status of the middleware": ("status", dict(status="running")),
}


@pytest.mark.parametrize("argument, values", list(BAD.values()), ids=list(BAD))
def test_a_value_no_row_can_hold_fails_the_job_naming_the_argument(harness, argument, values):
    @harness.actor(max_retries=0)
    def job():
        record(reason="kept from an earlier call", details={"kept": 1})
        record(**values)

    message = job.send()
    harness.start().drain()
    row = rows()[message.message_id]
    assert (row.status, row.error_code) == ("failed", "value_error"), row.last_error
    assert row.last_error.startswith(f"ValueError: record({argument}="), row.last_error
    assert len(row.last_error) < 400
    # Nothing of the refused call was kept; the earlier one was.
    assert row.reason == "kept from an earlier call" and row.details == {"kept": 1}
    assert row.api_call_count == 0 and row.data_quality_before is None


def test_merged_details_over_the_cap_are_refused(harness):
    @harness.actor(max_retries=0)
    def job():
        record(details={"a": "x" * (MAX_TEXT_BYTES // 2)})
        record(details={"b": "y" * (MAX_TEXT_BYTES // 2)})

    message = job.send()
    harness.start().drain()
    row = rows()[message.message_id]
    assert row.status == "failed" and "bytes as JSON; at most 262,144" in row.last_error
    assert set(row.details) == {"a"}


def test_values_at_the_edge_are_stored_exactly(harness):
    edge = {
        "big": 2**63 - 1,
        "small": -(2**63 - 1),
        "huge float": 9.2e18,
        "tiny float": 5e-324,
        "nested": {"list": [True, None, "é", 0.5]},
        "text": "\u202eNUL-free but odd \x1b[2J",
    }
    reason = "é" * (MAX_TEXT_BYTES // 2)  # exactly 256 KB in UTF-8

    @harness.actor
    def job():
        record("partial_success", reason=reason, details=edge, api_call_count=2**31 - 1,
               data_quality_before="low", data_quality_after="high", error_code="e" * 50,
               fields_enriched=["title"], sources=["musicbrainz"])

    message = job.send()
    harness.start().drain()
    row = rows()[message.message_id]
    assert row.status == "partial_success", row.last_error
    assert row.reason == reason and row.details == edge
    assert (row.api_call_count, row.data_quality_before, row.data_quality_after) == (2**31 - 1, "low", "high")
    assert row.error_code == "e" * 50 and row.fields_enriched == ["title"] and row.sources == ["musicbrainz"]


def test_sources_stay_bounded_across_calls_and_counted_requests(harness):
    """sources accumulate: the merged list is capped too, by a ValueError from record(), a WARNING from counting."""
    @harness.actor(max_retries=0)
    def counted():
        for n in range(MAX_SOURCES + 20):
            count_api_call(f"upstream-{n}")

    @harness.actor(max_retries=0)
    def recorded():
        record(sources=[f"a-{n}" for n in range(60)])
        record(sources=[f"b-{n}" for n in range(60)])

    with structlog.testing.capture_logs() as logs:
        first, second = counted.send(), recorded.send()
        harness.start().drain()
    row = rows()[first.message_id]
    assert row.status == "success" and row.error_code is None, row.last_error
    assert row.sources == [f"upstream-{n}" for n in range(MAX_SOURCES)] and row.api_call_count == MAX_SOURCES + 20
    dropped = [e for e in logs if e["event"] == "job has too many sources; this one is not recorded"]
    assert [e["bad_value"] for e in dropped] == [f"upstream-{n}" for n in range(MAX_SOURCES, MAX_SOURCES + 20)]
    row = rows()[second.message_id]
    assert (row.status, row.error_code) == ("failed", "value_error")
    assert "120 sources with the earlier calls' and counted requests'; at most 100" in row.last_error
    assert row.sources == [f"a-{n}" for n in range(60)]  # the first call's, nothing of the refused one


def test_an_attempt_longer_than_duration_ms_holds_is_stored_at_its_maximum(harness):
    """30 days is past an INTEGER of milliseconds: PostgreSQL refused the whole final row."""
    @harness.actor
    def slow():
        current_job().started_monotonic -= 30 * 86400  # as if this attempt began 30 days ago

    with structlog.testing.capture_logs() as logs:
        message = slow.send()
        harness.start().drain()
    row = rows()[message.message_id]
    assert (row.status, row.error_code) == ("success", None), row.last_error
    assert row.duration_ms == MAX_COUNT and row.completed_at is not None
    warning = next(e for e in logs if e["event"] == "job attempt too long for duration_ms; storing its maximum")
    assert warning["bad_value"] >= 30 * 86400 * 1000 and warning["job_id"] == message.message_id


def test_lone_surrogates_become_replacement_characters_in_every_column(harness):
    """Half a UTF-16 pair (a bad decode upstream) is text neither database encodes: the row is still written."""
    @harness.actor(max_retries=0)
    def odd():
        record(reason="bad \ud800 decode", sources=["src\udc80"], fields_enriched=["title\ud83d"],
               details={"key\udfff": ["value \ud800"]})
        raise RuntimeError("upstream said \udc9f")

    message = odd.send()
    harness.start().drain()
    row = rows()[message.message_id]
    assert (row.status, row.error_code) == ("failed", "runtime_error"), row.last_error
    assert row.reason == "bad \ufffd decode" and row.sources == ["src\ufffd"]
    assert row.fields_enriched == ["title\ufffd"] and row.details == {"key\ufffd": ["value \ufffd"]}
    assert row.last_error == "RuntimeError: upstream said \ufffd"
