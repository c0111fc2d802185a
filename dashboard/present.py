"""What the templates draw, computed in Python: waterfall geometry, labels, the activity chart.

Bars and the chart are SVG drawn by the server: attributes, not inline
styles, so the Content-Security-Policy can forbid inline styles and scripts.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional

from markupsafe import Markup, escape

from middleware.redaction import REDACTED, is_secret_key, redact_text
from models import plain, utcnow
from models.entities import entity_names
from models.history import FieldChange, tree_changes
from models.job_log import DEGRADED, FAILED_STATUSES, RETRYING, RUNNING, STATUSES
from models.timeline import ActivityBucket, RootSummary, TimelineItem, Tree

_CONTROL = {c: chr(0x2400 + c) for c in range(32) if chr(c) not in "\t\n\r"} | {127: "\u2421"}


def visible_text(value):
    """Stored text with its control characters drawn as symbols (␛ for ESC) before escaping; markup as is."""
    if type(value) is str and not value.isprintable():  # Markup is a subclass: left as it is
        return value.translate(_CONTROL)
    return value


def _html(value) -> str:
    """Stored text as HTML, as the templates write an expression (``visible_text``, then escaped)."""
    return escape(visible_text(str(value)))


ACTIVE = (RUNNING, RETRYING)  # a job whose bar runs on to now
WIDTH = 1000  # SVG user units across a waterfall bar or the chart


def fmt_ms(ms: Optional[int]) -> str:
    return plain.fmt_ms(ms, missing="–")


def fmt_time(moment: Optional[dt.datetime]) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "–"


def fmt_epoch(seconds: Optional[float]) -> str:
    """Epoch seconds (a message's timestamps) as UTC, like ``fmt_time``."""
    return fmt_time(dt.datetime.fromtimestamp(seconds, dt.timezone.utc)) if seconds is not None else "–"


_PATHS = {"album": "albums", "artist": "artists", "track": "tracks"}


@dataclass(frozen=True)
class EntityRef:
    """A job's entity as a link: its type, id, the catalog's name for it (None: deleted) and its page."""

    type: str
    id: str
    name: Optional[str]

    @property
    def href(self) -> str:
        return f"/{_PATHS[self.type]}/{self.id}"


def entity_refs(pairs: Iterable[tuple[Optional[str], Optional[uuid.UUID]]]) -> dict:
    """``{(type, id): EntityRef}`` for the pairs that name an entity (one query per type)."""
    pairs = [(t, i if isinstance(i, uuid.UUID) else uuid.UUID(str(i)))
             for t, i in pairs if t in _PATHS and i is not None]
    names = entity_names(pairs)
    return {(t, i): EntityRef(t, str(i), names.get((t, i))) for t, i in pairs}


def is_active_root(root: RootSummary) -> bool:
    """The root's tree is not complete: a job of it is queued, running or retrying."""
    return not root.complete


def is_active_tree(tree: Tree) -> bool:
    return not tree.complete


# -- the tree waterfall ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One job of the waterfall: the item, its entity, and its bar, times and details box as HTML.

    The parts drawn 1,000 times on a big tree are written here, each value escaped once: through
    the template's expressions they cost most of the page's time.
    """

    item: TimelineItem
    entity: Optional[EntityRef]
    start: str  # "+1.2s" from the root's start, or "queued"
    took: str  # first start to the end of the last attempt (or now, while active)
    waited: str  # queue wait
    bar: Markup  # the SVG of its queue wait and run time
    details: Markup  # the <details> box: job id, wait, sources, fields, the row's details


def _bar(item: TimelineItem, wait: Optional[tuple[float, float]], run: Optional[tuple[float, float]],
         took: str, waited: str) -> Markup:
    parts = [f'<svg viewBox="0 0 {WIDTH} 12" preserveAspectRatio="none" role="img"><title>queue wait '
             f'{escape(waited)}, ran {escape(took)}</title>']
    if wait:
        parts.append(f'<rect class="wait" x="{wait[0]}" y="4" width="{wait[1]}" height="4"/>')
    if run:
        parts.append(f'<rect class="run s-{_html(item.status)}" x="{run[0]}" y="1" width="{run[1]}" height="10"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _details_box(item: TimelineItem, waited: str) -> Markup:
    listed = ", ".join(map(str, item.sources)) or "–", ", ".join(map(str, item.fields_enriched)) or "–"
    parts = [f'<details data-key="{_html(item.id)}"><summary>details</summary><dl class="kv">'
             f'<dt>job id</dt><dd class="mono">{_html(item.job_id or item.id)}</dd>'
             f'<dt>queue wait</dt><dd>{escape(waited)}</dd><dt>sources</dt><dd>{_html(listed[0])}</dd>'
             f'<dt>fields enriched</dt><dd>{_html(listed[1])}</dd>']
    parts += [f"<dt>{_html(key)}</dt><dd>{_html(value)}</dd>" for key, value in _details(item.details)]
    parts.append("</dl></details>")
    return Markup("".join(parts))


def _details(details: Optional[dict]) -> list[tuple[str, str]]:
    """The details as (key, text) lines, redacted as the logs are (an upstream URL may carry a token).

    Each line's text is redacted once, as text (the patterns know JSON's "key": "value" too): walking
    every nested value cost more than drawing the rest of a row.
    """
    if not isinstance(details, dict):
        return [] if details is None else [("details", redact_text(json.dumps(details, ensure_ascii=False)))]
    return [(str(key), REDACTED if value and is_secret_key(str(key)) else
             redact_text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)))
            for key, value in details.items()]


def _span_ms(item: TimelineItem, now: dt.datetime) -> Optional[int]:
    if item.started_at is None:
        return None
    end = item.completed_at or (now if item.status in ACTIVE else None)
    if end is None:
        return item.duration_ms
    return max(0, round((end - item.started_at).total_seconds() * 1000))


def _ms_between(later: dt.datetime, earlier: dt.datetime) -> int:
    return round((later - earlier).total_seconds() * 1000)


def waterfall(tree: Tree, now: Optional[dt.datetime] = None) -> tuple[list[Row], int, int]:
    """(rows, scale in ms, origin in ms): every job on one time scale, queue wait and run time apart.

    The origin is the root's start, moved left to the earliest enqueue so
    that the root's own queue wait fits too.  A job still queued shows its
    wait so far (from being sent to now).
    """
    now = now or utcnow()
    refs = entity_refs((i.entity_type, i.entity_id) for i in tree.items)
    zero = next((i.started_at - dt.timedelta(milliseconds=i.offset_ms) for i in tree.items
                 if i.started_at is not None and i.offset_ms is not None), None)  # the moment of offset 0
    spans, waits = [], []  # per item: run length; (wait start, wait length) in ms from zero
    for item in tree.items:
        spans.append(_span_ms(item, now))
        if item.offset_ms is not None and item.queue_wait_ms:
            waits.append((item.offset_ms - item.queue_wait_ms, item.queue_wait_ms))
        elif item.offset_ms is None and item.enqueued_at is not None and zero is not None and not tree.complete:
            waits.append((_ms_between(item.enqueued_at, zero), max(0, _ms_between(now, item.enqueued_at))))
        else:
            waits.append(None)
    starts = [w[0] for w in waits if w] + [i.offset_ms for i in tree.items if i.offset_ms is not None]
    ends = [w[0] + w[1] for w in waits if w]
    ends += [i.offset_ms + (s or 0) for i, s in zip(tree.items, spans) if i.offset_ms is not None]
    origin = min([0, *starts])
    scale = max([1, (tree.total_duration_ms or 0) - origin, *(end - origin for end in ends)])

    def box(start_ms: int, length_ms: int) -> tuple[float, float]:
        x = (start_ms - origin) * WIDTH / scale
        return round(x, 1), round(max(length_ms * WIDTH / scale, 2.0), 1)  # at least 2 units: visible

    rows = []
    for item, span, wait in zip(tree.items, spans, waits):
        run = box(item.offset_ms, span or 0) if item.offset_ms is not None else None
        entity = refs.get((item.entity_type, item.entity_id)) if item.entity_id else None
        start = "queued" if item.offset_ms is None else "+" + fmt_ms(item.offset_ms)
        waited = fmt_ms(wait[1] if wait else item.queue_wait_ms) + (" so far" if wait and run is None else "")
        took = fmt_ms(span)
        rows.append(Row(item, entity, start, took, waited, _bar(item, box(*wait) if wait else None, run, took, waited),
                        _details_box(item, waited)))
    return rows, scale, origin


def fmt_value(value, recorded: bool = True) -> str:
    """A catalog value as a change shows it: text as is, lists and numbers as JSON, "–" when empty."""
    if not recorded:
        return "(not recorded)"
    if value is None or value == "" or value == []:
        return "–"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def pairs(changes: list) -> list[tuple]:
    """Changes as the changes table's (change, entity) rows, for a page about one entity: no entity column."""
    return [(change, None) for change in changes]


