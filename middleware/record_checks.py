"""What ``record()`` accepts: every value checked and bounded before it can reach a row.

A value the database refuses would make the job's final write fail and leave
its row ``running`` for ever.  So each argument is checked here, on both back
ends alike, and a bad one is a ``ValueError`` naming the argument, raised in
the actor where the mistake is.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any, Optional

from models.catalog import DATA_QUALITIES
from models.job_log import ACTOR_STATUSES, ENTITY_TYPES, MAX_ERROR_CODE
from models.job_log import MAX_INTEGER as MAX_COUNT

MAX_TEXT_BYTES = 256 * 1024  # reason, and details as JSON: 256 KB each
MAX_JSON_INT = 2**63 - 1  # beyond 64 bits a JSON number does not read back the same everywhere
MAX_DEPTH = 20
MAX_SOURCES = 100  # sources accumulate over record() calls and counted requests: bounded in number too
MAX_LIST_ITEM = 1000  # bytes of one entry of sources or fields_enriched


def _fail(name: str, value: Any, why: str) -> ValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ValueError(f"record({name}={shown}): {why}")


def check_text(name: str, value: Any, max_bytes: int = MAX_TEXT_BYTES) -> str:
    if not isinstance(value, str):
        raise _fail(name, value, f"expected text, not {type(value).__name__}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise _fail(name, value, f"{size:,} bytes long; at most {max_bytes:,} are allowed")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise _fail(name, value, f"expected one of {', '.join(choices)}")
    return value


def check_count(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(name, value, f"expected a whole number, not {type(value).__name__}")
    if not 0 <= value <= MAX_COUNT:
        raise _fail(name, value, f"out of range 0..{MAX_COUNT:,}")
    return value


def check_uuid(name: str, value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise _fail(name, value, "expected a UUID") from None


def _problem(value: Any, depth: int) -> Optional[tuple[list[str], str]]:
    """(the keys down to the first bad value, innermost first; what is wrong with it), or None.

    The path is only built on the way back from a bad value: this walks every
    message sent (job_log.sent_messages), where formatting a path per item cost more than the walk.
    """
    if depth > MAX_DEPTH:
        return [], f": nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return [], f" is {value!r}: JSON has no NaN or infinity"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_JSON_INT:
        # PostgreSQL's jsonb writes such a float out as all its digits: it would come back an integer.
        return [], " is a number beyond 64 bits"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return [], f" has a key of type {type(key).__name__}"
            found = _problem(item, depth + 1)
            if found:
                found[0].append(f"[{key!r}]")
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _problem(item, depth + 1)
            if found:
                found[0].append(f"[{index}]")
                return found
    return None


def json_problem(value: Any, path: str) -> Optional[str]:
    """Where in ``value`` something no JSON column takes as it is, and why; None when all is well.

    Parameters:
      value: the data for a JSON column.
      path(str): how the message names ``value``, e.g. ``details``.
    """
    found = _problem(value, 0)
    if found is None:
        return None
    keys, why = found
    return path + "".join(reversed(keys)) + why


def check_json(name: str, value: Any, kind: type) -> Any:
    """A dict or list for a JSON column: finite numbers within 64 bits, at most MAX_TEXT_BYTES as JSON."""
    if not isinstance(value, kind) and not (kind is list and isinstance(value, tuple)):
        raise _fail(name, value, f"expected a {kind.__name__}, not {type(value).__name__}")
    problem = json_problem(value, name)
    if problem:
        raise _fail(name, value, problem)
    size = len(json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise _fail(name, value, f"{size:,} bytes as JSON; at most {MAX_TEXT_BYTES:,} are allowed")
    return value


def check_list(name: str, value: Any) -> list:
    """A list of short texts for a JSON column: at most MAX_LIST_ITEM bytes each."""
    check_json(name, value, list)
    for item in value:
        check_text(name, item, MAX_LIST_ITEM)
    return value


def check_sources(value: Any, why: str = "") -> list:
    """``sources``: a list of short texts, at most MAX_SOURCES of them (``why`` says whose they are)."""
    check_list("sources", value)
    count = len(set(value))  # a source named twice is kept once
    if count > MAX_SOURCES:
        raise _fail("sources", value, f"{count:,} sources{why}; at most {MAX_SOURCES} are allowed")
    return value


def check_record(values: dict[str, Any]) -> None:
    """Raise ValueError naming the first argument of ``record()`` that no row could hold."""
    for name, value in values.items():
        if value is None:
            continue
        if name == "status":
            check_choice(name, value, ACTOR_STATUSES)
        elif name in ("data_quality_before", "data_quality_after"):
            check_choice(name, value, DATA_QUALITIES)
        elif name == "entity_type":
            check_choice(name, value, ENTITY_TYPES)
        elif name == "entity_id":
            check_uuid(name, value)
        elif name == "api_call_count":
            check_count(name, value)
        elif name == "reason":
            check_text(name, value)
        elif name == "error_code":
            check_text(name, value, MAX_ERROR_CODE)
        elif name == "fields_enriched":
            check_list(name, value)
        elif name == "sources":
            check_sources(value)
        elif name == "details":
            check_json(name, value, dict)
