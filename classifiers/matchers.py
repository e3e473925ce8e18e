"""The three compiled indexes behind Classifier: app names, hosts and title rules.

App names: a dict keyed by normalised whole-word prefixes, walked from the longest prefix
down. This is the word trie of the issue (pygtrie.StringTrie with a space separator)
flattened: the same answers, about 5x faster per lookup (benchmarks/README.md).

Hosts: a dict suffix walk over label boundaries, most specific first (0.37 µs/host
measured against 0.63 µs for an Aho-Corasick automaton over reversed hosts). Never a scan
of the whole URL, so a domain inside a path or query cannot match.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import ahocorasick

from pomocore.classifiers.patterns import PatternSet, TitleRule
from pomocore.classifiers.urls import NETWORK_SCHEMES, path_of, split_url
from pomocore.core.categories import CATEGORIES
from pomocore.core.decision import Decision

_ORDER = {c: i for i, c in enumerate(CATEGORIES)}
# Suffixes trackers append to an app identity: Windows executables, macOS bundles.
# Stripped repeatedly, so `x.exe.exe` and `x` are the same app. (Not `.desktop`: Linux
# trackers send WM_CLASS / app ids, and `org.telegram.desktop` is one.)
_STRIP_SUFFIXES = (".exe", ".app")
_NUMERIC_END = frozenset("0123456789]")
# A reverse-DNS application id (`org.gnome.Nautilus`, `com.spotify.Client`): a 2-3 letter
# top-level label, then at least two labels without spaces except in the last (a `-` of
# `org.gnome.font-viewer` is a space by then). Read as `vendor app words`.
_REVERSE_DNS = re.compile(r"[a-z]{2,3}(?:\.[a-z0-9]+)+\.[a-z0-9][a-z0-9 ]*")


def normalize_app(app: str) -> str:
    """The canonical form of an app identity as trackers send it; patterns and reported
    names both go through it, so `WINWORD.EXE`, `C:\\...\\winword.exe` and `Winword`
    meet, as do `libreoffice-writer` and `LibreOffice Writer`, `org.gnome.Terminal` and
    `gnome-terminal`. Pure and idempotent (docs/classification.md, "App names"):

    1. Unicode NFKC (macOS decomposed Hangul, full-width Latin), lower case;
    2. `-` and `_` are spaces; whitespace collapsed;
    3. a path keeps its last segment (any `\\`, or a leading `/`);
    4. `.exe` / `.app` suffixes dropped;
    5. a reverse-DNS id drops its top-level label and reads its dots as spaces.
    """
    s = app.lower() if app.isascii() else _nfkc_lower(app)
    # WM_CLASS and executable names join words with `-` or `_` (`libreoffice-writer`,
    # `sublime_text`): the display name's words. (`in` + `replace`: 10x `str.translate`.)
    if "-" in s:
        s = s.replace("-", " ")
    if "_" in s:
        s = s.replace("_", " ")
    if not s.isprintable() or "  " in s or s[:1] == " " or s[-1:] == " ":
        s = " ".join(s.split())  # (any other whitespace is not printable)
    if "\\" in s or s.startswith("/"):
        s = s.replace("\\", "/").rsplit("/", 1)[-1].strip()
    while s.endswith(_STRIP_SUFFIXES):
        s = s[: s.rindex(".")].rstrip()
    if "." in s and _REVERSE_DNS.fullmatch(s):
        s = s[s.index(".") + 1 :].replace(".", " ")
    return s


def _nfkc_lower(text: str) -> str:
    # Lower-casing may leave a string that NFKC changes again: normalise after it too.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())


def strip_www(host: str) -> str:
    """`www.` is an alias of the bare domain, not a more specific site: dropping it lets
    path rules on `linkedin.com` apply to `www.linkedin.com` too."""
    return host[4:] if host.startswith("www.") else host


def pattern_key(text: str) -> str:
    """How a domain pattern is named in a title rule's `on` list.

    A leading `www.` is dropped so that a rule on `youtube.com` also refines a match by
    `www.youtube.com`.
    """
    return strip_www(" ".join(text.lower().split()))


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    rank: tuple[int, int]
    scope: str
    search: Callable[[str], re.Match[str] | None]


@dataclass(frozen=True, slots=True)
class Match:
    decision: Decision
    rank: tuple[int, int]
    browser: bool
    refinements: tuple[Rule, ...] = ()


class AppIndex:
    __slots__ = ("_by_key", "_max_words")

    def __init__(self) -> None:
        self._by_key: dict[str, Match] = {}
        self._max_words = 0

    def add(self, key: str, match: Match) -> None:
        """First add wins: callers add in priority order."""
        if key and key not in self._by_key:
            self._by_key[key] = match
            self._max_words = max(self._max_words, key.count(" ") + 1)

    def lookup(self, app: str) -> Match | None:
        # Fast path: keys are canonical, so a name equal to one up to case is that app
        # (most reported names); only the rest pays for the full normalisation.
        m = self._by_key.get(app.lower())
        if m is not None:
            return m
        s = normalize_app(app)
        m = self._by_key.get(s)
        if m is not None:
            return m
        words = s.split()
        n = min(len(words), self._max_words)
        while n > 0:
            m = self._by_key.get(" ".join(words[:n]))
            if m is not None:
                return m
            n -= 1
        return None

    def keys(self) -> list[str]:
        return list(self._by_key)


@dataclass(slots=True)
class _HostRule:
    match: Match | None = None
    paths: list[tuple[str, Match]] = field(default_factory=list)  # longest prefix first


class DomainIndex:
    __slots__ = ("_hosts", "_internal")

    def __init__(self) -> None:
        self._hosts: dict[str, _HostRule] = {}
        self._internal: dict[str, Match] = {}

    def add(self, pattern: str, match: Match) -> bool:
        """Index `host`, `host/path-prefix`, `*.host`, `chrome://newtab` or `about:`.

        Returns False for a pattern with no host (reported by `patterns check`).
        """
        scheme, host, path = split_url(pattern.lstrip("*").lstrip("."))
        if scheme not in NETWORK_SCHEMES:
            self._internal.setdefault(f"{scheme}://{host}", match)
            return True
        if not host:
            return False
        rule = self._hosts.setdefault(strip_www(host), _HostRule())
        prefix = path.rstrip("/")
        if not prefix:
            if rule.match is None:
                rule.match = match
        elif all(p != prefix for p, _ in rule.paths):
            rule.paths.append((prefix, match))
            rule.paths.sort(key=lambda pm: -len(pm[0]))
        return True

    def lookup_host(self, host: str, tail: str) -> Match | None:
        """Most specific label-boundary suffix of `host`; `tail` is what followed the host
        in the URL (its path is only extracted for hosts with path rules)."""
        hosts = self._hosts
        h = host = strip_www(host)
        path: str | None = None
        while True:
            rule = hosts.get(h)
            if rule is not None:
                if rule.paths and tail:
                    path = path_of(tail) if path is None else path
                    for prefix, m in rule.paths:
                        if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in (
                            "",
                            "/",
                        ):
                            return m
                if rule.match is not None:
                    return rule.match
            i = h.find(".")
            if i < 0 or host[-1:] in _NUMERIC_END:
                # IPs (and junk like 10.127.0.0.1: no TLD is numeric) match exactly only.
                return None
            h = h[i + 1 :]

    def lookup_internal(self, scheme: str, page: str) -> Match | None:
        m = self._internal.get(f"{scheme}://{page}")
        return m if m is not None else self._internal.get(f"{scheme}://")


class TitleRules:
    """Refining rules by the pattern they refine, and deciding rules in priority order."""

    __slots__ = ("_deciding", "_refining", "_scoped")

    def __init__(self) -> None:
        self._refining: dict[str, list[Rule]] = {}
        self._deciding: list[tuple[Rule, TitleRule]] = []
        self._scoped: dict[bool, KeywordScan] = {}

    def refinements_for(self, key: str) -> tuple[Rule, ...]:
        return tuple(self._refining.get(key, ()))

    def decide(self, title: str, browser: bool) -> Decision | None:
        return self._scoped[browser].decide(title)

    def _finish(self) -> None:
        self._deciding.sort(key=lambda rr: rr[0].rank)
        for lst in self._refining.values():
            lst.sort(key=lambda r: r.rank)
        for browser in (False, True):
            scope = "browser" if browser else "app"
            rules = [rr for rr in self._deciding if rr[0].scope in ("any", scope)]
            self._scoped[browser] = KeywordScan(rules)


_Hit = tuple[tuple[int, int], str, str]  # (rank, category, matched text)


class KeywordScan:
    """Deciding rules of one scope: keywords via one Aho-Corasick pass over the lower-cased
    title (measured ~8 µs as a regex per rule, ~1 µs this way), then the regex rules that
    could still win. Same boundaries as `compile_title_rule`."""

    __slots__ = ("_automaton", "_regexes")

    def __init__(self, rules: list[tuple[Rule, TitleRule]]) -> None:
        self._automaton: Any = None
        self._regexes: list[tuple[tuple[int, int], str, re.Pattern[str]]] = []
        entries: dict[str, list[tuple[tuple[int, int], str, int, bool]]] = {}
        for rule, spec in rules:
            for kw in spec.keywords:
                low = kw.lower()
                value = (rule.rank, rule.category, len(low), kw.isascii())
                entries.setdefault(low, []).append(value)
            if spec.regex:
                self._regexes.append((rule.rank, rule.category, re.compile(spec.regex, re.I)))
        if entries:
            self._automaton = ahocorasick.Automaton()
            for low, values in entries.items():
                self._automaton.add_word(low, sorted(values))
            self._automaton.make_automaton()

    def decide(self, title: str) -> Decision | None:
        best: _Hit | None = None
        if self._automaton is not None:
            low = title.lower()
            for end, values in self._automaton.iter(low):
                for rank, category, length, ascii_kw in values:
                    if best is not None and rank >= best[0]:
                        break
                    stop = _bounded(low, end + 1 - length, end + 1) if ascii_kw else end + 1
                    if stop:
                        best = (rank, category, low[end + 1 - length : stop])
        for rank, category, regex in self._regexes:
            if best is not None and rank >= best[0]:
                break
            hit = regex.search(title)
            if hit is not None:
                best = (rank, category, hit.group(0))
        return None if best is None else Decision(best[1], "title", best[2])


def _bounded(low: str, start: int, end: int) -> int:
    """End of the word if `low[start:end]` starts and ends a word (plural allowed), else 0."""
    if start > 0 and low[start - 1] in _ALNUM:
        return 0
    for suffix in ("", "s", "es"):
        stop = end + len(suffix)
        if low.startswith(suffix, end) and (stop >= len(low) or low[stop] not in _ALNUM):
            return stop
    return 0


_ALNUM: Final = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


def compile_rules(pattern_set: PatternSet) -> TitleRules:
    rules = TitleRules()
    for entry in pattern_set.entries:
        rank = (entry.priority, _ORDER[entry.category])
        for tr in entry.title_rules:
            rule = Rule(entry.category, rank, tr.scope, compile_title_rule(tr).search)
            if not tr.on:
                rules._deciding.append((rule, tr))
            for on in tr.on:
                for key in {normalize_app(on), pattern_key(on)}:
                    rules._refining.setdefault(key, []).append(rule)
    rules._finish()
    return rules


def compile_title_rule(rule: TitleRule) -> re.Pattern[str]:
    """One case-insensitive regex: keywords at a word start, optional plural; then `regex`.

    ASCII keywords need a non-alphanumeric before and after (`course` does not match
    `Coursera`); other scripts match as substrings (Korean has no spaces inside words).
    """
    parts = [_keyword_regex(k) for k in rule.keywords]
    if rule.regex:
        parts.append(f"(?:{rule.regex})")
    return re.compile("|".join(parts), re.IGNORECASE)


def _keyword_regex(keyword: str) -> str:
    escaped = re.escape(keyword)
    if keyword.isascii():
        return rf"(?<![0-9a-z]){escaped}(?:e?s)?(?![0-9a-z])"
    return escaped
