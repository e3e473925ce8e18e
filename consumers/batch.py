"""One batch, from raw stream entries to a commit.

The commit order (quix-streams' checkpoint rule):

    1. validate every entry; rejected ones become dead letters
    2. classify the distinct (app, url, title) keys: patterns, then the LLM
    3. flush the MongoDB sink: documents durable (idempotent writes); a usage log that
       was already there keeps its category, and the event's increments follow it; an
       event whose producer-supplied id the ownership check refuses becomes a dead letter
    4. commit: one Redis script acknowledges the entries and applies leaderboard
       increments, dead letters and session scores for exactly the entries it acknowledged

Nothing is acknowledged before its effects are durable. A crash anywhere before step 4
leaves the entries pending: they are delivered again, step 3 finds its documents already
written, and step 4 applies each entry's effects exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, pairwise, repeat
from operator import attrgetter, eq, itemgetter, not_
from typing import Protocol, TypeVar, cast

from pomocore.core.decision import ClassKey, Decision
from pomocore.core.errors import CommitContended, RejectedEvent
from pomocore.core.events import (
    TOO_LARGE,
    Event,
    Oversized,
    column_layout,
    fields_dict,
    parse_checked,
    parse_plain,
    parse_plain_columns,
    parse_plain_flat,
    too_large,
)
from pomocore.core.observer import BatchOutcome, Observer, observed
from pomocore.core.settings import Settings
from pomocore.sinks.commit import Committer
from pomocore.sinks.mongo import MongoOutcome, MongoSink
from pomocore.sinks.plan import CommitPlan, DeadLetter, IncrementBuilder

Fields = dict[bytes, bytes] | list[bytes] | Oversized
"""An entry's fields: a dict, or the flat `[name, value, ...]` list of a raw XREADGROUP reply
(the consumer's own reads: no dict per entry on the hot path), or Oversized for an entry
the guarded read left on the server (consumers/reads.py)."""
Entry = tuple[str, Fields | None]
MAX_COMMIT_ATTEMPTS = 10
# Entries validated between two yields to the event loop: ~1 ms of validation in columns
# (~2 µs an entry on the demo workload), as 200 entries were on the per-entry path.
YIELD_EVERY = 500

# (app, url, title) of an Event, picked in C: Event is a tuple of (entry_id, user_id, app,
# title, url, ...). tests/core pins this against the attribute names.
class_key = cast(Callable[[Event], ClassKey], itemgetter(2, 4, 3))
_category = attrgetter("category")
_source = attrgetter("source")
_T = TypeVar("_T")
_first = itemgetter(0)
_second = itemgetter(1)
_id_of = _first  # of an Entry
_fields_of = _second
_names_of = itemgetter(slice(0, None, 2))  # of a flat [name, value, ...] list
_position = _first  # of a (position, event) pair
# The fewest entries validated in columns: a smaller batch, the rest of a batch, or the
# half of a group that held an entry the columns do not take go entry by entry (a column
# call costs ~20 µs whatever its size, an entry ~5 µs on the per-entry path).
COLUMN_GROUP_MIN = 16
# Layouts validated in columns per batch, most common first (the demo workload's events
# come in 4: 97 % plain, 2 % ends of session, then the malformed ones).
COLUMN_LAYOUTS = 2
# The fewest entries left after the first layout that are tried in columns: an end of
# session costs ~20 µs on the per-entry path (the checked one), a column call ~25 µs
# whatever its size. (With 16, the ~10 ends of session of a 500-entry slice went entry by
# entry: 4.6 % of the consumer's samples in a py-spy profile of variant c.)
COLUMN_REST_MIN = 4
# A group the columns refuse is tried again in this many parts; a refused part is split
# again, unless every part was refused (mostly bad entries: one by one). One bad entry in
# 500 costs refused calls over ~660 entries; 500 bad ones, over 1,000.
COLUMN_PARTS = 4

class BatchClassifier(Protocol):
    def classify_many(self, keys: Sequence[ClassKey]) -> list[Decision]: ...


class Resolver(Protocol):
    async def resolve(
        self, keys: Sequence[ClassKey], users: Mapping[ClassKey, Collection[str]] | None = None
    ) -> dict[ClassKey, Decision]: ...

    async def defer(
        self, keys: Sequence[ClassKey], users: Mapping[ClassKey, Collection[str]] | None = None
    ) -> dict[ClassKey, Decision]: ...


@dataclass(slots=True)
class ValidatedBatch:
    accepted: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)


def validate(entries: Sequence[Entry], settings: Settings, now_s: float) -> ValidatedBatch:
    """`parse_entry` of each entry; the entries of each common layout in one go.

    The common case, a batch whose entries a producer wrote with the same names in the
    same order, is validated a column at a time in C (`parse_plain_columns`), and so are
    the entries of up to COLUMN_LAYOUTS layouts, most common first (an end of session has
    two more fields). The other entries, and a group that holds an entry the columns do
    not take, take the per-entry path (`validate_each`). The result is exactly
    `validate_each`'s, in the same order (a property test pins the two together).
    """
    fields = list(map(_fields_of, entries))
    if len(fields) < COLUMN_GROUP_MIN or not all(map(isinstance, fields, repeat(list))):
        return validate_each(entries, settings, now_s)  # dicts, trimmed or oversized entries
    ids = list(map(_id_of, entries))
    everywhere = range(len(entries))
    todo: list[int] | range = everywhere  # positions of the entries not yet validated
    groups: list[tuple[list[int] | range, list[Event]]] = []
    rest: list[int] = []  # positions left to the per-entry path
    while todo and len(groups) < COLUMN_LAYOUTS and len(todo) >= COLUMN_REST_MIN:
        group = _common_group(fields)
        if group is None:
            break
        same, columns, layout = group
        positions = todo if same is None else list(compress(todo, same))
        group_ids = ids if same is None else list(compress(ids, same))
        events, left = _in_columns(group_ids, columns, layout, settings, now_s)
        if left:
            rest += [positions[i] for i in left]
            left_set = set(left)
            positions = [p for i, p in enumerate(positions) if i not in left_set]
        groups.append((positions, events))
        if same is None:
            todo = []
            break
        others = list(map(not_, same))
        todo = list(compress(todo, others))
        fields, ids = list(compress(fields, others)), list(compress(ids, others))
    rest += todo
    if not rest and len(groups) == 1:
        return ValidatedBatch(accepted=groups[0][1])  # the common case: one layout
    return _merged(entries, settings, now_s, groups, sorted(rest))


def _merged(
    entries: Sequence[Entry],
    settings: Settings,
    now_s: float,
    groups: list[tuple[list[int] | range, list[Event]]],
    rest: list[int],
) -> ValidatedBatch:
    """The events of the groups validated in columns and of the entries at `rest`,
    validated one by one, in entry order (dead letters and trimmed ids too)."""
    out = ValidatedBatch()
    late = _validate_some(entries, rest, settings, now_s, out)
    if not groups:
        out.accepted = [event for _, event in late]
        return out
    positions, out.accepted = groups[0]  # the others' events are put among the first's
    for other_positions, events in groups[1:]:
        late += zip(other_positions, events, strict=True)
    late.sort(key=_position)
    for inserted, (at, event) in enumerate(late):
        # before it: the first group's events of earlier entries, and those inserted so far
        out.accepted.insert(bisect_left(positions, at) + inserted, event)
    return out


def _common_group(
    fields: list[list[bytes]],
) -> tuple[list[bool] | None, list[tuple[bytes, ...]], tuple[int, ...]] | None:
    """The entries of the batch's most common layout, if it is a plain one: which they are
    (None: all), their values by position in a column each (tuples), and the layout.

    The flat lists of one length are turned into columns by one zip(), and a name column
    that holds one name all along checks that name for all of them at once (~0.3 µs an
    event, against ~0.7 for taking each entry's names and comparing them)."""
    lengths = list(map(len, fields))
    length = _most_common(lengths)
    same: list[bool] | None = None
    group = fields
    if lengths.count(length) != len(fields):
        same = list(map(eq, lengths, repeat(length)))
        group = list(compress(fields, same))
    columns = list(zip(*group, strict=True))
    names = group[0][0::2]
    if any(columns[2 * i].count(name) != len(group) for i, name in enumerate(names)):
        # Names in another order or other names at the same length: compare entry by entry.
        all_names = list(map(_names_of, group))
        names = _most_common(all_names)
        same_names = list(map(eq, all_names, repeat(names)))
        same = _narrowed(same, same_names) if same is not None else same_names
        columns = list(zip(*compress(group, same_names), strict=True))
    layout = column_layout(tuple(names)) if length % 2 == 0 else ()
    return (same, columns, layout) if layout else None


def _narrowed(outer: list[bool], inner: list[bool]) -> list[bool]:
    """`outer` with its True items that `inner` (one item per True of `outer`) makes False."""
    inside = iter(inner)
    return [flag and next(inside) for flag in outer]


def _most_common(items: list[_T]) -> _T:
    """The first item when half the items equal it, else the most common of the first,
    middle and last (the first entry of a batch may be a stray one)."""
    first = items[0]
    if 2 * items.count(first) >= len(items):
        return first
    return max((first, items[len(items) // 2], items[-1]), key=items.count)


def _in_columns(
    ids: list[str],
    columns: list[tuple[bytes, ...]],
    layout: tuple[int, ...],
    settings: Settings,
    now_s: float,
) -> tuple[list[Event], list[int]]:
    """Events of the entries that `parse_plain_columns` takes, and the indices of those
    left for the per-entry path (both in order)."""
    events = parse_plain_columns(
        ids, columns, layout, now_s, settings.max_future_s, settings.max_text_chars
    )
    if events is not None:
        return events, []
    return _in_parts(ids, columns, layout, settings, now_s)


def _in_parts(
    ids: list[str],
    columns: list[tuple[bytes, ...]],
    layout: tuple[int, ...],
    settings: Settings,
    now_s: float,
) -> tuple[list[Event], list[int]]:
    """`_in_columns` of a group the columns refused: its COLUMN_PARTS parts tried, each
    refused one split again, down to COLUMN_GROUP_MIN entries; all parts refused: the
    whole group is left."""
    count = len(ids)
    if count <= COLUMN_GROUP_MIN:
        return [], list(range(count))
    bounds = [count * i // COLUMN_PARTS for i in range(COLUMN_PARTS + 1)]
    parts = [
        (lo, hi, parse_plain_columns(
            ids[lo:hi], [c[lo:hi] for c in columns], layout, now_s, settings.max_future_s,
            settings.max_text_chars,
        ))
        for lo, hi in pairwise(bounds)
    ]  # fmt: skip
    if all(events is None for _, _, events in parts):
        return [], list(range(count))
    taken: list[Event] = []
    left: list[int] = []
    for lo, hi, events in parts:
        if events is None:
            part_taken, part_left = _in_parts(
                ids[lo:hi], [c[lo:hi] for c in columns], layout, settings, now_s
            )
            taken += part_taken
            left += [lo + i for i in part_left]
        else:
            taken += events
    return taken, left


def _validate_some(
    entries: Sequence[Entry], indices: list[int], settings: Settings, now_s: float,
    out: ValidatedBatch,
) -> list[tuple[int, Event]]:
    """`validate_each` of `entries[i] for i in indices`: dead letters and trimmed ids go
    to `out`, the events come back with their index."""
    accepted: list[tuple[int, Event]] = []
    for index in indices:
        entry_id, fields = entries[index]
        result = validate_one(entry_id, fields, settings, now_s)
        if isinstance(result, Event):
            accepted.append((index, result))
        elif result is None:
            out.trimmed.append(entry_id)
        else:
            out.dead_letters.append(result)
    return accepted


def validate_each(entries: Sequence[Entry], settings: Settings, now_s: float) -> ValidatedBatch:
    """`parse_entry` per entry, with its fast path called directly."""
    out = ValidatedBatch()
    accepted = out.accepted
    for entry_id, fields in entries:
        result = validate_one(entry_id, fields, settings, now_s)
        if isinstance(result, Event):
            accepted.append(result)
        elif result is None:
            out.trimmed.append(entry_id)
        else:
            out.dead_letters.append(result)
    return out


def validate_one(
    entry_id: str, fields: Fields | None, settings: Settings, now_s: float
) -> Event | DeadLetter | None:
    """One entry: its Event, its dead letter, or None when it was trimmed from the stream
    before we could read it."""
    if fields is None:
        return None
    max_future_s, max_chars = settings.max_future_s, settings.max_text_chars
    if isinstance(fields, list):
        event = parse_plain_flat(entry_id, fields, now_s, max_future_s, max_chars)
    elif isinstance(fields, dict):
        event = parse_plain(entry_id, fields, now_s, max_future_s, max_chars)
    else:
        event = None
    if event is not None:
        return event
    # Not plainly valid: every rule in order, naming the reason. (The fast path takes no
    # entry over max_text_chars + ~700 bytes, far below POMOCORE_MAX_ENTRY_BYTES: only
    # entries that fall through are measured.)
    size = too_large(fields, settings.max_entry_bytes)
    if size or isinstance(fields, Oversized):  # dead-lettered without its fields
        return DeadLetter(entry_id, {}, TOO_LARGE, "", size)
    as_dict = fields_dict(fields) if isinstance(fields, list) else fields
    try:
        return parse_checked(
            entry_id, as_dict, now_s=now_s, max_future_s=max_future_s, max_text_chars=max_chars
        )
    except RejectedEvent as exc:
        return DeadLetter(entry_id, as_dict, exc.reason, exc.field, exc.detail)


class BatchProcessor:
    """Validate → classify → MongoDB → commit. Holds no connection of its own."""

    def __init__(
        self,
        settings: Settings,
        classifier: BatchClassifier,
        builder: IncrementBuilder,
        committer: Committer,
        mongo: MongoSink | None = None,
        resolver: Resolver | None = None,
        compute_lock: asyncio.Lock | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.builder = builder
        self.committer = committer
        self.mongo = mongo
        self.resolver = resolver
        # Shared by the lanes of a process: one lane computes a whole batch while the
        # others wait on Redis, MongoDB or the LLM, so client and server work alternate
        # instead of colliding (see benchmarks/README.md, "Lanes").
        self.compute_lock = compute_lock or asyncio.Lock()
        self.observer = observer or Observer()

    async def classify(self, events: Sequence[Event]) -> list[Decision]:
        keys = list(dict.fromkeys((e.app, e.url, e.title) for e in events))
        by_key = dict(zip(keys, self.classifier.classify_many(keys), strict=True))
        await self._ask_llm(by_key, events)
        return [by_key[(e.app, e.url, e.title)] for e in events]

    async def _ask_llm(
        self, by_key: dict[ClassKey, Decision], events: Sequence[Event], *, overflow: bool = False
    ) -> None:
        """LLM verdicts into `by_key` for its undecided keys; with `overflow` none is asked
        (the resolver's `defer`: no-LLM rule, queued for the reclassifier)."""
        if self.resolver is not None:
            undecided = [k for k, d in by_key.items() if not d.decided]
            if undecided:
                # All users of each key, in event order: the resolver asks for a key in
                # its first user's request and share (issue #15 §2, never mixing users)
                # and learns only from distinct users (§3).
                users = _users_of(undecided, events)
                ask = self.resolver.defer if overflow else self.resolver.resolve
                by_key.update(await ask(undecided, users))

    async def process(
        self,
        entries: Sequence[Entry],
        extra_dead: Sequence[DeadLetter] = (),
        *,
        counted: bool = False,
        overflow: bool = False,
    ) -> BatchOutcome:
        """Validate, classify, write and commit `entries` (see the module docstring).

        A batch whose keys the patterns all decide is one stage. A batch with undecided
        keys is two: the events the patterns decided, with the dead letters, are written
        and committed while the LLM is asked about the rest, which follow once it answers.
        Each stage is exactly once on its own; a retry of the whole batch finds the first
        stage's entries acknowledged and commits only what is still pending.

        `counted`: the entries were counted as read already (the rest of a batch whose
        first stage `process_decided` committed). `overflow`: the batch cannot wait for
        the LLM (every waiting slot taken, issue #15 §6): its undecided keys are not asked
        but deferred (`Resolver.defer`: no-LLM rule, queued), and it is one stage.
        """
        read = 0 if counted else len(entries) + len(extra_dead)
        outcome, _ = await self._process(entries, extra_dead, read, defer=False, overflow=overflow)
        return outcome

    async def process_decided(
        self, entries: Sequence[Entry], extra_dead: Sequence[DeadLetter] = ()
    ) -> tuple[BatchOutcome, list[Entry]]:
        """The first stage alone: commit the events the patterns decide (and the dead
        letters), and return the entries whose key waits for the LLM, uncommitted (still
        pending) for the caller to `process` later, so that reading goes on meanwhile
        (issue #15 §6: events the patterns decide never wait behind the LLM)."""
        read = len(entries) + len(extra_dead)
        return await self._process(entries, extra_dead, read, defer=True)

    async def _process(
        self,
        entries: Sequence[Entry],
        extra_dead: Sequence[DeadLetter],
        read: int,
        *,
        defer: bool,
        overflow: bool = False,
    ) -> tuple[BatchOutcome, list[Entry]]:
        started = time.perf_counter()
        await self.compute_lock.acquire()
        try:
            batch = await self._validate(entries)
            batch.dead_letters.extend(extra_dead)
            event_keys = list(map(class_key, batch.accepted))
            keys = list(dict.fromkeys(event_keys))
            by_key = dict(zip(keys, self.classifier.classify_many(keys), strict=True))
        except BaseException:
            self.compute_lock.release()
            raise
        undecided = self.resolver is not None and not all(d.decided for d in by_key.values())
        if undecided and overflow:
            # Deferring waits for one queue write (Redis): the other lanes compute meanwhile.
            self.compute_lock.release()
            await self._ask_llm(by_key, batch.accepted, overflow=True)
            await self.compute_lock.acquire()
        if not undecided or overflow:
            decisions = list(map(by_key.__getitem__, event_keys))
            outcome = await self._stage(batch, decisions, read, entries)
            self.observer.batch_committed(outcome, time.perf_counter() - started, entries)
            return outcome, []
        decided, waiting = _split(batch, event_keys, by_key)
        if defer:
            first = await self._stage(decided, _decisions(decided, by_key), read, entries)
            self._observe(first, started, entries, decided)
            return first, _entries_of(entries, waiting)
        # The LLM is a network wait: the first stage (and the other lanes) go on meanwhile.
        self.compute_lock.release()
        asking = asyncio.create_task(self._ask_llm(by_key, waiting.accepted))
        try:
            await self.compute_lock.acquire()
            first = await self._stage(decided, _decisions(decided, by_key), read, entries)
            self._observe(first, started, entries, decided)
        except asyncio.CancelledError:
            asking.cancel()
            raise
        except BaseException:
            await _settle(asking)  # its answers stay in the resolver's memory for the retry
            raise
        await asyncio.shield(asking)
        await self.compute_lock.acquire()
        second = await self._stage(waiting, _decisions(waiting, by_key), 0, entries)
        self._observe(second, started, entries, waiting)
        first.add(second)
        return first, []

    async def _stage(
        self,
        batch: ValidatedBatch,
        decisions: list[Decision],
        read: int,
        entries: Sequence[Entry],
    ) -> BatchOutcome:
        """Build under the compute lock (held on entry, released here), then write the
        MongoDB documents and commit, without the lock. `entries`: the raw entries the
        batch came from (their fields go with the events the sink refuses)."""
        if not (batch.accepted or batch.dead_letters or batch.trimmed):
            self.compute_lock.release()
            return BatchOutcome(read=read)  # a batch whose every event waits for the LLM
        try:
            pairs = list(zip(batch.accepted, decisions, strict=True))
            mongo_batch = self.mongo.build(pairs) if self.mongo is not None and pairs else None
            plan = self._plan(batch, pairs)
        finally:
            self.compute_lock.release()
        if self.mongo is not None and mongo_batch is not None:
            written = await observed(
                self.observer, "mongo", "bulk_write", self.mongo.write(mongo_batch)
            )
            if written.stored or written.rejected:
                # usage logs written before (a retry, another consumer) decide; events
                # refused by the ownership check leave the batch as dead letters
                decisions = _keep_stored(decisions, written.stored)
                decisions = _drop_rejected(batch, decisions, written, entries)
                pairs = list(zip(batch.accepted, decisions, strict=True))
                plan = self._plan(batch, pairs)
        outcome = await self.commit(batch, pairs, plan)
        outcome.read = read
        outcome.rejected_by_reason = dict(Counter(d.reason for d in batch.dead_letters))
        outcome.sources = dict(Counter(map(_source, decisions)))
        outcome.categories = dict(Counter(map(_category, decisions)))
        return outcome

    def _observe(
        self, outcome: BatchOutcome, started: float, entries: Sequence[Entry], part: ValidatedBatch
    ) -> None:
        """Report one stage of a two-stage batch with the entries it committed."""
        if part.accepted or part.dead_letters or part.trimmed:
            mine = _entries_of(entries, part)
            self.observer.batch_committed(outcome, time.perf_counter() - started, mine)

    async def _validate(self, entries: Sequence[Entry]) -> ValidatedBatch:
        """Validate in slices, yielding to the event loop between them.

        Another lane's request or reply is only written or read when the loop gets
        control; one long synchronous stretch per batch would hold its commit back and
        serialise the lanes' Redis and Python work instead of overlapping them.
        """
        now_s = time.time()
        out = ValidatedBatch()
        for start in range(0, len(entries), YIELD_EVERY):
            part = validate(entries[start : start + YIELD_EVERY], self.settings, now_s)
            out.accepted += part.accepted
            out.dead_letters += part.dead_letters
            out.trimmed += part.trimmed
            await asyncio.sleep(0)
        return out

    def _plan(self, batch: ValidatedBatch, pairs: list[tuple[Event, Decision]]) -> CommitPlan:
        categories = list(map(_category, map(_second, pairs)))
        events = list(map(_first, pairs))
        plan = self.builder.plan_events(events, categories, batch.dead_letters)
        plan.ids.extend(batch.trimmed)
        return plan

    async def commit(
        self,
        batch: ValidatedBatch,
        pairs: list[tuple[Event, Decision]],
        plan: CommitPlan | None = None,
    ) -> BatchOutcome:
        """Commit, narrowing to the still-pending subset if another consumer got there first.

        Each failed attempt wrote nothing. When the attempts run out with ids still pending,
        raise CommitContended (a SinkError: the consumer holds the batch and retries it):
        returning would report as committed a batch whose entries are still pending.
        """
        outcome = BatchOutcome(accepted=len(pairs), trimmed=len(batch.trimmed))
        accepted: list[tuple[Event, str]] | None = None  # built only if a retry narrows
        dead = batch.dead_letters
        plan = plan or self._plan(batch, pairs)
        total = len(plan.ids)
        for _ in range(MAX_COMMIT_ATTEMPTS):
            done, pending = await self.committer.commit_once(plan)
            if done:
                outcome.committed = len(plan.ids)
                outcome.skipped_already_acked = total - len(plan.ids)
                return outcome
            keep = set(pending)
            if accepted is None:
                accepted = [(e, d.category) for e, d in pairs]
            accepted = [(e, c) for e, c in accepted if e.entry_id in keep]
            dead = [d for d in dead if d.entry_id in keep]
            plan = self.builder.plan(accepted, dead)
            plan.ids.extend(i for i in batch.trimmed if i in keep)
            if not plan.ids:
                outcome.skipped_already_acked = total
                return outcome
        raise CommitContended(MAX_COMMIT_ATTEMPTS, len(plan.ids))


def _split(
    batch: ValidatedBatch, event_keys: list[ClassKey], by_key: Mapping[ClassKey, Decision]
) -> tuple[ValidatedBatch, ValidatedBatch]:
    """The batch's decided events with its dead letters and trimmed ids, and the events
    whose key waits for the LLM."""
    decided = ValidatedBatch(dead_letters=batch.dead_letters, trimmed=batch.trimmed)
    waiting = ValidatedBatch()
    for event, key in zip(batch.accepted, event_keys, strict=True):
        (decided if by_key[key].decided else waiting).accepted.append(event)
    return decided, waiting


def _entries_of(entries: Sequence[Entry], part: ValidatedBatch) -> list[Entry]:
    """The raw entries of `part` (its events, dead letters and trimmed ids), in order."""
    ids = {e.entry_id for e in part.accepted}
    ids.update(d.entry_id for d in part.dead_letters)
    ids.update(part.trimmed)
    return [entry for entry in entries if entry[0] in ids]


def _decisions(batch: ValidatedBatch, by_key: Mapping[ClassKey, Decision]) -> list[Decision]:
    return list(map(by_key.__getitem__, map(class_key, batch.accepted)))


async def _settle(task: asyncio.Task[None]) -> None:
    """Wait for `task` to end, whatever it raises (the caller has an error of its own)."""
    with contextlib.suppress(BaseException):
        await asyncio.shield(task)


def _keep_stored(decisions: list[Decision], stored: dict[int, str]) -> list[Decision]:
    """The decisions with the category of the usage logs already written, by event index.

    An event's category can change between two processings of it: an LLM answer that
    timed out the first time arrives before the retry, a pattern reload lands in between,
    or two consumers with different patterns process one reclaimed entry. Its usage log
    is written once (the first write wins), so its leaderboard increments follow that
    document, never the newer decision (docs/guarantees.md, "One category per event").
    """
    out = list(decisions)
    for index, category in stored.items():
        out[index] = replace(out[index], category=category)
    return out


def _drop_rejected(
    batch: ValidatedBatch,
    decisions: list[Decision],
    written: MongoOutcome,
    entries: Sequence[Entry],
) -> list[Decision]:
    """Move the events the ownership check refused from `batch.accepted` to its dead
    letters (with their entries' original fields); returns the remaining decisions."""
    if not written.rejected:
        return decisions
    rejected = {batch.accepted[i].entry_id: r for i, r in written.rejected.items()}
    for entry_id, fields in entries:
        why = rejected.get(entry_id)
        if why is not None and fields is not None and not isinstance(fields, Oversized):
            as_dict = fields_dict(fields) if isinstance(fields, list) else fields
            batch.dead_letters.append(
                DeadLetter(entry_id, as_dict, why.reason, why.field, why.detail)
            )
    keep = [i for i in range(len(batch.accepted)) if i not in written.rejected]
    batch.accepted = [batch.accepted[i] for i in keep]
    return [decisions[i] for i in keep]


def _users_of(keys: Sequence[ClassKey], events: Sequence[Event]) -> dict[ClassKey, list[str]]:
    """The distinct users whose events carry each key, in the batch's event order: the
    first owns the key's LLM request and share of the calls (issue #15 §2); learning needs
    verdicts from distinct users (classifiers/llm/learning.py). Only run for batches with
    undecided keys."""
    wanted = set(keys)
    seen: dict[ClassKey, dict[str, None]] = {}
    for event in events:
        key = class_key(event)
        if key in wanted:
            seen.setdefault(key, {})[event.user_id] = None
    return {k: list(users) for k, users in seen.items()}
