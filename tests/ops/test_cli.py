"""`pomocore` behaves like a command-line tool: help that states each default, one exit
code per class of failure (docs/cli.md), one line instead of a traceback when a server is
away, `--json` that parses with the documented keys, completion scripts, progress that
keeps logs clean."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
import redis

from pomocore import __version__
from pomocore.cli import build_parser, main
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.embedded import free_port
from tests.ops.test_status import JSON_KEYS as STATUS_KEYS
from tests.support.consumer import drain
from tests.support.processes import run_cli, server_env
from tests.support.streams import now_fields, publish

ROOT = Path(__file__).resolve().parents[2]
PATTERNS_FILE = str(ROOT / "classifiers" / "data" / "default_patterns.json")
CLI_DOC = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


# --- help -------------------------------------------------------------------------------


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command's parser, with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, (*path, name))


COMMANDS = [path for path, p in parsers(build_parser()) if path and path != ("bench",)]


def test_version() -> None:
    result = run_cli("--version", env={})
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"pomocore {__version__}"
    # `python -m pomocore`, the same command (shell/__main__.py)
    module = subprocess.run([sys.executable, "-m", "pomocore", "--version"],
                            capture_output=True, timeout=60, check=False)  # fmt: skip
    assert (module.returncode, module.stdout) == (0, result.stdout)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in (CLI_DOC, readme):  # both entry points are documented
        assert "`pomocore --version`" in doc and "`python -m pomocore" in doc


def test_top_level_help_speaks_to_users() -> None:
    result = run_cli("--help", env={})
    text = result.stdout.decode()
    assert result.returncode == 0
    assert "start with:" in text and "exit codes: 0 ok" in text and "pomocore status" in text
    assert "Registered into" not in text and "pomocore.cli" not in text  # no developer notes


# What a help string says besides its required/default note.
_NOTES = re.compile(r"\((?:required|default: [^()]*(?:\([^()]*\)[^()]*)*)\)")


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_option_help_states_its_default(path: tuple[str, ...]) -> None:
    """Each option and positional says what it is (not only "(required)") and its default;
    each subcommand has a line in its parent's list, and opens its own --help with it."""
    parser = dict(parsers(build_parser()))[path]
    formatter = parser._get_formatter()
    assert parser.description, f"pomocore {' '.join(path)} --help does not say what it does"
    missing, unexplained = [], []
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            unexplained += [c.dest for c in action._choices_actions if not c.help]
            continue
        if not _NOTES.sub("", action.help or "").strip():
            unexplained.append(name)
        if not action.option_strings and action.nargs not in ("?", "*"):
            continue  # a required positional: nothing to default
        text = formatter._get_help_string(action) or ""
        if action.required:
            assert "required" in text, action.dest
        elif "default" not in text:
            missing.append(name)
    assert not missing, f"pomocore {' '.join(path)}: no default in the help of {missing}"
    assert not unexplained, f"pomocore {' '.join(path)}: no help text for {unexplained}"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("(required)", ""),
        ("category name, or work (required)", "category name, or work"),
        ("(default: $POMOCORE_LOG_LEVEL, else INFO)", ""),
        ("rows (default: 10 (or 5))", "rows"),
    ],
)
def test_help_notes_are_told_apart_from_what_the_help_says(text: str, said: str) -> None:
    assert _NOTES.sub("", text).strip() == said


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    assert f"usage: pomocore {' '.join(path)}" in capsys.readouterr().out


# --- exit codes -------------------------------------------------------------------------

# A command of each kind that reaches Redis (those reaching MongoDB first: below).
REDIS_COMMANDS = [
    ("status",),
    ("dlq", "list"),
    ("dlq", "replay"),
    ("leaderboard", "top", "--category", "work", "--period", "daily"),
    ("leaderboard", "refresh", "--wait-s", "0"),
    ("leaderboard", "rebuild", "--from-mongo", "--start", "2026-02-01", "--end", "2026-02-02"),
    ("patterns", "load", PATTERNS_FILE),
]


@pytest.mark.parametrize("args", [*REDIS_COMMANDS, ("config",)], ids=" ".join)
def test_a_bad_setting_exits_2_naming_it(args: tuple[str, ...]) -> None:
    result = run_cli(*args, env={"POMOCORE_BATCH_SIZE": "0"})
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert (
        line
        == "pomocore: configuration error: POMOCORE_BATCH_SIZE: must be between 1 and 5000, got 0"
    )


def test_a_usage_error_exits_2() -> None:
    result = run_cli("status", "--interval", "0", env={})
    assert result.returncode == 2
    assert "--interval: must be between 0.1 and 3600, got 0" in result.stderr.decode()


