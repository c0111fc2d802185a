"""The ``enrich`` command, the operator's surface in the terminal.

``main`` holds the parser and the handlers; the other modules are what they
call: ``catalog`` (add-album, add-artist), ``common`` (settings, database,
errors), ``run`` (jobs on an in-process worker), ``timeline`` (the roots and
tree views), ``demo``.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
