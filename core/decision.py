"""What a classifier answers for one (app, url, title)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Source = Literal["app", "domain", "title", "cache", "llm", "default"]

# `default` means no pattern decided: the no-LLM rule (Browsing for a browser,
# Uncategorized otherwise) was applied, and the LLM may still be asked.
UNDECIDED_SOURCE: Final = "default"


@dataclass(frozen=True, slots=True)
class Decision:
    category: str
    source: Source
    pattern: str = ""

    @property
    def decided(self) -> bool:
        return self.source != UNDECIDED_SOURCE


ClassKey = tuple[str, str, str]
"""(app, url, title): the key of one categorized_data document and of the decision cache."""
