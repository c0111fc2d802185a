"""The chaos soak's verdicts: invariants read with SQL, from Redis and from the processes' JSON logs.

Each check returns a ``Check``: its name, how many things it looked at, and
every violation (the report prints up to 5).  None of them involves a timing.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from models.job_log import DEGRADABLE_STATUSES, DEGRADED, FAILED_STATUSES, PENDING_STATUSES

OUTAGE_ERRORS = ("OperationalError", "InterfaceError", "ConnectionError", "TimeoutError")  # PostgreSQL, Redis down
PERMANENT_CODE = "upstream_400"  # what the soak's permanent upstream fault (HTTP 400) makes a job's error_code
# Log lines that mean a thread stopped doing its work, or a message's end was dropped.
THREAD_DEATHS = (
    "Exception in thread",  # Python's threading.excepthook: a thread died
    "Consumer encountered an unexpected error",  # Dramatiq's consumer thread
    "Unhandled error during post_process_message",  # Dramatiq's worker thread: the ack was never done
    "Fatal Python error",
)


@dataclass
class Check:
    name: str
    looked_at: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def rows(conn) -> dict[str, dict]:
    """Every job-log row by job id (a job id seen twice keeps the first; ``one_row_per_job`` counts them)."""
    with conn.cursor() as cur:
        cur.execute("SELECT job_id, parent_job_id, is_root_job, operation, status, own_status, retry_count, "
                    "error_code, failed_children, last_error, due_at FROM enrichment_logs")
        names = [d[0] for d in cur.description]
        found = {}
        for values in cur.fetchall():
            row = dict(zip(names, values))
            found.setdefault(row["job_id"], row)
        return found


def describe(row: dict) -> str:
    text = " ".join((row["last_error"] or "").split())
    text = text if len(text) <= 110 else text[:109] + "…"
    error = f" [{row['error_code'] or 'no code'}: {text}]" if row["error_code"] or text else ""
    return f"{row['job_id']} {row['operation']} {row['status']} (retry {row['retry_count']}){error}"


def every_sent_root_has_a_row(sent: list[dict], by_job: dict[str, dict]) -> Check:
    check = Check("every sent root has a row", len(sent))
    for root in sent:
        row = by_job.get(root["job_id"])
        if row is None:
            check.violations.append(f"{root['kind']} root {root['job_id']} (entity {root['entity_id']}): no row")
        elif not row["is_root_job"]:
            check.violations.append(f"{root['kind']} root {root['job_id']}: its row is not a root ({describe(row)})")
    return check


def _message(data) -> str:
    """What a stored message is: its job id and actor (Dramatiq's JSON encoding)."""
    try:
        message = json.loads(data)
        return f"{message['message_id']} ({message['actor_name']})"
    except (TypeError, ValueError, KeyError):
        return repr(data)[:80]


def unacked(client) -> dict[str, str]:
    """Every message held in a worker's unacked set: its job id -> the set's key.  (The sets hold Redis's own
    message ids; the message itself, with its job id, is in the queue's ``.msgs`` hash.)"""
    held = {}
    for key in client.scan_iter("dramatiq:__acks__.*"):
        name = key.decode()
        queue = name.split(".", 2)[2]  # dramatiq:__acks__.<worker id>.<queue>
        for redis_id in client.smembers(key):
            data = client.hget(f"dramatiq:{queue}.msgs", redis_id)
            held[_message(data).split()[0] if data else redis_id.decode()] = name
    return held


def every_tree_complete(by_job: dict[str, dict], held: dict[str, str]) -> Check:
    """No row pending; each one left says where its message is, when a worker's unacked set holds it."""
    check = Check("every tree complete (no job queued, running or retrying)", len(by_job))
    for row in sorted(by_job.values(), key=lambda r: (r["status"], r["operation"])):
        if row["status"] in PENDING_STATUSES:
            due = f", due {row['due_at']:%H:%M:%S}" if row["due_at"] else ""
            where = held.get(row["job_id"])
            if where and where.endswith(".DQ"):
                where = f"; its message is unacked in {where}: a retry a worker dropped from its delay queue " \
                        "(issue 23 item 1)"
            elif where:
                where = f"; its message is unacked in {where}"
            check.violations.append(f"{describe(row)}{due}, tree {row['parent_job_id'] or row['job_id']}{where or ''}")
    return check


def one_row_per_job(conn) -> Check:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM enrichment_logs")
        total = cur.fetchone()[0]
        cur.execute("SELECT job_id, count(*) FROM enrichment_logs GROUP BY job_id HAVING count(*) > 1 OR job_id IS NULL")
        doubles = cur.fetchall()
    check = Check("one row per job", total)
    check.violations = [f"job {job_id}: {count} rows" for job_id, count in doubles]
    return check


def failed_children_exact(by_job: dict[str, dict]) -> tuple[Check, Check]:
    """``failed_children`` is the number of the root's children ``failed`` or ``lost``; and the root is
    ``degraded`` if and only if that is above zero (a root that itself failed keeps ``failed``)."""
    failed = Counter(row["parent_job_id"] for row in by_job.values()
                     if row["parent_job_id"] and row["status"] in FAILED_STATUSES)
    roots = [row for row in by_job.values() if row["is_root_job"]]
    exact = Check("failed_children exact", len(roots))
    degraded = Check("degraded if and only if failed_children > 0", len(roots))
    for root in roots:
        counted, real = root["failed_children"], failed[root["job_id"]]
        if counted != real:
            exact.violations.append(f"root {root['job_id']} {root['operation']}: failed_children {counted}, "
                                    f"children failed or lost {real}")
        if root["status"] == DEGRADED and counted <= 0:
            degraded.violations.append(f"root {root['job_id']}: degraded with failed_children {counted}")
        if counted > 0 and root["status"] in DEGRADABLE_STATUSES:
            degraded.violations.append(f"root {root['job_id']}: {root['status']} with failed_children {counted}")
    return exact, degraded


def journal_empty(client) -> Check:
    check = Check("journal and rejected stream empty", 2)
    for stream in ("dramatiq:job-log", "dramatiq:job-log:rejected"):
        left = client.xlen(stream) if client.exists(stream) else 0
        if left:
            first = client.xrange(stream, count=1)
            check.violations.append(f"{stream}: {left} entries left, the first {first[0][0].decode()}")
    return check


def queue_empty(client) -> Check:
    """No message left anywhere in Redis: a message held in a worker's unacked set is work not done."""
    check = Check("no message left in Redis (queues, delay queues, unacked sets)")
    for key in ("dramatiq:default.msgs", "dramatiq:default.DQ.msgs"):
        check.looked_at += 1
        for data in client.hvals(key):
            check.violations.append(f"{key}: message {_message(data)}")
    for job_id, key in unacked(client).items():
        check.violations.append(f"{key}: unacked {job_id}")
    return check


def log_entries(paths) -> list[dict]:
    """Every JSON line of the processes' logs, with the file it came from."""
    entries = []
    for path in paths:
        with open(path, errors="replace") as log:
            for line in log:
                if line.startswith("{"):
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    entry["_log"] = path
                    entries.append(entry)
    return entries


def _lines_with(name: str, paths, signs) -> Check:
    check = Check(name, len(paths))
    for path in paths:
        with open(path, errors="replace") as log:
            for number, line in enumerate(log, 1):
                if any(sign in line for sign in signs):
                    check.violations.append(f"{path.rsplit('/', 1)[-1]}:{number}: {_shown(line)}")
    return check


def _shown(line: str) -> str:
    """A log line, its JSON cut to what names it: the message and the exception's type and value."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line.strip()[:200]
    error = (entry.get("exception") or [{}])[0]
    raised = f" ({error['exc_type']}: {str(error.get('exc_value', ''))[:100]})" if error.get("exc_type") else ""
    return f"{entry.get('timestamp', '')} {entry.get('message', '')}{raised}"


def no_thread_died(paths) -> Check:
    return _lines_with("no thread died", paths, THREAD_DEATHS)


def no_background_round_failed(paths) -> Check:
    """BackgroundLoop logs a round that raised anything but a declared outage as a bug, with its traceback
    (docs/job-log.md); its thread goes on, so this is not a death, but it is an error nobody planned."""
    return _lines_with("no background round failed (\"a round failed\": a bug, per docs/job-log.md)", paths,
                       ("a round failed",))


def no_job_ended_by_an_outage(by_job: dict[str, dict]) -> Check:
    """A transient outage must not end a job (issue 23 item 2): none ``failed`` with ``retry_not_enqueued`` (a
    retry Redis refused), and with a Redis that keeps what it acknowledged (``appendfsync always``) no job the
    sweeper found nowhere (``lost``).  A job whose every retry met an outage is a figure (``outage_failures``),
    not a violation: its retries are spent by design."""
    check = Check("no job ended by a transient outage (retry_not_enqueued, lost)", len(by_job))
    check.violations = [describe(row) for row in by_job.values()
                        if row["status"] == "lost" or row["error_code"] == "retry_not_enqueued"]
    return check


def outage_failures(by_job: dict[str, dict]) -> list[dict]:
    """The jobs that failed after every retry with the error of a service that was down."""
    return [row for row in by_job.values() if row["status"] == "failed"
            and row["error_code"] != "retry_not_enqueued" and (row["last_error"] or "").startswith(OUTAGE_ERRORS)]


def permanent_errors_failed(by_job: dict[str, dict]) -> Check:
    hit = [row for row in by_job.values() if row["error_code"] == PERMANENT_CODE]
    check = Check(f"permanent upstream errors ({PERMANENT_CODE}) ended failed", len(hit))
    check.violations = [describe(row) for row in hit if row["status"] != "failed"]
    return check


def rows_agree_with_last_attempt(by_job: dict[str, dict], entries: list[dict]) -> Check:
    """A row's status and retry count are its job's last attempt's, as the worker logged it ("job finished").

    A root ``degraded`` by a failed child agrees when its ``own_status`` is that attempt's.  An attempt
    that started after the last end and never ended (its worker was killed, and nothing ran it again)
    is a violation too.
    """
    attempts = defaultdict(list)
    for entry in entries:
        if entry.get("message") in ("job started", "job finished") and entry.get("job_id"):
            attempts[entry["job_id"]].append(entry)
    check = Check("each row agrees with its job's last attempt", len(attempts))
    for job_id, events in attempts.items():
        events.sort(key=lambda e: e.get("timestamp", ""))
        row = by_job.get(job_id)
        if row is None:
            check.violations.append(f"job {job_id} {events[-1].get('operation')}: logged, but no row")
            continue
        ends = [e for e in events if e["message"] == "job finished"]
        if not ends or events[-1]["message"] == "job started":
            last = events[-1]
            check.violations.append(f"{describe(row)}: its last attempt (retry {last.get('retry_count')}, "
                                    f"{last['_log'].rsplit('/', 1)[-1]} {last.get('timestamp')}) never ended")
            continue
        last = ends[-1]
        status = row["own_status"] if row["status"] == DEGRADED else row["status"]
        if status != last.get("status") or row["retry_count"] != last.get("retry_count"):
            check.violations.append(f"{describe(row)}: its last attempt ended {last.get('status')} "
                                    f"(retry {last.get('retry_count')}) at {last.get('timestamp')}")
    return check


__all__ = ["Check", "rows", "unacked", "every_sent_root_has_a_row", "every_tree_complete", "one_row_per_job",
           "failed_children_exact", "journal_empty", "queue_empty", "log_entries", "no_thread_died", "no_background_round_failed",
           "no_job_ended_by_an_outage", "outage_failures", "permanent_errors_failed", "rows_agree_with_last_attempt"]
