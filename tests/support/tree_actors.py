"""A small tree for the lifecycle tests: ``tree_root(leaves, seconds)`` sends ``leaves`` children ``tree_leaf(seconds)``.

Declared on the worker's broker by ``lifecycle_app`` and on the test's own
sending broker (with JobLinking), so both sides know the same actors.
"""

import time

import dramatiq


def declare(broker=None):
    options = {"broker": broker} if broker is not None else {}

    @dramatiq.actor(actor_name="tree_leaf", operation="tree:leaf", max_retries=2, **options)
    def tree_leaf(seconds: float = 0.2):
        time.sleep(seconds)

    @dramatiq.actor(actor_name="tree_root", operation="tree:root", max_retries=2, **options)
    def tree_root(leaves: int = 6, seconds: float = 0.2):
        for _ in range(leaves):
            tree_leaf.send(seconds)

    return tree_root, tree_leaf
