"""Read the fields of an upstream answer tolerantly, or name the one that cannot be read.

Real answers send numbers as strings (``"width": "600"``), ``null`` where an
object or a list is expected, and leave keys out.  ``AnswerFields`` accepts
all of that.  A value with no reading at all (a word where a number belongs,
a list where an object belongs) raises ``BadUpstreamData`` naming the
service and the field: the job fails once with ``bad_upstream_data``, where
a TypeError deep in an actor would be retried like an outage.

    read = AnswerFields("discogs")
    width = read.integer(image.get("width"), "images[3].width")   # 600, "600", "600.0" -> 600; None, "" -> None
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .errors import BadUpstreamData

SHOWN_CHARS = 40  # of a bad value, in the error


def _shown(value: Any) -> str:
    kind = {dict: "an object", list: "a list", bool: "a boolean"}.get(type(value))
    return kind or repr(value)[:SHOWN_CHARS]


class AnswerFields:
    """Tolerant readers for the answers of one service.

    Parameters:
        service: the service named in ``BadUpstreamData``, e.g. ``discogs``.
    """

    def __init__(self, service: str) -> None:
        self.service = service

    def bad(self, field: str, problem: str) -> BadUpstreamData:
        return BadUpstreamData(self.service, field, problem)

    def integer(self, value: Any, field: str) -> Optional[int]:
        """A whole number from a number or a numeric string; None when absent or empty."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.bad(field, f"expected a number, got {_shown(value)}")
        try:
            number = float(value) if not isinstance(value, int) else value
        except ValueError:
            raise self.bad(field, f"expected a number, got {_shown(value)}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise self.bad(field, f"expected a number, got {_shown(value)}")
        return int(round(number))

    def text(self, value: Any, field: str) -> Optional[str]:
        """A string (a number is taken as its digits); None when absent."""
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise self.bad(field, f"expected a string, got {_shown(value)}")

    def items(self, value: Any, field: str) -> list:
        """A list; ``null`` or absent is an empty one."""
        if value is None:
            return []
        if isinstance(value, list):
            return value
        raise self.bad(field, f"expected a list, got {_shown(value)}")

    def object(self, value: Any, field: str) -> dict:
        """An object; ``null`` or absent is an empty one."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        raise self.bad(field, f"expected an object, got {_shown(value)}")

    def objects(self, value: Any, field: str) -> list[dict]:
        """The objects of a list, ``null`` entries left out (services list them as placeholders)."""
        found = []
        for index, item in enumerate(self.items(value, field)):
            if item is not None:
                found.append(self.object(item, f"{field}[{index}]"))
        return found


__all__ = ["AnswerFields"]
