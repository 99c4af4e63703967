"""Ask, check, ask again: the agent's bounded conversation with a model.

Pure apart from the provider it is handed: no HTTP, Kubernetes or clock here. Each attempt
is recorded with its problems. A provider failure (`ProviderUnavailable`,
`ProviderRejected`) propagates unchanged: it says nothing about the code, and the caller
decides between "try later" and "give up".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from docrelay.agent.catalog import action_calls, catalog_problems, describe_calls
from docrelay.agent.chat import Message, Provider, Usage
from docrelay.agent.codecheck import (
    Problem,
    Rule,
    SyntaxCheck,
    check_generated_code,
    describe_problems,
    extract_code,
)
from docrelay.agent.prompts import (
    FixRequest,
    GenerateRequest,
    Prompt,
    build_fix_prompt,
    build_generate_prompt,
    problems_message,
    prompt_hash,
)
from docrelay.agent.tokens import estimate_prompt, estimate_tokens

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 3
MAX_EXPLANATION = 2000


@dataclass(frozen=True)
class Attempt:
    """One question and answer: which model answered, and what was wrong with its code."""

    number: int
    model: str
    problems: tuple[Problem, ...]
    usage: Usage = field(default_factory=Usage)
    truncated: bool = False


@dataclass(frozen=True)
class AgentResult:
    """Accepted code, or a failure saying why; either way every attempt."""

    code: str | None
    model: str
    prompt_hash: str  # of the first prompt: what the revision records
    attempts: tuple[Attempt, ...]
    explanation: str | None = None  # the model's words around the code, for people
    failure: str | None = None
    question: str | None = None  # in a conversation: the model asked instead of coding

    @property
    def ok(self) -> bool:
        return self.code is not None

    @property
    def problems(self) -> tuple[Problem, ...]:
        """The last attempt's problems (none when accepted)."""
        return self.attempts[-1].problems if self.attempts else ()


def generate(
    provider: Provider,
    request: GenerateRequest,
    max_attempts: int = DEFAULT_ATTEMPTS,
    syntax_check: SyntaxCheck | None = None,
) -> AgentResult:
    """Code for `request.integration` written from its instructions. `syntax_check`: for
    JavaScript, `docrelay.agent.nodecheck.node_syntax_check` (the loop runs nothing itself)."""
    return _converse(
        provider, build_generate_prompt(request), request, max_attempts, None, syntax_check
    )


def propose_fix(
    provider: Provider,
    request: FixRequest,
    max_attempts: int = DEFAULT_ATTEMPTS,
    syntax_check: SyntaxCheck | None = None,
) -> AgentResult:
    """A corrected version of `request.code` after `request.run` failed."""
    return _converse(
        provider, build_fix_prompt(request), request, max_attempts, request.code, syntax_check
    )


def converse(
    provider: Provider,
    prompt: Prompt,
    request: GenerateRequest | FixRequest,
    max_attempts: int = DEFAULT_ATTEMPTS,
    current_code: str | None = None,
    syntax_check: SyntaxCheck | None = None,
    token_budget: int | None = None,
) -> AgentResult:
    """One answer in a conversation: a question (a first reply with no code block), or code
    checked and asked again as `generate` does. `current_code`: the thread's last proposal, a
    revision identical to it is refused (`Unchanged`). `token_budget`: the tokens the answer
    may cost over its attempts, as the provider reports them (estimated when it does not):
    the model is not asked again when the next question would pass it."""
    return _converse(
        provider, prompt, request, max_attempts, current_code, syntax_check, allow_question=True,
        token_budget=token_budget,
    )  # fmt: skip


