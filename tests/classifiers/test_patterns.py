"""PatternSet: validation, deterministic ids, documents round trip, learned patterns."""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from pomocore.classifiers.check import check_pattern_set
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import (
    PatternSet,
    default_category_id,
    load_default_pattern_set,
    parse_pattern_file,
)
from pomocore.core.categories import CATEGORIES
from pomocore.core.errors import ClassifierError


def test_default_ids_are_deterministic_object_ids() -> None:
    ids = load_default_pattern_set().category_ids
    assert set(ids) == set(CATEGORIES)
    assert ids["Development"] == default_category_id("Development")
    assert isinstance(ids["Development"], ObjectId)
    assert len(set(ids.values())) == len(CATEGORIES)
    assert load_default_pattern_set().category_ids == ids


def test_documents_round_trip_keeps_unknown_fields_and_learned_metadata() -> None:
    docs: list[dict[str, Any]] = [
        {
            "category": "development",  # canonical spelling is restored
            "priority": 3,
            "appPatterns": ["Code", {"pattern": "Zed", "learned": True, "verdicts": 7}],
            "domainPatterns": [],
            "rejectedPatterns": ["Notepad"],
        }
    ]
    ps = PatternSet.from_documents(docs)
    dev = ps.get("Development")
    assert [(p.text, p.learned) for p in dev.app_patterns] == [("Code", False), ("Zed", True)]
    again = PatternSet.from_documents(ps.documents())
    assert again == ps and again.version == ps.version
    doc = next(d for d in again.documents() if d["category"] == "Development")
    assert doc["rejectedPatterns"] == ["Notepad"]
    assert doc["appPatterns"][1] == {"pattern": "Zed", "learned": True, "verdicts": 7}
    assert len(ps.documents()) == len(CATEGORIES)  # missing categories get a document


def test_version_changes_with_content_only() -> None:
    a = PatternSet.from_documents([{"category": "Music", "appPatterns": ["Spotify"]}])
    b = PatternSet.from_documents([{"category": "Music", "appPatterns": ["Spotify"]}])
    c = PatternSet.from_documents([{"category": "Music", "appPatterns": ["Melon"]}])
    assert a.version == b.version != c.version


def test_with_pattern_adds_a_learned_pattern_that_matches() -> None:
    ps = load_default_pattern_set().with_pattern("education", "domain", "newschool.example")
    assert ps.get("Education").domain_patterns[-1].learned
    d = Classifier.from_patterns(ps).classify("Arc", "https://a.newschool.example/x", "")
    assert (d.category, d.source, d.pattern) == ("Education", "domain", "newschool.example")


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        ([{"category": "Nope"}], "unknown category"),
        ([{"category": "Music"}, {"category": "music"}], "twice"),
        ([{"category": "Music", "priority": "1"}], "priority"),
        ([{"category": "Music", "appPatterns": "Spotify"}], "must be a list"),
        ([{"category": "Music", "appPatterns": [""]}], "empty"),
        ([{"category": "Music", "appPatterns": [3]}], "bad app pattern"),
        ([{"category": "Music", "domainPatterns": ["a b.com"]}], "space"),
        ([{"category": "Music", "titleRules": [{"keywords": []}]}], "keywords or a regex"),
        ([{"category": "Music", "titleRules": [{"regex": "("}]}], "bad title regex"),
        ([{"category": "Music", "titleRules": [{"keywords": ["x"], "scope": "all"}]}], "scope"),
        (["Music"], "must be an object"),
    ],
)
def test_invalid_documents_are_rejected(docs: list[Any], message: str) -> None:
    with pytest.raises(ClassifierError, match=message):
        PatternSet.from_documents(docs)


def test_toml_pattern_files_parse() -> None:
    text = '[[categories]]\ncategory = "Music"\nappPatterns = ["Spotify"]\n'
    ps = parse_pattern_file(text, "p.toml")
    assert [p.text for p in ps.get("Music").app_patterns] == ["Spotify"]
    with pytest.raises(ClassifierError, match="not valid JSON"):
        parse_pattern_file("{", "p.json")


def test_check_reports_overlaps_and_unreachable_rules() -> None:
    ps = PatternSet.from_documents(
        [
            {
                "category": "Music",
                "priority": 1,
                "appPatterns": ["Band"],
                "domainPatterns": ["x.com"],
            },
            {
                "category": "SNS",
                "priority": 2,
                "appPatterns": ["band"],
                "domainPatterns": ["www.x.com"],
            },
            {
                "category": "Education",
                "titleRules": [{"keywords": ["k"], "on": ["nowhere.example"]}],
            },
            {"category": "Game", "domainPatterns": [":8080/x"], "appPatterns": ["Steam", "steam"]},
        ]
    )
    found = [str(f) for f in check_pattern_set(ps)]
    assert any("'band' is claimed by Music and SNS" in f and f.startswith("ERROR") for f in found)
    assert any("'x.com' is claimed by Music and SNS" in f for f in found)
    assert any("refines 'nowhere.example'" in f for f in found)
    assert any("has no host" in f for f in found)
    assert any(f.startswith("WARNING") and "'steam' repeated in Game" in f for f in found)
    assert len(found) == 5
