"""Lookups from code and the command line with ids and cursors of the wrong shape: a clean answer, never a traceback."""

from __future__ import annotations

import base64
import json

import pytest

from models.timeline import decode_cursor, get_tree, list_roots

from test_hostile_input import enrich


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


WRONG_SHAPES = {
    "id a number": ["2026-01-01T00:00:00", 5],
    "date a number": [5, "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"],
    "three parts": ["2026-01-01T00:00:00", "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d", 1],
    "a mapping": {"created_at": "2026-01-01T00:00:00", "id": "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"},
    "a string": "2026-01-01T00:00:00",
    "null": None,
    "nested lists": [["2026-01-01T00:00:00"], ["5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"]],
    "id a list": ["2026-01-01T00:00:00", []],
}


@pytest.mark.parametrize("value", list(WRONG_SHAPES.values()), ids=list(WRONG_SHAPES))
def test_a_cursor_of_the_wrong_shape_is_a_value_error(value):
    with pytest.raises(ValueError, match="malformed cursor"):
        decode_cursor(_cursor(value))


def test_a_deeply_nested_cursor_is_a_value_error():
    with pytest.raises(ValueError, match="malformed cursor"):
        decode_cursor(base64.urlsafe_b64encode(b"[" * 100000).decode())


@pytest.mark.parametrize("case", ["id a number", "a mapping", "null"])
def test_enrich_roots_with_a_cursor_of_the_wrong_shape_is_one_line_and_exit_1(url, case):
    result = enrich("roots", "--cursor", _cursor(WRONG_SHAPES[case]), url=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enrich roots: malformed cursor"), result.stderr


@pytest.mark.parametrize("job_id", ["job\x00id", "\x00", "\ud800lone surrogate", "x" * 10000])
def test_get_tree_of_an_id_no_row_can_have_is_none(db, job_id):
    assert get_tree(job_id) is None


def test_list_roots_with_a_wrong_shape_cursor_raises_value_error(db):
    with pytest.raises(ValueError, match="malformed cursor"):
        list_roots(cursor=_cursor(WRONG_SHAPES["id a number"]))
