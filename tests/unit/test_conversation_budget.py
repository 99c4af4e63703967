"""A conversation's token budget (docs/agent.md, "Budget"): each turn's prompt is estimated
within the install's budget (the oldest turns summarised), calibrated by what the provider
reports, and an answer's attempts stop at the per-turn token budget. Against the LLM stand-in
over real HTTP where a provider answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devkit.standins.llm import LLMStandIn, Reply, serving_llm
from docrelay.agent.loop import converse
from docrelay.agent.prompts import FixRequest, GenerateRequest, build_chat_prompt
from docrelay.agent.providers import Anthropic, OpenAICompatible
from docrelay.agent.tokens import calibrated, estimate_prompt, estimate_tokens
from docrelay.models.conversation import (
    IntegrationConversationStatus,
    PromptTokens,
    ThreadTurn,
    TurnKind,
    TurnRole,
)
from docrelay.reconcile.conversation import answer_tokens, chat_prompt

KEY = "sk-budget-test"
BAD = (
    "Here it is.\n\n```python\nimport pandas\n\ndef lambda_handler(event, context):\n    pass\n```"
)


@pytest.mark.parametrize(
    ("text", "at_least"),
    [
        # Token counts of OpenAI's cl100k tokenizer: the estimate must not be lower.
        ("hello world", 2),
        ("The quick brown fox jumps over the lazy dog.", 10),
        # Outside ASCII a character is a whole token (CJK is about one a character).
        ("請求書番号", 5),
        ("", 0),
    ],
)
def test_the_estimate_runs_high(text: str, at_least: int) -> None:
    assert estimate_tokens(text) >= at_least
    assert estimate_tokens(text) <= max(at_least * 2, len(text))


def test_code_is_estimated_at_three_characters_a_token() -> None:
    code = "def lambda_handler(event, context):\n    return {'ok': True}\n"
    assert estimate_tokens(code) == -(-len(code) // 3)
    # A prompt adds 4 tokens a message, the system prompt included.
    assert estimate_prompt("sys", ["a", "b"]) == 1 + 4 + 2 * (1 + 4)


def test_the_budget_shrinks_when_the_provider_counted_more_than_estimated() -> None:
    assert calibrated(30_000, None, None) == 30_000
    assert calibrated(30_000, 1_000, 900) == 30_000  # the estimate ran high: as is
    assert calibrated(30_000, 1_000, 1_500) == 20_000  # it ran low by half: two thirds


def request_for(words: str) -> GenerateRequest:
    return GenerateRequest(
        integration="bills",
        workspace="ws",
        document_type="dt",
        trigger="DocumentValidated",
        instructions=words or "(none)",
    )


def thread(n: int, size: int = 1500) -> IntegrationConversationStatus:
    turns = [ThreadTurn(id="u-0", role=TurnRole.USER, text="Post each invoice to the ERP.")]
    for i in range(1, n + 1):
        turns.append(ThreadTurn(id=f"u-{i}", role=TurnRole.USER, text=f"guidance {i} " * size))
        turns.append(
            ThreadTurn(id=f"a-{i}", role=TurnRole.AGENT, kind=TurnKind.QUESTION, text=f"Q{i}?")
        )
    turns.append(ThreadTurn(id="u-last", role=TurnRole.USER, text="the newest words"))
    return IntegrationConversationStatus(turns=tuple(turns))


def test_a_long_thread_is_fitted_to_the_budget_with_its_oldest_turns_summarised() -> None:
    status = thread(40, size=300)  # about 40 x 1,000 tokens of guidance
    fitted = chat_prompt(status, request_for, None, None, 8_000)
    prompt = fitted.prompt
    sent = estimate_prompt(prompt.system, (m.content for m in prompt.messages))
    assert fitted.tokens.estimated == sent <= 8_000
    assert fitted.tokens.budget == 8_000 and fitted.tokens.left_out > 0
    assert prompt.messages[-1].content.endswith("the newest words")
    first = prompt.messages[0].content
    # The description stays; the oldest turns are summarised (a line each) or counted.
    assert "Post each invoice to the ERP." in first
    assert "Earlier in this conversation (summarised, oldest first):" in first
    assert "- user: guidance 1 guidance 1" in first and "..." in first
    whole = sum(1 for m in prompt.messages[1:] if "guidance" in m.content)
    assert whole < 40 and first.count("\n- user: guidance") == 40 - whole
    # The newest whole turns are sent as they are.
    assert any(m.content.startswith("Q40?") or "Q40?" in m.content for m in prompt.messages)


def test_a_short_thread_is_sent_whole() -> None:
    status = thread(2, size=3)
    fitted = chat_prompt(status, request_for, None, None, 32_000)
    text = "\n".join(m.content for m in fitted.prompt.messages)
    assert fitted.tokens.left_out == 0 and "summarised" not in text
    assert "guidance 1" in text and "guidance 2" in text and "Q2?" in text


def test_the_fix_prompt_and_the_current_code_count_against_the_budget() -> None:
    fix = FixRequest(
        integration="bills",
        workspace="ws",
        document_type="dt",
        trigger="DocumentValidated",
        run="bills-run",
        revision="bills-r1",
        code="def lambda_handler(event, context):\n    raise KeyError('po')\n" * 40,
        error_class="CodeError",
        exception_type="KeyError",
        error_message="KeyError: 'po'",
        logs="x" * 9_000,
    )
    status = thread(20, size=100).model_copy(update={"revision": "bills-r2"})
    code = "def lambda_handler(event, context):\n    return None\n" * 60
    fitted = chat_prompt(status, lambda _: fix, "bills-r2", code, 9_000)
    text = "\n".join(m.content for m in fitted.prompt.messages)
    assert fitted.tokens.estimated <= 9_000
    assert "KeyError: 'po'" in text and "The code of revision bills-r2 now" in text
    roomy = chat_prompt(status, lambda _: fix, "bills-r2", code, 100_000)
    assert fitted.tokens.left_out > roomy.tokens.left_out == 0


def test_a_budget_smaller_than_the_base_prompt_still_sends_the_newest_turn() -> None:
    fitted = chat_prompt(thread(3, size=50), request_for, None, None, 500)
    assert fitted.tokens.estimated > 500
    assert fitted.prompt.messages[-1].content.endswith("the newest words")
    assert fitted.tokens.left_out == 6 and "(6 older turn(s)" in fitted.prompt.messages[0].content


def test_the_next_prompt_is_smaller_after_the_provider_counted_more() -> None:
    status = thread(40, size=300)
    first = chat_prompt(status, request_for, None, None, 8_000)
    _, record = answer_tokens(first.tokens, [(first.tokens.estimated * 2, 10)])
    assert record.reported == first.tokens.estimated * 2
    second = chat_prompt(
        status.model_copy(update={"prompt_tokens": record}), request_for, None, None, 8_000
    )
    assert second.tokens.budget == 4_000
    assert second.tokens.estimated <= 4_000 < first.tokens.estimated
    assert second.tokens.left_out > first.tokens.left_out


def test_what_an_answer_cost_is_the_sum_of_its_attempts() -> None:
    usage, record = answer_tokens(PromptTokens(estimated=900, budget=8_000), [(800, 50), (900, 60)])
    assert (usage.input_tokens, usage.output_tokens) == (1_700, 110)
    assert record.reported == 800 and record.estimated == 900
    assert answer_tokens(PromptTokens(estimated=5), [(None, None)])[1].reported is None


# --- the per-turn token budget, with the usage the provider reports ---------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[LLMStandIn, str]]:
    with serving_llm(api_key=KEY) as (stand_in, server):
        yield stand_in, server.base_url


@pytest.fixture(params=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest, served: tuple[LLMStandIn, str]) -> Any:
    stand_in, base = served
    stand_in.clear()
    common: dict[str, Any] = {"api_key": KEY, "sleep": lambda _: None}
    if request.param == "openai":
        return OpenAICompatible(base_url=base + "/v1", model="gpt-test", **common)
    return Anthropic(base_url=base, model="claude-test", **common)


def test_an_answer_is_not_asked_again_past_its_token_budget(
    served: tuple[LLMStandIn, str], provider: Any
) -> None:
    llm, _ = served
    # The provider reports 6,000 prompt tokens for the first question: asking again would
    # cost about as much once more, past the 10,000 the turn may spend.
    llm.script(Reply(BAD, input_tokens=6_000, output_tokens=40), Reply(BAD))
    prompt = build_chat_prompt(request_for("post bills"), [("user", "go")])
    result = converse(provider, prompt, request_for("post bills"), 3, token_budget=10_000)
    assert result.code is None and len(result.attempts) == 1 and len(llm.requests) == 1
    assert result.attempts[0].usage.input_tokens == 6_000
    assert result.failure is not None
    assert "this answer has cost 6040 tokens" in result.failure
    assert "would pass its budget of 10000" in result.failure
    assert "import of 'pandas'" in result.failure


def test_within_its_budget_an_answer_is_asked_again(
    served: tuple[LLMStandIn, str], provider: Any
) -> None:
    llm, _ = served
    llm.script(Reply(BAD, input_tokens=600, output_tokens=40), Reply(BAD), Reply(BAD))
    prompt = build_chat_prompt(request_for("post bills"), [("user", "go")])
    result = converse(provider, prompt, request_for("post bills"), 3, token_budget=10_000)
    assert result.code is None and len(result.attempts) == 3 and len(llm.requests) == 3
    assert result.failure is not None and "refused 3 times" in result.failure
