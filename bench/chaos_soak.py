"""Chaos soak: the real workers under random and targeted faults, then invariants checked with SQL and Redis.

    .venv/bin/python -m bench.chaos_soak [--minutes 10] [--seed 1] [--settle 300] [--keep]

Starts everything it uses, in a scratch folder, on free ports (the machine's
own PostgreSQL and Redis are never touched): a PostgreSQL cluster
(``initdb``), a Redis with ``appendonly yes``, the fake upstream
(``python -m workers.fake_upstream``), two worker groups from the Procfile's
``worker:`` line (2 processes x 4 threads each; the first drains the job-log
journal in its worker processes, the second leaves it to ``enrich drain``),
``enrich drain`` (the Procfile's ``drain:``) and a producer sending forced
album, artist and track checks (``bench/chaos_producer.py``).  A supervisor
thread starts any of them again 1 s after it exits.

For ``--minutes`` it injects faults at random intervals (2 to 8 s apart), the
kinds drawn from a shuffled deck so each comes up in turn, all from
``--seed``: PostgreSQL stopped (``fast`` or ``immediate``) for 3 to 15 s;
Redis SIGKILLed and started again 1 to 5 s later; SIGKILL of one worker
process, of a whole worker group, of ``enrich drain``; upstream bursts of
503s, and permanent upstream errors (HTTP 400); and two targeted faults:
Redis SIGKILLed while retries wait for their backoff in a worker (issue 23
item 1), and every worker process SIGKILLed while slow jobs (held by the
fake for 8 s) run; the last fault is always one more Redis kill while
retries back off.  Then the faults stop, the producer stops, and it waits
(at most ``--settle`` s) for every row to be final and Redis to hold nothing;
stops the processes as the README recommends; and checks, printing each
verdict with up to 5 examples:

* every sent root has a row; every tree is complete; one row per job;
* ``failed_children`` exact, and ``degraded`` if and only if it is above zero;
* the journal and the rejected stream empty; no message left in Redis;
* no thread died (the log lines of ``bench/chaos_checks.py``'s ``THREAD_DEATHS``),
  and no background round failed (``a round failed``);
* permanent upstream errors ended ``failed``; no job ended by a transient
  outage (``retry_not_enqueued``, or ``lost`` with ``--appendfsync always``);
* each row agrees with its job's last attempt as the workers logged it.

Exit status: 0 when every check held, 1 when one failed, 2 when the soak
could not run.  The logs are kept (their folder is printed) when a check
failed, when it was interrupted, or with ``--keep``.  What each fault and
check is: bench/README.md, "The chaos soak".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("LOG_LEVEL", "WARNING")  # this process's own logs (the fake's catalog import)

import psycopg2  # noqa: E402
import redis  # noqa: E402

from bench import chaos_checks as checks  # noqa: E402
from bench import postgres_admin  # noqa: E402
from bench.chaos_services import OwnPostgres, OwnRedis, free_port, remove_folder, wait_until  # noqa: E402
from bench.chaos_supervisor import Supervised, Supervisor, procfile_command  # noqa: E402
from models.job_log import PENDING_STATUSES  # noqa: E402

RANDOM_FAULTS = ("pg_stop_fast", "pg_stop_immediate", "redis_kill", "worker_kill", "group_kill", "drain_kill",
                 "upstream_burst", "upstream_permanent")
TARGETED_FAULTS = ("redis_kill_during_backoff", "worker_kill_during_slow_jobs")
CLOSING_FAULT = "redis_kill_during_backoff"
SERVICES = ("/musicbrainz/ws/2/", "/discogs/", "/spotify/v1/", "/coverartarchive/")
WORKER_SETTINGS = {  # what the soak tunes, and why
    "WORKER_PROCESSES": "2", "WORKER_THREADS": "4",
    "MUSICBRAINZ_MIN_INTERVAL": "0.02", "DISCOGS_MIN_INTERVAL": "0.02",  # the fake is local
    # The default first backoff (5 s; 3 retries span 35 s, past the longest outage); at most 60 s.
    "RETRY_MIN_BACKOFF_MS": "5000", "RETRY_MAX_BACKOFF_MS": "60000",
    # A killed worker's messages come back 10 s after its last heartbeat (maintenance on every fetch).
    "REDIS_HEARTBEAT_TIMEOUT_MS": "10000", "REDIS_MAINTENANCE_CHANCE": "1000000",
    "LOST_WORK_GRACE_SECONDS": "60", "LOST_WORK_SWEEP_SECONDS": "10",
    "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "LOG_FLUSH_MS": "0",  # a SIGKILL loses no "job finished" line
    "JOB_LOG_LINES": "finished",  # a line for every attempt's end: the checks compare each row with its job's
    "OTEL_SDK_DISABLED": "true",
}


class FakeUpstream:
    """``python -m workers.fake_upstream`` as a process, and its ``/_control/faults``."""

    def __init__(self, env: dict, log_path: str) -> None:
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.fake_upstream", "--port", "0", "--no-cloudflare"],
                                     env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        self.env, self.url = {}, None
        for line in self.proc.stdout:  # its banner: the variables, then the control URLs
            if line.startswith("export "):
                name, _, value = line[len("export "):].strip().partition("=")
                self.env[name] = shlex.split(value)[0] if value else ""
            elif "listening on" in line:
                self.url = line.rsplit(" ", 1)[-1].strip()
            elif "_control/faults" in line:
                break
        if self.url is None:
            raise RuntimeError("the fake upstream did not start")
        self.env["COVERART_URL"] = self.url + "/coverartarchive"  # the banner leaves it out (issue 23 item 4)

    def _call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b"null")

    def fail(self, **fault) -> int:
        return self._call("POST", "/_control/faults", fault)["id"]

    def hits(self, fault_id: int) -> int:
        return next((f["hits"] for f in self._call("GET", "/_control/faults")["faults"] if f["id"] == fault_id), 0)

    def clear(self) -> None:
        self._call("DELETE", "/_control/faults")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


class Chaos:
    """The faults: each method injects one and returns what it did, in a few words."""

    def __init__(self, rng: random.Random, pg: OwnPostgres, broker_redis: OwnRedis, fake: FakeUpstream,
                 supervisor: Supervisor) -> None:
        self.rng, self.pg, self.redis, self.fake, self.supervisor = rng, pg, broker_redis, fake, supervisor
        self.groups = [p for name, p in supervisor.processes.items() if name.startswith("worker")]

    def pg_stop(self, mode: str) -> str:
        down = self.rng.uniform(3, 15)
        self.pg.stop(mode)
        time.sleep(down)
        self.pg.start()
        return f"PostgreSQL stopped ({mode}), down {down:.1f} s"

    def pg_stop_fast(self) -> str:
        return self.pg_stop("fast")

    def pg_stop_immediate(self) -> str:
        return self.pg_stop("immediate")

    def redis_kill(self) -> str:
        down = self.rng.uniform(1, 5)
        self.redis.kill()
        time.sleep(down)
        self.redis.start()
        return f"Redis SIGKILLed, started again {down:.1f} s later"

    def worker_kill(self) -> str:
        group = self.rng.choice(self.groups)
        if not self._within(30, lambda: len(group.children()) > 0):
            return f"missed: {group.name} had no worker process for 30 s"
        pid = self.rng.choice(group.children())
        os.kill(pid, signal.SIGKILL)
        return f"{group.name}: worker process {pid} SIGKILLed"

    def group_kill(self) -> str:
        group = self.rng.choice(self.groups)
        group.kill()
        return f"{group.name}: the whole group SIGKILLed"

    def drain_kill(self) -> str:
        self.supervisor.processes["drain"].kill()
        return "enrich drain SIGKILLed"

    def upstream_burst(self) -> str:
        path, times = self.rng.choice(SERVICES), self.rng.randint(5, 20)
        self.fake.fail(path=path, kind="server_error", times=times, retry_after=1)
        return f"upstream: the next {times} requests to {path} answer 503"

    def upstream_permanent(self) -> str:
        path, times = self.rng.choice(SERVICES), self.rng.randint(1, 3)
        self.fake.fail(path=path, kind="status", status=400, times=times)
        return f"upstream: the next {times} requests to {path} answer 400 (permanent: never retried)"

    def redis_kill_during_backoff(self) -> str:
        """Issue 23 item 1: retries waiting 8 s for their backoff, held in a worker's memory, when Redis dies."""
        fault = self.fake.fail(path="/musicbrainz/ws/2/", kind="server_error", times=6, retry_after=8)
        if not self._within(25, lambda: self._delayed_held() >= 1):
            return f"missed: no retry waited for its backoff within 25 s ({self.fake.hits(fault)} requests failed)"
        held = self._delayed_held()
        time.sleep(self.rng.uniform(0.5, 2))
        down = self.rng.uniform(1, 4)
        self.redis.kill()
        time.sleep(down)
        self.redis.start()
        return f"Redis SIGKILLed while {held} retries waited for their backoff in workers; down {down:.1f} s " \
               f"(fault {fault})"

    def worker_kill_during_slow_jobs(self) -> str:
        """Jobs held 8 s by the fake when every worker process is SIGKILLed: redelivery, late entries (item 6)."""
        # Every album enrichment searches release groups (a cover is fetched once per release group, then cached).
        fault = self.fake.fail(path="/musicbrainz/ws/2/release-group", kind="timeout", delay=8, times=2)
        if not self._within(25, lambda: self.fake.hits(fault) >= 1):
            return "missed: no slow job started within 25 s"
        time.sleep(self.rng.uniform(0.5, 3))
        killed = [pid for group in self.groups for pid in group.children()]
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return f"{len(killed)} worker processes SIGKILLed while {self.fake.hits(fault)} slow jobs ran"

    def _delayed_held(self) -> int:
        try:
            return sum(self.redis.client.scard(k) for k in self.redis.client.scan_iter("dramatiq:__acks__.*.DQ"))
        except redis.RedisError:
            return 0

    @staticmethod
    def _within(seconds: float, predicate) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False


