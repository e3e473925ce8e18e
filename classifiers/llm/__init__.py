"""LLM fallback for the keys patterns cannot decide (issue #4); see docs/llm.md.

The consumer builds one `LLMResolver.from_settings(...)` per process, calls
`resolve(keys)` once per batch and runs `Reclassifier(...).run(stop)` in the background.
"""

from pomocore.classifiers.llm.errors import (
    LLMBadAnswer,
    LLMError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMRetryable,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
    LLMUnreachable,
)
from pomocore.classifiers.llm.learning import LearnedPattern, Learner
from pomocore.classifiers.llm.reclassifier import Reclassifier
from pomocore.classifiers.llm.resolver import LLMResolver, Verdict
from pomocore.classifiers.llm.stats import LLMStats

__all__ = [
    "LLMBadAnswer",
    "LLMError",
    "LLMRateLimited",
    "LLMRequestRejected",
    "LLMResolver",
    "LLMRetryable",
    "LLMServerError",
    "LLMStats",
    "LLMTimeout",
    "LLMUnavailable",
    "LLMUnreachable",
    "LearnedPattern",
    "Learner",
    "Reclassifier",
    "Verdict",
]
