"""Where each setting comes from (`pomocore config`), and the OpenAI SDK's variables as
fallbacks of the LLM settings (docs/migrating.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pomocore.config_cli import config_rows, config_table
from pomocore.core.errors import ConfigError
from pomocore.core.settings import Settings, Source, setting_sources
from tests.support.processes import run_cli

# (environment, llm_api_key, llm_base_url, source of the key, source of the URL)
FALLBACKS = [
    ({}, "", "", Source("default"), Source("default")),
    (
        {"OPENAI_API_KEY": "sk-sdk", "OPENAI_BASE_URL": "https://sdk.example/v1"},
        "sk-sdk", "https://sdk.example/v1",
        Source("fallback", "OPENAI_API_KEY"), Source("fallback", "OPENAI_BASE_URL"),
    ),
    (  # pomocore's own variable wins, even when set empty
        {"OPENAI_API_KEY": "sk-sdk", "POMOCORE_LLM_API_KEY": "sk-ours",
         "OPENAI_BASE_URL": "https://sdk.example/v1", "POMOCORE_LLM_BASE_URL": ""},
        "sk-ours", "",
        Source("env", "POMOCORE_LLM_API_KEY"), Source("env", "POMOCORE_LLM_BASE_URL"),
    ),
    (  # an empty SDK variable is no value
        {"OPENAI_API_KEY": ""}, "", "", Source("default"), Source("default"),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("env", "key", "url", "key_source", "url_source"), FALLBACKS)
def test_openai_variables_are_fallbacks(
    env: dict[str, str], key: str, url: str, key_source: Source, url_source: Source
) -> None:
    settings = Settings.from_env(env)
    assert (settings.llm_api_key, settings.llm_base_url) == (key, url)
    sources = setting_sources(env)
    assert (sources["llm_api_key"], sources["llm_base_url"]) == (key_source, url_source)
    assert settings.llm_enabled == bool(key or url)


def test_a_secret_file_wins_over_the_openai_fallback(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-file\n")
    env = {"POMOCORE_LLM_API_KEY_FILE": str(path), "OPENAI_API_KEY": "sk-sdk"}
    assert Settings.from_env(env).llm_api_key == "sk-file"
    assert setting_sources(env)["llm_api_key"] == Source("file", "POMOCORE_LLM_API_KEY_FILE")


def test_a_bad_openai_base_url_names_the_setting_and_the_fallback() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"OPENAI_BASE_URL": "api.openai.com"})
    assert info.value.setting == "POMOCORE_LLM_BASE_URL"
    assert "OPENAI_BASE_URL" in str(info.value)


def test_sources_of_flags_env_and_defaults() -> None:
    sources = setting_sources({"POMOCORE_BATCH_SIZE": "10"}, processes=2, log_level=None)
    assert sources["batch_size"] == Source("env", "POMOCORE_BATCH_SIZE")
    assert sources["processes"] == Source("flag")
    assert sources["log_level"] == Source("default")


def test_config_rows_redact_secrets(tmp_path: Path) -> None:
    path = tmp_path / "url"
    path.write_text("redis://worker:hunter2@redis:6379/0")
    env = {"POMOCORE_REDIS_URL_FILE": str(path), "OPENAI_API_KEY": "sk-secret"}
    rows = {r["variable"]: r for r in config_rows(Settings.from_env(env), env)}
    assert rows["POMOCORE_REDIS_URL"] == {
        "variable": "POMOCORE_REDIS_URL",
        "value": "redis://worker:***@redis:6379/0",
        "source": "file",
        "read_from": "POMOCORE_REDIS_URL_FILE",
    }
    assert rows["POMOCORE_LLM_API_KEY"]["value"] == "***"
    assert rows["POMOCORE_LLM_API_KEY"]["read_from"] == "OPENAI_API_KEY"
    assert rows["POMOCORE_SINKS"]["value"] == ["mongo", "leaderboard"]
    assert "hunter2" not in json.dumps(list(rows.values()))


def test_config_command_table_and_json(tmp_path: Path) -> None:
    env = {"POMOCORE_BATCH_SIZE": "50", "OPENAI_API_KEY": "sk-secret"}
    table = run_cli("config", env=env)
    assert table.returncode == 0
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == ["setting", "source", "value"]
    assert any(line.split() == ["POMOCORE_BATCH_SIZE", "env", "50"] for line in lines)
    assert any(
        line.split() == ["POMOCORE_LLM_API_KEY", "fallback", "OPENAI_API_KEY", "***"]
        for line in lines
    )
    assert b"sk-secret" not in table.stdout
    doc = json.loads(run_cli("config", "--json", env=env).stdout)
    assert doc["valid"] is True
    assert {r["variable"] for r in doc["settings"]} >= {"POMOCORE_BATCH_SIZE", "POMOCORE_REDIS_URL"}


def test_config_table_keeps_a_long_value_out_of_the_other_columns() -> None:
    """A value longer than any column (a consumer name, a URL) used to run into the source
    column; the value is now the last column, whole, and the others line up."""
    long_name = "consumer-" + "x" * 120
    rows = config_rows(Settings.from_env({"POMOCORE_CONSUMER_NAME": long_name}),
                       {"POMOCORE_CONSUMER_NAME": long_name})  # fmt: skip
    lines = config_table(rows).splitlines()
    header = lines[0]
    source_at, value_at = header.index("source"), header.index("value")
    for line, row in zip(lines[1:], rows, strict=True):
        assert line.startswith(row["variable"]) and line[source_at - 1] == " ", line
        assert line[source_at:].startswith(row["source"]), line
        assert line[value_at - 1] == " ", line
    (consumer,) = [line for line in lines if line.startswith("POMOCORE_CONSUMER_NAME ")]
    assert consumer[source_at:value_at].strip() == "env"
    assert consumer[value_at:] == long_name  # whole, at the end of its line
