"""``enrich queues`` and ``enrich dead-letters``: what waits in the broker's Redis, and the dead letters' actions.

Both read through ``workers/queues.py`` (the dashboard's ``/queues`` does
too); the actions are ``workers/dead_letters.py``'s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Optional

from models import Settings

from .common import CommandError, app_broker, note, open_database, visible


def redis_client(settings: Settings, what: str = "the queues live"):
    """A client of the workers' Redis; CommandError (one line) without REDIS_URL."""
    import redis

    if not settings.redis_url:
        raise CommandError(f"REDIS_URL is not set: {what} in the workers' Redis (without it, a process's "
                           "queue is in its own memory)")
    return redis.Redis.from_url(settings.redis_url, socket_timeout=10)


def epoch_text(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def age_text(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


def _queue(value: str) -> str:
    from ..queues import check_queue_name

    try:
        return check_queue_name(value)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _known_queue(client, name: str) -> str:
    from ..queues import queue_names

    if name not in queue_names(client):
        raise CommandError(f"no queue named {name} on the broker")
    return name


def _page_lines(page) -> list[str]:
    lines = [f"{page.queue} {page.state}: {page.total} message{'s' if page.total != 1 else ''}"]
    for m in page.messages:
        why = m.problem or (f"{m.error_code or ''} {m.last_error or ''}".strip() if m.state == "dead" else "")
        when = epoch_text(m.dead_lettered_at if m.state == "dead" else m.due_at or m.enqueued_at)
        lines.append(f"  {m.id}  job {m.job_id or '-'}  {m.actor or '-'}  {m.entity_type or ''} {m.entity_id or ''}"
                     f"  {when}  {m.status or ''}  {m.arguments}")
        lines += [f"      why: {why}"] if why else []
    if page.next_offset is not None:
        lines.append(f"next page: --offset {page.next_offset}")
    return [visible(line) for line in lines]


def cmd_queues(args: argparse.Namespace, settings: Settings) -> int:
    from ..queues import add_ack_rates, add_job_log, queue_messages, queue_summaries

    client = redis_client(settings)
    open_database(settings)
    if args.queue:
        queue = _known_queue(client, _queue(args.queue))
        try:
            page = queue_messages(client, queue, args.state, args.offset, args.limit, settings.secrets())
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        add_job_log(page.messages)
        print(json.dumps(page.as_dict(), indent=2) if args.json else "\n".join(_page_lines(page)))
        return 0
    summaries = add_ack_rates(queue_summaries(client))
    if args.json:
        print(json.dumps({"queues": [s.as_dict() for s in summaries]}, indent=2))
        return 0
    print(f"{'QUEUE':<24} {'READY':>8} {'FETCHED':>8} {'DELAYED':>8} {'DEAD':>8}  OLDEST ready/delayed/dead  "
          "ENDED/MIN")
    for s in summaries:
        ages = "/".join(age_text(s.oldest_age_seconds[state]) for state in ("ready", "delayed", "dead"))
        print(visible(f"{s.name:<24} {s.counts['ready']:>8} {s.counts['fetched']:>8} {s.counts['delayed']:>8} "
                      f"{s.counts['dead']:>8}  {ages:<26} {s.acked_per_minute}"))
    return 0


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from ..dead_letters import DeadLetterRefused, delete_all, delete_dead, requeue_all, requeue_dead
    from ..queues import QueueNotFound, check_message_id

    action = "requeue" if args.requeue is not None else "delete" if args.delete is not None else None
    target = args.requeue if action == "requeue" else args.delete
    if action is None:
        if args.all:
            raise CommandError("--all goes with --requeue or --delete")
        args.state = "dead"
        return cmd_queues(args, settings)
    if bool(target) == bool(args.all):
        raise CommandError(f"--{action} takes one message id, or --all for every dead letter of the queue")
    client = redis_client(settings)
    open_database(settings)
    queue = _known_queue(client, _queue(args.queue))
    try:
        redis_id = check_message_id(target) if target else None
        if action == "requeue":
            broker = app_broker(settings)
            outcome = requeue_all(broker, client, queue) if args.all else None
            done = outcome.done if outcome else [requeue_dead(broker, client, queue, redis_id)]
        else:
            outcome = delete_all(client, queue) if args.all else None
            if outcome is None:
                delete_dead(client, queue, redis_id)
            done = outcome.done if outcome else [redis_id]
    except (ValueError, QueueNotFound, DeadLetterRefused) as exc:
        raise CommandError(str(exc)) from None
    for value in done:
        print(visible(value))
    for line in outcome.refused if outcome else []:
        note(f"left in the dead-letter queue: {line}")
    note(f"{'requeued' if action == 'requeue' else 'deleted'} {len(done)} message{'s' if len(done) != 1 else ''}"
         + (" (printed: their job ids)" if action == "requeue" else ""))
    return 1 if outcome and outcome.refused else 0


def add_queue_commands(sub, add) -> None:
    from ..queues import LISTED_STATES, MAX_PAGE_SIZE, PAGE_SIZE

    def limit(value: str) -> int:
        if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
            raise argparse.ArgumentTypeError(f"{value!r} must be a whole number from 1 to {MAX_PAGE_SIZE}")
        return int(value)

    def offset(value: str) -> int:
        if not value.isdigit():
            raise argparse.ArgumentTypeError(f"{value!r} must be a whole number, 0 or more")
        return int(value)

    p = add(sub, "queues", cmd_queues,
            "with REDIS_URL: each Dramatiq queue's messages ready, fetched (held by a worker), delayed and "
            "dead-lettered, the oldest one's age, and jobs ended per minute (the job log, last 5 minutes); "
            "with a QUEUE, one page of its messages",
            "enrich queues default --state ready --limit 20")
    p.add_argument("queue", nargs="?", metavar="QUEUE", help="list this queue's messages, a page at a time")
    p.add_argument("--state", choices=LISTED_STATES, default="ready", help="which of QUEUE's messages (default ready)")
    p.add_argument("--offset", type=offset, default=0, help="skip this many messages (the next page's offset)")
    p.add_argument("--limit", type=limit, default=PAGE_SIZE, help=f"messages per page, 1 to {MAX_PAGE_SIZE}")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add(sub, "dead-letters", cmd_dead_letters,
            "with REDIS_URL: list a queue's dead-lettered messages (newest first, with why when the job log knows), "
            "or requeue or delete one (by the id listed) or --all. A requeued message keeps its job id and tree; "
            "its row goes back to queued, as with enrich resend. Prints the job ids requeued or the ids deleted.",
            "enrich dead-letters --requeue 3c9b7a1e-2f4d-4c8e-9b1a-7d6e5f4c3b2a")
    p.add_argument("--queue", default="default", help="the queue (default: default)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--requeue", nargs="?", const="", metavar="ID", help="send this dead letter again")
    action.add_argument("--delete", nargs="?", const="", metavar="ID", help="delete this dead letter")
    p.add_argument("--all", action="store_true", help="with --requeue or --delete: every dead letter of the queue")
    p.add_argument("--offset", type=offset, default=0, help="listing: skip this many messages")
    p.add_argument("--limit", type=limit, default=PAGE_SIZE, help=f"listing: messages per page, 1 to {MAX_PAGE_SIZE}")
    p.add_argument("--json", action="store_true", help="listing: print JSON")
