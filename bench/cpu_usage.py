"""CPU seconds used by each kind of process on this machine, read from /proc.

The linking benchmark takes a snapshot when the workers are ready and one
when the queue is empty, so it can say where each message's CPU went:
the worker processes, PostgreSQL, Redis.
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")
GROUPS = ("workers", "postgres", "redis", "other")


def snapshot() -> dict[int, tuple[str, float]]:
    """{pid: (group, cpu seconds so far)} for every process we can read."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone since listdir
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(name)] = (_group(comm), (int(fields[11]) + int(fields[12])) / _TICKS)
    return found


def _group(comm: str) -> str:
    if comm.startswith("postgres"):
        return "postgres"
    if comm.startswith("redis"):
        return "redis"
    if comm.startswith(("python", "dramatiq")):
        return "workers"
    return "other"


def used_between(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per group spent between two snapshots."""
    used = dict.fromkeys(GROUPS, 0.0)
    for pid, (group, seconds) in after.items():
        used[group] += seconds - before.get(pid, (group, 0.0))[1]
    return used
