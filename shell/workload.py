"""Synthetic activity workload: what `pomocore demo` and the benchmarks publish.

Users and (app, url, title) slices are drawn from Zipf-like distributions over a
catalogue of popular desktop apps and sites (macOS and Windows names, Korean services),
so a few apps dominate, as in real trackers. A configurable share of entries is
malformed in each way the contract rejects.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

# (app, url, title) templates; {n} is replaced by a number to make distinct keys.
CATALOGUE: tuple[tuple[str, str, str], ...] = (
    ("Code", "", "main.py — project{n}"),
    (
        "Google Chrome",
        "https://github.com/acme/repo{n}/pull/12",
        "Fix consumer lag · Pull Request #12",
    ),
    ("Slack", "", "#team-{n} - Acme - Slack"),
    (
        "Google Chrome",
        "https://www.youtube.com/watch?v=v{n}",
        "Funny cats compilation {n} - YouTube",
    ),
    ("KakaoTalk", "", "KakaoTalk"),
    (
        "Google Chrome",
        "https://stackoverflow.com/questions/{n}/how-to",
        "python - How to - Stack Overflow",
    ),
    ("IntelliJ IDEA", "", "OrderService{n}.java - shop-api"),
    ("Google Chrome", "https://mail.google.com/mail/u/0/#inbox", "Inbox ({n}) - Gmail"),
    ("Notion", "", "Sprint notes {n}"),
    ("Spotify", "", "Spotify Premium"),
    ("Google Chrome", "https://www.netflix.com/watch/{n}", "Netflix"),
    ("zoom.us", "", "Zoom Meeting"),
    ("Google Chrome", "https://chatgpt.com/c/{n}", "ChatGPT"),
    ("Figma", "", "Checkout flow {n} – Figma"),
    ("Microsoft Excel", "", "budget_{n}.xlsx"),
    ("Safari", "https://www.naver.com/", "NAVER"),
    ("Google Chrome", "https://www.coupang.com/vp/products/{n}", "쿠팡!"),
    ("Google Chrome", "https://acme.atlassian.net/browse/OPS-{n}", "[OPS-{n}] Fix - Jira"),
    ("iTerm2", "", "~/work/api{n} — zsh"),
    ("Microsoft Teams", "", "Chat | Jane Doe | Microsoft Teams"),
    ("Google Chrome", "https://www.instagram.com/p/{n}/", "Instagram"),
    ("Finder", "", "Downloads"),
    ("Google Chrome", "https://www.google.com/search?q=query+{n}", "query {n} - Google Search"),
    ("Steam", "", "Steam"),
    ("Google Chrome", "https://www.coursera.org/learn/course-{n}", "Course {n} | Coursera"),
    ("Adobe Premiere Pro 2026", "", "promo_{n}.prproj"),
    ("Google Chrome", "https://www.tradingview.com/chart/{n}/", "BTC/USDT | TradingView"),
    ("System Settings", "", "Wi-Fi"),
    ("loginwindow", "", ""),
    ("Google Chrome", "https://music.youtube.com/watch?v={n}", "YouTube Music"),
    ("Whale", "https://blog.naver.com/user{n}/1", "블로그"),
    ("League of Legends", "", "League of Legends (TM) Client"),
    ("Google Chrome", "https://analytics.google.com/analytics/web/", "Home - Google Analytics"),
    ("Obsidian", "", "Daily note {n} - vault"),
    ("Arc", "https://unknown-site-{n}.example/page", "Some page {n}"),
    ("SomeInternalTool", "", "Window {n}"),
)

MALFORMED_KINDS = (
    "missing_user",
    "invalid_utf8",
    "nan_duration",
    "negative_duration",
    "future_timestamp",
    "bad_bool",
    "bad_number",
    "too_long_title",
    "all_empty",
)


def _zipf_cdf(n: int, s: float) -> list[float]:
    weights = list(itertools.accumulate(1.0 / (k**s) for k in range(1, n + 1)))
    total = weights[-1]
    return [w / total for w in weights]


@dataclass
class Workload:
    users: int = 2000
    distinct_variants: int = 50  # {n} values per template: distinct keys ≈ templates × this
    malformed_ratio: float = 0.01
    session_end_ratio: float = 0.02
    seed: int = 7
    zipf_s: float = 1.1
    time_spread_s: float = 3 * 86_400  # events spread over the last few days

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._users_cdf = _zipf_cdf(self.users, self.zipf_s)
        self._apps_cdf = _zipf_cdf(len(CATALOGUE), 0.9)

    def _pick(self, cdf: list[float]) -> int:
        return min(bisect.bisect_left(cdf, self.rng.random()), len(cdf) - 1)

    def event(self, now_s: float | None = None) -> dict[str, str | bytes]:
        now_s = time.time() if now_s is None else now_s
        rng = self.rng
        if rng.random() < self.malformed_ratio:
            return self.malformed(rng.choice(MALFORMED_KINDS), now_s)
        app, url, title = CATALOGUE[self._pick(self._apps_cdf)]
        n = str(rng.randrange(self.distinct_variants))
        fields: dict[str, str | bytes] = {
            "userId": f"user-{self._pick(self._users_cdf):06d}",
            "app": app,
            "title": title.replace("{n}", n),
            "url": url.replace("{n}", n),
            "duration": f"{rng.uniform(1, 600):.3f}",
            "timestamp": f"{now_s - rng.uniform(0, self.time_spread_s):.3f}",
            "session": str(rng.randrange(1, 9)),
            "sessionMinutes": str(rng.choice((25, 50))),
        }
        if rng.random() < self.session_end_ratio:
            fields["isEnd"] = "true"
            fields["sessionDate"] = time.strftime("%Y-%m-%d", time.localtime(now_s))
        return fields

    def malformed(self, kind: str, now_s: float) -> dict[str, str | bytes]:
        good: dict[str, str | bytes] = {
            "userId": "user-bad",
            "app": "Code",
            "title": "x.py",
            "url": "",
            "duration": "10",
            "timestamp": f"{now_s:.3f}",
        }
        changes: dict[str, dict[str, str | bytes]] = {
            "missing_user": {"userId": ""},
            "invalid_utf8": {"title": b"\xff\xfe broken"},
            "nan_duration": {"duration": "NaN"},
            "negative_duration": {"duration": "-5"},
            "future_timestamp": {"timestamp": f"{now_s + 3600:.3f}"},
            "bad_bool": {"isEnd": "maybe"},
            "bad_number": {"duration": "ten"},
            "too_long_title": {"title": "t" * 20_000},
            "all_empty": {"app": "", "title": "", "url": ""},
        }
        return {**good, **changes[kind]}

    def events(self, count: int, now_s: float | None = None) -> Iterator[dict[str, str | bytes]]:
        for _ in range(count):
            yield self.event(now_s)
