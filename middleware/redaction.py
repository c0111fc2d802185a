"""Remove secrets from text before it reaches a log line or a log row.

One place for the patterns, used by the job log (``last_error``) and by the
JSON log renderer, so the two can never disagree about what is a secret.
"""

from __future__ import annotations

import re
from typing import Iterable

REDACTED = "[REDACTED]"

# Credentials that can be recognised by their shape, whatever their value.
_PATTERNS = [
    # Authorization headers and their common spellings in error texts.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"(?i)(discogs\s+token=)[^\s&'\",]+"), r"\1" + REDACTED),
    # key=value and "key": "value" pairs whose key names a secret.
    (
        re.compile(
            r"(?i)\b([\w-]*(?:token|secret|password|passwd|api[_-]?key|client[_-]?secret)[\w-]*)"
            r"(\s*[=:]\s*[\"']?)([^\s&'\",}]+)"
        ),
        r"\1\2" + REDACTED,
    ),
    # Passwords in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)([^@\s/]+)(@)", re.IGNORECASE), r"\1" + REDACTED + r"\3"),
]

# Every pattern above needs one of these words; most strings (ids, statuses,
# names) have none, and one search is much cheaper than four substitutions.
_MAY_HOLD_CREDENTIAL = re.compile(r"(?i)bearer|basic|token|secret|passw|api[_-]?key|://")

SECRET_KEY_PATTERN = re.compile(r"(?i)(token|secret|password|passwd|authorization|api[_-]?key|cookie)")


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret value and every credential-shaped substring replaced."""
    for value in secrets:
        if value and len(value) >= 4 and value in text:  # a 1-3 character "secret" would shred ordinary text
            text = text.replace(value, REDACTED)
    if _MAY_HOLD_CREDENTIAL.search(text):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text


def redact_value(value, secrets: Iterable[str] = ()):
    """Redact strings anywhere inside dicts, lists and tuples; keys that name a secret lose their value."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and SECRET_KEY_PATTERN.search(k) and v else redact_value(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v, secrets) for v in value)
    return value
