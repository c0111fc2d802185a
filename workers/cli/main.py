"""The ``enrich`` command: what a new user and an on-call operator touch.

``main`` is the process's entry point: it parses the arguments, then loads
the settings once (``load_settings``), lets the command adjust them
(``enrich demo`` runs on a database and timings of its own), configures the
logs and binds the database; only the commands that send or run jobs start the app (the broker
and its actors, ``workers.app``).  ``enrich --help``, ``roots``,
``timeline`` never build a broker.  Handlers get the settings as an argument.

Every subcommand has ``--help`` with an example.  Expected failures (a bad
setting, an unreachable database or Redis, a wrong id, a malformed input)
print one line naming what was wrong and exit 1, never a traceback.

Normal output goes to stdout; notes for a person (hints, what is happening)
and the JSON logs go to stderr, so ``id=$(enrich add-album ...)`` works.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import sys
import uuid
from typing import Callable, Optional

import peewee

from models import Album, Artist, ConfigError, Settings, Track, bind_database, load_settings, utcnow
from models.database import redact_url
from models.error_text import first_line
from models.job_log import STATUSES
from models.timeline import MAX_LIMIT, get_tree, list_roots

from .catalog import AlbumInput, add_album, add_artist, credit_line
from .common import CommandError, actor, app_broker, migrate, note, open_database, quiet_logs, visible
from .demo import demo_settings, run_demo
from .drain import add_drain_command
from .history import add_history_command
from .queues import add_queue_commands
from .run import run_here, trees_exit_status
from .timeline import Style, follow, root_labels, roots_lines, tree_labels, tree_lines
from .worker_list import add_workers_command

Handler = Callable[[argparse.Namespace, Settings], int]
# What a command runs on: the settings from the environment, adjusted (``enrich demo``'s own database).
SettingsFor = Callable[[Settings], Settings]

# The roots a person can start: command -> (actor, entity model or None).
ROOT_JOBS = {
    "album": ("check_album_enrichment", Album),
    "artist": ("check_artist_enrichment", Artist),
    "track": ("check_track_enrichment", Track),
    "sync-new-releases": ("sync_spotify_new_releases", None),
}
RUN_TIMEOUT = 600.0
ROOTS_PAGE = 20


def _entity_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise CommandError(f"malformed {what} id {value[:80]!r}: expected a UUID") from None


def _require(model, value: str):
    what = model.__name__.lower()
    row = model.get_or_none(model.id == _entity_id(value, what))
    if row is None:
        raise CommandError(f"no {what} with id {value.strip()}")
    return row


# -- catalog ----------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = migrate(open_database(settings))
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("database is up to date")
    return 0


def cmd_add_album(args: argparse.Namespace, settings: Settings) -> int:
    try:
        request = AlbumInput.parse(args.title, args.artist, args.mbid, args.spotify_id, args.cover_url)
        open_database(settings)
        album, created = add_album(request)  # ValueError: a Spotify id that is another album's
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(album.id)
    note(f"{'added' if created else 'already in the catalog:'} {credit_line(album)}")
    return 0


def cmd_add_artist(args: argparse.Namespace, settings: Settings) -> int:
    open_database(settings)
    try:
        artist, created = add_artist(args.name, args.mbid)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(artist.id)
    note(f"{'added' if created else 'already in the catalog:'} \"{artist.name}\"")
    return 0


# -- starting jobs -----------------------------------------------------------------------------


def cmd_start_root(args: argparse.Namespace, settings: Settings) -> int:
    """``album``, ``artist``, ``track``, ``sync-new-releases``: one root job, sent or run here."""
    actor_name, model = ROOT_JOBS[args.command]
    open_database(settings)
    if model is not None:
        job_args, kwargs = (str(_require(model, args.entity_id).id),), {}
        if getattr(args, "force", False):
            kwargs["force"] = True
    else:
        job_args, kwargs = (), {"limit": args.limit}
    if settings.redis_url:
        app_broker(settings)  # the app, started: its actors are declared
        message = actor(actor_name).send_with_options(args=job_args, kwargs=kwargs, triggered_by="cli")
        print(message.message_id)
        if not getattr(args, "wait", False):
            note(f"queued; follow it with: enrich timeline {message.message_id} --follow")
            return 0
        return _wait_for_tree(message.message_id, args.timeout)
    note("REDIS_URL is not set, so there is no shared broker: running the job here, in this process (Ctrl-C stops it)")
    quiet_logs(settings)
    return trees_exit_status(run_here([(actor_name, job_args, kwargs)], settings, timeout=args.timeout))


def _wait_for_tree(root_job_id: str, timeout: float) -> int:
    """``--wait``: until the tree is complete, then its timeline; exit 2 if it ended failed, lost or degraded."""
    note(f"queued; waiting for its tree to complete (at most {timeout:g} s)…")
    tree = follow(root_job_id, None, Style(sys.stdout), timeout=timeout)
    if tree is None:
        raise CommandError(f"job {root_job_id} has no row: is the job log's database the workers' one?")
    print("\n".join(tree_lines(tree, tree_labels(tree), Style(sys.stdout))))
    if not tree.complete:
        raise CommandError(f"the tree is not complete after {timeout:g} s; "
                           f"follow it with: enrich timeline {root_job_id} --follow")
    return trees_exit_status([root_job_id])


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.album and not args.pending:
        raise CommandError("nothing to run: pass --album ID (any number of times) or --pending")
    if settings.redis_url:
        note("enrich run uses its own in-memory queue: REDIS_URL is ignored")
        settings = dataclasses.replace(settings, redis_url=None)  # before the app (its broker) is started
    db = open_database(settings)
    for name in migrate(db):
        note(f"applied migration {name}")
    ids = [str(_require(Album, value).id) for value in args.album or []]
    if args.pending:
        query = Album.select(Album.id).where(Album.enrichment_status.in_(("pending", "failed"))).order_by(Album.created_at)
        ids += [str(album_id) for (album_id,) in query.tuples() if str(album_id) not in ids]
    if not ids:
        print("no album is pending or failed: nothing to do")
        return 0
    print(f"enriching {len(ids)} album{'s' if len(ids) != 1 else ''} on an in-process worker (Ctrl-C stops it)")
    quiet_logs(settings)
    kwargs = {"force": True} if args.force else {}
    return trees_exit_status(run_here([("check_album_enrichment", (album_id,), kwargs) for album_id in ids],
                                      settings, timeout=args.timeout))


# -- reading the job log -------------------------------------------------------------------------


def cmd_roots(args: argparse.Namespace, settings: Settings) -> int:
    open_database(settings)
    try:
        page = list_roots(status=args.status, operation=args.operation, limit=args.limit, cursor=args.cursor)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps(page.as_dict(), indent=2))
        return 0
    print("\n".join(roots_lines(page, root_labels(page), Style(sys.stdout))))
    if page.next_cursor:
        filters = "".join(f" --{name} {value}" for name, value in
                          (("status", args.status), ("operation", args.operation)) if value)
        limit = f" --limit {args.limit}" if args.limit != ROOTS_PAGE else ""
        print(visible(f"next page: enrich roots{filters}{limit} --cursor {page.next_cursor}"))
    return 0


def cmd_timeline(args: argparse.Namespace, settings: Settings) -> int:
    open_database(settings)
    job_id = args.job_id.strip()
    if args.follow:
        screen = sys.stderr if args.json else sys.stdout  # with --json, stdout is only the final document
        tree = follow(job_id, screen, Style(screen))
    else:
        tree = get_tree(job_id)
    if tree is None:
        raise CommandError(f"no job with id {job_id}")
    if args.json:
        print(json.dumps(tree.as_dict(), indent=2))
    elif not args.follow:
        print("\n".join(tree_lines(tree, tree_labels(tree), Style(sys.stdout))))
        if not tree.complete:
            note(f"not complete yet; watch it with: enrich timeline {job_id} --follow")
    return 0


# -- sending jobs again -------------------------------------------------------------------------------


def cmd_resend(args: argparse.Namespace, settings: Settings) -> int:
    from ..resend import ResendRefused, resend_job, resend_tree

    open_database(settings)
    if not settings.redis_url:
        raise CommandError("REDIS_URL is not set: there is no shared broker to send the job to")
    broker = app_broker(settings)
    try:
        sent = resend_tree(broker, args.tree) if args.tree else [resend_job(broker, args.job_id)]
    except ResendRefused as exc:
        raise CommandError(str(exc)) from None
    for job_id in sent:
        print(visible(job_id))
    root = args.tree or (get_tree(sent[0]).root_job_id if sent else None)
    note(f"sent {len(sent)} job{'s' if len(sent) != 1 else ''} again; follow the tree with: "
         f"enrich timeline {root or sent[0]} --follow")
    return 0


# -- the web dashboard ------------------------------------------------------------------------------


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    # Starlette, Jinja2 and uvicorn load only for this command.
    import uvicorn

    from dashboard import create_app
    from dashboard.security import bind_problem
    from migrations import schema_problem

    problem = bind_problem(args.host, settings.dashboard_password) or schema_problem(open_database(settings))
    if problem:
        raise CommandError(problem)
    if settings.dashboard_allow_actions and not settings.dashboard_actions:
        note("DASHBOARD_ALLOW_ACTIONS is set, but actions also need DASHBOARD_PASSWORD and REDIS_URL (the workers' "
             "broker): the dashboard stays read-only")
    web = create_app(settings, app_broker(settings) if settings.dashboard_actions else None)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    note(f"dashboard on http://{shown}:{args.port}/ (Ctrl-C stops it)")
    uvicorn.run(web, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0


# -- retention -----------------------------------------------------------------------------------------


def _age(value: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m``: a positive age."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm])\s*", value)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not an age like 30d, 12h or 90m")
    amount, unit = float(match.group(1)), match.group(2)
    units = {"d": "days", "h": "hours", "m": "minutes"}
    return dt.timedelta(**{units[unit]: amount})


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from models.retention import prune

    older_than = args.older_than or dt.timedelta(days=settings.log_retention_days)
    open_database(settings)
    cutoff = utcnow() - older_than
    report = prune(cutoff, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {report.trees} tree{'s' if report.trees != 1 else ''} and {report.rows} "
          f"row{'s' if report.rows != 1 else ''} ({report.legacy_rows} legacy, {report.orphan_rows} orphaned) completed before "
          f"{cutoff:%Y-%m-%d %H:%M:%S} UTC, in {report.batches} batch{'es' if report.batches != 1 else ''}")
    return 0


# -- the parser -----------------------------------------------------------------------------------


def _add(sub, name: str, handler: Handler, help_text: str, example: str,
         settings_for: Optional[SettingsFor] = None) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler, settings_for=settings_for)
    return parser


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be greater than zero")
    return number


def _limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value!r} must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} must be a port number from 1 to 65535")
    return int(value)


def _add_catalog_commands(sub) -> None:
    p = _add(sub, "add-album", cmd_add_album,
             "add an album and its credited artists to the catalog (or find it); prints the album id",
             'enrich add-album "OK Computer" --artist Radiohead --mbid b1392450-e666-3926-a536-22c65f834433')
    p.add_argument("title", help="the album title (at most 1,000 characters)")
    p.add_argument("--artist", action="append", required=True, metavar="NAME",
                   help="a credited artist, in credit order; repeat for several")
    p.add_argument("--mbid", help="the MusicBrainz release-group id (a UUID)")
    p.add_argument("--spotify-id", help="the Spotify album id")
    p.add_argument("--cover-url", help="an http(s) URL of the cover image")
    p = _add(sub, "add-artist", cmd_add_artist, "add an artist to the catalog (or find it by name); prints the artist id",
             'enrich add-artist "Björk" --mbid 87c5dedd-371d-4a53-9f7f-80522fb7f3cb')
    p.add_argument("name", help="the artist name (at most 1,000 characters)")
    p.add_argument("--mbid", help="the MusicBrainz artist id (a UUID)")


def _add_job_commands(sub) -> None:
    in_process = (" Without REDIS_URL it runs here, in this process, and prints the timeline"
                  " (exit status 2 if the tree ends failed or degraded).")
    for name, what in (("album", "album"), ("artist", "artist"), ("track", "track")):
        p = _add(sub, name, cmd_start_root,
                 f"start the enrichment check of one {what}: with REDIS_URL, queue it and print the job id."
                 + in_process,
                 f"REDIS_URL=redis://127.0.0.1:6379/0 enrich {name} 0b1c6f3e-7d3a-4c1e-9a59-2f1d7c9b8e11")
        p.add_argument("entity_id", metavar=f"{what.upper()}_ID", help=f"the {what}'s id (from enrich add-{what})"
                       if what != "track" else "the track's id")
        p.add_argument("--force", action="store_true",
                       help="enrich even if nothing is missing or a cooldown holds it back (see the README's cooldowns)")
        p.add_argument("--wait", action="store_true",
                       help="with REDIS_URL: wait until the tree is complete, print its timeline, "
                       "exit status 2 if it ended failed or degraded")
        p.add_argument("--timeout", type=_positive, default=RUN_TIMEOUT, metavar="S",
                       help=f"seconds to wait for the tree, here or with --wait (default {RUN_TIMEOUT:g})")
    p = _add(sub, "sync-new-releases", cmd_start_root,
             "add Spotify's new releases to the catalog and enrich them." + in_process,
             "enrich sync-new-releases --limit 20")
    p.add_argument("--limit", type=_limit, default=50, help="how many new releases to fetch (default 50)")
    p.add_argument("--timeout", type=_positive, default=RUN_TIMEOUT, metavar="S",
                   help=f"without REDIS_URL: seconds to wait for the tree (default {RUN_TIMEOUT:g})")
    p = _add(sub, "run", cmd_run,
             "enrich albums on an in-process worker (in-memory queue, no Redis needed), with progress, "
             "then print every tree's timeline. Logs warnings and errors only unless LOG_LEVEL is set. "
             "Exit status 2 if a tree ends failed or degraded.",
             "enrich run --pending")
    p.add_argument("--album", action="append", metavar="ID", help="an album id; repeat for several")
    p.add_argument("--pending", action="store_true", help="every album whose enrichment is pending or failed")
    p.add_argument("--force", action="store_true",
                   help="enrich every album (and its artists) even if nothing is missing or a cooldown holds it back")
    p.add_argument("--timeout", type=_positive, default=RUN_TIMEOUT, metavar="S",
                   help=f"seconds to wait for every tree to finish (default {RUN_TIMEOUT:g})")
    _add(sub, "demo", run_demo,
         "enrich sample albums end to end against a local fake of every upstream service (SAMPLE DATA, "
         "no network, no server): a fresh ./enrichment-demo.db, the real actors and middleware, "
         "a retried job and a degraded tree, then every timeline",
         "enrich demo", settings_for=demo_settings)


def _add_log_commands(sub) -> None:
    p = _add(sub, "roots", cmd_roots, "list root jobs, newest first, with their children counted by status",
             "enrich roots --status degraded --limit 20")
    p.add_argument("--status", choices=STATUSES, help="only roots with this status")
    p.add_argument("--operation", help="only roots of this job type, e.g. check:album-enrichment")
    p.add_argument("--limit", type=_limit, default=ROOTS_PAGE, help=f"roots per page, 1 to {MAX_LIMIT} (default {ROOTS_PAGE})")
    p.add_argument("--cursor", help="the next-page cursor printed by the previous page")
    p.add_argument("--json", action="store_true", help="print the page as JSON")
    p = _add(sub, "timeline", cmd_timeline,
             "show one job's tree (give any job id of it): every job's status, start offset, duration, "
             "retries and error",
             "enrich timeline 5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d --follow")
    p.add_argument("job_id", help="a job id (root or child), as printed by enrich album or enrich roots")
    p.add_argument("--json", action="store_true", help="print the tree as JSON")
    p.add_argument("--follow", action="store_true",
                   help="redraw every second until the tree is complete: no job queued, running or retrying "
                   "(with --json: wait, then print)")
    p = _add(sub, "resend", cmd_resend,
             "send a failed or lost job again (with REDIS_URL): its stored message, the same job id, the same "
             "tree; or, with --tree, every failed or lost job of one tree. Prints the job ids sent.",
             "enrich resend --tree 5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("job_id", nargs="?", metavar="JOB_ID", help="the failed or lost job to send again")
    target.add_argument("--tree", metavar="ROOT_ID", help="a root job id: send every failed or lost job of its tree")
    p = _add(sub, "web", cmd_web,
             "serve the web dashboard: root jobs, live tree timelines, entity history, activity. Read-only "
             "unless DASHBOARD_ALLOW_ACTIONS=1 and DASHBOARD_PASSWORD are set; listens on 127.0.0.1 unless "
             "DASHBOARD_PASSWORD is set",
             "enrich web --port 8080    # then open http://127.0.0.1:8080/")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    p = _add(sub, "prune", cmd_prune,
             "delete whole trees that are complete (no job queued, running or retrying) and completed before the "
             "cutoff, every row of them, in short batches; legacy rows without a job id go by their created_at, and "
             "ended child rows whose root row no longer exists by their completion. "
             "Prints how many trees and rows it deleted.",
             "enrich prune --older-than 30d --dry-run")
    p.add_argument("--older-than", type=_age, metavar="AGE",
                   help="30d, 12h or 90m (default: LOG_RETENTION_DAYS days, 30 unless set)")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enrich",
        description="Enrich a music catalog from MusicBrainz, Discogs, Spotify and an image cache; "
        "every job is logged as one row of enrichment_logs, linked into a tree under its root job.",
        epilog="example:\n  enrich demo\n  DATABASE_URL=postgresql://root@127.0.0.1:5432/music enrich migrate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add(sub, "migrate", cmd_migrate, "apply pending database migrations (safe to run twice)", "enrich migrate")
    _add_catalog_commands(sub)
    _add_job_commands(sub)
    _add_log_commands(sub)
    add_drain_command(sub, _add)
    add_queue_commands(sub, _add)
    add_workers_command(sub, _add)
    add_history_command(sub, _add)
    return parser


# -- errors as one line -----------------------------------------------------------------------------


def _database_message(exc: peewee.DatabaseError, settings: Settings) -> str:
    text = first_line(exc)
    if isinstance(exc, peewee.OperationalError) and ("connect" in text or "server" in text):
        return f"cannot reach the database at {redact_url(settings.database_url)}: {text}"
    if "no such table" in text or "does not exist" in text:
        return f"database error: {text} (run `enrich migrate` first)"
    return f"database error: {text}"


STDOUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away


def main(argv: Optional[list[str]] = None, settings: Optional[Settings] = None) -> int:
    """Run one ``enrich`` command; its exit status.

    A reader that closes stdout early (``enrich roots | head -1``) ends the
    command quietly with ``STDOUT_CLOSED``, as a Unix tool killed by SIGPIPE,
    never with a BrokenPipeError traceback.

    Parameters:
      argv(list[str] | None): the arguments after ``enrich``; None reads ``sys.argv``.
      settings(Settings | None): None (the ``enrich`` process): read the
        environment, configure the logs, bind the database.  Given: a caller
        that did all three already (a test, a program embedding the command).
    """
    try:
        try:
            return _run(argv, settings)
        finally:
            sys.stdout.flush()  # what is still buffered meets a closed pipe here, not at interpreter exit
    except BrokenPipeError:
        # Python's "Note on SIGPIPE": point stdout at devnull so the exit's own flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return STDOUT_CLOSED


def _broker_errors() -> tuple[type[BaseException], ...]:
    """Redis's and Dramatiq's connection errors, once the command loaded them: ``--help``, ``roots`` and
    ``timeline`` never import either (start-up time), so neither can have raised."""
    errors: list[type[BaseException]] = []
    if "redis" in sys.modules:
        import redis

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    if "dramatiq" in sys.modules:
        import dramatiq

        errors.append(dramatiq.errors.ConnectionError)
    return tuple(errors)


def _set_up_process(args: argparse.Namespace) -> Settings:
    """The command's settings, from the environment; the logs configured and the database bound from them."""
    from ..logging_setup import configure_logging

    settings = load_settings()
    if args.settings_for is not None:
        settings = args.settings_for(settings)
    configure_logging(settings)
    bind_database(settings.database_url, settings.db_max_connections)
    return settings


def _run(argv: Optional[list[str]], settings: Optional[Settings]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        if settings is None:
            settings = _set_up_process(args)
        return args.handler(args, settings)
    except (ConfigError, CommandError) as exc:  # BadActorOptions too: an actor declared with a typo
        print(f"enrich {args.command}: {visible(exc)}", file=sys.stderr)
    except peewee.DatabaseError as exc:
        print(f"enrich {args.command}: {visible(_database_message(exc, settings))}", file=sys.stderr)
    except _broker_errors() as exc:
        url = redact_url(settings.redis_url or "")
        print(f"enrich {args.command}: cannot reach Redis at {url}: {visible(first_line(exc))}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"\nenrich {args.command}: interrupted", file=sys.stderr)
        return 130
    return 1
