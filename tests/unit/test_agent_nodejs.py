"""The agent writes JavaScript for a Node.js integration (spec.runtime.nodejs): its prompt
speaks the Node.js runtime's contract, its checks (`node --check`, the import policy, secrets)
refuse what the runner would not take, and the loop asks again with the problems; the LLM
stand-in answers in the language it is asked for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devkit.standins.llm import (
    CANNED_REPLY_JS,
    LLMStandIn,
    Reply,
    canned_reply,
    serving_llm,
)
from docrelay.agent.codecheck import Rule, check_generated_code, extract_code
from docrelay.agent.loop import generate, propose_fix
from docrelay.agent.nodecheck import node_syntax_check
from docrelay.agent.prompts import (
    FixRequest,
    GenerateRequest,
    build_fix_prompt,
    build_generate_prompt,
)
from docrelay.agent.providers import OpenAICompatible

KEY = "sk-agent-js"
GOOD = """\
import { getDocument } from "@docrelay/sdk";

export async function handler(event, context) {
  const key = process.env.LEDGER_KEY;
  const document = await getDocument(event.document_identifier);
  const answer = await fetch("https://api.example.com/bills", {
    method: "POST",
    headers: { "X-Api-Key": key, "Idempotency-Key": event.idempotency_key },
    body: JSON.stringify({ number: document.data.invoiceNumber }),
    signal: AbortSignal.timeout(30000),
  });
  if (!answer.ok) {
    throw Object.assign(new Error(`the ledger answered ${answer.status}`), {
      statusCode: answer.status,
    });
  }
  console.log("exported", document.data.invoiceNumber);
  return { summary: "exported " + document.data.invoiceNumber };
}
"""


def request(**changes: Any) -> GenerateRequest:
    spec: dict[str, Any] = {
        "integration": "bills-js",
        "workspace": "mEFayXdO",
        "document_type": "tVpGRBWd",
        "trigger": "DocumentValidated",
        "instructions": "Post every validated invoice to the ledger.",
        "secret_names": ("LEDGER_KEY",),
        "egress_hosts": ("api.example.com",),
        "nodejs_version": "20",
    }
    return GenerateRequest(**(spec | changes))


def test_the_prompt_for_a_nodejs_integration_asks_for_javascript() -> None:
    prompt = build_generate_prompt(request())
    assert "You write JavaScript integrations" in prompt.system
    assert "Node.js 20" in prompt.system
    assert "export async function handler(event, context)" in prompt.system
    assert "@docrelay/sdk" in prompt.system and "getDocument(identifier)" in prompt.system
    assert "lambda_handler" not in prompt.system and "os.environ" not in prompt.system
    assert "```javascript block" in prompt.system
    assert "read with process.env.NAME" in prompt.messages[0].content
    python = build_generate_prompt(request(nodejs_version=None))
    assert "You write Python 3.12 integrations" in python.system
    assert 'os.environ["NAME"]' in python.messages[0].content


def test_the_fix_prompt_shows_the_code_as_javascript() -> None:
    fix = FixRequest(
        **request().model_dump(exclude={"instructions", "sample_documents"}),
        run="bills-js-1",
        revision="bills-js-r1",
        code=GOOD,
        error_class="CodeError",
        exception_type="TypeError",
        error_message="TypeError: Cannot read properties of undefined (reading 'invoiceNumber')",
    )
    prompt = build_fix_prompt(fix)
    assert "```javascript\n" + GOOD.rstrip() in prompt.messages[0].content
    assert "You write JavaScript integrations" in prompt.system


def test_good_javascript_passes_every_check() -> None:
    assert check_generated_code(
        GOOD, secret_names=["LEDGER_KEY"], language="nodejs", syntax_check=node_syntax_check
    ) == []


@pytest.mark.parametrize(
    ("change", "rule", "line"),
    [
        (("const key = process.env.LEDGER_KEY;", "const key = process.env.LEDGER_KEY"), None, 0),
        (("fetch(", "fetch(,"), Rule.SYNTAX_ERROR, 6),
        (("export async function handler", "async function handler"), Rule.MISSING_HANDLER, None),
        (('from "@docrelay/sdk";', 'from "@docrelay/sdk";\nimport _ from "lodash";'),
         Rule.DISALLOWED_IMPORT, 2),
        (('from "@docrelay/sdk";', 'from "@docrelay/sdk";\nimport cp from "node:child_process";'),
         Rule.DISALLOWED_IMPORT, 2),
        (("const document =", "const m = await import(event.name);\n  const document ="),
         Rule.DISALLOWED_IMPORT, 5),
        (("process.env.LEDGER_KEY", "process.env.OTHER_KEY"), Rule.UNKNOWN_SECRET, 4),
        (('console.log("exported", ', 'console.log("key", key, '), Rule.SECRET_OUTPUT, 17),
        (("`the ledger answered ${answer.status}`", "`bad key ${key}`"), Rule.SECRET_OUTPUT, 13),
        (('return { summary: "exported " +', "return { summary: key +"), Rule.SECRET_OUTPUT, 18),
    ],
)  # fmt: skip
def test_what_the_javascript_checks_refuse(
    change: tuple[str, str], rule: Rule | None, line: int | None
) -> None:
    source = GOOD.replace(*change, 1)
    assert source != GOOD
    problems = check_generated_code(
        source, secret_names=["LEDGER_KEY"], language="nodejs", syntax_check=node_syntax_check
    )
    if rule is None:  # a missing semicolon is JavaScript
        assert problems == []
        return
    assert [(p.rule, p.line) for p in problems] == [(rule, line)], problems


def test_extract_code_takes_the_javascript_block() -> None:
    reply = "Here.\n\n```python\nprint(1)\n```\n\n```javascript\n" + GOOD + "```\n"
    assert extract_code(reply, "nodejs") == GOOD.rstrip("\n")
    assert extract_code(CANNED_REPLY_JS, "nodejs").startswith("import { getDocument }")


@pytest.fixture
def served() -> Iterator[tuple[LLMStandIn, OpenAICompatible]]:
    with serving_llm(api_key=KEY) as (stand_in, server):
        provider = OpenAICompatible(
            base_url=server.base_url + "/v1", model="m", api_key=KEY, sleep=lambda _: None
        )
        yield stand_in, provider


def test_the_loop_asks_again_after_node_refuses_the_syntax(
    served: tuple[LLMStandIn, OpenAICompatible],
) -> None:
    stand_in, provider = served
    broken = GOOD.replace("fetch(", "fetch(,", 1)
    stand_in.script(
        Reply(f"```javascript\n{broken}```\n"), Reply(f"Fixed.\n\n```javascript\n{GOOD}```\n")
    )
    result = generate(provider, request(), syntax_check=node_syntax_check)
    assert result.ok and result.code == GOOD
    assert [[p.rule for p in a.problems] for a in result.attempts] == [[Rule.SYNTAX_ERROR], []]
    second = stand_in.requests[1].last_user
    assert "line 6:" in second and "```javascript block" in second


def test_a_fix_for_a_nodejs_run_is_javascript(
    served: tuple[LLMStandIn, OpenAICompatible],
) -> None:
    stand_in, provider = served
    fixed = GOOD.replace("document.data.invoiceNumber", "document.data?.invoiceNumber")
    stand_in.script(Reply(f"```javascript\n{fixed}```\n"))
    fix = FixRequest(
        **request().model_dump(exclude={"instructions", "sample_documents"}),
        run="bills-js-1",
        revision="bills-js-r1",
        code=GOOD,
        error_class="CodeError",
        error_message="TypeError: Cannot read properties of undefined",
    )
    result = propose_fix(provider, fix, syntax_check=node_syntax_check)
    assert result.ok and result.code == fixed


def test_the_stand_in_answers_in_the_language_it_is_asked_for() -> None:
    with serving_llm(api_key=KEY, responder=canned_reply) as (_, server):
        provider = OpenAICompatible(
            base_url=server.base_url + "/v1", model="m", api_key=KEY, sleep=lambda _: None
        )
        js = generate(provider, request(secret_names=()), syntax_check=node_syntax_check)
        python = generate(provider, request(secret_names=(), nodejs_version=None))
    assert js.ok and js.code is not None and "export async function handler" in js.code
    assert python.ok and python.code is not None and "def lambda_handler" in python.code
