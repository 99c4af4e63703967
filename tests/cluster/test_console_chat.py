"""Fix in Chat from the console, against the operator with the agent configured (the LLM
stand-in, as tests/cluster/test_chat.py): the failed run's page opens the thread, the user's
words go in as a turn, the agent's proposal shows with its test verdict and a diff link, and
Approve deploys it."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.harness import (
    GROUP,
    VERSION,
    create_run,
    custom,
    eventually,
    get_integration,
    wait_finished,
)
from tests.cluster.test_agent import (  # noqa: F401  (stack: a fixture)
    BROKEN_CODE,
    FIXED_CODE,
    HARBOURSIDE,
    Stack,
    agent_integration,
    fenced,
    stack,
)
from tests.cluster.test_console import console, csrf_of

pytestmark = pytest.mark.cluster
PLURAL = "integrationconversations"


def answer(request: Any) -> str:
    """The LLM stand-in: the judge of a test says pass; otherwise the fixed code."""
    if "did what the user asked" in request.system:
        return '{"verdict": "pass", "reasons": ["it reports the invoice number"]}'
    return fenced(FIXED_CODE, "The key is invoiceNumber.")


def thread(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def rests(obj: dict[str, Any], turn: str) -> bool:
    status = obj.get("status") or {}
    return status.get("answered") == turn and status.get("state") not in ("Thinking", "Testing")


def test_fix_in_chat_from_the_console_then_approve(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    ns = stack.ns
    agent_integration(
        api, ns, "fixme", code=BROKEN_CODE, instructions="Report each invoice's number.",
        secrets=[], retry={"maxAttempts": 1},
    )  # fmt: skip
    eventually(
        lambda: get_integration(api, ns, "fixme"),
        lambda o: bool((o.get("status") or {}).get("deployedRevision")),
        "the inline code to be deployed",
    )
    failed = create_run(api, ns, "fixme", HARBOURSIDE)
    wait_finished(api, ns, failed)
    stack.llm.respond_with(answer)

    browser = console(ns)
    run_page = browser.get(f"/runs/{failed}").text
    assert "Fix in Chat" in run_page
    opened = browser.post(f"/runs/{failed}/fix-in-chat", data={"csrf": csrf_of(run_page)})
    assert opened.status_code == 303
    name = opened.headers["location"].removeprefix("/chats/")
    assert name == f"{failed}-fix"
    spec = thread(api, ns, name)["spec"]
    assert (spec["purpose"], spec["run"], spec["integration"]) == ("Fix", failed, "fixme")

    page = browser.get(f"/chats/{name}").text
    said = browser.post(
        f"/chats/{name}/turns",
        data={"csrf": csrf_of(page), "action": "Say", "text": "Please fix <this> run."},
    )
    assert said.status_code == 303
    turns = thread(api, ns, name)["spec"]["turns"]
    assert turns[-1]["text"] == "Please fix <this> run." and turns[-1]["by"] == "docrelay-admin"
    answered = eventually(
        lambda: thread(api, ns, name), lambda o: rests(o, "u-1"), "the agent's answer", 150
    )
    proposal = answered["status"]["revision"]
    page = browser.get(f"/chats/{name}").text
    assert "Please fix &lt;this&gt; run." in page
    assert f"Revision <code>{proposal}</code>" in page
    assert f'href="/integrations/fixme?diff={proposal}#code"' in page
    verdicts = re.findall(r'Test verdict: <span class="badge \w+">(\w+)</span>', page)
    assert verdicts and verdicts[-1] == "Pass", verdicts
    assert f"Approve and deploy {proposal}" in page

    approve = browser.post(
        f"/chats/{name}/turns",
        data={"csrf": csrf_of(page), "action": "Approve", "revision": proposal},
    )
    assert approve.status_code == 303
    eventually(
        lambda: get_integration(api, ns, "fixme"),
        lambda o: (o.get("status") or {}).get("deployedRevision") == proposal,
        "the approved fix to be deployed",
        150,
    )
    listing = browser.get("/integrations/fixme").text
    assert f'href="/chats/{html.escape(name)}"' in listing
