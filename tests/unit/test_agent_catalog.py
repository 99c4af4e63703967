"""Actions grounded in Pipedream's catalog: a generation for an Integration with a connected
Slack account looks up Slack's real actions and props (Connect's list, retrieve and
configure-prop, through the official SDK, against the stand-in over HTTP), the model is
prompted with the catalog's key, a guessed key is refused and asked again, and the answer
kept for the thread names the action and props chosen."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.standins.llm import LLMStandIn, Reply, serving_llm
from devkit.standins.pipedream import PipedreamStandin
from devkit.standins.server import serving
from docrelay.agent.catalog import action_calls, catalog_problems, describe_calls
from docrelay.agent.codecheck import Rule
from docrelay.agent.loop import generate
from docrelay.agent.prompts import (
    AccountRef,
    CatalogAction,
    GenerateRequest,
    build_generate_prompt,
)
from docrelay.agent.providers import OpenAICompatible
from docrelay.pipedream import ConnectClient
from docrelay.pipedream.catalog import ground_accounts
from tests.leakcheck import assert_clean, canary

KEY = "sk-catalog-test-51c2"
INSTRUCTIONS = (
    "Post a message to the #finance Slack channel with the invoice number and total of each "
    "validated invoice."
)


def module(action: str, props: str = '{"channel": "C0FINANCE1", "text": text}') -> str:
    return f'''\
from docrelay.sdk import execute_action, get_document


def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    data = document["data"]
    text = f"Invoice {{data.get('invoiceNumber')}}: {{data.get('total')}}"
    execute_action("apn_slack", "{action}", {props})
    return {{"summary": "posted"}}
'''


def fenced(code: str, before: str) -> str:
    return f"{before}\n\n```python\n{code}```\n"


@pytest.fixture(scope="module")
def pipedream() -> Iterator[tuple[PipedreamStandin, str]]:
    pd = PipedreamStandin(client_secret=canary(header=True))
    with serving(pd.app) as server:
        yield pd, server.base_url


@pytest.fixture(scope="module")
def llm() -> Iterator[tuple[LLMStandIn, str]]:
    with serving_llm(api_key=KEY) as (stand_in, server):
        yield stand_in, server.base_url


def slack_refs(pipedream: tuple[PipedreamStandin, str]) -> list[AccountRef]:
    pd, base_url = pipedream
    pd.reset()
    account = pd.add_account("finance-team", "slack", app_name="Slack", id="apn_slack")
    with ConnectClient(base_url, pd.project_id, "development", pd.client_id,
                       pd.client_secret) as client:
        return ground_accounts(
            client,
            [AccountRef(name="slack-finance", app="slack", account_id=account.id)],
            INSTRUCTIONS,
            {"slack-finance": "finance-team"},
        )


def request(accounts: list[AccountRef]) -> GenerateRequest:
    return GenerateRequest(
        integration="invoices-to-slack",
        workspace="mEFayXdO",
        document_type="tVpGRBWd",
        trigger="DocumentValidated",
        instructions=INSTRUCTIONS,
        accounts=tuple(accounts),
    )


def test_the_catalog_is_looked_up_with_props_and_this_accounts_channels(
    pipedream: tuple[PipedreamStandin, str],
) -> None:
    (slack,) = slack_refs(pipedream)
    actions = {a.key: a for a in slack.actions}
    assert set(actions) == {"slack-send-message", "slack-list-channels"}
    send = actions["slack-send-message"]
    assert send.detailed and send.version == "0.1.4"
    props = {p.name: p for p in send.props}
    assert set(props) == {"channel", "text", "thread_ts"}  # the app prop is the broker's
    assert props["thread_ts"].optional and not props["text"].optional
    # configure-prop loaded the channels of this account (remote options).
    assert "#finance=C0FINANCE1" in props["channel"].options
    pd = pipedream[0]
    assert pd.recorded("/actions/slack-send-message", "GET")  # retrieve-component
    configured = pd.recorded("/actions/configure", "POST")[0].json()
    assert configured["external_user_id"] == "finance-team"
    assert configured["configured_props"] == {"slack": {"authProvisionId": "apn_slack"}}


def test_a_generation_is_prompted_with_the_real_key_and_the_answer_names_it(
    pipedream: tuple[PipedreamStandin, str], llm: tuple[LLMStandIn, str]
) -> None:
    stand_in, base = llm
    stand_in.clear()
    refs = slack_refs(pipedream)
    prompt = build_generate_prompt(request(refs)).messages[0].content
    assert "## Pipedream actions of slack for the account slack-finance" in prompt
    assert "- `slack-send-message` (Send Message: Send a message" in prompt
    assert "channel (string): The channel (id) to post to. Values for this account: " \
        "#finance=C0FINANCE1" in prompt
    # The model first guesses a key that does not exist, then uses the catalog's.
    stand_in.script(
        Reply(fenced(module("slack-post-message"), "Posting with Slack's post action.")),
        Reply(fenced(module("slack-send-message"), "I use Send Message to #finance.")),
    )
    provider = OpenAICompatible(base_url=base + "/v1", model="gpt-test", api_key=KEY,
                                sleep=lambda _: None)
    result = generate(provider, request(refs))
    assert result.ok
    first, second = result.attempts
    assert [p.rule for p in first.problems] == [Rule.UNKNOWN_ACTION]
    assert "'slack-post-message' is not an action in Pipedream's catalog" in \
        first.problems[0].message
    asked_again = stand_in.requests[1].messages[-1][1]
    assert "slack-list-channels, slack-send-message" in asked_again
    assert not second.problems
    # What the thread shows for this revision: the model's words, then the action chosen.
    assert result.explanation is not None
    assert result.explanation.startswith("I use Send Message to #finance.")
    assert result.explanation.endswith(
        "Pipedream action chosen from the catalog: `slack-send-message` (slack: Send Message, "
        "version 0.1.4) with props channel, text on account slack-finance."
    )
    # Pipedream's client secret never reaches the model.
    for recorded in stand_in.requests:
        assert_clean(recorded.prompt + str(recorded.body), [pipedream[0].client_secret],
                     "a prompt")


def test_without_a_catalog_nothing_is_refused_or_said() -> None:
    code = module("slack-anything")
    calls = action_calls(code)
    assert [c.key for c in calls] == ["slack-anything"]
    bare = [AccountRef(name="slack-finance", app="slack", account_id="apn_slack")]
    assert catalog_problems(calls, bare) == []
    assert describe_calls(calls, bare) is None
    assert "Pipedream actions of" not in build_generate_prompt(request(bare)).messages[0].content


def test_javascript_calls_are_found_too() -> None:
    code = (
        'import { executeAction } from "@docrelay/sdk";\n'
        "export async function handler(event) {\n"
        '  await executeAction(ACCOUNT, "slack-send-message", { channel: "C0FINANCE1", '
        '"text": t });\n'
        '  await executeAction(ACCOUNT, "slack-made-up");\n'
        "}\n"
    )
    calls = action_calls(code, "nodejs")
    assert [(c.key, c.props, c.line) for c in calls] == [
        ("slack-send-message", ("channel", "text"), 3),
        ("slack-made-up", None, 4),
    ]
    known = [AccountRef(name="s", app="slack",
                        actions=(CatalogAction(key="slack-send-message"),))]
    assert [p.line for p in catalog_problems(calls, known)] == [4]


def test_the_actions_detailed_are_the_relevant_ones_else_the_first() -> None:
    from docrelay.agent.catalog import choose_detailed

    catalog = [
        {"key": "slack-list-channels", "name": "List Channels"},
        {"key": "slack-send-message", "name": "Send Message", "description": "Send a message"},
        {"key": "slack-add-reaction", "name": "Add Reaction"},
    ]
    assert choose_detailed(catalog, "Post a message about each invoice", 1) == [
        "slack-send-message"
    ]
    assert choose_detailed(catalog, "Written in the conversation x.", 2) == [
        "slack-list-channels",
        "slack-send-message",
    ]
