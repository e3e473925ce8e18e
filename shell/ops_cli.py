"""Operations subcommands of `pomocore`: `check`, `leaderboard top|rank|serve`, `acl`.

Registered into pomocore.cli's parser. Other modules add `pomocore leaderboard <action>`
subcommands through `register(sub, leaderboard_actions=[...])` (e.g. `rebuild`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pomocore import acl
from pomocore.bounded import HttpLimits
from pomocore.cli_format import add_json, bounded_float, bounded_int, logging_parent, write_json
from pomocore.core.connect import async_redis
from pomocore.core.expiry import expire_at_function
from pomocore.core.logs import setup_logging
from pomocore.core.settings import Settings
from pomocore.health import check_command
from pomocore.http_api import API_WORKERS, LeaderboardHTTPServer
from pomocore.reader import LeaderboardReader, QueryError
from pomocore.sinks.derived import DerivedRefresher


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        log_format=getattr(args, "log_format", None), log_level=getattr(args, "log_level", None)
    )


def cmd_check(args: argparse.Namespace) -> int:
    return check_command(_settings(args), sys.stdout)


def _reader_args(p: argparse.ArgumentParser, *, user: bool) -> None:
    if user:
        p.add_argument("--user", required=True, help="userId (required)")
    p.add_argument("--category", required=True, help="category name, or work (required)")
    p.add_argument(
        "--period",
        required=True,
        choices=("daily", "weekly", "monthly"),
        help="which board of --date: its day, ISO week or month (required)",
    )
    p.add_argument("--date", help="local date YYYY-MM-DD (default: today in POMOCORE_TIMEZONE)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    reader = LeaderboardReader.from_settings(_settings(args))
    try:
        if args.action == "top":
            rows = reader.top(args.category, args.period, args.date, args.limit, args.offset)
        else:
            row = reader.rank(args.user, args.category, args.period, args.date)
            rows = [row] if row else []
    except QueryError as exc:
        print(f"pomocore: {exc}", file=sys.stderr)
        return 2
    finally:
        reader.close()
    for r in rows:
        if args.json:
            print(json.dumps(r.as_dict(), ensure_ascii=False))
        else:
            print(f"{r.rank}\t{r.user}\t{r.score:.3f}")
    return 0 if rows or args.action == "top" else 1


def cmd_leaderboard_refresh(args: argparse.Namespace) -> int:
    """One round of the derived-mode refresher (also safe to run in exact mode)."""

    settings = _settings(args)

    async def once() -> int | None:
        redis = async_redis(settings)
        try:
            refresher = DerivedRefresher(
                redis, settings.keys, settings.derived_refresh_s, expire_at_function(settings)
            )
            for _ in range(int(args.wait_s * 10) + 1):  # another refresher may hold the lease
                rebuilt = await refresher.refresh_once()
                if rebuilt is not None:
                    return rebuilt
                await asyncio.sleep(0.1)
            return None
        finally:
            await redis.aclose()

    rebuilt = asyncio.run(once())
    if rebuilt is None:
        print("pomocore: another refresher holds the lease; try again", file=sys.stderr)
        return 1
    if args.json:
        write_json({"rebuilt": rebuilt}, sys.stdout)
    else:
        print(f"rebuilt {rebuilt} weekly/monthly keys")
    return 0


def cmd_leaderboard_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings.log_format, settings.log_level)
    server = LeaderboardHTTPServer(
        LeaderboardReader.from_settings(settings),
        args.port,
        args.host,
        token=settings.api_token,
        limits=HttpLimits.from_settings(settings, API_WORKERS),
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        server.reader.close()
    return 0


def cmd_acl(args: argparse.Namespace) -> int:
    settings = _settings(args)
    passwords: dict[str, str] = {}
    for spec in args.password_file or []:
        role, _, path = spec.partition("=")
        with open(path, encoding="utf-8") as fh:
            passwords[role] = fh.read().strip()
    # Default: every role given a password (`monitor` is new: a file generated for the
    # other three the way it used to be still works).
    users = args.users or ",".join(r for r in acl.ROLES if r in passwords)
    roles = [r.strip() for r in users.split(",") if r.strip()]
    if not roles:
        print("pomocore: give --password-file ROLE=PATH for each role", file=sys.stderr)
        return 2
    for role in roles:
        if role not in acl.ROLES:
            print(f"pomocore: unknown role {role!r}", file=sys.stderr)
            return 2
        if role not in passwords:
            print(f"pomocore: --password-file {role}=PATH is required", file=sys.stderr)
            return 2
    cluster, shards = bool(settings.redis_cluster), settings.shards
    if args.setuser:
        for role in roles:
            print(
                acl.setuser_line(
                    settings.keys, role, passwords[role], cluster=cluster, shards=shards
                )
            )
    else:
        sys.stdout.write(
            acl.acl_file(
                settings.keys, {r: passwords[r] for r in roles}, cluster=cluster, shards=shards
            )
        )
    return 0


def register(sub: Any, leaderboard_actions: Sequence[Callable[[Any], None]] = ()) -> None:
    """Add the operations subcommands to `pomocore`'s subparsers; each of
    `leaderboard_actions` adds one more `pomocore leaderboard` action."""
    common = logging_parent()

    check = sub.add_parser(
        "check",
        parents=[common],
        help="readiness checks without HTTP: exit 0 ready, 1 not",
        description="The checks of /readyz, for probes that cannot do HTTP (Docker's "
        "HEALTHCHECK): Redis answers, the consumer group exists on the input stream (on "
        "each shard this process serves), MongoDB answers when the mongo sink is on. "
        "Prints one JSON line, ready and each check; exit 0 ready, 1 not.",
    )
    check.set_defaults(func=cmd_check)

    lb = sub.add_parser(
        "leaderboard", help="read, serve, refresh, rebuild or materialize leaderboards"
    )
    actions = lb.add_subparsers(dest="action", required=True)
    top = actions.add_parser("top", parents=[common], help="top N users, one row per user")
    _reader_args(top, user=False)
    top.add_argument("--limit", type=int, default=10, help="rows")
    top.add_argument("--offset", type=int, default=0, help="rows skipped")
    top.set_defaults(func=cmd_leaderboard)
    rank = actions.add_parser("rank", parents=[common], help="rank and score of one user")
    _reader_args(rank, user=True)
    rank.set_defaults(func=cmd_leaderboard)
    serve = actions.add_parser("serve", parents=[common], help="read-only HTTP JSON endpoint")
    serve.add_argument("--port", type=bounded_int(0, 65535), default=8080, help="TCP port")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    serve.set_defaults(func=cmd_leaderboard_serve)
    refresh = actions.add_parser(
        "refresh", parents=[common], help="derived mode: rebuild stale weekly/monthly keys now"
    )
    refresh.add_argument(
        "--wait-s", type=bounded_float(0, 3600), default=10.0, help="wait for the lease"
    )
    add_json(refresh, "the keys rebuilt")
    refresh.set_defaults(func=cmd_leaderboard_refresh)
    for add in leaderboard_actions:
        add(actions)

    acl_cmd = sub.add_parser(
        "acl", parents=[common], help="print Redis ACL users (least privilege)"
    )
    acl_cmd.add_argument(
        "--users",
        help=f"comma list of roles from {','.join(acl.ROLES)} (default: those given a password)",
    )
    acl_cmd.add_argument(
        "--password-file",
        action="append",
        metavar="ROLE=PATH",
        help="password of a role, one per role of --users (default: none; required)",
    )
    acl_cmd.add_argument("--setuser", action="store_true", help="ACL SETUSER lines, not a file")
    acl_cmd.set_defaults(func=cmd_acl)
