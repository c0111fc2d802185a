"""Remove secrets from text before it reaches a log line or a log row.

One place for the patterns, used by the job log (``last_error``) and by the
JSON log renderer, so the two can never disagree about what is a secret.
"""

from __future__ import annotations

import functools
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
_CREDENTIAL_WORDS = r"bearer|basic|token|secret|passw|api[_-]?key|://"
_MAY_HOLD_CREDENTIAL = re.compile("(?i)" + _CREDENTIAL_WORDS)
# For ASCII text, lowered first: a case-sensitive search skips ahead by first
# letter, six times faster than the case-insensitive one on a job id.
_MAY_HOLD_CREDENTIAL_LOWER = re.compile(_CREDENTIAL_WORDS)


def _may_hold_credential(text: str) -> bool:
    if text.isascii():  # only there is lower() exactly what (?i) compares
        return _MAY_HOLD_CREDENTIAL_LOWER.search(text.lower()) is not None
    return _MAY_HOLD_CREDENTIAL.search(text) is not None

SECRET_KEY_PATTERN = re.compile(r"(?i)(token|secret|password|passwd|authorization|api[_-]?key|cookie)")


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret value and every credential-shaped substring replaced."""
    for value in secrets:
        if value and len(value) >= 4 and value in text:  # a 1-3 character "secret" would shred ordinary text
            text = text.replace(value, REDACTED)
    if len(text) >= 8 and _may_hold_credential(text):  # no pattern fits in fewer characters
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a field called ``key`` holds a credential (log keys repeat: cached)."""
    return bool(SECRET_KEY_PATTERN.search(key))


def redact_value(value, secrets: Iterable[str] = ()):
    """JSON data with secrets removed, at any depth; keys that name a secret lose their value.

    Anything that is not plain JSON data (an exception, a UUID, a datetime)
    becomes its ``str`` first, so its text is redacted like any string.
    """
    if isinstance(value, str):
        return redact_text(value, secrets)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {
            str(k): (REDACTED if v and is_secret_key(str(k)) else redact_value(v, secrets)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set)):
        return [redact_value(v, secrets) for v in value]
    return redact_text(str(value), secrets)
