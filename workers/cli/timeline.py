"""Text rendering of the job log for ``enrich roots``, ``enrich timeline`` and in-process runs.

Reads through ``models.timeline`` (the same queries a UI would use) and turns
its dataclasses into lines: a table of roots, and a tree per root with one
line per job, children indented under the root, each job's start offset and
duration drawn as a bar to the scale of the whole tree.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from typing import Iterable, Optional, TextIO

from models import utcnow
from models.entities import entity_names
from models.job_log import DEGRADED, FAILED, LOST, PARTIAL_SUCCESS, QUEUED, RETRYING, RUNNING, SUCCESS
from models.plain import fmt_ms
from models.timeline import RootPage, RootSummary, TimelineItem, Tree, get_tree

from .common import visible

ACTIVE = (RUNNING, RETRYING)
BAR_WIDTH = 24
LABEL_WIDTH = 30
NOTE_WIDTH = 110

_COLORS = {
    SUCCESS: "32",  # green
    PARTIAL_SUCCESS: "33",  # yellow
    DEGRADED: "33;1",  # bold yellow: done, but a child failed
    FAILED: "31;1",  # bold red
    LOST: "31;1",  # bold red: its message vanished
    QUEUED: "34",  # blue
    RUNNING: "36",  # cyan
    RETRYING: "35",  # magenta
}
_DIM = "2"


class Style:
    """Colours for a stream: only on a terminal, and never when NO_COLOR is set (no-color.org)."""

    def __init__(self, stream: TextIO):
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.color = self.tty and not os.environ.get("NO_COLOR")

    def paint(self, text: str, code: Optional[str]) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and code else text

    def status(self, status: str, width: int = 0) -> str:
        """The status padded to ``width`` first, so colour codes never shift the columns."""
        return self.paint(visible(status).ljust(width), _COLORS.get(status, _DIM))


# -- small formats --------------------------------------------------------------------


def shorten(text: Optional[str], width: int) -> str:
    """One line of at most ``width`` characters, every character a terminal would obey made visible."""
    flat = visible(" ".join((text or "").split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _elapsed_ms(started: dt.datetime, end: dt.datetime) -> int:
    return max(0, round((end - started).total_seconds() * 1000))


# -- entity names --------------------------------------------------------------------

def entity_labels(pairs: Iterable[tuple[Optional[str], Optional[uuid.UUID]]]) -> dict:
    """``{(entity_type, entity_id): 'album "OK Computer"'}``: one query per entity type present."""
    return {(entity_type, entity_id): f'{entity_type} "{shorten(text, 28)}"'
            for (entity_type, entity_id), text in entity_names(pairs).items()}


def entity_label(labels: dict, entity_type: Optional[str], entity_id) -> str:
    if entity_type is None:
        return ""
    if entity_id is None:
        return entity_type
    key = (entity_type, uuid.UUID(str(entity_id)))
    return labels.get(key) or f"{entity_type} {str(entity_id)[:8]} (deleted)"


# -- one tree ------------------------------------------------------------------------------


def _span(item: TimelineItem, now: dt.datetime) -> tuple[Optional[int], Optional[int]]:
    """(start offset, length) in ms, from the first attempt's start to the end of the last one.

    A retried job's ``duration_ms`` is its last attempt's; the span shows the
    time the job really took, backoffs included.  A job still running
    extends to now.
    """
    if item.started_at is None:
        return item.offset_ms, None
    end = item.completed_at or (now if item.status in ACTIVE else None)
    length = _elapsed_ms(item.started_at, end) if end is not None else item.duration_ms
    return item.offset_ms, length


def _bar(start: Optional[int], length: Optional[int], scale: int) -> str:
    if start is None:
        return "·" * BAR_WIDTH  # not started yet
    first = min(BAR_WIDTH - 1, int(start * BAR_WIDTH / scale))
    cells = max(1, round((length or 0) * BAR_WIDTH / scale))
    cells = min(cells, BAR_WIDTH - first)
    return " " * first + "█" * cells + " " * (BAR_WIDTH - first - cells)


def _note(item: TimelineItem) -> str:
    """Why the job failed (error code and message), else the actor's reason.

    A job that succeeded after retries keeps its last error: its code is
    added as what the retries were about.
    """
    if item.status == QUEUED and item.due_at is not None and item.due_at > utcnow():
        return shorten(f"due in {fmt_ms(_elapsed_ms(utcnow(), item.due_at))}", NOTE_WIDTH)
    if item.status in (FAILED, LOST) or (item.status in ACTIVE and item.last_error):
        text = "; ".join(filter(None, (": ".join(filter(None, (item.error_code, item.last_error))), item.reason)))
    else:
        retried = f"retried after {item.error_code}" if item.retry_count and item.error_code else None
        text = "; ".join(filter(None, (item.reason, retried)))
    return shorten(text, NOTE_WIDTH)


def tree_lines(tree: Tree, labels: dict, style: Style, now: Optional[dt.datetime] = None) -> list[str]:
    """The tree as text: a header line, then one line per job (the root first)."""
    now = now or utcnow()
    spans = [_span(item, now) for item in tree.items]
    scale = max([(s or 0) + (n or 0) for s, n in spans] + [tree.total_duration_ms or 0, 1])
    root = tree.root
    status = root.status if root else "root missing"
    head = (
        f"{style.paint(visible(tree.root_job_id or tree.items[0].id), '1')}  {style.status(status)}  "
        f"{len(tree.items)} job{'s' if len(tree.items) != 1 else ''}, {fmt_ms(scale if tree.items else None)}, "
        f"{completion(tree.complete, tree.completed_at, tree.pending)}"
    )
    lines = [head]
    operations = [visible(i.operation) for i in tree.items]
    op_width = max(map(len, operations)) + 2
    for item, operation, (start, length) in zip(tree.items, operations, spans):
        indent = "" if item.is_root else "  "
        retries = f"↻{item.retry_count}" if item.retry_count else ""
        offset = f"+{fmt_ms(start)}" if start is not None else "queued"
        label = shorten(entity_label(labels, item.entity_type, item.entity_id), LABEL_WIDTH)
        lines.append(
            f"  {style.status(item.status, 15)} {(indent + operation).ljust(op_width)} {label:<{LABEL_WIDTH}} "
            f"{offset:>7} │{_bar(start, length, scale)}│ {fmt_ms(length):>6} {retries:<3} {_note(item)}".rstrip()
        )
    return lines


def tree_labels(tree: Tree) -> dict:
    return entity_labels((i.entity_type, i.entity_id) for i in tree.items)


def completion(complete: bool, completed_at: Optional[dt.datetime], pending: dict[str, int]) -> str:
    """'complete 12:03:04' (UTC), or the pending jobs: 'pending: 2 queued, 1 running'."""
    if complete:
        return f"complete {completed_at:%H:%M:%S}" if completed_at else "complete"
    return "pending: " + ", ".join(f"{n} {status}" for status, n in pending.items())


# -- the roots table ---------------------------------------------------------------------

ROOT_HEADER = ("CREATED (UTC)", "STATUS", "OPERATION", "ENTITY", "CHILDREN", "TREE", "TOTAL", "JOB ID")


def _children(root: RootSummary) -> str:
    if not root.child_count:
        return "-"
    parts = ", ".join(f"{n} {status}" for status, n in root.children.items())
    return f"{root.child_count}: {parts}"


def roots_lines(page: RootPage, labels: dict, style: Style) -> list[str]:
    """The page as an aligned table, newest first."""
    if not page.roots:
        return ["no root jobs match"]
    rows = [
        (
            root.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            root.status,
            visible(root.operation),
            entity_label(labels, root.entity_type, root.entity_id),
            _children(root),
            completion(root.complete, root.tree_completed_at, root.pending),
            fmt_ms(root.total_duration_ms),
            visible(root.job_id or root.id),
        )
        for root in page.roots
    ]
    widths = [max(len(r[i]) for r in [ROOT_HEADER, *rows]) for i in range(len(ROOT_HEADER))]
    widths[4] = min(widths[4], 48)

    def line(cells, status_cell) -> str:
        padded = [c[: widths[i]].ljust(widths[i]) for i, c in enumerate(cells)]
        padded[1] = status_cell(cells[1], widths[1])
        return "  ".join(padded).rstrip()

    header = style.paint(line(ROOT_HEADER, lambda text, width: text.ljust(width)), "1")
    return [header, *(line(r, style.status) for r in rows)]


def root_labels(page: RootPage) -> dict:
    return entity_labels((r.entity_type, r.entity_id) for r in page.roots)


# -- following a tree ----------------------------------------------------------------------

CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _signature(tree: Tree) -> tuple:
    return tuple((i.job_id, i.status, i.retry_count) for i in tree.items)


def follow(job_id: str, out: Optional[TextIO], style: Style, *, interval: float = 1.0, start_wait: float = 30.0,
           timeout: Optional[float] = None, sleep=None) -> Optional[Tree]:
    """Redraw the tree every ``interval`` seconds until it is complete; returns it.

    A terminal gets the whole tree redrawn in place; a pipe gets it again
    only when a job's status changed; ``out=None`` draws nothing (wait only).
    Every job has its row from the moment it is sent, so a complete tree
    has no job still to come.  A job id not written yet (sent by a producer
    without JobLinking) is waited for up to ``start_wait`` seconds; returns
    None if it never appears.  With ``timeout``, returns the tree as it is
    (not complete) after that many seconds.
    """
    sleep = sleep or time.sleep
    deadline = time.monotonic() + start_wait
    give_up = None if timeout is None else time.monotonic() + timeout
    said_waiting, shown = False, None
    while True:
        tree = get_tree(job_id)
        if tree is None:
            if time.monotonic() >= deadline:
                return None
            if not said_waiting and out is not None:
                print(f"waiting for job {visible(job_id)} to appear…", file=out, flush=True)
                said_waiting = True
            sleep(interval)
            continue
        signature = _signature(tree)
        if out is not None and (style.tty or signature != shown):
            text = "\n".join(tree_lines(tree, tree_labels(tree), style))
            print((CLEAR_SCREEN if style.tty else "") + text, file=out, flush=True)
        shown = signature
        if tree.complete or (give_up is not None and time.monotonic() >= give_up):
            return tree
        sleep(interval)
