"""LLMResolver: the one object the consumer talks to.

Per batch the consumer calls `await resolver.resolve(undecided_keys, users)`. The resolver
answers from memory when it can (in-process LRU, then `categorized_data` documents with
`isLLMBased: true`), otherwise adds the keys to a shared request buffer: keys of this and
of the following batches within `window_s` go out together, up to `batch_size` per
request, and a key already pending joins that request instead of asking again.
`users` maps each key to ALL the users whose events carry it in the batch, in event order.
Requests never mix users (issue #15 §2): each key has one owner, the first of its users
(`owner`; a set is sorted first, so the choice is deterministic either way), keys are
buffered per owner, so a title that steers its request can only steer keys of its own
owner, and each call counts against that owner's share of the budget; a queued key keeps
its owner. Learning (issue #15 §3) needs distinct users: every user of a pending key (up
to MAX_USERS_PER_KEY) is kept beside it and handed to `Learner.observe` with the verdict.

`resolve` never raises and never waits longer than `timeout_s` plus a small margin. Keys
it cannot answer in time (LLM down, circuit open, budget spent) are queued for the
background reclassifier and left out of the result, so the caller applies the no-LLM rule.
`defer` does the same without asking at all, for a batch that cannot wait (every waiting
slot of its process taken, issue #15 §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pomocore.classifiers.llm import prompt
from pomocore.classifiers.llm.budget import BUDGET, USER_SHARE, Budget
from pomocore.classifiers.llm.circuit import STATE_VALUE, CircuitBreaker
from pomocore.classifiers.llm.client import Answer, LLMClient
from pomocore.classifiers.llm.errors import (
    LLMBadAnswer,
    LLMError,
    LLMRetryable,
    LLMTimeout,
    LLMUnavailable,
    translate,
)
from pomocore.classifiers.llm.learning import Learner, Mode
from pomocore.classifiers.llm.prompt import Send
from pomocore.classifiers.llm.queue import PendingQueue
from pomocore.classifiers.llm.retry import RetryPolicy, backoff_delay, should_retry
from pomocore.classifiers.llm.stats import LLMStats
from pomocore.classifiers.lru import KeyLRU
from pomocore.core.categories import canonical
from pomocore.core.decision import ClassKey, Decision
from pomocore.core.ids import categorized_data_id
from pomocore.core.logs import Every, key_fingerprint

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from pymongo.asynchronous.database import AsyncDatabase

    from pomocore.core.settings import Settings

log = logging.getLogger(__name__)

# Extra time resolve() allows beyond timeout_s for memory lookups and queueing.
MARGIN_S = 1.0
# Share of the remaining time the primary model may use when a fallback model exists.
PRIMARY_SHARE = 0.6
# Memory lookups in MongoDB must not eat the LLM's time.
MEMORY_LOOKUP_S = 2.0
# Calls one process has in flight at most (each holds a Redis connection for its budget
# check, then an HTTP connection): splitting a request never fans out beyond this.
MAX_IN_FLIGHT = 4
# Users remembered per pending key, for learning: more than any sane
# POMOCORE_LLM_LEARN_MIN_USERS needs from one key, and a bound on memory.
MAX_USERS_PER_KEY = 16
# At most one warning per this many seconds about keys deferred without asking (`defer`):
# a saturated LLM defers keys at every batch.
OVERFLOW_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    category: str
    model: str


Outcome = Verdict | LLMError


class LLMResolver:
    def __init__(
        self,
        *,
        client: LLMClient,
        budget: Budget,
        queue: PendingQueue,
        db: AsyncDatabase[Any] | None,
        model: str,
        fallback_model: str = "",
        timeout_s: float = 20.0,
        open_circuit_s: float = 15.0,
        failure_threshold: int = 5,
        batch_size: int = 25,
        window_s: float = 0.05,
        retry: RetryPolicy | None = None,
        memory_size: int = 100_000,
        memory_bytes: int = 16 << 20,
        learner: Learner | None = None,
        rand: Callable[[], float] = random.random,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._client = client
        self.budget = budget
        self.queue = queue
        self._db = db
        self.models = [model] + ([fallback_model] if fallback_model not in ("", model) else [])
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.window_s = window_s
        self.retry = retry or RetryPolicy()
        self.learner = learner
        self._rand = rand
        self.breakers = {m: CircuitBreaker(failure_threshold, open_circuit_s) for m in self.models}
        self._not_before: dict[str, float] = dict.fromkeys(self.models, 0.0)
        self.stats = LLMStats()
        # Verdicts remembered, and keys the LLM answered invalidly even item by item (not
        # asked again by this process): each bounded in entries and in bytes (a key's
        # texts may be 8,192 Hangul characters each: classifiers/lru.py).
        self._memory: KeyLRU[Verdict] = KeyLRU(memory_size, memory_bytes, _verdict_bytes)
        self._rejected: KeyLRU[bool] = KeyLRU(memory_size, memory_bytes)
        self._pending: dict[ClassKey, asyncio.Future[Outcome]] = {}
        self._buffers: dict[str, list[ClassKey]] = {}  # per owner user ("" = not known)
        self._in_flight = asyncio.Semaphore(max_in_flight)
        # Users whose events asked for a pending key: the learner needs distinct users.
        self._asked_by: dict[ClassKey, set[str]] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._overflow_log = Every(OVERFLOW_LOG_EVERY_S)

    @classmethod
    def from_settings(
        cls, settings: Settings, redis: aioredis.Redis, db: AsyncDatabase[Any] | None
    ) -> LLMResolver | None:
        """The resolver for these settings, or None when no LLM is configured."""
        if not settings.llm_enabled:
            return None

        keys = settings.keys
        return cls(
            client=LLMClient(
                settings.llm_base_url, settings.llm_api_key, cast(Send, settings.llm_send)
            ),
            budget=Budget.from_settings(redis, settings),
            queue=PendingQueue.from_settings(redis, settings),
            db=db,
            model=settings.llm_model,
            fallback_model=settings.llm_fallback_model,
            timeout_s=settings.llm_timeout_s,
            open_circuit_s=settings.llm_open_circuit_s,
            batch_size=settings.llm_batch_size,
            memory_bytes=settings.llm_memory_bytes,
            learner=Learner(
                redis,
                db,
                keys,
                settings.llm_learn_after,
                min_users=settings.llm_learn_min_users,
                mode=cast(Mode, settings.llm_learn_mode),
                max_learned=settings.llm_learned_max,
            ),
        )

    # ------------------------------------------------------------------ public API

    async def resolve(
        self,
        keys: Iterable[ClassKey],
        users: Mapping[ClassKey, Collection[str]] | None = None,
    ) -> dict[ClassKey, Decision]:
        """LLM decisions for the keys answered in time; the others are queued. `users`:
        the user ids whose events carry each key, in the batch's order. All of them count
        for learning (distinct users); the first one owns the key: its request and its
        share of the calls (see `owner`). Keys of no named user share requests."""
        out: dict[ClassKey, Decision] = {}
        unique = list(dict.fromkeys(keys))
        if not unique:
            return out
        try:
            outcomes = await self.ask(unique, users=users, queue_unavailable=True)
        except Exception:  # resolve must never fail the batch
            log.exception("llm resolve failed; no-LLM rule for %d keys", len(unique))
            await self._enqueue(unique, users)
            return out
        for key, outcome in outcomes.items():
            if isinstance(outcome, Verdict):
                out[key] = Decision(outcome.category, "llm", outcome.model)
        return out

    async def defer(
        self,
        keys: Iterable[ClassKey],
        users: Mapping[ClassKey, Collection[str]] | None = None,
    ) -> dict[ClassKey, Decision]:
        """Keys of a batch that cannot wait for the LLM (every waiting slot of the process
        taken: consumers/consumer.py, issue #15 §6), treated as keys the budget refuses:
        the no-LLM rule now (left out of the result) and queued for the reclassifier, each
        with its owner. Only verdicts this process remembers are used (no lookup in
        MongoDB, no call: nothing to wait for but the queue's one write). Never raises."""
        distinct = list(dict.fromkeys(keys))
        remembered = self._remembered(distinct)
        self.stats.cache_hits += len(remembered)
        out = {k: Decision(v.category, "llm", v.model) for k, v in remembered.items()}
        rest = [k for k in distinct if k not in remembered]
        if rest:
            self.stats.overflow_keys += len(rest)
            self._log_overflow(len(rest))
            await self._enqueue(rest, users)
        return out

    def _log_overflow(self, keys: int) -> None:
        """Warn now and then (OVERFLOW_LOG_EVERY_S) that keys were deferred unasked."""
        if self._overflow_log.due():
            log.warning(
                "every POMOCORE_LLM_WAITING_BATCHES slot is taken: keys get the no-LLM "
                "rule without asking and are queued for the reclassifier",
                extra={"keys": keys, "overflow_keys_total": self.stats.overflow_keys},
            )

    async def ask(
        self,
        keys: Sequence[ClassKey],
        *,
        users: Mapping[ClassKey, Collection[str]] | None = None,
        queue_unavailable: bool = False,
        learn_users: bool = True,
    ) -> dict[ClassKey, Outcome]:
        """Outcome per key: a Verdict, LLMBadAnswer (invalid even item by item) or another
        LLMError (not answered in time). With `queue_unavailable` the latter are queued.
        `users` as for `resolve`; with `learn_users=False` they only choose each key's owner
        (request and share) and add no user to learning (the reclassifier's queued owners:
        a user counts when its own event asks, docs/llm.md "Learning you can trust")."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s + MARGIN_S
        outcomes: dict[ClassKey, Outcome] = dict(await self._recall(keys))
        rest = [k for k in keys if k not in outcomes]
        for key in rest:
            if key in self._rejected:
                outcomes[key] = LLMBadAnswer("answered invalidly before")
        rest = [k for k in rest if k not in outcomes]
        if rest and not self.available():
            for key in rest:
                outcomes[key] = LLMUnavailable(self._unavailable_reason())
            self.stats.errors["unavailable"] += len(rest)
            rest = []
        if rest:
            who = users or {}
            futures = {
                k: self._submit(k, ordered_users(who.get(k, ())), learn=learn_users) for k in rest
            }
            await asyncio.wait(futures.values(), timeout=max(0.0, deadline - loop.time()))
            for key, fut in futures.items():
                outcomes[key] = fut.result() if fut.done() else LLMTimeout("no answer in time")
        if queue_unavailable:
            unanswered = [
                k for k, o in outcomes.items()
                if not isinstance(o, Verdict | LLMBadAnswer)
            ]
            await self._enqueue(unanswered, users)
        return outcomes

    def available(self) -> bool:
        """Could a call go out now (some model's circuit allows it and no Retry-After holds)?"""
        now = asyncio.get_running_loop().time()
        return any(
            self.breakers[m].would_allow() and now >= self._not_before[m] for m in self.models
        )

    def remember(self, key: ClassKey, verdict: Verdict) -> None:
        self._memory.put(key, verdict)

    def refresh_stats(self) -> LLMStats:
        """Stats with the circuit state of the primary model brought up to date."""
        primary = self.breakers[self.models[0]]
        if self.learner is not None:
            self.stats.learned_patterns = self.learner.learned
            self.stats.learning_capped = self.learner.capped
        self.stats.circuit_state = primary.state
        self.stats.circuit_opened = sum(b.opened_count for b in self.breakers.values())
        return self.stats

    @property
    def circuit_state_value(self) -> int:
        """0 closed, 1 half-open, 2 open (primary model), for a gauge."""
        return STATE_VALUE[self.breakers[self.models[0]].state]

    async def close(self) -> None:
        """Cancel in-flight requests (their keys are queued) and close the HTTP client."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._buffers:
            self._flush()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.close()

    # ------------------------------------------------------------------ memory

    def _remembered(self, keys: Sequence[ClassKey]) -> dict[ClassKey, Verdict]:
        """The verdicts this process's memory holds for `keys`."""
        found: dict[ClassKey, Verdict] = {}
        for key in keys:
            verdict = self._memory.get(key)
            if verdict is not None:
                found[key] = verdict
        return found

    async def _recall(self, keys: Sequence[ClassKey]) -> dict[ClassKey, Verdict]:
        found = self._remembered(keys)
        missing = [k for k in keys if k not in found and k not in self._pending]
        if missing and self._db is not None:
            try:
                async with asyncio.timeout(MEMORY_LOOKUP_S):
                    found.update(await self._recall_db(missing))
            except Exception as exc:  # memory is an optimisation: carry on without it
                log.warning("llm memory lookup failed: %s", type(exc).__name__)
        self.stats.cache_hits += len(found)
        return found

    async def _recall_db(self, keys: Sequence[ClassKey]) -> dict[ClassKey, Verdict]:
        assert self._db is not None
        by_id = {categorized_data_id(*k): k for k in keys}
        found: dict[ClassKey, Verdict] = {}
        cursor = self._db["categorized_data"].find(
            {"_id": {"$in": list(by_id)}, "isLLMBased": True},
            {"app": 1, "url": 1, "title": 1, "category": 1},
        )
        async for doc in cursor:
            key = by_id.get(doc["_id"])
            label = doc.get("category")
            # The id is a hash: check the document really is this key.
            if key is None or (doc.get("app"), doc.get("url", ""), doc.get("title", "")) != key:
                continue
            canonical_label = canonical(label) if isinstance(label, str) else None
            if canonical_label is not None:
                verdict = Verdict(canonical_label, "memory")
                self.remember(key, verdict)
                found[key] = verdict
        return found

    # ------------------------------------------------------------------ batching

    def _submit(
        self, key: ClassKey, users: Sequence[str] = (), *, learn: bool = True
    ) -> asyncio.Future[Outcome]:
        """Buffer `key` in its owner's request (the first of `users`); with `learn` every
        user of it is remembered (up to MAX_USERS_PER_KEY) for the learner."""
        if users and learn:
            asked_by = self._asked_by.setdefault(key, set())
            for name in users:
                if len(asked_by) >= MAX_USERS_PER_KEY:
                    break
                asked_by.add(name)
        user = users[0] if users else ""
        pending = self._pending.get(key)
        if pending is not None:
            self.stats.coalesced += 1
            return pending
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outcome] = loop.create_future()
        self._pending[key] = fut
        buffer = self._buffers.setdefault(user, [])
        buffer.append(key)
        if len(buffer) >= self.batch_size:
            self._send(user, self._buffers.pop(user))
        if self._buffers and self._flush_timer is None:
            self._flush_timer = loop.call_later(self.window_s, self._flush)
        return fut

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        buffers, self._buffers = self._buffers, {}
        for user, keys in buffers.items():
            self._send(user, keys)

    def _send(self, user: str, keys: list[ClassKey]) -> None:
        """One request per `batch_size` keys of one user."""
        for i in range(0, len(keys), self.batch_size):
            chunk = keys[i : i + self.batch_size]
            task = asyncio.get_running_loop().create_task(self._run_request(chunk, user))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_request(self, keys: list[ClassKey], user: str = "") -> None:
        loop = asyncio.get_running_loop()
        results: dict[ClassKey, Outcome] = {}
        users: dict[ClassKey, set[str]] = {}
        try:
            results = await self._ask_llm(keys, loop.time() + self.timeout_s, user=user)
        except asyncio.CancelledError:
            results = {k: LLMUnavailable("shutdown") for k in keys}
            raise
        except Exception as exc:
            log.exception("llm request failed unexpectedly")
            results = {k: translate(exc) for k in keys}
        finally:
            for key in keys:
                users[key] = self._asked_by.pop(key, set())  # with its future: same request
                fut = self._pending.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_result(results.get(key, LLMError("no result")))
            self.refresh_stats()
        verdicts = {k: v.category for k, v in results.items() if isinstance(v, Verdict)}
        if verdicts and self.learner is not None:
            try:
                await self.learner.observe(verdicts, users)
            except Exception as exc:  # learning is an optimisation too
                log.warning("llm learning failed: %s", type(exc).__name__)
            finally:  # (counted by the learner at each save: a shutdown meanwhile loses none)
                self.stats.learned_patterns = self.learner.learned

    # ------------------------------------------------------------------ calling

    async def _ask_llm(
        self, keys: list[ClassKey], deadline: float, *, retry_invalid: bool = True, user: str = ""
    ) -> dict[ClassKey, Outcome]:
        """Outcome per key. A bad answer costs calls in proportion to the bad items, not to
        the request (issue #15 §1): valid entries are kept; the invalid items are asked again
        once, together; an answer that cannot be matched to its items (unparsable, wrong
        length) is split in halves, down to single items at worst (~2·log2(n) calls)."""
        try:
            answer = await self._call_models(keys, deadline, user)
        except LLMBadAnswer:
            if len(keys) == 1:
                return {keys[0]: self._give_up(keys[0])}
            mid = len(keys) // 2
            halves = await asyncio.gather(
                self._ask_llm(keys[:mid], deadline, retry_invalid=retry_invalid, user=user),
                self._ask_llm(keys[mid:], deadline, retry_invalid=retry_invalid, user=user),
            )
            return halves[0] | halves[1]
        except LLMError as exc:
            log.info("llm unavailable for %d keys: %s", len(keys), exc.kind)
            return {k: exc for k in keys}
        out = self._accept(keys, answer)
        invalid = [k for k in keys if k not in out]
        if invalid and retry_invalid:
            out.update(await self._ask_llm(invalid, deadline, retry_invalid=False, user=user))
        else:
            out.update({k: self._give_up(k) for k in invalid})
        return out

    def _accept(self, keys: list[ClassKey], answer: Answer) -> dict[ClassKey, Outcome]:
        """Verdicts of the valid entries; items with an invalid entry are left out."""
        out: dict[ClassKey, Outcome] = {}
        for key, label in zip(keys, answer.labels, strict=True):
            if label is None:
                continue
            verdict = Verdict(label, answer.model)
            self.remember(key, verdict)
            out[key] = verdict
        self.stats.verdicts += len(out)
        return out

    def _give_up(self, key: ClassKey) -> LLMBadAnswer:
        self.stats.invalid_items += 1
        log.warning("llm gave no valid label; no-LLM rule for %s", key_fingerprint(key))
        self._rejected.put(key, True)
        return LLMBadAnswer("no valid label")

    async def _call_models(self, keys: list[ClassKey], deadline: float, user: str = "") -> Answer:
        """Primary model, then the fallback model when the primary fails (not when it
        answers badly, and not when the shared budget or the user's share is spent)."""
        loop = asyncio.get_running_loop()
        last: LLMError = LLMUnavailable("circuit_open")
        for i, model in enumerate(self.models):
            is_last = i == len(self.models) - 1
            model_deadline = (
                deadline if is_last else loop.time() + (deadline - loop.time()) * PRIMARY_SHARE
            )
            try:
                answer = await self._call_with_retries(keys, model, model_deadline, user)
            except LLMBadAnswer:
                raise
            except LLMUnavailable as exc:
                if exc.reason in (BUDGET, USER_SHARE):
                    raise
                last = exc
            except LLMError as exc:
                last = exc
            else:
                if i > 0:
                    self.stats.fallback_used += 1
                return answer
        raise last

    async def _call_with_retries(
        self, keys: list[ClassKey], model: str, deadline: float, user: str
    ) -> Answer:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            wait = self._not_before[model] - loop.time()
            if wait > 0:
                if loop.time() + wait >= deadline:
                    raise LLMUnavailable("cooldown")
                await asyncio.sleep(wait)
            try:
                async with self._slot(deadline):
                    return await self._attempt(keys, model, deadline, user)
            except (LLMBadAnswer, LLMUnavailable):
                raise
            except LLMError as exc:
                retry_after = exc.retry_after_s if isinstance(exc, LLMRetryable) else None
                if retry_after:
                    self._not_before[model] = max(
                        self._not_before[model], loop.time() + retry_after
                    )
                if not should_retry(exc, attempt, self.retry):
                    raise
                delay = backoff_delay(attempt, exc, self.retry, self._rand())
                if loop.time() + delay >= deadline - 0.05:
                    raise
                await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def _slot(self, deadline: float) -> AsyncIterator[None]:
        """One of MAX_IN_FLIGHT call slots, waited for no later than the deadline: however a
        request is split, this process never has more calls (and budget checks, i.e. Redis
        connections) in flight than that."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await self._in_flight.acquire()
        except TimeoutError:
            raise LLMTimeout("no call slot before the deadline") from None
        try:
            yield
        finally:
            self._in_flight.release()

    async def _attempt(
        self, keys: list[ClassKey], model: str, deadline: float, user: str
    ) -> Answer:
        """One call: circuit, budget (and the user's share), the call itself."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0.05:
            raise LLMTimeout("deadline reached before the call")
        breaker = self.breakers[model]
        if not breaker.allow():
            raise LLMUnavailable("circuit_open")
        estimate = prompt.estimate_tokens(keys)
        refusal = await self.budget.reserve(estimate, user)
        if refusal is not None:
            breaker.release_probe()
            self._count_refusal(refusal, len(keys))
            raise LLMUnavailable(refusal)
        try:
            answer = await self._timed_call(keys, model, min(self.timeout_s, remaining))
        except LLMBadAnswer:
            breaker.record_success()  # the endpoint works; the answer was bad
            self.stats.errors["bad_answer"] += 1
            raise
        except LLMError as exc:
            breaker.record_failure()
            self.stats.errors[exc.kind] += 1
            raise
        breaker.record_success()
        await self.budget.settle(estimate, answer.prompt_tokens + answer.completion_tokens)
        return answer

    def _count_refusal(self, reason: str, items: int) -> None:
        self.stats.errors[reason] += 1
        if reason == USER_SHARE:
            self.stats.throttled_items += items

    async def _timed_call(self, keys: list[ClassKey], model: str, timeout_s: float) -> Answer:
        loop = asyncio.get_running_loop()
        self.stats.calls += 1
        self.stats.calls_by_model[model] += 1
        self.stats.items += len(keys)
        started = loop.time()
        try:
            answer = await self._client.classify(keys, model, timeout_s)
        finally:
            self.stats.observe_call(model, len(keys), loop.time() - started)
        self.stats.add_tokens(model, answer.prompt_tokens, answer.completion_tokens)
        return answer

    # ------------------------------------------------------------------ queueing

    def _unavailable_reason(self) -> str:
        now = asyncio.get_running_loop().time()
        if all(now < self._not_before[m] for m in self.models):
            return "cooldown"
        return "circuit_open"

    async def _enqueue(
        self,
        keys: Sequence[ClassKey],
        users: Mapping[ClassKey, Collection[str]] | None = None,
    ) -> None:
        """Queue keys for the reclassifier, each with its owner (asked within that user's
        share later)."""
        if not keys:
            return
        who = users or {}
        owners = {k: owner(who.get(k, ())) for k in keys}
        try:
            async with asyncio.timeout(MARGIN_S):
                dropped = await self.queue.add(keys, {k: u for k, u in owners.items() if u})
            self.stats.queued += len(keys) - sum(dropped.values())
            self.stats.queue_dropped.update(dropped)
        except Exception as exc:
            log.warning("could not queue %d keys for the LLM: %s", len(keys), type(exc).__name__)


def _verdict_bytes(verdict: Verdict) -> int:
    """A Verdict (56 bytes); its category is a shared canonical name, its model a short one
    of the settings (counted: a provider may name models as it likes)."""
    return 56 + len(verdict.model)


def ordered_users(users: Collection[str]) -> tuple[str, ...]:
    """The distinct, non-empty users of a key in a deterministic order: a sequence keeps
    its order (the consumer passes users in the batch's event order), an unordered
    collection is sorted, and a bare string is one user (not its characters)."""
    if isinstance(users, str):
        return (users,) if users else ()
    if not isinstance(users, Sequence):
        users = sorted(users)
    return tuple(u for u in dict.fromkeys(users) if u)


def owner(users: Collection[str]) -> str:
    """The one user a key is asked for (its request, its share of the calls, the queue's
    users hash): the first of `ordered_users`, i.e. the first in the batch's order; ""
    for none."""
    ordered = ordered_users(users)
    return ordered[0] if ordered else ""


def decisions(outcomes: Mapping[ClassKey, Outcome]) -> dict[ClassKey, Decision]:
    """The Decisions of the verdicts among `outcomes`."""
    return {
        k: Decision(o.category, "llm", o.model)
        for k, o in outcomes.items()
        if isinstance(o, Verdict)
    }
