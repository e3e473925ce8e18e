"""`pomocore classify` and `pomocore patterns load|export|check`.

shell/cli.py (`pomocore`) registers the subcommands and calls these functions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

from pomocore import exits
from pomocore.classifiers.check import check_pattern_set
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import (
    PatternSet,
    documents_to_json,
    load_default_pattern_set,
    load_pattern_file,
)
from pomocore.classifiers.pool import CLI_POOL_THRESHOLD, ClassifierPool
from pomocore.classifiers.store import publish_change, read_stored_patterns, save_patterns
from pomocore.cli_format import bounded_int, write_json
from pomocore.core.connect import CLI_TIMEOUT_S, async_mongo, async_redis
from pomocore.core.decision import ClassKey, Decision
from pomocore.core.errors import PomocoreError
from pomocore.core.settings import Settings

PATTERN_ACTIONS = ("load", "export", "check")


# --- pomocore classify -----------------------------------------------------------------


def classify_command(
    path: str | None,
    no_llm: bool,
    out: TextIO,
    *,
    settings: Settings | None = None,
    patterns_file: str | None = None,
    inp: TextIO | None = None,
    err: TextIO | None = None,
    use_stored_patterns: bool = True,
    workers: int = 0,
    pool_threshold: int = CLI_POOL_THRESHOLD,
) -> int:
    """Classify JSONL events from `path` (or stdin) to `out`, adding category/source/pattern.

    Patterns come from `patterns_file`, else MongoDB when `settings` is given, else the
    shipped default set. Lines carrying `expected` are scored; the score goes to stderr.
    With `workers` > 0, a file of at least `pool_threshold` distinct (app, url, title)
    keys is classified by that many worker processes (docs/classification.md).
    Returns 0, or 1 if a line was not a JSON object.
    """
    err = err or sys.stderr
    try:
        source = settings if use_stored_patterns else None
        classifier = Classifier.from_patterns(_patterns_for_classify(source, patterns_file, err))
    except PomocoreError as exc:
        print(f"error: {exc}", file=err)
        return 2
    use_llm = not no_llm and settings is not None and settings.llm_enabled
    try:
        if path is None:
            events, status = _read_events(inp or sys.stdin, err)
        else:
            with open(path, encoding="utf-8", errors="replace") as fh:
                events, status = _read_events(fh, err)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror}", file=err)
        return 2
    keys = list(dict.fromkeys(_key(e) for e in events))
    found = _classify_keys(classifier, keys, workers, pool_threshold, err)
    decisions = dict(zip(keys, found, strict=True))
    undecided = [k for k, d in decisions.items() if not d.decided]
    if use_llm and undecided:
        assert settings is not None
        decisions.update(asyncio.run(_ask_llm(settings, undecided)))
    _write_events(events, decisions, out, err)
    return status


def _classify_keys(
    classifier: Classifier, keys: list[ClassKey], workers: int, threshold: int, err: TextIO
) -> list[Decision]:
    """Inline, or in `workers` processes for a big file: the pool costs ~40-90 ms to start
    and pickling a key costs about what classifying it does, so it pays only with spare
    cores and many keys (never measured to pay on 2 cores; docs/classification.md)."""
    if workers > 0 and len(keys) >= threshold:
        pool = ClassifierPool(classifier.pattern_set, workers)
        try:
            decisions = pool.classify(keys)
        except Exception as exc:  # a broken pool (killed worker) costs time, not the answer
            print(f"warning: classifier pool failed ({exc!r}); classifying inline", file=err)
        else:
            print(f"classified {len(keys)} distinct keys in {workers} processes", file=err)
            return decisions
        finally:
            pool.close()
    return [classifier.classify(*k) for k in keys]


def _key(event: dict[str, Any]) -> tuple[str, str, str]:
    return (_text(event, "app"), _text(event, "url"), _text(event, "title"))


def _read_events(lines: Iterable[str], err: TextIO) -> tuple[list[dict[str, Any]], int]:
    events: list[dict[str, Any]] = []
    status = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            print(f"line {n}: not a JSON object", file=err)
            status = 1
            continue
        events.append(event)
    return events, status


def _write_events(
    events: list[dict[str, Any]],
    decisions: dict[tuple[str, str, str], Any],
    out: TextIO,
    err: TextIO,
) -> None:
    scored = wrong = 0
    for event in events:
        d = decisions[_key(event)]
        event.update(category=d.category, source=d.source, pattern=d.pattern)
        out.write(orjson.dumps(event).decode() + "\n")
        if "expected" in event:
            scored += 1
            wrong += event["expected"] != d.category
    if scored:
        print(f"{scored - wrong}/{scored} match `expected`", file=err)


async def _ask_llm(settings: Settings, keys: list[tuple[str, str, str]]) -> dict[Any, Any]:
    """Verdicts for undecided keys from the configured LLM (budget and memory shared with
    the running consumers through Redis and MongoDB)."""
    # Loaded only when asked: the openai client costs 0.4 s of start-up (consumers/app.py).
    from pomocore.classifiers.llm.resolver import LLMResolver

    redis = async_redis(settings, socket_timeout=CLI_TIMEOUT_S)
    mongo = async_mongo(settings)
    resolver = LLMResolver.from_settings(settings, redis, mongo[settings.mongo_db])
    try:
        return await resolver.resolve(keys) if resolver is not None else {}
    finally:
        if resolver is not None:
            await resolver.close()
        await redis.aclose()
        await mongo.close()


def _text(event: dict[str, Any], field: str) -> str:
    value = event.get(field)
    return "" if value is None else value if isinstance(value, str) else str(value)


def _patterns_for_classify(
    settings: Settings | None, patterns_file: str | None, err: TextIO
) -> PatternSet:
    if patterns_file:
        return load_pattern_file(patterns_file)
    if settings is None:
        return load_default_pattern_set()
    try:
        stored = asyncio.run(_read_stored(settings))
    except Exception as exc:  # operators debug offline too
        print(f"warning: MongoDB unavailable ({exc}); using the default patterns", file=err)
        return load_default_pattern_set()
    return stored or load_default_pattern_set()


# --- pomocore patterns -----------------------------------------------------------------


def patterns_command(
    action: str,
    settings: Settings,
    path: str | None,
    out: TextIO,
    *,
    as_json: bool = False,
    dry_run: bool = False,
) -> int:
    """`load FILE` stores a pattern file and announces it (`--dry-run`: checks it, stores
    nothing); `export` prints the stored set; `check [FILE]` reports overlaps and
    unreachable patterns (exit 1 on any error). A backend that cannot be reached raises
    (the CLI's edge says so in one line, exit 3)."""
    if dry_run and action != "load":
        print("error: --dry-run goes with patterns load or reclassify", file=sys.stderr)
        return 2
    try:
        if action == "load":
            if not path:
                print("error: patterns load needs a FILE", file=sys.stderr)
                return 2
            return _load(settings, path, out, as_json, dry_run)
        if action == "export":
            stored = asyncio.run(_read_stored(settings)) or load_default_pattern_set()
            out.write(documents_to_json(stored) + "\n")
            return 0
        if action == "check":
            checked = load_pattern_file(path) if path else asyncio.run(_read_stored(settings))
            return _report(checked or load_default_pattern_set(), out, as_json)
    except PomocoreError as exc:
        if exits.translate(exc, settings.redis_url, settings.mongo_uri) is not None:
            raise  # MongoDB or Redis unavailable: exit 3 at the edge, not "bad patterns"
        print(f"error: {exc}", file=out)
        return 1
    print(f"error: unknown action {action!r}; choose {', '.join(PATTERN_ACTIONS)}", file=sys.stderr)
    return 2


def _load(settings: Settings, path: str, out: TextIO, as_json: bool, dry_run: bool) -> int:
    pattern_set = load_pattern_file(path)
    counter = None if dry_run else asyncio.run(_store_and_announce(settings, pattern_set))
    findings = check_pattern_set(pattern_set)
    errors = sum(f.level == "error" for f in findings)
    doc = {
        "file": path,
        "patterns_version": pattern_set.version,
        "categories": len(pattern_set.entries),
        "patterns": sum(
            len(e.app_patterns) + len(e.domain_patterns) + len(e.title_rules)
            for e in pattern_set.entries
        ),
        "errors": errors,
        "warnings": len(findings) - errors,
        "dry_run": dry_run,
        "counter": counter,
    }
    if as_json:
        write_json(doc, out)
    elif dry_run:
        print(
            f"would load {path}: patterns {pattern_set.version}, {doc['categories']} categories, "
            f"{doc['patterns']} patterns; check: {errors} error(s), {doc['warnings']} "
            "warning(s); nothing stored (--dry-run)",
            file=out,
        )
    else:
        print(f"loaded {path}: patterns {pattern_set.version}, counter {counter}", file=out)
    return 0


def _report(pattern_set: PatternSet, out: TextIO, as_json: bool = False) -> int:
    findings = check_pattern_set(pattern_set)
    errors = sum(f.level == "error" for f in findings)
    if as_json:
        write_json(
            {
                "patterns_version": pattern_set.version,
                "findings": [{"level": f.level, "message": f.message} for f in findings],
                "errors": errors,
                "warnings": len(findings) - errors,
            },
            out,
        )
    else:
        for f in findings:
            print(f, file=out)
        print(f"{errors} error(s), {len(findings) - errors} warning(s)", file=out)
    return 1 if errors else 0


async def _read_stored(settings: Settings) -> PatternSet | None:
    client = async_mongo(settings)
    try:
        return await read_stored_patterns(client[settings.mongo_db])
    finally:
        await client.close()


async def _store_and_announce(settings: Settings, pattern_set: PatternSet) -> int:
    client = async_mongo(settings)
    redis = async_redis(settings, socket_timeout=CLI_TIMEOUT_S)
    try:
        await save_patterns(client[settings.mongo_db], pattern_set)
        return await publish_change(redis, settings.keys)
    finally:
        await client.close()
        await redis.aclose()


def add_pool_arguments(
    p: argparse.ArgumentParser, what: str = "big files", where: str = "", prefix: str = ""
) -> None:
    """`--workers` / `--pool-threshold` of `classify` and `patterns reclassify` (shell/cli.py):
    `what` is classified in the pool when it holds at least the threshold of distinct keys
    (`where`: of what)."""
    p.add_argument(
        "--workers",
        type=bounded_int(0, 64),
        default=0,
        metavar="N",
        help=f"{prefix}classify {what} in N worker processes (0 = inline; pays only with "
        "spare cores)",
    )
    p.add_argument(
        "--pool-threshold",
        type=bounded_int(1, 100_000_000),
        default=CLI_POOL_THRESHOLD,
        metavar="N",
        help=f"{prefix}distinct keys{where} from which --workers is used",
    )
