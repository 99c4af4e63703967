"""How many tokens a prompt will cost, estimated without a tokenizer. Pure: no I/O.

No tokenizer can be used here: tiktoken downloads its encodings when first used, which an
air-gapped cluster cannot do, and Anthropic's tokenizer is not published. So the agent
estimates, on the high side, and learns from what the provider reports (`usage.prompt_tokens`
/ `input_tokens`): see `calibrated`.

The estimate (docs/agent.md, "Budget"): the BPE tokenizers of OpenAI's and Anthropic's models
give about 4 characters of English and 3.5 of code per token, so counting every 3 ASCII
characters as a token runs high; a character outside ASCII counts as a whole token (CJK text is
about one token a character, accented letters fewer); each message adds 4 tokens (its role and
separators), the system prompt likewise.
"""

from __future__ import annotations

from collections.abc import Iterable

ASCII_CHARS_PER_TOKEN = 3
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """A high estimate of the tokens `text` costs."""
    ascii_chars = sum(1 for c in text if ord(c) < 128)
    return -(-ascii_chars // ASCII_CHARS_PER_TOKEN) + (len(text) - ascii_chars)


def estimate_prompt(system: str, messages: Iterable[str]) -> int:
    """A high estimate of a whole prompt: the system prompt and each message, with overhead."""
    total = estimate_tokens(system) + MESSAGE_OVERHEAD
    for content in messages:
        total += estimate_tokens(content) + MESSAGE_OVERHEAD
    return total


def calibrated(budget: int, estimated: int | None, reported: int | None) -> int:
    """The budget in estimated tokens: `budget` itself while the estimate runs high, and
    smaller by the ratio when the provider reported more tokens for a prompt than we estimated
    for it (another tokenizer, another language), so the next prompt keeps within `budget` as
    the provider counts."""
    if not estimated or not reported or reported <= estimated:
        return budget
    return budget * estimated // reported
