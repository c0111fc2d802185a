"""Reading a service's JSON answer tolerantly, field by field.

Real answers are not always the shapes a service documents: MusicBrainz's
search server sent ``"score": "100"`` for years, lookups send ``null`` where
an object or a list is expected, and older documents lack keys.  A ``Reader``
takes what can be read (a number sent as a string, ``null`` for an empty
object or list, a missing key for nothing) and raises ``BadUpstreamData``,
naming the service and the field, for what cannot: retrying gets the same
answer, so the job fails once.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .errors import BadUpstreamData

INTEGER_MAX = 2**31 - 1  # the largest value of an INTEGER column, on PostgreSQL and SQLite alike


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Reader:
    """Tolerant conversions for the fields of one service's answers.

    Parameters:
        service: the service that answered, named in every error (``musicbrainz``).
    """

    def __init__(self, service: str) -> None:
        self.service = service

    def bad(self, field: str, problem: str) -> BadUpstreamData:
        return BadUpstreamData(self.service, field, problem)

    def number(self, value: Any, field: str, *, stored: bool = False) -> Optional[int]:
        """An integer from a number or a numeric string; None for null or ``""``.

        ``stored``: the number goes into a catalog column (an INTEGER), so it
        must be 0 to 2**31 - 1.
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool):
            raise self.bad(field, f"expected a number, got {_shown(value)}")
        try:
            found = value if isinstance(value, int) else float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise self.bad(field, f"expected a number, got {_shown(value)}") from None
        if not math.isfinite(found):
            raise self.bad(field, f"expected a number, got {_shown(value)}")
        if stored and not 0 <= found <= INTEGER_MAX:
            raise self.bad(field, f"{_shown(value)} is out of range")
        return round(found)

    def text(self, value: Any, field: str) -> Optional[str]:
        """A string (a number becomes its digits); None for null."""
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise self.bad(field, f"expected text, got {_shown(value)}")

    def required_text(self, value: Any, field: str) -> str:
        """A non-empty string, e.g. an id: missing or empty cannot be read."""
        found = self.text(value, field)
        if not found:
            raise self.bad(field, "missing")
        return found

    def flag(self, value: Any, field: str) -> bool:
        """A boolean from ``true``/``false``, ``"true"``/``"false"`` or 0/1; False for null."""
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.bad(field, f"expected true or false, got {_shown(value)}")

    def mapping(self, value: Any, field: str) -> dict:
        """An object; ``{}`` for null."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        raise self.bad(field, f"expected an object, got {_shown(value)}")

    def items(self, value: Any, field: str) -> list[dict]:
        """A list of objects; ``[]`` for null, null elements left out."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.bad(field, f"expected a list, got {_shown(value)}")
        return [self.mapping(item, f"{field}[{i}]") for i, item in enumerate(value) if item is not None]

    def strings(self, value: Any, field: str) -> list[str]:
        """A list of strings; ``[]`` for null, null and empty elements left out."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.bad(field, f"expected a list, got {_shown(value)}")
        found = (self.text(item, f"{field}[{i}]") for i, item in enumerate(value))
        return [item for item in found if item]
