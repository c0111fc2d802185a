"""The real app (``workers.worker``: settings, broker with JobLinking and the lost-work sweeper, every actor) plus
the small tree of ``tree_actors``, run by real ``dramatiq`` processes in tests/test_lifecycle_processes.py."""

import workers.worker  # noqa: F401  (the app: broker set, actors declared)

from tree_actors import declare

tree_root, tree_leaf = declare()
