"""The compiled matcher: (app, url, title) -> Decision, per CONTRACT §6.

Order of evaluation (docs/classification.md has the full rules):
1. App name, by the longest whole-word prefix (case-insensitive). An app matching a
   *Browsing* app pattern is a browser and falls through to 2.
2. URL host, by the most specific label-boundary suffix, with optional path prefixes.
3. A match from 1 or 2 may be *refined* by title rules attached to its pattern.
4. Deciding title rules (no `on`), when neither app nor URL matched.
5. Default: Browsing for a browser (or an unknown app that reports a URL), else
   Uncategorized, with source `default` so that the LLM may still be asked.
Ties between categories claiming the same pattern go to the lower `priority`, then to the
category listed first in CATEGORIES, so every compile of the same set answers the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pomocore.classifiers.matchers import (
    AppIndex,
    DomainIndex,
    Match,
    TitleRules,
    compile_rules,
    normalize_app,
    pattern_key,
)
from pomocore.classifiers.patterns import PatternSet
from pomocore.classifiers.urls import NETWORK_SCHEMES, split_host
from pomocore.core.categories import BROWSING, CATEGORIES, UNCATEGORIZED
from pomocore.core.decision import Decision

log = logging.getLogger(__name__)

_ORDER = {c: i for i, c in enumerate(CATEGORIES)}


class Classifier:
    """Immutable once built; share it freely, swap it whole on reload."""

    __slots__ = ("_apps", "_browsing", "_domains", "_rules", "_uncategorized", "pattern_set")

    def __init__(
        self, pattern_set: PatternSet, apps: AppIndex, domains: DomainIndex, rules: TitleRules
    ) -> None:
        self.pattern_set = pattern_set
        self._apps = apps
        self._domains = domains
        self._rules = rules
        self._browsing = Decision(BROWSING, "default", "")
        self._uncategorized = Decision(UNCATEGORIZED, "default", "")

    @classmethod
    def from_patterns(cls, pattern_set: PatternSet) -> Classifier:
        rules = compile_rules(pattern_set)
        apps, domains = AppIndex(), DomainIndex()
        for entry in sorted(pattern_set.entries, key=lambda e: (e.priority, _ORDER[e.category])):
            # Sorted so that the first category to claim a pattern is the one that wins.
            rank = (entry.priority, _ORDER[entry.category])
            for p in entry.app_patterns:
                key = normalize_app(p.text)
                apps.add(key, _match(entry.category, "app", p.text, rank, rules, key))
            for p in entry.domain_patterns:
                key = pattern_key(p.text)
                domains.add(p.text, _match(entry.category, "domain", p.text, rank, rules, key))
        return cls(pattern_set, apps, domains, rules)

    @property
    def category_ids(self) -> Mapping[str, Any]:
        return self.pattern_set.category_ids

    @property
    def version(self) -> str:
        return self.pattern_set.version

    def is_browser(self, app: str) -> bool:
        m = self._apps.lookup(app) if app else None
        return m is not None and m.browser

    def classify(self, app: str, url: str, title: str) -> Decision:
        """Never raises: a bug or an odd input degrades to the default decision."""
        try:
            return self._classify(app, url, title)
        except Exception:  # the consumer must keep going whatever the input
            log.exception("classifier failed on app=%r url=%r", app[:200], url[:200])
            return self._uncategorized

    def _classify(self, app: str, url: str, title: str) -> Decision:
        browser = False
        if app:
            m = self._apps.lookup(app)
            if m is not None:
                if not m.browser:
                    return _refine(m, title)
                browser = True
        if url:
            browser = True  # CONTRACT §1: a URL is reported for browser tabs
            m = self._match_url(url)
            if m is not None:
                return _refine(m, title)
        if title:
            d = self._rules.decide(title, browser)
            if d is not None:
                return d
        return self._browsing if browser else self._uncategorized

    def _match_url(self, url: str) -> Match | None:
        scheme, host, tail = split_host(url)
        if scheme in NETWORK_SCHEMES:
            return self._domains.lookup_host(host, tail) if host else None
        return self._domains.lookup_internal(scheme, host)


def _match(
    category: str, source: str, text: str, rank: tuple[int, int], rules: TitleRules, key: str
) -> Match:
    decision = Decision(category, "app" if source == "app" else "domain", text)
    return Match(decision, rank, category == BROWSING, rules.refinements_for(key))


def _refine(m: Match, title: str) -> Decision:
    if title and m.refinements:
        for rule in m.refinements:
            hit = rule.search(title)
            if hit is not None:
                return Decision(rule.category, "title", f"{m.decision.pattern} + {hit.group(0)}")
    return m.decision
