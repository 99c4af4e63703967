"""The agent's loop against the stand-in over real HTTP: ask, check, ask again, give up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devkit.standins.llm import Fault, LLMStandIn, Recorded, Reply, serving_llm
from docrelay.agent.codecheck import Rule
from docrelay.agent.loop import generate, propose_fix
from docrelay.agent.prompts import (
    AccountRef,
    FixRequest,
    GenerateRequest,
    build_generate_prompt,
    prompt_hash,
)
from docrelay.agent.providers import (
    Anthropic,
    OpenAICompatible,
    ProviderRejected,
    ProviderUnavailable,
    RetryPolicy,
)
from tests.leakcheck import assert_clean, canary

KEY = "sk-agent-test-0b9e"
# The integration's secrets as the operator would hold them: the values must never reach a model.
SECRETS = {"LEDGER_CODE": canary(), "XERO_TENANT": canary()}
DOCUMENT = {"data": {"invoiceNumber": "INV-CANARY-0042", "total": 12.5}, "meta": {}}

GOOD = """\
import os

from docrelay.sdk import api_request, get_document


def lambda_handler(event, context):
    invoice = get_document(event["document_identifier"])["data"]
    api_request(
        "apn_kqAb12Cd",
        "https://api.xero.com/api.xro/2.0/Invoices",
        body={"InvoiceNumber": invoice["invoiceNumber"], "Code": os.environ["LEDGER_CODE"]},
        headers={"Idempotency-Key": event["idempotency_key"]},
    )
    return {"summary": "bill created"}
"""
LEAKY = """\
import os
import pandas


def lambda_handler(event, context):
    print("ledger", os.environ["LEDGER_CODE"])
