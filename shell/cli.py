"""pomocore: count activity events from a Redis Stream into category leaderboards.

Run the consumer (`pomocore run`), try it on embedded servers (`pomocore demo`), classify
events, manage patterns and dead letters, read and rebuild leaderboards. Every setting is
a POMOCORE_* environment variable (see the README); a bad one exits 2 naming it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pomocore import __version__, dlq, ops_cli, rebuild
from pomocore.classify_cli import add_pool_arguments, classify_command, patterns_command
from pomocore.core.errors import ConfigError
from pomocore.core.logs import setup_logging
from pomocore.core.settings import Settings
from pomocore.demo import DemoOptions, run_demo
from pomocore.learned_cli import learned_command
from pomocore.run import run_single_process
from pomocore.supervisor import Supervisor


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {
        "batch_size": getattr(args, "batch_size", None),
        "processes": getattr(args, "processes", None),
        "consumer_name": getattr(args, "consumer", None),
        "log_format": getattr(args, "log_format", None),
        "log_level": getattr(args, "log_level", None),
        "metrics_port": getattr(args, "metrics_port", None),
        **extra,
    }
    return Settings.from_env(**overrides)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings.log_format, settings.log_level)
    if settings.processes > 1:
        return Supervisor(settings).run()
    run_single_process(settings)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    extra = {"llm_base_url": args.llm_url} if args.llm_url else {}
    options = DemoOptions(events=args.events, users=args.users, processes=args.processes)
    return run_demo(options, extra)


def cmd_classify(args: argparse.Namespace) -> int:
    # Patterns: --patterns FILE, else --mongo (the stored set), else the shipped default set.
    settings = _settings(args) if (args.mongo or not args.no_llm) else None
    return classify_command(
        args.file,
        args.no_llm,
        sys.stdout,
        settings=settings,
        patterns_file=args.patterns,
        use_stored_patterns=args.mongo,
        workers=args.workers,
        pool_threshold=args.pool_threshold,
    )


def cmd_patterns(args: argparse.Namespace) -> int:
    if args.action == "learned":
        return learned_command(_settings(args), args.reject, sys.stdout, approve=args.approve)
    return patterns_command(args.action, _settings(args), args.file, sys.stdout)


BENCH_MOVED = """\
pomocore bench: the benchmarks are not part of the installed package.
They live in the repository (benchmarks/, with their tools: Celery, matplotlib, py-spy);
run them from the root of a checkout:

    make bench                                   # the whole session, defaults
    .venv/bin/python -m benchmarks --quick       # every variant, small sizes (~1 min)
    .venv/bin/python -m benchmarks --help        # the options `pomocore bench` had

Figures and how they were measured: benchmarks/README.md.
"""


def cmd_bench(args: argparse.Namespace) -> int:
    # An entry that only points to the harness (it imports nothing from benchmarks/): a
    # wheel or container image has neither the harness nor its tools.
    print(BENCH_MOVED, end="", file=sys.stderr)
    return 2


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("json", "text"), help="POMOCORE_LOG_FORMAT")
    p.add_argument("--log-level", help="POMOCORE_LOG_LEVEL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pomocore",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pomocore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the long-lived consumer (settings from POMOCORE_*)")
    run.add_argument("--processes", type=int, help="consumer processes (POMOCORE_PROCESSES)")
    run.add_argument("--batch-size", type=int, help="entries per read (POMOCORE_BATCH_SIZE)")
    run.add_argument("--consumer", help="consumer name (POMOCORE_CONSUMER_NAME)")
    run.add_argument("--metrics-port", type=int, help="POMOCORE_METRICS_PORT")
    _add_common(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="publish a synthetic workload and consume it, with summary")
    demo.add_argument("--events", type=int, default=30_000)
    demo.add_argument("--users", type=int, default=3_000)
    demo.add_argument("--processes", type=int, default=1)
    demo.add_argument("--llm-url", help="an OpenAI-compatible base URL to use as the LLM")
    demo.set_defaults(func=cmd_demo)

    classify = sub.add_parser("classify", help="classify JSONL (app,title,url) from FILE or stdin")
    classify.add_argument("file", nargs="?")
    classify.add_argument("--no-llm", action="store_true", help="patterns only")
    classify.add_argument("--patterns", help="pattern file instead of the defaults")
    classify.add_argument("--mongo", action="store_true", help="use the patterns stored in MongoDB")
    add_pool_arguments(classify)
    classify.set_defaults(func=cmd_classify)

    patterns = sub.add_parser("patterns", help="manage category patterns in MongoDB")
    patterns.add_argument("action", choices=("load", "export", "check", "learned"))
    patterns.add_argument("file", nargs="?", help="pattern file for load")
    review = patterns.add_mutually_exclusive_group()
    review.add_argument("--reject", help="with learned: reject this learned or pending pattern")
    review.add_argument("--approve", help="with learned: make this pending pattern active")
    patterns.set_defaults(func=cmd_patterns)

    # Any arguments (the harness's options of old, --help) get the same explanation.
    bench = sub.add_parser(
        "bench", help="how to run the benchmarks (from a checkout)", add_help=False
    )
    bench.set_defaults(func=cmd_bench)

    dlq.register(sub)  # dlq list|replay|purge
    ops_cli.register(sub, leaderboard_actions=[rebuild.register])  # check, leaderboard, acl
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"pomocore: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
