"""Objects whose per-process state (threads, locks, connections) is reset in a forked child.

Dramatiq forks its worker processes: a thread running in the parent does not
exist in the child, a lock held there at the fork stays held, and a
connection belongs to the parent's session.
"""

from __future__ import annotations

import os
import weakref

_registered: "weakref.WeakSet" = weakref.WeakSet()


def reset_in_forked_children(obj) -> None:
    """Call ``obj.after_fork_in_child()`` in every child process forked while ``obj`` lives."""
    _registered.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_registered):
        obj.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
