"""The LLM path's workload and scripted model (benchmarks/llm_path.py), without servers:
its unknown events are ones no shipped pattern decides, the model answers one canonical
category per app/host (what learning needs), and the repeat pass sends new titles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.llm_path import TITLES_PER_SUBJECT, LlmWorkload, UnknownKeys, subject_rule
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import load_default_pattern_set
from pomocore.core.categories import BROWSING, canonical

ENGINE = Classifier.from_patterns(load_default_pattern_set())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), title_base=st.sampled_from([0, TITLES_PER_SUBJECT]))
def test_unknown_events_are_undecided_by_the_shipped_patterns(seed: int, title_base: int) -> None:
    w = LlmWorkload(
        users=50, distinct_variants=5, unknown_share=1.0, seed=seed, title_base=title_base
    )
    for _ in range(40):
        u = w.unknown()
        assert not ENGINE.classify(u["app"], u["url"], u["title"]).decided, u


@pytest.mark.parametrize(
    ("item", "same_as"),
    [
        (  # a host's verdict ignores path, title and browser
            {"app": "Safari", "url": "https://zentrovo30.example/p/7", "title": "Page 7"},
            {"app": "Google Chrome", "url": "https://www.zentrovo30.example/x", "title": "y"},
        ),
        (  # an app's verdict ignores the title
            {"app": "Quarkle03 Studio", "url": "", "title": "Untitled 1"},
            {"app": "Quarkle03 Studio", "url": "", "title": "Untitled 99"},
        ),
    ],
)
def test_the_scripted_model_answers_per_app_or_host(
    item: dict[str, str], same_as: dict[str, str]
) -> None:
    label = subject_rule(item)
    assert label == subject_rule(same_as)
    assert canonical(label) == label and label != BROWSING


def test_the_share_of_unknown_events_and_their_count() -> None:
    w = LlmWorkload(users=200, distinct_variants=20, unknown_share=0.25, seed=3)
    unknown = UnknownKeys()
    keys = set()
    n_unknown = 0
    for fields in w.events(4000):
        unknown.observe(fields)
        key = (fields.get("app"), fields.get("url"), fields.get("title"))
        keys.add(key)
        n_unknown += str(fields.get("app", "")).startswith("Quarkle") or "zentrovo" in str(
            fields.get("url", "")
        )
    assert 0.2 < n_unknown / 4000 < 0.3
    assert 0 < unknown.count < len(keys)


def test_the_repeat_pass_sends_titles_the_first_pass_never_sent() -> None:
    first = LlmWorkload(50, 5, 1.0, seed=1)
    repeat = LlmWorkload(50, 5, 1.0, seed=2, title_base=TITLES_PER_SUBJECT)
    titles_first = {first.unknown()["title"] for _ in range(500)}
    titles_repeat = {repeat.unknown()["title"] for _ in range(500)}
    assert not titles_first & titles_repeat
