from __future__ import annotations

from pathlib import Path

import pytest

from pomocore.core.errors import ConfigError
from pomocore.core.settings import Settings, redact

BAD = [
    ({"POMOCORE_BATCH_SIZE": "abc"}, "POMOCORE_BATCH_SIZE"),
    ({"POMOCORE_BATCH_SIZE": "0"}, "POMOCORE_BATCH_SIZE"),
    ({"POMOCORE_BATCH_SIZE": "100000"}, "POMOCORE_BATCH_SIZE"),
    ({"POMOCORE_TIMEZONE": "Mars/Olympus"}, "POMOCORE_TIMEZONE"),
    ({"POMOCORE_METRICS_HOST": "localhost"}, "POMOCORE_METRICS_HOST"),
    ({"POMOCORE_METRICS_HOST": "0.0.0.0:9100"}, "POMOCORE_METRICS_HOST"),
    ({"POMOCORE_SINKS": "mongo,kafka"}, "POMOCORE_SINKS"),
    ({"POMOCORE_SINKS": "mongo"}, "POMOCORE_SINKS"),
    ({"POMOCORE_REDIS_URL": "localhost:6379"}, "POMOCORE_REDIS_URL"),
    ({"POMOCORE_MONGO_URI": "mysql://x"}, "POMOCORE_MONGO_URI"),
    ({"POMOCORE_LOG_FORMAT": "xml"}, "POMOCORE_LOG_FORMAT"),
    ({"POMOCORE_LLM_BASE_URL": "ftp://x"}, "POMOCORE_LLM_BASE_URL"),
    ({"POMOCORE_LLM_TIMEOUT_S": "-1"}, "POMOCORE_LLM_TIMEOUT_S"),
    ({"POMOCORE_STREAM": ""}, "POMOCORE_STREAM"),
    ({"POMOCORE_BLOCK_MS_FILE": "/etc/hostname"}, "POMOCORE_BLOCK_MS_FILE"),
    # a pool whose threshold exceeds the largest batch would never run (#15 §7)
    ({"POMOCORE_CLASSIFIER_POOL_WORKERS": "1"}, "POMOCORE_CLASSIFIER_POOL_THRESHOLD"),
    (
        {"POMOCORE_CLASSIFIER_POOL_WORKERS": "2", "POMOCORE_CLASSIFIER_POOL_THRESHOLD": "5000"},
        "POMOCORE_CLASSIFIER_POOL_THRESHOLD",
    ),
]


@pytest.mark.parametrize(("env", "setting"), BAD)
def test_bad_setting_names_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_defaults_follow_the_contract() -> None:
    s = Settings.from_env({})
    assert (s.stream, s.group, s.dead_letter_stream) == (
        "pattern_match_stream",
        "pattern_match_group",
        "pattern_match_stream:dlq",
    )
    assert s.session_score_stream == "session_score_stream"
    assert s.timezone == "Asia/Seoul"
    assert s.sinks == ("mongo", "leaderboard")
    assert not s.llm_enabled
    assert s.consumer_name  # host-pid


def test_secret_from_file_and_both_set_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-test\n")
    s = Settings.from_env({"POMOCORE_LLM_API_KEY_FILE": str(secret)})
    assert s.llm_api_key == "sk-test" and s.llm_enabled
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"POMOCORE_LLM_API_KEY_FILE": str(secret), "POMOCORE_LLM_API_KEY": "x"})
    assert info.value.setting == "POMOCORE_LLM_API_KEY"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"POMOCORE_MONGO_URI_FILE": str(tmp_path / "missing")})
    assert info.value.setting == "POMOCORE_MONGO_URI_FILE"


def test_cli_overrides_env_and_sinks_parse() -> None:
    s = Settings.from_env(
        {"POMOCORE_BATCH_SIZE": "10", "POMOCORE_SINKS": "leaderboard"}, batch_size=20
    )
    assert s.batch_size == 20 and s.sinks == ("leaderboard",)


def test_describe_redacts_secrets() -> None:
    s = Settings.from_env(
        {
            "POMOCORE_REDIS_URL": "redis://worker:hunter2@db:6379/0",
            "POMOCORE_LLM_API_KEY": "sk-secret",
        }
    )
    described = s.describe()
    assert "hunter2" not in str(described) and "sk-secret" not in str(described)
    assert described["redis_url"] == "redis://worker:***@db:6379/0"
    assert redact("mongodb://h:27017") == "mongodb://h:27017"


def test_logs_never_carry_uri_passwords() -> None:
    import io
    import logging

    from pomocore.core.logs import JsonFormatter, TextFormatter, scrub

    assert scrub("cannot reach redis://worker:hunter2@db:6379/0") == (
        "cannot reach redis://worker:***@db:6379/0"
    )
    assert scrub("mongodb://a:b@h1,h2/?x=1 and rediss://:pw@h") == (
        "mongodb://a:***@h1,h2/?x=1 and rediss://:***@h"
    )
    for formatter in (JsonFormatter(), TextFormatter()):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        logger = logging.getLogger(f"scrub-{type(formatter).__name__}")
        logger.addHandler(handler)
        logger.warning("failed %s", "mongodb://u:s3cret@m:27017", extra={"uri": "redis://:s3cret@r"})
        assert "s3cret" not in stream.getvalue() and "***" in stream.getvalue()


def test_mongo_timeout_must_end_well_within_the_reclaim_idle() -> None:
    """Issue #13 §4: a MongoDB wait never outlasts half the reclaim idle."""
    env = {"POMOCORE_RECLAIM_IDLE_MS": "2000"}  # the default MongoDB timeout is 5000 ms
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.setting == "POMOCORE_MONGO_TIMEOUT_MS"
    assert "POMOCORE_RECLAIM_IDLE_MS" in str(info.value)
    assert Settings.from_env({**env, "POMOCORE_MONGO_TIMEOUT_MS": "1000"}).mongo_timeout_ms == 1000
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "POMOCORE_MONGO_TIMEOUT_MS": "1001"})
    # without the MongoDB sink there is no MongoDB wait to bound
    assert Settings.from_env({**env, "POMOCORE_SINKS": "leaderboard"}).reclaim_idle_ms == 2000
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"POMOCORE_MONGO_TIMEOUT_MS": "50"})
    assert info.value.setting == "POMOCORE_MONGO_TIMEOUT_MS"


def test_a_pool_threshold_within_the_batch_size_is_accepted() -> None:
    s = Settings.from_env(
        {"POMOCORE_CLASSIFIER_POOL_WORKERS": "2", "POMOCORE_CLASSIFIER_POOL_THRESHOLD": "1000"}
    )
    assert (s.classifier_pool_workers, s.classifier_pool_threshold) == (2, 1000)
