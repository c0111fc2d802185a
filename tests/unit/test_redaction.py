"""The shortcuts in redaction must never let a credential through.

``redact_text`` skips its patterns for text with none of their key words,
and the log processor skips keys it has seen before: both are checked here
against doing the whole work every time.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from middleware.redaction import _PATTERNS, REDACTED, redact_text
from workers.logging_setup import redact_secrets

SECRET = "s3cr3t-V4lue-9x"

# Credential-shaped fragments in mixed case, with the look-alike letters
# Python's case-insensitive matching treats as i, k and s.
FRAGMENTS = [
    "Bearer abcdefgh1234", "BASIC QWxhZGRpbjpvcGVu", "x-API-Key: k9k9k9k9", "apİ_key=zzzzzzzz", "baſic aaaaaaaaaa",
    "Token=tok_1234", "TOKEN: 'abc'", "\u212aey", "client_SECRET=cs-5", "Passwd=hunter22", "postgres://u:pw@h/db",
    "Discogs token=dt-77", "İ", "ı", "ß", "job-", "0f6d2a7e-9d2b-4c1e", " ", ":", "//", "=", "\"", SECRET,
]


def redact_without_shortcut(text: str) -> str:
    if SECRET in text:
        text = text.replace(SECRET, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=8).map("".join))
def test_the_shortcut_never_skips_a_credential_the_patterns_catch(text):
    assert redact_text(text, [SECRET]) == redact_without_shortcut(text)


def test_lines_with_known_keys_are_still_redacted():
    redact = redact_secrets([SECRET])
    clean = {"message": "job finished", "job_id": "j-1", "error": None, "retry_count": 0, "saved": True}
    assert redact(None, "info", dict(clean)) == clean  # teaches it these keys

    # Same keys, now with credentials in their values: text, nested data, an object.
    line = redact(None, "info", dict(clean, error=f"HTTP 401 for Bearer {SECRET}", job_id={"token": "t-1"}))
    assert line["error"] == f"HTTP 401 for Bearer {REDACTED}"
    assert line["job_id"] == {"token": REDACTED}
    assert redact(None, "info", dict(clean, error=ValueError(f"bad {SECRET}")))["error"] == f"bad {REDACTED}"

    # A key never seen before that names a secret loses its value, on any line after.
    assert redact(None, "info", dict(clean, api_token="abc123"))["api_token"] == REDACTED
    assert redact(None, "info", dict(clean, api_token="abc123"))["api_token"] == REDACTED


def test_keys_that_are_not_strings_become_strings_and_are_still_checked():
    redact = redact_secrets([SECRET])
    line = redact(None, "info", {"message": "m", 7: f"token={SECRET}", ("password",): "hunter22"})
    assert line == {"message": "m", "7": f"token={REDACTED}", "('password',)": REDACTED}
