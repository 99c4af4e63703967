"""What the agent and a language model exchange, and how a provider fails. Pure: no I/O.

Kept apart from `providers` (the HTTP clients) so prompts and the loop can use these types
without importing an HTTP library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One turn of the conversation; the system prompt travels separately."""

    role: Role
    content: str


@dataclass(frozen=True)
class Usage:
    """Tokens the provider counted, when it says (some compatible servers do not)."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    """The model's reply."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    # True when the reply was cut off at max_tokens: its code is likely incomplete.
    truncated: bool = False


class Provider(Protocol):
    """A language model behind some API."""

    @property
    def model(self) -> str: ...

    def complete(
        self, system: str, messages: list[Message], max_tokens: int | None = None
    ) -> Completion: ...


class ProviderError(Exception):
    """The provider could not give a completion. The message never holds the API key."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.status = status
        # Seconds the provider asked us to wait, when it did: the caller can schedule a
        # later try (kopf.TemporaryError(delay=...)) instead of blocking.
        self.retry_after = retry_after
        self.attempts = attempts


class ProviderUnavailable(ProviderError):
    """Worth trying later: unreachable, timed out, rate-limited or failing (5xx), retries spent."""


class ProviderRejected(ProviderError):
    """The provider refused the request (4xx other than a rate limit): retrying will not help."""