@pytest.mark.parametrize("args", REDIS_COMMANDS, ids=" ".join)
def test_unreachable_redis_is_one_line_exit_3(args: tuple[str, ...], settings: Settings) -> None:
    env = {
        **server_env(settings),
        "POMOCORE_REDIS_URL": f"redis://:s3cret@127.0.0.1:{free_port()}/0",
    }
    result = run_cli(*args, env=env)
    err = result.stderr.decode()
    assert result.returncode == 3, err
    (line,) = [line for line in err.splitlines() if not line.startswith("rebuild: ")]  # progress
    assert re.fullmatch(
        r"pomocore: Redis unavailable at redis://:\*\*\*@127\.0\.0\.1:\d+/0: .+", line
    )
    assert "s3cret" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [("patterns", "export"), ("patterns", "learned"), ("patterns", "reclassify")],
    ids=" ".join,
)
def test_unreachable_mongodb_is_one_line_exit_3(args: tuple[str, ...], settings: Settings) -> None:
    uri = f"mongodb://admin:s3cret@127.0.0.1:{free_port()}"
    result = run_cli(*args, env={**server_env(settings), "POMOCORE_MONGO_URI": uri})
    err = result.stderr.decode()
    assert result.returncode == 3, err
    (line,) = err.splitlines()
    assert line.startswith("pomocore: MongoDB unavailable at mongodb://admin:***@127.0.0.1:")
    assert "s3cret" not in err and "Traceback" not in err


def test_refused_credentials_are_a_configuration_error(settings: Settings) -> None:
    url = settings.redis_url.replace("redis://", "redis://nobody:wrong@", 1)
    result = run_cli("dlq", "list", env={"POMOCORE_REDIS_URL": url})
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.startswith(
        "pomocore: configuration error: POMOCORE_REDIS_URL: Redis at redis://nobody:***@"
    )
    assert "wrong" not in err and "Traceback" not in err


def test_not_found_exits_1(settings: Settings) -> None:
    rank = ("leaderboard", "rank", "--user", "nobody", "--category", "work", "--period", "daily")
    assert run_cli(*rank, env=server_env(settings)).returncode == 1
    approve = run_cli("patterns", "learned", "--approve", "nothing", env=server_env(settings))
    assert approve.returncode == 1
    assert run_cli("patterns", "check", "/nonexistent.json", env={}).returncode == 1


# --- --json -----------------------------------------------------------------------------

# The keys of each report (docs/cli.md lists them).
JSON_KEYS = {
    "dlq replay": {"dry_run", "stream", "count", "entries"},
    "dlq purge": {"deleted", "would_delete"},
    "patterns check": {"patterns_version", "findings", "errors", "warnings"},
    "patterns load": {
        "file", "patterns_version", "categories", "patterns", "errors", "warnings", "dry_run",
        "counter",
    },
    "patterns learned": {"patterns", "max_learned"},
    "patterns reclassify": {
        "dry_run", "patterns_version", "after", "last_id", "read", "changed", "unchanged",
        "skipped_llm", "kept_undecided", "conflicts", "relinked", "transitions", "page_size",
        "workers",
        "pooled_keys", "elapsed_s", "records_per_s",
    },
    "leaderboard rebuild": {"check", "keys_in_scope", "differ", "written", "pending", "diffs"},
    "leaderboard refresh": {"rebuilt"},
    "leaderboard materialize": {"written", "deleted", "members", "elapsed_s", "labels"},
    "config": {"valid", "settings"},
    "status": STATUS_KEYS,
    "demo": {
        "events_published", "elapsed_s", "events_per_s", "processes", "dead_letters",
        "session_scores", "classified", "top", "category_mix_percent", "consumer_exit_code",
    },
}  # fmt: skip


def one_document(result: object, code: int = 0) -> dict[str, object]:
    assert result.returncode == code, result.stderr  # type: ignore[attr-defined]
    (line,) = result.stdout.decode().splitlines()  # type: ignore[attr-defined]
    doc: dict[str, object] = json.loads(line)
    return doc


@pytest.mark.parametrize("command", sorted(JSON_KEYS))
def test_json_keys_are_documented(command: str) -> None:
    heading = f"\n### `pomocore {command}"
    assert heading in CLI_DOC, f"docs/cli.md has no section {heading.strip()}"
    section = CLI_DOC[CLI_DOC.index(heading) + 1 :].split("\n#", 1)[0]
    for key in JSON_KEYS[command]:
        assert f"`{key}`" in section, f"docs/cli.md: {command} --json: {key}"


def dead_letter(client: redis.Redis, settings: Settings, reason: str) -> None:
    client.xadd(
        settings.keys.dead_letter_key,
        {"userId": "u1", "app": "Code", "dlq.reason": reason, "dlq.entry_id": "1-0",
         "dlq.stream": settings.keys.stream_key},
    )  # fmt: skip


