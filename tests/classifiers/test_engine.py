"""Every rule of CONTRACT §6, table-driven, on small pattern sets built for the rule."""

from __future__ import annotations

import pytest

from pomocore.classifiers.engine import Classifier
from tests.support.patterns import make_classifier

BROWSERS = {"category": "Browsing", "appPatterns": ["Google Chrome", "Safari", "Arc"]}


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return make_classifier(
        BROWSERS,
        {
            "category": "Development",
            "priority": 30,
            "appPatterns": ["Code", "IntelliJ IDEA", "Terminal"],
            "domainPatterns": ["github.com", "localhost", "127.0.0.1", "[::1]"],
            "titleRules": [{"regex": r"\w\.(?:py|rs)\b", "scope": "app"}],
        },
        {"category": "Video Editing", "appPatterns": ["Adobe Premiere Pro"]},
        {"category": "Design", "appPatterns": ["Adobe Photoshop"]},
        {"category": "Entertainment", "priority": 170, "domainPatterns": ["youtube.com"]},
        {"category": "Music", "domainPatterns": ["music.youtube.com"]},
        {"category": "SNS", "domainPatterns": ["x.com"]},
        {"category": "E-commerce & Shopping", "domainPatterns": ["shopping.naver.com"]},
        {
            "category": "Education",
            "priority": 70,
            "titleRules": [{"keywords": ["lecture", "tutorial", "강의"], "on": ["youtube.com"]}],
        },
        {
            "category": "Documentation",
            "domainPatterns": ["atlassian.net/wiki", "docs.google.com"],
        },
        {
            "category": "Productivity",
            "domainPatterns": [
                "atlassian.net",
                "atlassian.net/browse",
                "atlassian.net/jira",
                "docs.google.com/spreadsheets",
            ],
        },
        {
            "category": "Communication",
            "priority": 130,
            "appPatterns": ["Microsoft Teams"],
        },
        {
            "category": "Meetings",
            "priority": 10,
            "titleRules": [{"keywords": ["meeting", "call"], "on": ["Microsoft Teams"]}],
        },
        {"category": "AFK", "appPatterns": ["loginwindow"]},
    )