def run_faults(chaos: Chaos, rng: random.Random, minutes: float, started: float) -> list[tuple[float, str, str]]:
    """The faults for ``minutes``, then a closing ``redis_kill_during_backoff``: any later restart of the
    workers would hand its dropped retries back, so it comes last, where nothing hides what it leaves."""
    done, deck = [], []
    end = time.monotonic() + minutes * 60
    while True:
        time.sleep(max(0.0, min(rng.uniform(2, 8), end - time.monotonic())))
        closing = time.monotonic() >= end
        if not closing and not deck:
            deck = list(RANDOM_FAULTS + TARGETED_FAULTS)
            rng.shuffle(deck)
        kind = CLOSING_FAULT if closing else deck.pop()
        at = time.monotonic() - started
        try:
            what = getattr(chaos, kind)()
        except Exception as exc:  # a fault that could not be injected is reported, and the soak goes on
            what = f"could not be injected: {type(exc).__name__}: {exc}"
        done.append((at, kind, what))
        print(f"  [{at:6.1f} s] {kind}: {what}", flush=True)
        if closing:
            return done


class Settle:
    """Whether the system is at rest: every row final, the journal drained, no message left in Redis."""

    def __init__(self, db_url: str, client: redis.Redis) -> None:
        self.db_url, self.client = db_url, client
        self.state = "not read yet"

    def __call__(self) -> bool:
        try:
            with psycopg2.connect(self.db_url, connect_timeout=2) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM enrichment_logs WHERE status = ANY(%s)", (list(PENDING_STATUSES),))
                pending = cur.fetchone()[0]
            journal = self.client.xlen("dramatiq:job-log") if self.client.exists("dramatiq:job-log") else 0
            messages = self.client.hlen("dramatiq:default.msgs") + self.client.hlen("dramatiq:default.DQ.msgs")
        except (psycopg2.Error, redis.RedisError) as exc:
            self.state = f"{type(exc).__name__}"
            return False
        self.state = f"{pending} rows pending, {journal} journal entries, {messages} messages in Redis"
        return pending == journal == messages == 0


