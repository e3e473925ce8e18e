"""pomocore: count activity events from a Redis Stream into category leaderboards.

Run the consumer (`pomocore run`), try it on embedded servers (`pomocore demo`), classify
events, manage patterns and dead letters, read and rebuild leaderboards. Every setting is
a POMOCORE_* environment variable (see the README); a bad one exits 2 naming it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import shtab

from pomocore import (
    __version__,
    config_cli,
    dlq,
    exits,
    materialize,
    ops_cli,
    rebuild,
    reclassify,
    route,
    status,
)
from pomocore.classify_cli import add_pool_arguments, classify_command, patterns_command
from pomocore.cli_format import HelpFormatter, add_json, bounded_int, logging_parent
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
    options = DemoOptions(
        events=args.events, users=args.users, processes=args.processes, as_json=args.json
    )
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
    if args.action == "reclassify":
        return cmd_reclassify(args)
    if args.after is not None or args.page_size is not None or args.workers:
        print("error: --after, --page-size and --workers go with patterns reclassify",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.action == "learned":
        return learned_command(
            _settings(args), args.reject, sys.stdout, approve=args.approve, as_json=args.json
        )
    return patterns_command(
        args.action, _settings(args), args.file, sys.stdout, as_json=args.json, dry_run=args.dry_run
    )


def cmd_reclassify(args: argparse.Namespace) -> int:
    if args.file:
        print("error: patterns reclassify takes no FILE: it uses the stored patterns (load "
              "them first)", file=sys.stderr)  # fmt: skip
        return 2
    return reclassify.reclassify_command(
        _settings(args),
        sys.stdout,
        after=args.after,
        page_size=args.page_size,
        workers=args.workers,
        pool_threshold=args.pool_threshold,
        dry_run=args.dry_run,
        as_json=args.json,
    )


BENCH_MOVED = """\
pomocore bench: the benchmarks are not part of the installed package.
They live in the repository (benchmarks/, with their tools: Celery, matplotlib, py-spy);
run them from the root of a checkout:

    make bench                                   # the whole session, defaults
    .venv/bin/python -m benchmarks --quick       # every variant, small sizes (~1 min)
    .venv/bin/python -m benchmarks --help        # the options `pomocore bench` had
    .venv/bin/python -m benchmarks --shards 1,3,6   # sharding on a local 3-node cluster

Figures and how they were measured: benchmarks/README.md.
"""


def cmd_bench(args: argparse.Namespace) -> int:
    # An entry that only points to the harness (it imports nothing from benchmarks/): a
    # wheel or container image has neither the harness nor its tools.
    print(BENCH_MOVED, end="", file=sys.stderr)
    return 2


USAGE_DESCRIPTION = (
    "Count activity events from a Redis Stream into category leaderboards, exactly once."
)

USAGE_EPILOG = """\
start with:
  pomocore demo                 the whole pipeline on embedded servers, in about a minute
  pomocore run --processes 2    consume the stream of POMOCORE_REDIS_URL for real
  pomocore status               is it healthy? lag, consumers, dead letters, LLM
  pomocore config               the settings in effect, and where each came from

Settings are POMOCORE_* environment variables (README, "Configuration"); the options of
a command override some of them. `pomocore COMMAND --help` lists a command's options.