CASES = [
    # longest whole-word app prefix, case-insensitive
    ("Adobe Premiere Pro 2026", "", "", "Video Editing", "app", "Adobe Premiere Pro"),
    ("adobe photoshop 2026", "", "", "Design", "app", "Adobe Photoshop"),
    ("Adobe", "", "", "Uncategorized", "default", ""),
    ("IntelliJ IDEA Ultimate", "", "", "Development", "app", "IntelliJ IDEA"),
    ("CODE", "", "x", "Development", "app", "Code"),
    ("Code.exe", "", "", "Development", "app", "Code"),
    ("Codex", "", "", "Uncategorized", "default", ""),  # whole words, not characters
    ("  Terminal  ", "", "", "Development", "app", "Terminal"),
    # browsers fall through to URL, then Browsing
    ("Google Chrome", "https://github.com/x", "", "Development", "domain", "github.com"),
    ("Google Chrome", "", "", "Browsing", "default", ""),
    ("Safari", "https://unknown.example/", "", "Browsing", "default", ""),
    ("Vivaldi", "https://unknown.example/", "", "Browsing", "default", ""),  # URL => browser
    # label boundaries and most specific host
    ("Arc", "https://notgithub.com/", "", "Browsing", "default", ""),
    ("Arc", "https://github.com.evil.example/", "", "Browsing", "default", ""),
    ("Arc", "https://gist.github.com/", "", "Development", "domain", "github.com"),
    ("Arc", "https://music.youtube.com/watch", "", "Music", "domain", "music.youtube.com"),
    ("Arc", "https://www.youtube.com/watch", "", "Entertainment", "domain", "youtube.com"),
    (
        "Arc",
        "https://shopping.naver.com/home",
        "",
        "E-commerce & Shopping",
        "domain",
        "shopping.naver.com",
    ),
    ("Arc", "https://xshopping.naver.com/", "", "Browsing", "default", ""),
    # case, port, userinfo, trailing dot, IPs
    ("Arc", "HTTPS://GitHub.COM/orgs", "", "Development", "domain", "github.com"),
    ("Arc", "https://github.com:8443/", "", "Development", "domain", "github.com"),
    ("Arc", "https://me:pw@github.com/", "", "Development", "domain", "github.com"),
    ("Arc", "https://github.com./", "", "Development", "domain", "github.com"),
    ("Arc", "http://localhost:3000/", "", "Development", "domain", "localhost"),
    ("Arc", "http://127.0.0.1:8000/", "", "Development", "domain", "127.0.0.1"),
    ("Arc", "http://10.127.0.0.1/", "", "Browsing", "default", ""),
    ("Arc", "http://[::1]:8000/", "", "Development", "domain", "[::1]"),
    # a domain in the path, query or fragment is not the host
    ("Arc", "https://x.com/github.com", "", "SNS", "domain", "x.com"),
    ("Arc", "https://unknown.example/?u=github.com", "", "Browsing", "default", ""),
    ("Arc", "https://unknown.example/#https://github.com", "", "Browsing", "default", ""),
    # path prefixes at segment boundaries
    (
        "Arc",
        "https://acme.atlassian.net/wiki/spaces/X",
        "",
        "Documentation",
        "domain",
        "atlassian.net/wiki",
    ),
    (
        "Arc",
        "https://acme.atlassian.net/browse/OPS-1",
        "",
        "Productivity",
        "domain",
        "atlassian.net/browse",
    ),
    (
        "Arc",
        "https://acme.atlassian.net/jira/software",
        "",
        "Productivity",
        "domain",
        "atlassian.net/jira",
    ),
    ("Arc", "https://acme.atlassian.net/wikipedia", "", "Productivity", "domain", "atlassian.net"),
    ("Arc", "https://acme.atlassian.net/wiki", "", "Documentation", "domain", "atlassian.net/wiki"),
    (
        "Arc",
        "https://docs.google.com/spreadsheets/d/1",
        "",
        "Productivity",
        "domain",
        "docs.google.com/spreadsheets",
    ),
    (
        "Arc",
        "https://docs.google.com/document/d/1",
        "",
        "Documentation",
        "domain",
        "docs.google.com",
    ),
    # title rules refine a match
    (
        "Arc",
        "https://www.youtube.com/watch?v=1",
        "Lecture 5: DP - YouTube",
        "Education",
        "title",
        "youtube.com + Lecture",
    ),
    (
        "Arc",
        "https://www.youtube.com/watch?v=1",
        "Rust tutorials",
        "Education",
        "title",
        "youtube.com + tutorials",
    ),
    (
        "Arc",
        "https://www.youtube.com/watch?v=1",
        "알고리즘 강의 1편",
        "Education",
        "title",
        "youtube.com + 강의",
    ),
    (
        "Arc",
        "https://www.youtube.com/watch?v=1",
        "Lectures? no, cats",
        "Education",
        "title",
        "youtube.com + Lectures",
    ),
    (
        "Arc",
        "https://www.youtube.com/watch?v=1",
        "Funny cats",
        "Entertainment",
        "domain",
        "youtube.com",
    ),
    (
        "Arc",
        "https://www.youtube.com/watch?v=1",
        "Prelecture-ish",
        "Entertainment",
        "domain",
        "youtube.com",
    ),
    (
        "Arc",
        "https://music.youtube.com/watch?v=1",
        "lecture",
        "Music",
        "domain",
        "music.youtube.com",
    ),
    (
        "Microsoft Teams",
        "",
        "Meeting with Design | Microsoft Teams",
        "Meetings",
        "title",
        "Microsoft Teams + Meeting",
    ),
    (
        "Microsoft Teams",
        "",
        "Chat | Jane | Microsoft Teams",
        "Communication",
        "app",
        "Microsoft Teams",
    ),
    (
        "Microsoft Teams (work or school)",
        "",
        "Call with Jane",
        "Meetings",
        "title",
        "Microsoft Teams + Call",
    ),
    # title rules decide when app and URL cannot (scope app: not for browsers)
    ("Zed", "", "main.py — project", "Development", "title", "n.py"),
    ("Arc", "https://unknown.example/", "main.py", "Browsing", "default", ""),
    ("Notepad", "", "notes.txt", "Uncategorized", "default", ""),
    # AFK, empty input
    ("loginwindow", "", "", "AFK", "app", "loginwindow"),
    ("", "", "", "Uncategorized", "default", ""),
]