def worker_env(base: dict, db_url: str, redis_url: str, fake_env: dict, folder: str) -> dict:
    env = {k: v for k, v in base.items() if not k.startswith(("CLOUDFLARE_", "OTEL_", "PROMETHEUS", "DRAIN_PROM"))}
    bin_dir = os.path.dirname(sys.executable)
    env.update(fake_env)
    env.update(WORKER_SETTINGS, DATABASE_URL=db_url, REDIS_URL=redis_url,
               IMAGE_CACHE_DIR=os.path.join(folder, "images"), PYTHONPATH=ROOT,
               PATH=f"{bin_dir}{os.pathsep}{base.get('PATH', '')}")
    return env


def seed_catalog(db_url: str, fake_url: str, albums: int) -> None:
    """``albums`` albums over the fake's sample release groups (``bench/soak_benchmark.py``'s catalog)."""
    from bench.soak_benchmark import create_albums
    from models import bind_database, database
    from workers.fake_upstream.sample import SampleCatalog

    bind_database(db_url)
    create_albums(SampleCatalog(fake_url, discogs_prefix="/discogs", spotify_prefix="/spotify/v1"), albums)
    database.obj.close_all()


def report(sent: list[dict], by_job: dict, faults, restarts: Counter, settled_in, results) -> None:
    kinds = Counter(root["kind"] for root in sent)
    statuses = Counter(row["status"] for row in by_job.values())
    roots = Counter(row["status"] for row in by_job.values() if row["is_root_job"])
    print()
    print(f"trees sent      {len(sent)}  (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")")
    print(f"jobs (rows)     {len(by_job)}  (" + ", ".join(f"{s} {n}" for s, n in statuses.most_common()) + ")")
    print("roots           " + ", ".join(f"{s} {n}" for s, n in roots.most_common()))
    by_kind = Counter(kind for _, kind, what in faults if not what.startswith(("missed", "could not")))
    missed = Counter(kind for _, kind, what in faults if what.startswith(("missed", "could not")))
    print(f"faults          {sum(by_kind.values())}  (" + ", ".join(
        f"{k} {by_kind[k]}" + (f" +{missed[k]} missed" if missed[k] else "")
        for k in RANDOM_FAULTS + TARGETED_FAULTS if by_kind[k] or missed[k]) + ")")
    spent = checks.outage_failures(by_job)
    print(f"retries spent   {len(spent)} jobs failed after every retry met an outage (a figure, not a check)"
          + "".join(f"\n                {checks.describe(row)}" for row in spent[:5]))
    print("restarts        " + (", ".join(f"{name} {n}" for name, n in sorted(restarts.items())) or "none"))
    print(f"settled         {'in %.0f s' % settled_in if settled_in is not None else 'NO: the bound ran out'}")
    print()
    for check in results:
        print(f"{'PASS' if check.ok else 'FAIL'}  {check.name}  ({check.looked_at} looked at"
              + (f", {len(check.violations)} violations)" if check.violations else ")"))
        for example in check.violations[:5]:
            print(f"        {example}")