"""


def fenced(code: str, before: str = "Here is the module.") -> str:
    return f"{before}\n\n```python\n{code}```\n"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[LLMStandIn, str]]:
    with serving_llm(api_key=KEY) as (stand_in, server):
        yield stand_in, server.base_url


@pytest.fixture
def llm(served: tuple[LLMStandIn, str]) -> Iterator[LLMStandIn]:
    stand_in, _ = served
    stand_in.clear()
    stand_in.respond_with(None)
    yield stand_in
    stand_in.clear()


@pytest.fixture(params=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest, served: tuple[LLMStandIn, str]) -> Any:
    base = served[1]
    common: dict[str, Any] = {"api_key": KEY, "sleep": lambda _: None}
    if request.param == "openai":
        return OpenAICompatible(base_url=base + "/v1", model="gpt-test", **common)
    return Anthropic(base_url=base, model="claude-test", **common)


def generate_request(**changes: Any) -> GenerateRequest:
    spec: dict[str, Any] = {
        "integration": "invoices-to-xero",
        "workspace": "mEFayXdO",
        "document_type": "tVpGRBWd",
        "trigger": "DocumentValidated",
        "instructions": "Create a draft bill in Xero for every validated invoice.",
        "document_schema": {"type": "object", "properties": {"invoiceNumber": {}}},
        "secret_names": tuple(SECRETS),  # names only: the builders never see a value
        "accounts": (AccountRef(name="xero-finance", app="xero", account_id="apn_kqAb12Cd"),),
        "sample_documents": (DOCUMENT,),
    }
    return GenerateRequest(**(spec | changes))


def fix_request(**changes: Any) -> FixRequest:
    spec: dict[str, Any] = {
        "integration": "invoices-to-xero",
        "workspace": "mEFayXdO",
        "document_type": "tVpGRBWd",
        "trigger": "DocumentValidated",
        "secret_names": tuple(SECRETS),
        "run": "invoices-to-xero-7d2f1",
        "revision": "invoices-to-xero-r3",
        "code": GOOD.replace('["invoiceNumber"]', '["number"]'),
        "error_class": "CodeError",
        "exception_type": "KeyError",
        "error_message": "KeyError: 'number'",
        # As the operator stores them: masked.
        "logs": "ledger code ***\nTraceback (most recent call last):\nKeyError: 'number'\n",
        "document": DOCUMENT,
    }
    return FixRequest(**(spec | changes))


def assert_no_canary(requests: list[Recorded]) -> None:
    assert requests
    for recorded in requests:
        assert_clean(recorded.prompt + str(recorded.body), SECRETS.values(), "a request")
        assert "INV-CANARY-0042" not in recorded.prompt + str(recorded.body)  # a document value


# --- generate ----------------------------------------------------------------------------------


def test_valid_reply_first_time(llm: LLMStandIn, provider: Any) -> None:
    llm.script(Reply(fenced(GOOD), model="model-2026-01"))
    result = generate(provider, generate_request())
    assert result.ok and result.failure is None
    assert result.code == GOOD
    assert result.model == "model-2026-01"
    assert result.prompt_hash == prompt_hash(build_generate_prompt(generate_request()))
    assert [a.problems for a in result.attempts] == [()]
    assert result.explanation == "Here is the module."
    assert_no_canary(llm.requests)


def test_valid_reply_on_the_second_try(llm: LLMStandIn, provider: Any) -> None:
    llm.script(fenced(LEAKY), fenced(GOOD))
    result = generate(provider, generate_request())
    assert result.ok and result.code == GOOD
    assert [len(a.problems) for a in result.attempts] == [2, 0]
    assert {p.rule for p in result.attempts[0].problems} == {
        Rule.DISALLOWED_IMPORT,
        Rule.SECRET_OUTPUT,
    }
    first, second = llm.requests
    # The second question is the conversation so far plus the problems, line by line.
    assert [role for role, _ in second.messages] == ["user", "assistant", "user"]
    assert second.messages[0] == first.messages[0]
    assert "import pandas" in second.messages[1][1]
    feedback = second.last_user
    assert feedback.startswith("Your code was not accepted:")
    assert "- line 2: import of 'pandas'" in feedback
    assert "- line 6: print() outputs a value read from os.environ (a secret)" in feedback
    assert second.system == first.system
    assert_no_canary(llm.requests)


def test_invalid_code_every_time_fails_clearly_after_the_bound(
    llm: LLMStandIn, provider: Any
) -> None:
    llm.respond_with(lambda _: fenced("def lambda_handler(event):\n    return (\n"))
    result = generate(provider, generate_request(), max_attempts=3)
    assert not result.ok and result.code is None
    assert len(llm.requests) == 3  # bounded
    assert len(result.attempts) == 3
    assert all(a.problems[0].rule is Rule.SYNTAX_ERROR for a in result.attempts)
    assert result.failure == (
        "the model's code was refused 3 times; the last answer's problems:\n"
        "- line 2: '(' was never closed"
    )
    assert [len(r.messages) for r in llm.requests] == [1, 3, 5]
    assert "- line 2: '(' was never closed" in llm.requests[-1].last_user


def test_a_reply_cut_off_at_the_token_limit_is_asked_again(llm: LLMStandIn, provider: Any) -> None:
    llm.script(Reply(fenced(GOOD), truncated=True), fenced(GOOD))
    result = generate(provider, generate_request())
    assert result.ok
    assert result.attempts[0].truncated
    assert result.attempts[0].problems[0].rule is Rule.TRUNCATED
    assert "cut off at the token limit" in llm.requests[1].last_user


def test_document_values_reach_the_model_only_when_allowed(llm: LLMStandIn, provider: Any) -> None:
    llm.script(fenced(GOOD), fenced(GOOD))
    generate(provider, generate_request())
    generate(provider, generate_request(allow_document_values=True))
    withheld, shared = llm.requests
    assert "INV-CANARY-0042" not in withheld.prompt
    assert "INV-CANARY-0042" in shared.prompt
    for value in SECRETS.values():
        assert value not in shared.prompt


def test_provider_errors_propagate_unchanged(llm: LLMStandIn, served: Any) -> None:
    base = served[1]
    provider = OpenAICompatible(
        base_url=base + "/v1",
        model="m",
        api_key=KEY,
        retry=RetryPolicy(max_attempts=2),
        sleep=lambda _: None,
    )
    llm.script(Fault.server_error(), Fault.server_error())
    with pytest.raises(ProviderUnavailable):
        generate(provider, generate_request())
    wrong = OpenAICompatible(base_url=base + "/v1", model="m", api_key="sk-wrong-1234")
    with pytest.raises(ProviderRejected):
        generate(wrong, generate_request())


def test_max_attempts_must_be_positive(provider: Any) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate(provider, generate_request(), max_attempts=0)


# --- fix ---------------------------------------------------------------------------------------


def test_fix_answers_corrected_code_when_shown_the_error(llm: LLMStandIn, provider: Any) -> None:
    def model(request: Recorded) -> str:
        # A scripted model: it fixes the code only if the error reached it.
        if "KeyError: 'number'" in request.prompt:
            return fenced(GOOD, "The field is invoiceNumber, not number.")
        return fenced(fix_request().code)

    llm.respond_with(model)
    result = propose_fix(provider, fix_request())
    assert result.ok and result.code == GOOD
    assert result.explanation == "The field is invoiceNumber, not number."
    [request] = llm.requests
    assert "ledger code ***" in request.prompt
    assert fix_request().code.strip() in request.prompt
    assert_no_canary(llm.requests)


def test_a_fix_that_changes_nothing_is_refused(llm: LLMStandIn, provider: Any) -> None:
    unchanged = fix_request().code + "\n\n"
    llm.script(fenced(unchanged), fenced(GOOD))
    result = propose_fix(provider, fix_request())
    assert result.ok
    assert result.attempts[0].problems[0].rule is Rule.UNCHANGED
    assert "the proposed code is the code that failed" in llm.requests[1].last_user


def test_fix_gives_up_after_the_bound(llm: LLMStandIn, provider: Any) -> None:
    llm.respond_with(lambda _: fenced(LEAKY))
    result = propose_fix(provider, fix_request(), max_attempts=2)
    assert not result.ok
    assert len(llm.requests) == 2
    assert result.failure is not None
    assert result.failure.startswith("the model's code was refused 2 times")
    assert "import of 'pandas'" in result.failure
    assert "print() outputs a value read from os.environ" in result.failure
