"""CPU seconds used by each kind of process on this machine, read from /proc.

The benchmarks take a snapshot when the workers are ready and one when the
queue is empty, so they can say where each message's CPU went: the worker
processes, PostgreSQL, Redis.  The machine may run other PostgreSQL clusters
and Redis servers: ``own`` names the process trees that count as each group
(the benchmark's own PostgreSQL postmaster, Redis server and workers); any
other process counts as ``other``.
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")
GROUPS = ("workers", "postgres", "redis", "other")


def snapshot(own: dict[str, int] | None = None) -> dict[int, tuple[str, float]]:
    """{pid: (group, cpu seconds so far)} for every process we can read.

    ``own`` maps a group to the pid at the top of its process tree; without
    it, processes are grouped by their command name.
    """
    stats = {}
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
        stats[int(name)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    roots = {pid: group for group, pid in (own or {}).items()}
    found = {}
    for pid, (comm, _, seconds) in stats.items():
        group = _group(comm) if own is None else _tree_group(pid, stats, roots)
        found[pid] = (group, seconds)
    return found


def _tree_group(pid: int, stats: dict, roots: dict[int, str]) -> str:
    seen = 0
    while pid in stats and seen < 64:
        if pid in roots:
            return roots[pid]
        pid = stats[pid][1]
        seen += 1
    return "other"


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


def postgres_pid(admin_conn) -> int:
    """The postmaster's pid of the cluster ``admin_conn`` (a superuser psycopg2 connection) is on."""
    with admin_conn.cursor() as cur:
        cur.execute("SELECT pg_read_file('postmaster.pid')")
        return int(cur.fetchone()[0].split()[0])


def redis_pid(client) -> int:
    return int(client.info("server")["process_id"])


def thread_seconds(threads: dict[int, list[int]]) -> float:
    """CPU seconds used so far by the given threads ({pid: [native thread ids]}); a gone one counts 0."""
    total = 0.0
    for pid, tids in threads.items():
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total