@pytest.mark.parametrize(("app", "url", "title", "category", "source", "pattern"), CASES)
def test_rules(
    clf: Classifier, app: str, url: str, title: str, category: str, source: str, pattern: str
) -> None:
    d = clf.classify(app, url, title)
    assert (d.category, d.source, d.pattern) == (category, source, pattern)


def test_browser_detection(clf: Classifier) -> None:
    assert clf.is_browser("Google Chrome Canary")
    assert clf.is_browser("safari")
    assert not clf.is_browser("Archive Utility")  # `Arc` is a whole word, not a prefix
    assert not clf.is_browser("Code")
    assert not clf.is_browser("")


PRIORITY_DOCS = [
    BROWSERS,
    {"category": "SNS", "priority": 50, "appPatterns": ["Band"], "domainPatterns": ["band.us"]},
    {"category": "Music", "priority": 40, "appPatterns": ["Band"], "domainPatterns": ["band.us"]},
]


@pytest.mark.parametrize(
    ("app", "url", "expected"),
    [("Band", "", "Music"), ("Arc", "https://band.us/", "Music")],
)
def test_lower_priority_wins_a_shared_pattern(app: str, url: str, expected: str) -> None:
    assert make_classifier(*PRIORITY_DOCS).classify(app, url, "").category == expected


def test_equal_priority_ties_go_to_the_canonical_order() -> None:
    docs = [
        {"category": "Music", "priority": 1, "appPatterns": ["Band"]},
        {"category": "Design", "priority": 1, "appPatterns": ["band"]},
    ]
    # Design precedes Music in CATEGORIES; document order must not matter.
    assert make_classifier(*docs).classify("Band", "", "").category == "Design"
    assert make_classifier(*reversed(docs)).classify("Band", "", "").category == "Design"


def test_refinements_apply_in_priority_order() -> None:
    clf = make_classifier(
        BROWSERS,
        {"category": "Entertainment", "domainPatterns": ["youtube.com"]},
        {
            "category": "Music",
            "priority": 5,
            "titleRules": [{"keywords": ["live"], "on": ["youtube.com"]}],
        },
        {
            "category": "Education",
            "priority": 9,
            "titleRules": [{"keywords": ["lecture"], "on": ["youtube.com"]}],
        },
    )
    assert clf.classify("Arc", "https://youtube.com/", "live lecture").category == "Music"


def test_internal_pages_match_by_scheme_and_page() -> None:
    clf = make_classifier(
        {"category": "Browsing", "appPatterns": ["Arc"], "domainPatterns": ["chrome://newtab"]},
        {"category": "System & Utilities", "domainPatterns": ["chrome://"]},
    )
    assert clf.classify("Arc", "chrome://newtab/", "").source == "domain"
    assert clf.classify("Arc", "chrome://newtab/", "").category == "Browsing"
    assert clf.classify("Arc", "chrome://settings", "").category == "System & Utilities"
    assert clf.classify("Arc", "about:blank", "").source == "default"


def test_the_classifier_never_raises_on_a_broken_index() -> None:
    clf = make_classifier(BROWSERS)
    clf._domains = None  # type: ignore[assignment]  # simulate a bug
    assert clf.classify("Arc", "https://x.com", "").category == "Uncategorized"


def test_category_ids_cover_every_category(clf: Classifier) -> None:
    from pomocore.core.categories import CATEGORIES

    assert set(clf.category_ids) == set(CATEGORIES)