TREE_CHANGES_SHOWN = 100  # a tree's changes drawn on its page; the rest are counted by field


@dataclass(frozen=True, slots=True)
class TreeChanges:
    """What a tree changed, as its page draws it: the first changes, each with its entity, and counts."""

    shown: list[tuple[FieldChange, Optional[EntityRef]]]
    total: int
    by_field: dict[str, int]  # field -> how many changes, all of them


def tree_changes_view(rows: list[Row]) -> TreeChanges:
    """The tree's changes (``models.history.tree_changes``) with the entities its waterfall already named."""
    changes = tree_changes(row.item for row in rows)
    entities = {row.item.job_id: row.entity for row in rows if row.item.fields_enriched}
    return TreeChanges([(c, entities.get(c.job_id)) for c in changes[:TREE_CHANGES_SHOWN]], len(changes),
                       dict(sorted(Counter(c.field for c in changes).items())))


def failed_children(rows: list[Row]) -> list[Row]:
    """The rows of the children whose failure (failed, or lost by the broker) made the root degraded."""
    return [row for row in rows if not row.item.is_root and row.item.status in FAILED_STATUSES]


def ticks(scale: int, origin: int, count: int = 5) -> list[str]:
    """Labels of ``count`` evenly spaced times across the waterfall, relative to the root's start."""
    return [("+" if origin + scale * n // (count - 1) >= 0 else "−") + fmt_ms(abs(origin + scale * n // (count - 1)))
            for n in range(count)]


# -- the activity chart -----------------------------------------------------------------------

CHART_HEIGHT = 200
CHART_STATUSES = tuple(s for s in STATUSES if s != DEGRADED) + (DEGRADED,)


@dataclass(frozen=True)
class Chart:
    """A stacked bar chart of jobs per minute by status, in SVG units."""

    bars: list[tuple[str, float, float, float, float, str]]  # (status, x, y, width, height, tooltip)
    peak: float  # jobs per minute at the top of the chart
    start: dt.datetime
    end: dt.datetime
    totals: dict[str, int]


def activity_chart(buckets: list[ActivityBucket], start: dt.datetime, end: dt.datetime,
                   bucket_seconds: int) -> Chart:
    per_bucket: dict[dt.datetime, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for b in buckets:
        per_bucket.setdefault(b.start, {})[b.status] = b.count
        totals[b.status] = totals.get(b.status, 0) + b.count
    minutes = bucket_seconds / 60
    peak = max([sum(counts.values()) / minutes for counts in per_bucket.values()] + [1.0])
    slots = max(1, round((end - start).total_seconds() / bucket_seconds))
    width = WIDTH / slots
    bars = []
    for moment, counts in sorted(per_bucket.items()):
        x = (moment - start).total_seconds() / bucket_seconds * width
        y = float(CHART_HEIGHT)
        for status in CHART_STATUSES:
            if not counts.get(status):
                continue
            height = counts[status] / minutes / peak * CHART_HEIGHT
            y -= height
            tip = f"{moment:%H:%M} {status}: {counts[status] / minutes:.3g} jobs/min"
            bars.append((status, round(x, 2), round(y, 2), round(max(width - 0.5, 0.5), 2), round(height, 2), tip))
    return Chart(bars=bars, peak=peak, start=start, end=end, totals=dict(sorted(totals.items())))