def test_dlq_replay_dry_run_then_replay_and_purge_json(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    dead_letter(client, settings, "invalid_json")
    dead_letter(client, settings, "max_deliveries")
    env = server_env(settings)
    dry = one_document(run_cli("dlq", "replay", "--dry-run", "--json", env=env))
    assert set(dry) == JSON_KEYS["dlq replay"] and dry["dry_run"] is True and dry["count"] == 2
    assert client.xlen(settings.keys.stream_key) == 0  # nothing moved
    purge = one_document(run_cli("dlq", "purge", "--json", env=env), code=1)  # needs --yes
    assert purge == {"deleted": 0, "would_delete": 2}
    result = run_cli("dlq", "replay", "--reason", "invalid_json", "--json", env=env)
    done = one_document(result)
    assert done["dry_run"] is False and done["count"] == 1
    assert client.xlen(settings.keys.stream_key) == 1
    progress = result.stderr.decode()  # not a terminal: plain lines, no carriage return
    assert (
        re.search(r"^dlq replay: 1/1 entries in \d+\.\d s$", progress, re.M)
        and "\r" not in progress
    )
    client.close()


def test_patterns_check_load_dry_run_and_learned_json(settings: Settings) -> None:
    env = server_env(settings)
    check = one_document(run_cli("patterns", "check", PATTERNS_FILE, "--json", env=env))
    assert set(check) == JSON_KEYS["patterns check"] and check["errors"] == 0
    load = run_cli("patterns", "load", PATTERNS_FILE, "--dry-run", "--json", env=env)
    dry = one_document(load)
    assert set(dry) == JSON_KEYS["patterns load"] and dry["dry_run"] is True
    assert dry["counter"] is None and dry["patterns_version"] == check["patterns_version"]
    mongo: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(settings.mongo_uri)
    assert mongo[settings.mongo_db].list_collection_names() == []  # nothing stored
    mongo.close()
    learned = one_document(run_cli("patterns", "learned", "--json", env=env))
    assert learned == {"patterns": [], "max_learned": 500}


def test_rebuild_check_and_refresh_json(settings: Settings) -> None:
    env = server_env(settings)
    args = ("--from-mongo", "--start", "2026-02-01", "--end", "2026-02-02", "--check", "--json")
    rebuilt = one_document(run_cli("leaderboard", "rebuild", *args, env=env))
    assert set(rebuilt) == JSON_KEYS["leaderboard rebuild"] and rebuilt["differ"] == 0
    refresh = one_document(run_cli("leaderboard", "refresh", "--json", env=env))
    assert refresh == {"rebuilt": 0}


async def test_rebuild_writes_plain_progress_lines_when_not_on_a_terminal(
    settings: Settings,
) -> None:
    """`leaderboard rebuild` end to end with its stderr on a pipe (shell/progress.py): one
    plain closing line per stage, with the counts, no bar and no carriage return; stdout
    keeps the report alone."""
    publish(settings.redis_url, settings.keys.stream_key,
            [now_fields(f"u{i % 3}", "Code", 10.0) for i in range(9)])  # fmt: skip
    await drain(settings)
    day = PeriodCalculator(settings.timezone)(time.time() - 60).daily
    client = redis.Redis.from_url(settings.redis_url)
    client.zincrby(settings.keys.leaderboard("work", day), 500.0, "u1")  # one key to repair
    client.close()
    args = ("leaderboard", "rebuild", "--from-mongo", "--start", day, "--end", day)
    result = run_cli(*args, env=server_env(settings))
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert "1 rewritten (1 written)" in out and "rebuild:" not in out
    assert "\r" not in err and "\x1b" not in err and "it/s" not in err  # no tqdm bar
    took = r"in \d+\.\d s"
    lines = [line for line in err.splitlines() if line.startswith("rebuild:")]
    assert len(lines) == 3, err
    assert re.fullmatch(rf"rebuild: usage logs read: 9 logs {took}", lines[0]), lines
    compared = re.fullmatch(rf"rebuild: keys compared: (\d+)/(\d+) keys {took}", lines[1])
    assert compared and compared[1] == compared[2] and int(compared[1]) >= 2, lines
    assert re.fullmatch(rf"rebuild: keys written: 1/1 keys {took}", lines[2]), lines


@pytest.mark.slow
def test_demo_json_summary(settings: Settings, tmp_path: Path) -> None:
    result = run_cli("demo", "--events", "300", "--users", "20", "--json", env=server_env(settings))
    summary = one_document(result)
    assert set(summary) == JSON_KEYS["demo"]
    assert summary["events_published"] == 300 and summary["consumer_exit_code"] == 0
    assert "demo: processed: 300/300 events" in result.stderr.decode()


# --- completion -------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_script_knows_the_commands(shell: str) -> None:
    result = run_cli("completion", shell, env={})
    assert result.returncode == 0
    script = result.stdout.decode()
    for word in ("status", "leaderboard", "rebuild", "dry-run"):  # tcsh lists options bare
        assert word in script, word
