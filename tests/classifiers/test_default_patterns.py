"""The shipped pattern set: the labelled dev sample scores 100%, and popular apps and sites
beyond the sample land where CONTRACT §5 says."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pomocore.classifiers.check import check_pattern_set
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import load_default_pattern_set
from pomocore.classify_cli import classify_command
from pomocore.core.decision import Decision

# The labelled dev sample of the contract, copied into the repository (tests/data/).
DEV_SET = Path(__file__).resolve().parents[1] / "data" / "labeled_events.dev.jsonl"


def test_dev_set_scores_100_percent_through_classify_command() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert classify_command(str(DEV_SET), True, out, err=err) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 68
    wrong = [r for r in rows if r["category"] != r["expected"]]
    assert wrong == []
    assert "68/68 match" in err.getvalue()


def test_default_set_has_no_check_errors() -> None:
    assert [f for f in check_pattern_set(load_default_pattern_set()) if f.level == "error"] == []


def test_default_set_is_large_and_covers_every_category_but_uncategorized() -> None:
    ps = load_default_pattern_set()
    sizes = {e.category: len(e.app_patterns) + len(e.domain_patterns) for e in ps.entries}
    assert sum(sizes.values()) > 1000
    assert [c for c, n in sizes.items() if n == 0] == ["Uncategorized"]


BROADER = [
    # desktop apps as macOS and Windows report them
    ("Visual Studio Code", "", "", "Development"),
    ("Code.exe", "", "", "Development"),
    ("WindowsTerminal.exe", "", "", "Development"),
    ("PyCharm 2025.1", "", "", "Development"),
    ("DataGrip", "", "", "Development"),
    ("Cursor", "", "", "Development"),
    ("Claude", "", "", "LLM"),
    ("WINWORD.EXE", "", "", "Documentation"),
    ("Microsoft OneNote", "", "", "Documentation"),
    ("Adobe Illustrator 2026", "", "", "Design"),
    ("Adobe After Effects 2026", "", "", "Video Editing"),
    ("DaVinci Resolve", "", "", "Video Editing"),
    ("EXCEL.EXE", "", "", "Productivity"),
    ("Keynote", "", "", "Productivity"),
    ("Linear", "", "", "Productivity"),
    ("영웅문4", "", "", "Finance"),
    ("File Explorer", "", "", "File Management"),
    ("explorer.exe", "", "", "File Management"),
    ("Raycast", "", "", "System & Utilities"),
    ("Task Manager", "", "", "System & Utilities"),
    ("Webex", "", "", "Meetings"),
    ("Microsoft Outlook", "", "", "Communication"),
    ("Discord", "", "voice channel", "Communication"),
    ("LINE", "", "", "SNS"),
    ("Telegram", "", "", "SNS"),
    ("Messages", "", "", "SNS"),
    ("Netflix", "", "", "Entertainment"),
    ("IINA", "", "movie.mkv", "Entertainment"),
    ("IINA", "", "Lecture 3 - Linear Algebra.mp4", "Education"),
    ("Epic Games Launcher", "", "", "Game"),
    ("VALORANT", "", "", "Game"),
    ("메이플스토리", "", "", "Game"),
    ("Melon", "", "", "Music"),
    ("Apple Music", "", "", "Music"),
    ("쿠팡", "", "", "E-commerce & Shopping"),
    ("LockApp", "", "", "AFK"),
    # sites, Korean services included
    ("Google Chrome", "https://gitlab.com/a/b/-/merge_requests/1", "", "Development"),
    ("Google Chrome", "https://docs.python.org/3/library/", "", "Development"),
    ("Google Chrome", "https://console.aws.amazon.com/ec2", "", "Development"),
    ("Google Chrome", "https://www.amazon.com/dp/B0", "", "E-commerce & Shopping"),
    ("Google Chrome", "https://music.amazon.com/", "", "Music"),
    ("Google Chrome", "https://www.primevideo.com/", "", "Entertainment"),
    ("Google Chrome", "https://chatgpt.com/c/1", "", "LLM"),
    ("Google Chrome", "https://gemini.google.com/app", "", "LLM"),
    ("Google Chrome", "https://docs.google.com/spreadsheets/d/1", "", "Productivity"),
    ("Google Chrome", "https://docs.google.com/presentation/d/1", "", "Productivity"),
    ("Google Chrome", "https://calendar.google.com/", "", "Productivity"),
    ("Google Chrome", "https://linear.app/acme/issue/ENG-1", "", "Productivity"),
    ("Google Chrome", "https://acme.atlassian.net/wiki/spaces/ENG", "", "Documentation"),
    ("Google Chrome", "https://www.figma.com/file/abc", "", "Design"),
    ("Google Chrome", "https://www.udemy.com/course/x", "", "Education"),
    ("Google Chrome", "https://arxiv.org/abs/1706.03762", "", "Education"),
    ("Google Chrome", "https://cs.stanford.edu/", "", "Education"),
    ("Google Chrome", "https://www.binance.com/en/trade", "", "Finance"),
    ("Google Chrome", "https://finance.naver.com/item/main.naver", "", "Finance"),
    ("Google Chrome", "https://www.dropbox.com/home", "", "File Management"),
    ("Google Chrome", "https://search.naver.com/search.naver?query=x", "", "Browsing"),
    ("Google Chrome", "https://www.bing.com/search?q=x", "", "Browsing"),
    ("Google Chrome", "about:blank", "", "Browsing"),
    ("Microsoft Edge", "edge://newtab/", "", "Browsing"),
    ("Google Chrome", "https://ads.google.com/aw/overview", "", "Marketing"),
    ("Google Chrome", "https://searchad.naver.com/", "", "Marketing"),
    ("Google Chrome", "https://vault.bitwarden.com/", "", "System & Utilities"),
    ("Google Chrome", "https://zoom.us/j/123", "", "Meetings"),
    ("Google Chrome", "https://app.slack.com/client/T1", "", "Communication"),
    ("Google Chrome", "https://mail.naver.com/", "", "Communication"),
    ("Google Chrome", "https://teams.microsoft.com/v2/", "Meeting in General", "Meetings"),
    ("Google Chrome", "https://blog.naver.com/someone/1", "", "SNS"),
    ("Google Chrome", "https://www.reddit.com/r/python", "", "SNS"),
    ("Google Chrome", "https://www.linkedin.com/feed/", "", "SNS"),
    ("Google Chrome", "https://www.linkedin.com/learning/python", "", "Education"),
    ("Google Chrome", "https://comic.naver.com/webtoon/list", "", "Entertainment"),
    ("Google Chrome", "https://chzzk.naver.com/live/1", "", "Entertainment"),
    ("Google Chrome", "https://www.tving.com/", "", "Entertainment"),
    ("Google Chrome", "https://store.steampowered.com/app/1", "", "Game"),
    ("Google Chrome", "https://www.op.gg/summoners/kr/x", "", "Game"),
    ("Google Chrome", "https://open.spotify.com/playlist/1", "", "Music"),
    ("Google Chrome", "https://www.melon.com/chart/", "", "Music"),
    ("Google Chrome", "https://vibe.naver.com/today", "", "Music"),
    ("Google Chrome", "https://smartstore.naver.com/shop/products/1", "", "E-commerce & Shopping"),
    ("Google Chrome", "https://www.musinsa.com/app/", "", "E-commerce & Shopping"),
    ("Google Chrome", "https://www.11st.co.kr/", "", "E-commerce & Shopping"),
]


@pytest.mark.parametrize(
    "app", ["Whale", "NAVER Whale", "Microsoft Edge", "msedge.exe", "Firefox", "Brave Browser"]
)
def test_browsers(default_classifier: Classifier, app: str) -> None:
    assert default_classifier.is_browser(app)
    assert default_classifier.classify(app, "", "") == Decision("Browsing", "default", "")


@pytest.mark.parametrize(("app", "url", "title", "expected"), BROADER)
def test_popular_apps_and_sites(
    default_classifier: Classifier, app: str, url: str, title: str, expected: str
) -> None:
    d = default_classifier.classify(app, url, title)
    assert d.category == expected, d
    assert d.source != "default"
