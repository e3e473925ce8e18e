"""One chat-completions call through `openai.AsyncOpenAI`, errors translated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from pomocore.classifiers.llm import prompt
from pomocore.classifiers.llm.errors import LLMError, LLMRequestRejected, translate
from pomocore.core.decision import ClassKey

log = logging.getLogger(__name__)

# At DEBUG the SDK and its HTTP client log request bodies, i.e. raw titles and URLs. Our
# logs never contain those (issue #4), so their loggers are capped at INFO.
_CHATTY_LOGGERS = ("openai", "httpx", "httpx2", "httpcore")


def _quiet_sdk_loggers() -> None:
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


@dataclass(frozen=True, slots=True)
class Answer:
    labels: list[str | None]  # None: that item's entry was invalid (prompt.parse_answer)
    model: str
    prompt_tokens: int
    completion_tokens: int


class LLMClient:
    """Sends one request per call: no SDK retries (we own the retry policy), no tools."""

    def __init__(self, base_url: str, api_key: str, send: prompt.Send = "full") -> None:
        _quiet_sdk_loggers()
        self.send = send  # what of each item leaves the process (prompt.outbound_fields)
        self._client = openai.AsyncOpenAI(
            base_url=base_url or None,
            # Local servers (Ollama, vLLM) ignore the key, but the SDK insists on one.
            api_key=api_key or "unused",
            max_retries=0,
        )
        # Cleared the first time the server refuses `response_format` (older vLLM/Ollama).
        self.json_mode = True

    async def close(self) -> None:
        await self._client.close()

    async def classify(self, keys: Sequence[ClassKey], model: str, timeout_s: float) -> Answer:
        """Labels for `keys` in order (None per invalid entry), or an LLMError (LLMBadAnswer
        if the answer as a whole is unusable)."""
        try:
            completion = await self._create(keys, model, timeout_s)
        except LLMRequestRejected as exc:
            if not (self.json_mode and exc.status in (400, 422)):
                raise
            # Servers without JSON mode reject the parameter; the prompt alone asks for JSON
            # and the parser is just as strict, so retry once without it.
            self.json_mode = False
            log.info("llm server refused response_format; continuing without JSON mode")
            completion = await self._create(keys, model, timeout_s)
        content = completion.choices[0].message.content if completion.choices else None
        estimate = prompt.estimate_tokens(keys)
        usage = completion.usage
        prompt_tokens = usage.prompt_tokens if usage else estimate
        completion_tokens = usage.completion_tokens if usage else 0
        labels = prompt.parse_answer(content, len(keys))
        return Answer(labels, model, prompt_tokens, completion_tokens)

    async def _create(self, keys: Sequence[ClassKey], model: str, timeout_s: float) -> Any:
        extra: dict[str, Any] = {}
        if self.json_mode:
            extra["response_format"] = {"type": "json_object"}
        try:
            # asyncio.timeout backs up the SDK timeout: a server trickling bytes must
            # still not hold us past our deadline.
            async with asyncio.timeout(timeout_s + 0.5):
                return await self._client.chat.completions.create(
                    model=model,
                    messages=prompt.messages(keys, self.send),  # type: ignore[arg-type]
                    temperature=0,
                    timeout=timeout_s,
                    **extra,
                )
        except LLMError:
            raise
        except (openai.OpenAIError, TimeoutError) as exc:
            raise translate(exc) from exc