exit codes: 0 ok, 1 check failed or not found, 2 usage or configuration error,
3 Redis or MongoDB unavailable.
shell completion: eval "$(pomocore completion bash)"   (or zsh, tcsh)
"""


def cmd_completion(args: argparse.Namespace) -> int:
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def _use_formatter(parser: argparse.ArgumentParser) -> None:
    """Every (sub)parser states defaults the same way (subparsers do not inherit it), and
    a command's `--help` opens with the line that describes it in its parent's list
    (argparse shows that line only in the list)."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                if child.description is None:
                    child.description = helps.get(name)
                _use_formatter(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pomocore", description=USAGE_DESCRIPTION, epilog=USAGE_EPILOG
    )
    parser.add_argument("--version", action="version", version=f"pomocore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    common = logging_parent()
    # In the order a newcomer needs them: try, run, watch, then the tools.
    _add_run(sub, common)
    _add_demo(sub)
    status.register(sub, common)
    config_cli.register(sub)
    # check, leaderboard (top, rank, serve, refresh, rebuild, materialize), acl
    ops_cli.register(sub, leaderboard_actions=[rebuild.register, materialize.register])
    dlq.register(sub)  # dlq list|replay|purge
    route.register(sub)  # route, shards
    _add_patterns(sub)
    _add_classify(sub)
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument(
        "shell",
        choices=("bash", "zsh", "tcsh"),
        help='the shell: eval "$(pomocore completion bash)"',
    )
    completion.set_defaults(func=cmd_completion)
    # Any arguments (the harness's options of old, --help) get the same explanation.
    bench = sub.add_parser(
        "bench", help="how to run the benchmarks (from a checkout)", add_help=False
    )
    bench.set_defaults(func=cmd_bench)
    _use_formatter(parser)
    return parser


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", parents=[common], help="run the consumer (the long-lived service)")
    run.add_argument(
        "--processes",
        type=bounded_int(1, 64),
        help="consumer processes (default: $POMOCORE_PROCESSES, else 1)",
    )
    run.add_argument(
        "--batch-size",
        type=bounded_int(1, 5_000),
        help="entries per read (default: $POMOCORE_BATCH_SIZE, else 1000)",
    )
    run.add_argument(
        "--consumer",
        help="consumer name in the group (default: $POMOCORE_CONSUMER_NAME, else host-pid)",
    )
    run.add_argument(
        "--metrics-port",
        type=bounded_int(0, 65535),
        help="/metrics and probes port, 0 = off (default: $POMOCORE_METRICS_PORT, else 0)",
    )
    run.set_defaults(func=cmd_run)


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="try it: embedded servers, a synthetic workload consumed, a summary"
    )
    demo.add_argument(
        "--events", type=bounded_int(1, 100_000_000), default=30_000, help="events to publish"
    )
    demo.add_argument(
        "--users", type=bounded_int(1, 10_000_000), default=3_000, help="distinct users"
    )
    demo.add_argument("--processes", type=bounded_int(1, 64), default=1, help="consumer processes")
    demo.add_argument(
        "--llm-url", help="an OpenAI-compatible base URL to use as the LLM (default: none)"
    )
    add_json(demo, "the summary")
    demo.set_defaults(func=cmd_demo)


def _add_classify(sub: Any) -> None:
    classify = sub.add_parser("classify", help="classify JSONL (app,title,url) from FILE or stdin")
    classify.add_argument("file", nargs="?", help="JSONL events (default: stdin)")
    classify.add_argument("--no-llm", action="store_true", help="patterns only")
    classify.add_argument(
        "--patterns", help="pattern file (default: --mongo's set, else the shipped defaults)"
    )
    classify.add_argument("--mongo", action="store_true", help="use the patterns stored in MongoDB")
    add_pool_arguments(classify)
    classify.set_defaults(func=cmd_classify)


PATTERNS_EPILOG = """\
reclassify: after `patterns load`, bring the stored categorized_data records to the
patterns now stored (load first, then reclassify). A verdict of the LLM is kept, and so
is the category of a key the patterns now leave undecided. Usage logs and leaderboards
are not rewritten: past time stays counted, exactly once, under the category it was
counted with. (`leaderboard rebuild --from-mongo` recomputes leaderboards from the usage
logs' own categories, so it does not move past time either.)
"""


def _add_patterns(sub: Any) -> None:
    patterns = sub.add_parser(
        "patterns",
        help="manage category patterns in MongoDB; reclassify stored records",
        epilog=PATTERNS_EPILOG,
    )
    patterns.add_argument(
        "action",
        choices=("load", "export", "check", "learned", "reclassify"),
        help="load FILE: store a pattern set (consumers reload it); export: print the stored "
        "set; check [FILE]: report overlaps and errors; learned: list, --approve or --reject "
        "the LLM's patterns; reclassify: bring the stored records to the stored set",
    )
    patterns.add_argument(
        "file",
        nargs="?",
        help="pattern file of load and check (default: check reads the stored set)",
    )
    review = patterns.add_mutually_exclusive_group()
    review.add_argument(
        "--reject", help="with learned: reject this learned or pending pattern (default: list)"
    )
    review.add_argument(
        "--approve", help="with learned: make this pending pattern active (default: list)"
    )
    patterns.add_argument(
        "--dry-run",
        action="store_true",
        help="with load: check FILE, store nothing; with reclassify: count, write nothing",
    )
    add_json(patterns, "check, learned, load and reclassify's report")
    reclassify.add_arguments(patterns)
    add_pool_arguments(patterns, "pages", " of a page", prefix="with reclassify: ")
    patterns.set_defaults(func=cmd_patterns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pomocore dlq list | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # 128 + SIGPIPE, what a shell reports for a killed writer
    except Exception as exc:  # driver and configuration errors: one line, exit 2 or 3
        error = exits.translate(exc, *exits.addresses())
        if error is None:
            raise
        return exits.report(error, sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(main())
