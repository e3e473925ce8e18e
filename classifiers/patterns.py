"""The pattern set: one `category_pattern` document per canonical category (CONTRACT §3, §5).

A `PatternSet` is immutable and validated; `pomocore.classifiers.engine` compiles it into a matcher.
Document shape (camelCase, as stored in MongoDB and in the shipped data file):
    {"_id": ObjectId, "category": "Development", "priority": 100,
     "appPatterns": ["Visual Studio Code", {"pattern": "Zed", "learned": true}],
     "domainPatterns": ["github.com", "atlassian.net/wiki"],
     "titleRules": [{"keywords": ["lecture"], "regex": "", "on": ["youtube.com"],
                     "scope": "any"}]}

A pattern entry is a string, or an object with `pattern` and `learned` (a pattern the LLM
layer learned). See docs/classification.md for the matching rules.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from bson import ObjectId

from pomocore.core.categories import CATEGORIES, canonical
from pomocore.core.errors import ClassifierError

COLLECTION: Final = "category_pattern"
DEFAULT_DATA_FILE: Final = "default_patterns.json"
DEFAULT_PRIORITY: Final = 500

Scope = Literal["any", "browser", "app"]
SCOPES: Final[frozenset[str]] = frozenset({"any", "browser", "app"})
PatternKind = Literal["app", "domain"]


def default_category_id(category: str) -> ObjectId:
    """A stable `_id` for a category: the first 12 bytes of SHA-256 of its name.

    Deterministic so that `categoryId` values agree across installs and re-seeds.
    """
    return ObjectId(hashlib.sha256(category.encode("utf-8")).digest()[:12])


@dataclass(frozen=True, slots=True)
class PatternEntry:
    text: str
    learned: bool = False
    # Other fields of an object entry (the LLM layer's `verdicts`, `learnedAt`), kept so
    # that a load/save round trip does not lose them.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_document(self) -> str | dict[str, Any]:
        if not self.learned and not self.extra:
            return self.text
        return {**self.extra, "pattern": self.text, "learned": self.learned}


@dataclass(frozen=True, slots=True)
class TitleRule:
    """Keywords (or a regex) looked for in the window title.

    With `on` (app or domain patterns, as written in any category) the rule *refines* a
    match by one of those patterns; without `on` it *decides* when app and URL could not.
    `scope` limits a deciding rule to browsers (`browser`), other apps (`app`) or `any`.
    """

    keywords: tuple[str, ...] = ()
    regex: str = ""
    on: tuple[str, ...] = ()
    scope: Scope = "any"

    def to_document(self) -> dict[str, Any]:
        return {
            "keywords": list(self.keywords),
            "regex": self.regex,
            "on": list(self.on),
            "scope": self.scope,
        }


@dataclass(frozen=True, slots=True)
class CategoryPatterns:
    category: str
    priority: int
    id: Any
    app_patterns: tuple[PatternEntry, ...] = ()
    domain_patterns: tuple[PatternEntry, ...] = ()
    title_rules: tuple[TitleRule, ...] = ()
    # Fields this module does not interpret (e.g. `rejectedPatterns`), kept on round trips.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        return {
            **self.extra,
            "_id": self.id,
            "category": self.category,
            "priority": self.priority,
            "appPatterns": [p.to_document() for p in self.app_patterns],
            "domainPatterns": [p.to_document() for p in self.domain_patterns],
            "titleRules": [r.to_document() for r in self.title_rules],
        }


@dataclass(frozen=True, slots=True)
class PatternSet:
    """Every canonical category exactly once, in CATEGORIES order."""

    entries: tuple[CategoryPatterns, ...]
    version: str = field(default="", compare=False)
    # Built once: the MongoDB sink looks an id up for each document it writes.
    _ids: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # frozen: set once, here (a dict, not a MappingProxyType: the set is pickled to
        # the classifier's pool workers); typed Mapping, so nobody writes to it
        object.__setattr__(self, "_ids", {e.category: e.id for e in self.entries})

    @property
    def category_ids(self) -> Mapping[str, Any]:
        return self._ids

    def get(self, category: str) -> CategoryPatterns:
        for e in self.entries:
            if e.category == category:
                return e
        raise KeyError(category)

    def documents(self) -> list[dict[str, Any]]:
        return [e.to_document() for e in self.entries]

    @classmethod
    def from_documents(cls, docs: Iterable[Mapping[str, Any]]) -> PatternSet:
        """Validate documents; categories without a document get an empty one.

        Raises ClassifierError naming the offending category and field.
        """
        by_cat: dict[str, CategoryPatterns] = {}
        for doc in docs:
            entry = _parse_category(doc)
            if entry.category in by_cat:
                raise ClassifierError(f"category {entry.category!r} appears twice")
            by_cat[entry.category] = entry
        entries = tuple(
            by_cat.get(c) or CategoryPatterns(c, DEFAULT_PRIORITY, default_category_id(c))
            for c in CATEGORIES
        )
        return cls(entries, _version_of(entries))

    def with_pattern(
        self, category: str, kind: PatternKind, pattern: str, *, learned: bool = True
    ) -> PatternSet:
        """A copy with one more app or domain pattern (used by the LLM layer to learn)."""
        name = canonical(category)
        if name is None:
            raise ClassifierError(f"unknown category {category!r}")
        new = PatternEntry(_clean_pattern(pattern, kind, name), learned)
        entries = []
        for e in self.entries:
            if e.category == name:
                if kind == "app":
                    e = replace(e, app_patterns=(*e.app_patterns, new))
                else:
                    e = replace(e, domain_patterns=(*e.domain_patterns, new))
            entries.append(e)
        return PatternSet(tuple(entries), _version_of(entries))


# --- loading -------------------------------------------------------------------------


def load_default_pattern_set() -> PatternSet:
    """The pattern set shipped with pomocore (classifiers/data/default_patterns.json)."""
    data = resources.files("pomocore.classifiers").joinpath("data", DEFAULT_DATA_FILE)
    return parse_pattern_file(data.read_text("utf-8"), DEFAULT_DATA_FILE)


def load_pattern_file(path: str | Path) -> PatternSet:
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ClassifierError(f"cannot read {p}: {exc.strerror}") from exc
    return parse_pattern_file(text, p.name)


def parse_pattern_file(text: str, name: str = "patterns.json") -> PatternSet:
    """JSON (or TOML when `name` ends in .toml): `{"categories": [doc, ...]}` or `[doc, ...]`."""
    try:
        if name.endswith(".toml"):
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        kind = "TOML" if name.endswith(".toml") else "JSON"
        raise ClassifierError(f"{name}: not valid {kind}: {exc}") from exc
    docs = data.get("categories") if isinstance(data, dict) else data
    if not isinstance(docs, list):
        raise ClassifierError(f"{name}: expected a list of categories")
    return PatternSet.from_documents(docs)


def documents_to_json(pattern_set: PatternSet) -> str:
    """The set as a pattern file (the `_id`s as hex strings), for `patterns export`."""
    docs = [{**d, "_id": str(d["_id"])} for d in pattern_set.documents()]
    return json.dumps({"categories": docs}, ensure_ascii=False, indent=2, default=str)


# --- validation ----------------------------------------------------------------------


def _parse_category(doc: Mapping[str, Any]) -> CategoryPatterns:
    if not isinstance(doc, Mapping):
        raise ClassifierError(f"category document must be an object, got {type(doc).__name__}")
    raw_name = doc.get("category")
    name = canonical(raw_name) if isinstance(raw_name, str) else None
    if name is None:
        raise ClassifierError(f"unknown category {raw_name!r}")
    priority = doc.get("priority", DEFAULT_PRIORITY)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ClassifierError(f"{name}: priority must be an integer, got {priority!r}")
    return CategoryPatterns(
        category=name,
        priority=priority,
        id=_parse_id(doc.get("_id"), name),
        app_patterns=_parse_patterns(doc.get("appPatterns", []), "app", name),
        domain_patterns=_parse_patterns(doc.get("domainPatterns", []), "domain", name),
        title_rules=tuple(_parse_rule(r, name) for r in _as_list(doc, "titleRules", name)),
        extra={k: v for k, v in doc.items() if k not in _KNOWN_FIELDS},
    )


_KNOWN_FIELDS: Final = frozenset(
    {"_id", "category", "priority", "appPatterns", "domainPatterns", "titleRules"}
)


def _parse_id(raw: Any, name: str) -> Any:
    if raw is None:
        return default_category_id(name)
    if isinstance(raw, str) and ObjectId.is_valid(raw):
        return ObjectId(raw)  # pattern files carry hex strings
    return raw


def _as_list(doc: Mapping[str, Any], key: str, name: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ClassifierError(f"{name}: {key} must be a list")
    return value


def _parse_patterns(raw: Any, kind: PatternKind, name: str) -> tuple[PatternEntry, ...]:
    if not isinstance(raw, list):
        raise ClassifierError(f"{name}: {kind}Patterns must be a list")
    out = []
    for item in raw:
        if isinstance(item, str):
            out.append(PatternEntry(_clean_pattern(item, kind, name)))
        elif isinstance(item, Mapping) and isinstance(item.get("pattern"), str):
            learned = bool(item.get("learned", False))
            extra = {k: v for k, v in item.items() if k not in ("pattern", "learned")}
            out.append(PatternEntry(_clean_pattern(item["pattern"], kind, name), learned, extra))
        else:
            raise ClassifierError(f"{name}: bad {kind} pattern {item!r}")
    return tuple(out)


def _clean_pattern(text: str, kind: PatternKind, name: str) -> str:
    cleaned = " ".join(text.split())
    if not cleaned:
        raise ClassifierError(f"{name}: empty {kind} pattern")
    if kind == "domain" and " " in cleaned:
        raise ClassifierError(f"{name}: domain pattern {text!r} contains a space")
    return cleaned


def _parse_rule(raw: Any, name: str) -> TitleRule:
    if not isinstance(raw, Mapping):
        raise ClassifierError(f"{name}: title rule must be an object, got {raw!r}")
    keywords = _str_tuple(raw.get("keywords", []), name, "keywords")
    regex = raw.get("regex", "") or ""
    if not isinstance(regex, str):
        raise ClassifierError(f"{name}: title rule regex must be a string")
    if regex:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ClassifierError(f"{name}: bad title regex {regex!r}: {exc}") from exc
    if not keywords and not regex:
        raise ClassifierError(f"{name}: title rule needs keywords or a regex")
    scope = raw.get("scope", "any")
    if scope not in SCOPES:
        raise ClassifierError(f"{name}: title rule scope must be one of {sorted(SCOPES)}")
    on = _str_tuple(raw.get("on", []), name, "on")
    return TitleRule(keywords, regex, on, scope)


def _str_tuple(raw: Any, name: str, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, str) and s.strip() for s in raw):
        raise ClassifierError(f"{name}: title rule {key} must be a list of non-empty strings")
    return tuple(" ".join(s.split()) for s in raw)


def _version_of(entries: Sequence[CategoryPatterns]) -> str:
    """Content hash: equal sets have equal versions, whichever process built them."""
    docs = [{**e.to_document(), "_id": str(e.id)} for e in entries]
    blob = json.dumps(docs, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
