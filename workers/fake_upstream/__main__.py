"""``python -m workers.fake_upstream [--host 127.0.0.1] [--port 8765] [--no-cloudflare]``

Runs the fake upstream services (SAMPLE DATA, not the real APIs) in the
foreground and prints the environment variables that point the workers at it.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .server import FakeUpstream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.fake_upstream",
        description="Serve sample MusicBrainz, Discogs, Spotify, cover art and Cloudflare Images responses locally.",
        epilog="example: python -m workers.fake_upstream --port 8765  (then export the printed variables)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 for any free one (default 8765)")
    parser.add_argument(
        "--no-cloudflare", action="store_true", help="leave the Cloudflare credentials out (images go to IMAGE_CACHE_DIR)"
    )
    args = parser.parse_args(argv)
    try:
        fake = FakeUpstream(args.host, args.port)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"# FAKE UPSTREAM - SAMPLE DATA, not the real services - listening on {fake.url}")
    print("# point the workers at it with:")
    for name, value in fake.env(cloudflare=not args.no_cloudflare).items():
        print(f"export {name}={shlex.quote(value)}")
    print(f"# cover art: {fake.url}/coverartarchive/release-group/<mbid>/front")
    print(f"# faults and request log: {fake.url}/_control/faults, {fake.url}/_control/requests")
    sys.stdout.flush()
    try:
        fake.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
