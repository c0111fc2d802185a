"""Exceptions told in one line: what every refusal, warning and status line quotes of an error."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of the exception's text, or its class name when it has none.

    Drivers' messages run over several lines (a hint, the statement): one line
    keeps a log line, an error and a page readable.
    """
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
