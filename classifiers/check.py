"""`pomocore patterns check`: overlaps and patterns that can never decide anything."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from pomocore.classifiers.matchers import normalize_app, pattern_key, strip_www
from pomocore.classifiers.patterns import PatternSet
from pomocore.classifiers.urls import NETWORK_SCHEMES, split_url
from pomocore.core.categories import CATEGORIES

Level = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()}: {self.message}"


def check_pattern_set(ps: PatternSet) -> list[Finding]:
    order = {c: i for i, c in enumerate(CATEGORIES)}
    ranked = sorted(ps.entries, key=lambda e: (e.priority, order[e.category]))
    findings: list[Finding] = []
    apps: dict[str, list[tuple[str, str]]] = defaultdict(list)  # key -> [(category, text)]
    domains: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for e in ranked:
        for p in e.app_patterns:
            apps[normalize_app(p.text)].append((e.category, p.text))
        for p in e.domain_patterns:
            key = _domain_key(p.text)
            if key is None:
                findings.append(Finding("error", f"{e.category}: domain {p.text!r} has no host"))
            else:
                domains[key].append((e.category, p.text))
    findings += _overlaps("app", apps)
    findings += _overlaps("domain", domains)
    findings += _dead_rules(ps, set(apps), {pattern_key(k) for k in domains})
    return findings


def _domain_key(text: str) -> str | None:
    scheme, host, path = split_url(text.lstrip("*").lstrip("."))
    if scheme not in NETWORK_SCHEMES:
        return f"{scheme}://{host}"
    return f"{strip_www(host)}{path.rstrip('/')}" if host else None


def _overlaps(kind: str, index: dict[str, list[tuple[str, str]]]) -> list[Finding]:
    out = []
    for key, claims in sorted(index.items()):
        cats = [c for c, _ in claims]
        winner = cats[0]
        losers = sorted({c for c in cats[1:] if c != winner})
        if losers:
            out.append(
                Finding(
                    "error",
                    f"{kind} pattern {key!r} is claimed by {winner} and {', '.join(losers)}: "
                    f"{winner} wins by priority, the others are unreachable",
                )
            )
        if len(cats) != len(set(cats)):
            out.append(Finding("warning", f"{kind} pattern {key!r} repeated in {winner}"))
    return out


def _dead_rules(ps: PatternSet, app_keys: set[str], domain_keys: set[str]) -> list[Finding]:
    out = []
    for e in ps.entries:
        for rule in e.title_rules:
            for on in rule.on:
                if normalize_app(on) not in app_keys and pattern_key(on) not in domain_keys:
                    out.append(
                        Finding(
                            "error",
                            f"{e.category}: title rule refines {on!r}, which no app or domain "
                            "pattern defines, so it is unreachable",
                        )
                    )
    return out