def _converse(
    provider: Provider,
    prompt: Prompt,
    request: GenerateRequest | FixRequest,
    max_attempts: int,
    current_code: str | None,
    syntax_check: SyntaxCheck | None = None,
    allow_question: bool = False,
    token_budget: int | None = None,
) -> AgentResult:
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    digest = prompt_hash(prompt)
    messages = list(prompt.messages)
    attempts: list[Attempt] = []
    model = provider.model
    for number in range(1, max_attempts + 1):
        completion = provider.complete(prompt.system, messages)
        model = completion.model or model
        if allow_question and number == 1 and "```" not in completion.text:
            attempt = Attempt(number, model, (), completion.usage, completion.truncated)
            return AgentResult(
                code=None,
                model=model,
                prompt_hash=digest,
                attempts=(attempt,),
                question=completion.text.strip()[:MAX_EXPLANATION] or None,
            )
        code = extract_code(completion.text, request.language)
        problems = check_generated_code(
            code,
            secret_names=request.secret_names,
            policy=request.import_policy(),
            language=request.language,
            syntax_check=syntax_check,
        )
        calls = action_calls(code, request.language) if code else []
        problems += catalog_problems(calls, request.accounts)
        if completion.truncated:
            problems.insert(
                0,
                Problem(
                    Rule.TRUNCATED,
                    "the reply was cut off at the token limit: answer with a shorter module",
                ),
            )
        if current_code is not None and _same_code(code, current_code):
            problems.insert(0, Problem(Rule.UNCHANGED, "the proposed code is the code that failed"))
        attempts.append(
            Attempt(number, model, tuple(problems), completion.usage, completion.truncated)
        )
        if not problems:
            log.info("agent: %s accepted on attempt %d", model, number)
            return AgentResult(
                code=code.rstrip() + "\n",
                model=model,
                prompt_hash=digest,
                attempts=tuple(attempts),
                explanation=_with_actions(
                    _explanation(completion.text), describe_calls(calls, request.accounts)
                ),
            )
        log.info("agent: attempt %d of %d refused (%d problems)", number, max_attempts,
                 len(problems))  # fmt: skip
        messages += [
            Message("assistant", completion.text),
            Message("user", problems_message(problems, request.language)),
        ]
        if number < max_attempts and token_budget is not None:
            used, next_question = _spent(attempts, prompt.system, messages)
            if used + next_question > token_budget:
                return AgentResult(
                    code=None,
                    model=model,
                    prompt_hash=digest,
                    attempts=tuple(attempts),
                    failure=(
                        f"the model's code was refused {number} time{'s' if number > 1 else ''} "
                        f"and this answer has cost {used} tokens: asking again (about "
                        f"{next_question} more) would pass its budget of {token_budget}; the "
                        "last answer's problems:\n" + describe_problems(problems)
                    ),
                )
    last = attempts[-1].problems
    return AgentResult(
        code=None,
        model=model,
        prompt_hash=digest,
        attempts=tuple(attempts),
        failure=(
            f"the model's code was refused {max_attempts} time"
            f"{'s' if max_attempts > 1 else ''}; the last answer's problems:\n"
            + describe_problems(last)
        ),
    )


def _spent(attempts: list[Attempt], system: str, messages: list[Message]) -> tuple[int, int]:
    """(tokens the attempts cost, as the provider reported them; tokens the next question
    would cost: the last prompt, its answer and the problems, else estimated whole,
    docrelay/agent/tokens.py)."""
    asked = estimate_prompt(system, (m.content for m in messages))
    used = 0
    for attempt in attempts:
        used += (attempt.usage.input_tokens or 0) + (attempt.usage.output_tokens or 0)
    last = attempts[-1].usage
    if last.input_tokens is not None and last.output_tokens is not None:
        # The next prompt is the last one, its answer and the problems (estimated).
        asked = last.input_tokens + last.output_tokens + estimate_tokens(messages[-1].content)
    return used, asked


def _same_code(a: str, b: str) -> bool:
    # Trailing whitespace and blank-line differences are not a fix.
    def norm(code: str) -> list[str]:
        return [line.rstrip() for line in code.strip().splitlines() if line.strip()]

    return norm(a) == norm(b)


def _with_actions(explanation: str | None, actions: str | None) -> str | None:
    """The model's words and, after them, the catalog actions the code runs (said by us, so
    the thread names them even when the model did not)."""
    if actions is None:
        return explanation
    room = MAX_EXPLANATION - len(actions) - 2
    return f"{explanation[:room]}\n\n{actions}" if explanation else actions[:MAX_EXPLANATION]


def _explanation(reply: str) -> str | None:
    """The reply without its code blocks, for people to read; None if nothing is left."""
    text = re.sub(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", "", reply, flags=re.M | re.S).strip()
    if not text or ("def " in text and "lambda_handler(" in text):
        return None  # the whole reply was code, unfenced
    return text[:MAX_EXPLANATION]
