"""Counters of the LLM fallback, read by the metrics endpoint."""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass, field

# Upper bounds (seconds) of the latency histogram buckets; the last bucket is +Inf.
LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
# Calls kept for the metrics sync between two of its runs (every few seconds). The call
# budget keeps real rates far below this; beyond it the oldest samples are dropped and
# only the histograms miss them (the counters above stay exact).
RECENT_CALLS = 1000


@dataclass(frozen=True, slots=True)
class CallSample:
    """One HTTP request to the LLM, for the per-model latency and items histograms."""

    model: str
    items: int
    seconds: float


@dataclass
class LLMStats:
    calls: int = 0  # HTTP requests sent (every attempt, every model)
    calls_by_model: Counter[str] = field(default_factory=Counter)
    items: int = 0  # items sent in those requests
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # (model, "prompt" | "completion") -> tokens the server reported
    tokens_by_model: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency_sum_s: float = 0.0
    latency_count: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    errors: Counter[str] = field(default_factory=Counter)  # by LLMError.kind
    circuit_state: str = "closed"
    circuit_opened: int = 0
    cache_hits: int = 0  # keys answered from memory instead of the LLM
    coalesced: int = 0  # keys that joined a request already pending
    verdicts: int = 0  # keys the LLM classified
    invalid_items: int = 0  # keys that got no valid label even item by item
    queued: int = 0  # keys handed to the background reclassifier
    # keys given the no-LLM rule without asking, every waiting slot being taken (issue #15
    # §6: `LLMResolver.defer`); queued too, so also counted in `queued`
    overflow_keys: int = 0
    # keys the queue dropped, by reason: full, expired, too_large (classifiers/llm/queue.py)
    queue_dropped: Counter[str] = field(default_factory=Counter)
    throttled_items: int = 0  # items refused a call because their user's share was spent
    reclassified: int = 0  # categorized_data docs corrected by the reclassifier
    learned_patterns: int = 0
    learning_capped: int = 0  # subjects that qualified but found POMOCORE_LLM_LEARNED_MAX
    fallback_used: int = 0  # requests answered by the fallback model
    # Calls not yet copied into the metrics histograms (drained by the metrics sync).
    recent_calls: deque[CallSample] = field(default_factory=lambda: deque(maxlen=RECENT_CALLS))

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def observe_latency(self, seconds: float) -> None:
        self.latency_sum_s += seconds
        self.latency_count += 1
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def observe_call(self, model: str, items: int, seconds: float) -> None:
        """One request finished (answered or not) after `seconds`."""
        self.observe_latency(seconds)
        self.recent_calls.append(CallSample(model, items, seconds))

    def add_tokens(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.tokens_by_model[(model, "prompt")] += prompt_tokens
        self.tokens_by_model[(model, "completion")] += completion_tokens

    def drain_calls(self) -> list[CallSample]:
        """The calls observed since the last drain (oldest first)."""
        out = list(self.recent_calls)
        self.recent_calls.clear()
        return out