def run_checks(db_url: str, client: redis.Redis, sent: list[dict], logs: list[str], appendfsync: str):
    with psycopg2.connect(db_url) as conn:
        by_job = checks.rows(conn)
        one_row = checks.one_row_per_job(conn)
    exact, degraded = checks.failed_children_exact(by_job)
    results = [
        checks.every_sent_root_has_a_row(sent, by_job),
        checks.every_tree_complete(by_job, checks.unacked(client)),
        one_row, exact, degraded,
        checks.journal_empty(client),
        checks.queue_empty(client),
        checks.no_thread_died(logs),
        checks.no_background_round_failed(logs),
        checks.permanent_errors_failed(by_job),
        *([checks.no_job_ended_by_an_outage(by_job)] if appendfsync == "always" else []),
        checks.rows_agree_with_last_attempt(by_job, checks.log_entries(logs)),
    ]
    return by_job, results


def _interrupted(signum, frame):
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults are injected (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the faults, their timing and the trees (default 1)")
    parser.add_argument("--settle", type=float, default=300.0,
                        help="seconds to wait, after the faults, for every row to be final (default 300)")
    parser.add_argument("--rate", type=float, default=1.0, help="trees the producer sends per second (default 1)")
    parser.add_argument("--albums", type=int, default=200, help="albums in the catalog (default 200)")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always",
                        help="Redis's appendfsync (default always: a SIGKILL loses nothing Redis acknowledged)")
    parser.add_argument("--keep", action="store_true", help="keep the logs even when every check held")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)

    rng = random.Random(args.seed)
    folder = tempfile.mkdtemp(prefix="enrich-chaos-")
    logs_dir = os.path.join(folder, "logs")
    os.makedirs(logs_dir)
    pg = OwnPostgres(folder, free_port())
    broker_redis = OwnRedis(folder, free_port(), args.appendfsync)
    fake = supervisor = None
    failed = True
    try:
        pg.start()
        broker_redis.start()
        db_url = pg.database_url("enrich")
        postgres_admin.admin(pg.url, "CREATE DATABASE enrich")
        base = dict(os.environ, PYTHONPATH=ROOT)
        fake = FakeUpstream(base, os.path.join(logs_dir, "fake_upstream.log"))
        env = worker_env(base, db_url, broker_redis.url, fake.env, folder)
        release = subprocess.run(["bash", "-c", procfile_command("release")], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=300)
        if release.returncode != 0:
            raise RuntimeError(f"the Procfile's release line failed: {release.stderr.strip()[-500:]}")
        seed_catalog(db_url, fake.url, args.albums)

        sent_path = os.path.join(folder, "sent.jsonl")
        producer = f"{shlex.quote(sys.executable)} -m bench.chaos_producer --sent {shlex.quote(sent_path)} " \
                   f"--seed {args.seed} --rate {args.rate}"
        processes = [
            Supervised("worker-a", procfile_command("worker"), {**env, "JOB_LOG_DRAIN_IN_WORKERS": "1"},
                       os.path.join(logs_dir, "worker-a.log")),
            Supervised("worker-b", procfile_command("worker"), {**env, "JOB_LOG_DRAIN_IN_WORKERS": "0"},
                       os.path.join(logs_dir, "worker-b.log")),
            Supervised("drain", procfile_command("drain"), env, os.path.join(logs_dir, "drain.log")),
            Supervised("producer", producer, env, os.path.join(logs_dir, "producer.log")),
        ]
        supervisor = Supervisor(processes)
        print(f"chaos soak: {args.minutes:g} min of faults, seed {args.seed}; PostgreSQL :{pg.port}, Redis :"
              f"{broker_redis.port} (appendonly, appendfsync {args.appendfsync}), fake upstream {fake.url}; "
              f"scratch {folder}", flush=True)
        supervisor.start()
        wait_until(lambda: all(open(p.log_path, errors="replace").read().count("ready for action") >= 2
                               for p in processes[:2]), 120, "the worker groups to start")

        started = time.monotonic()
        faults = run_faults(Chaos(rng, pg, broker_redis, fake, supervisor), rng, args.minutes, started)

        # The end of the faults: everything up again, nothing more sent, then wait for the state.
        fake.clear()
        pg.start()
        broker_redis.start()
        supervisor.retire("producer")
        print(f"  [{time.monotonic() - started:6.1f} s] faults stopped; settling (at most {args.settle:g} s)",
              flush=True)
        settle = Settle(db_url, broker_redis.client)
        settle_start = time.monotonic()
        try:
            wait_until(lambda: supervisor.all_alive() and settle(), args.settle, "the soak to settle", interval=1)
            settled_in = time.monotonic() - settle_start
        except RuntimeError:
            settled_in = None
            print(f"  not settled after {args.settle:g} s: {settle.state}", flush=True)
        restarts = Counter(supervisor.restarts)
        supervisor.stop()

        with open(sent_path) as sent_file:
            sent = [json.loads(line) for line in sent_file]
        logs = [p.log_path for p in processes]
        by_job, results = run_checks(db_url, broker_redis.client, sent, logs, args.appendfsync)
        report(sent, by_job, faults, restarts, settled_in, results)
        failed = not all(check.ok for check in results)
        print(f"\n{'FAILED' if failed else 'every check held'}", flush=True)
        return 1 if failed else 0
    except KeyboardInterrupt:
        print("interrupted: stopping everything it started", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"chaos soak: {exc}", file=sys.stderr)
        return 2
    finally:
        if supervisor is not None:
            supervisor.stop(kill=True)
        if fake is not None:
            fake.stop()
        broker_redis.stop()
        try:
            pg.stop("immediate")
        except RuntimeError:
            pass
        if failed or args.keep:
            remove_folder(os.path.join(folder, "pg"))
            remove_folder(os.path.join(folder, "redis"))
            remove_folder(os.path.join(folder, "images"))
            print(f"logs kept: {logs_dir}", file=sys.stderr)
        else:
            remove_folder(folder)


if __name__ == "__main__":
    sys.exit(main())
