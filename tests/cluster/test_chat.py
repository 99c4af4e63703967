"""Conversations with the agent (IntegrationConversation, docs/agent.md "Conversations"):
what the real API server lets a user do with a thread's turns."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from devkit.rbac import grant, token_kubeconfig
from devkit.standins.llm import Reply
from docrelay.models import GROUP, VERSION
from tests.cluster.harness import (
    PYTHONPATH,
    canary,
    chart_objects,
    create_run,
    custom,
    docrelay,
    eventually,
    get_integration,
    set_secret,
    sink_by_name,
    sink_egress,
    stored_log,
    wait_finished,
)
from tests.cluster.test_agent import (  # noqa: F401  (stack: a fixture)
    BROKEN_CODE,
    EXPORT_CODE,
    FIXED_CODE,
    HARBOURSIDE,
    Stack,
    agent_integration,
    assert_prompts_clean,
    fenced,
    get_revision,
    stack,
)
from tests.leakcheck import assert_clean

PLURAL = "integrationconversations"


def _thread(name: str = "invoices-build-1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IntegrationConversation",
        "metadata": {"name": name},
        "spec": {
            "integration": "invoices",
            "purpose": "Build",
            "turns": [{"id": "u-1", "text": "Post each invoice to the ERP."}],
        },
    }


def _patch(api: client.ApiClient, ns: str, name: str, turns: list[dict[str, Any]]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"spec": {"turns": turns}}
    )


def _refused(api: client.ApiClient, ns: str, name: str, turns: list[dict[str, Any]]) -> str:
    with pytest.raises(ApiException) as caught:
        _patch(api, ns, name, turns)
    assert caught.value.status == 422
    return str(caught.value.body)


def test_a_user_appends_turns_but_cannot_edit_or_remove_one(
    api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _thread())
    first = {"id": "u-1", "text": "Post each invoice to the ERP."}
    second = {"id": "u-2", "text": "The PO can be empty: send null."}

    _patch(api, namespace, "invoices-build-1", [first, second])

    edited = {"id": "u-1", "text": "Post each invoice to the CRM."}
    assert "a turn cannot be changed once written" in _refused(
        api, namespace, "invoices-build-1", [edited, second]
    )
    assert "turns are append-only" in _refused(
        api, namespace, "invoices-build-1", [second, {"id": "u-3", "action": "Approve"}]
    )
    stored = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "invoices-build-1"
    )
    assert [t["id"] for t in stored["spec"]["turns"]] == ["u-1", "u-2"]
    assert stored["spec"]["turns"][0]["text"] == "Post each invoice to the ERP."


def test_the_subject_of_a_thread_cannot_change(api: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _thread())
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "invoices-build-1",
            {"spec": {"integration": "other"}},
        )
    assert caught.value.status == 422
    assert "integration is immutable" in str(caught.value.body)


# --- the agent answers (the operator, the gateway and the LLM stand-in, as in test_agent.py)


pytestmark = pytest.mark.cluster


def get_thread(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def say(api: client.ApiClient, ns: str, name: str, **turn: Any) -> dict[str, Any]:
    """Append a user turn (as `docrelay chat` does) and wait for the agent to act on it, and
    for any revision it proposed to finish its tests."""
    turns = get_thread(api, ns, name)["spec"]["turns"]
    turn = {"id": f"u-{len(turns) + 1}", "by": "alice", **turn}
    _patch(api, ns, name, [*turns, turn])
    return eventually(
        lambda: get_thread(api, ns, name),
        lambda o: (
            (o.get("status") or {}).get("answered") == turn["id"]
            and o["status"].get("state") not in ("Thinking", "Testing")
        ),
        f"the agent to answer {turn['id']} of {name}",
        seconds=150,
    )


def agent_turns(thread: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in thread["status"]["turns"] if t["role"] == "Agent"]


def test_a_build_thread_asks_revises_on_guidance_and_deploys_when_approved(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    """A description -> a clarifying question -> the answer -> revision 1, whose test runs fail
    (reported in words) -> guidance -> revision 2 passes -> the user approves -> deployed. A
    secret the user pastes into a turn is masked in the thread and reaches no prompt."""
    ns, llm = stack.ns, stack.llm
    secret_value = canary(header=True)
    set_secret(api, ns, "bills", "API_KEY", secret_value)
    sink = sink_by_name(stack.sink)
    wrong = EXPORT_CODE.format(sink=sink).replace('["invoiceNumber"]', '["number"]')
    llm.script(
        Reply.question("Which field holds the invoice number: `invoiceNumber` or `number`?"),
        Reply(fenced(wrong, "This posts each invoice's number to /bills with API_KEY.")),
        Reply(fenced(EXPORT_CODE.format(sink=sink), "Now reading invoiceNumber.")),
        Reply.judgement(True, "each run POSTed its invoiceNumber to /bills"),
    )
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Integration",
        "metadata": {
            "name": "bills",
            "annotations": {"agent.docrelay.io/conversation": "bills-build-1"},
        },
        "spec": {
            "workspace": "mEFayXdO",
            "documentType": "tVpGRBWd",
            "trigger": "DocumentParseCompleted",
            "instructions": "Written in the conversation bills-build-1.",
            "secrets": ["API_KEY"],
            "egress": sink_egress(stack.sink),
        },
    }
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrations", body)
    thread = _thread("bills-build-1")
    thread["spec"] = {"integration": "bills", "purpose": "Build", "turns": []}
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, thread)

    answered = say(
        api, ns, "bills-build-1",
        text="Post each invoice's number to our bills API as JSON, authenticated with API_KEY "
        f"(it is {secret_value}).",
    )  # fmt: skip
    (question,) = agent_turns(answered)
    assert question["kind"] == "Question" and "invoiceNumber" in question["text"]
    assert answered["status"]["state"] == "WaitingForUser"
    assert not answered["status"].get("revision")
    shown = answered["status"]["turns"][0]
    assert shown["role"] == "User" and "***" in shown["text"]
    assert secret_value not in shown["text"]

    answered = say(api, ns, "bills-build-1", text="It is `number`.")
    revision_1, verdict_1 = agent_turns(answered)[1:]
    assert revision_1["kind"] == "Revision"
    assert "posts each invoice's number" in revision_1["text"]  # the explanation is kept
    assert verdict_1["kind"] == "TestVerdict" and verdict_1["verdict"]["verdict"] == "Fail"
    assert "failed" in verdict_1["text"] and "KeyError" in verdict_1["text"]
    first = revision_1["revision"]
    tested = [
        c for c in get_revision(api, ns, first)["status"]["conditions"] if c["type"] == "Tested"
    ]
    assert tested[0]["status"] == "False"

    refused = say(api, ns, "bills-build-1", action="Approve")
    assert agent_turns(refused)[-1]["kind"] == "Note"
    assert "failed its tests" in agent_turns(refused)[-1]["text"]
    assert not get_integration(api, ns, "bills")["status"].get("deployedRevision")

    answered = say(api, ns, "bills-build-1", text="Sorry: the field is invoiceNumber.")
    revision_2, verdict_2 = agent_turns(answered)[-2:]
    second = revision_2["revision"]
    assert revision_2["kind"] == "Revision" and second != first
    assert get_revision(api, ns, second)["spec"]["parent"] == first
    assert verdict_2["verdict"]["verdict"] == "Pass", verdict_2
    assert "POSTed its invoiceNumber" in verdict_2["text"]
    # The guidance reached the model with the code it was to revise.
    assert "invoiceNumber." in llm.requests[-2].prompt and '["number"]' in llm.requests[-2].prompt
    # The judge saw the evidence: the instructions, each run's result and outbound record.
    judged = llm.requests[-1]
    assert "did what the user asked" in judged.system
    assert "bills API as JSON" in judged.prompt and "withheld" in judged.prompt
    assert "POST " in judged.prompt and "/bills -> " in judged.prompt

    approved = say(api, ns, "bills-build-1", action="Approve")
    deploy = agent_turns(approved)[-1]
    assert deploy["kind"] == "Deploy" and deploy["revision"] == second
    assert approved["status"]["state"] == "Deployed"
    eventually(
        lambda: get_integration(api, ns, "bills"),
        lambda o: (o.get("status") or {}).get("deployedRevision") == second,
        "the approved revision to be deployed",
    )
    # One thread, four answers from the model: the question, two revisions, one judgement
    # (the first revision failed its runs: nothing to judge).
    assert len(llm.requests) == 4
    assert answered["status"]["tokens"]["outputTokens"] > 0
    # The last answer's prompt: estimated before it was sent, beside what the provider reported
    # (the stand-in counts words), fitted to the default per-turn budget (docs/agent.md, "Budget").
    prompt_tokens = answered["status"]["promptTokens"]
    assert prompt_tokens["reported"] == len(llm.requests[2].prompt.split())
    assert prompt_tokens["estimated"] >= prompt_tokens["reported"] > 0
    assert prompt_tokens["budget"] == 32_000 and prompt_tokens["leftOut"] == 0
    assert_prompts_clean(llm.requests, [secret_value])
    assert_clean(str(get_thread(api, ns, "bills-build-1")["status"]), [secret_value], "status")


def test_fix_in_chat_starts_from_the_failed_run_and_the_users_guidance_changes_the_code(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    """A failed run -> a Fix thread seeded with its error -> the model's first fix still fails
    its test on the run's document -> the user's guidance -> a fix that passes -> approved."""
    ns, llm = stack.ns, stack.llm
    secret_value = canary()
    set_secret(api, ns, "fixme", "API_KEY", secret_value)
    agent_integration(
        api, ns, "fixme", code=BROKEN_CODE, instructions="Report each invoice's number.",
        secrets=["API_KEY"], retry={"maxAttempts": 1},
    )  # fmt: skip
    original = eventually(
        lambda: get_integration(api, ns, "fixme"),
        lambda o: bool((o.get("status") or {}).get("deployedRevision")),
        "the inline code to be deployed",
    )["status"]["deployedRevision"]
    failed = create_run(api, ns, "fixme", HARBOURSIDE)
    assert wait_finished(api, ns, failed)["exceptionType"] == "KeyError"
    assert "authenticating with ***" in stored_log(api, ns, failed, 1)
    still_wrong = BROKEN_CODE.replace(
        '    print("authenticating with", os.environ["API_KEY"])\n', ""
    )

    def answer(request: Any) -> str:
        if "did what the user asked" in request.system:
            return Reply.judgement(True, "it reports the invoice number").text
        guided = "invoiceNumber, not invoiceNumbr" in request.prompt
        return fenced(FIXED_CODE if guided else still_wrong, "I removed the print.")

    llm.respond_with(answer)
    thread = _thread("fixme-fix-1")
    thread["spec"] = {"integration": "fixme", "purpose": "Fix", "run": failed, "turns": []}
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, thread)

    answered = say(api, ns, "fixme-fix-1", text="Please fix this run.")
    seed, first, verdict = agent_turns(answered)
    assert seed["kind"] == "Note" and "KeyError" in seed["text"] and failed in seed["text"]
    assert first["kind"] == "Revision" and "removed the print" in first["text"]
    assert verdict["verdict"]["verdict"] == "Fail" and "KeyError" in verdict["text"]
    revision = get_revision(api, ns, first["revision"])
    assert revision["spec"]["source"]["type"] == "Fix"
    assert revision["spec"]["source"]["fixOfRun"] == failed
    assert revision["spec"]["parent"] == original
    # The model was shown the failed code, the error and the masked log.
    prompt = llm.requests[0].prompt
    for expected in ("invoiceNumbr", "KeyError", "authenticating with ***", "Please fix"):
        assert expected in prompt, expected

    answered = say(api, ns, "fixme-fix-1", text="The key is invoiceNumber, not invoiceNumbr.")
    second, passed = agent_turns(answered)[-2:]
    assert second["kind"] == "Revision" and second["revision"] != first["revision"]
    assert passed["verdict"]["verdict"] == "Pass", passed
    assert 'invoiceNumber"]' in get_code(api, ns, second["revision"])

    approved = say(api, ns, "fixme-fix-1", action="Approve")
    assert agent_turns(approved)[-1]["kind"] == "Deploy"
    eventually(
        lambda: get_integration(api, ns, "fixme"),
        lambda o: (o.get("status") or {}).get("deployedRevision") == second["revision"],
        "the fix to be deployed",
    )
    assert_prompts_clean(llm.requests, [secret_value])
    assert_clean(str(approved["status"]), [secret_value], "the thread")


def test_docrelay_fix_starts_the_fix_thread_and_continues_it_with_guidance(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`docrelay fix RUN` says the first turn of the run's fix thread (the one the console and
    `docrelay chat --fix` use) and prints the answers; `--message` continues it with the
    user's guidance, which changes the code. A user who may not edit is refused."""
    ns, llm = stack.ns, stack.llm
    agent_integration(
        api, ns, "fixcli", code=BROKEN_CODE, instructions="Report each invoice's number.",
        secrets=["API_KEY"], retry={"maxAttempts": 1},
    )  # fmt: skip
    set_secret(api, ns, "fixcli", "API_KEY", canary())
    eventually(
        lambda: get_integration(api, ns, "fixcli"),
        lambda o: bool((o.get("status") or {}).get("deployedRevision")),
        "the inline code to be deployed",
    )
    failed = create_run(api, ns, "fixcli", HARBOURSIDE)
    assert wait_finished(api, ns, failed)["exceptionType"] == "KeyError"
    still_wrong = BROKEN_CODE.replace(
        '    print("authenticating with", os.environ["API_KEY"])\n', ""
    )

    def answer(request: Any) -> str:
        if "did what the user asked" in request.system:
            return Reply.judgement(True, "it reports the invoice number").text
        guided = "invoiceNumber, not invoiceNumbr" in request.prompt
        return fenced(FIXED_CODE if guided else still_wrong, "I removed the print.")

    llm.respond_with(answer)
    first = docrelay("fix", failed, "-n", ns, "--wait", "150", expect=1)
    assert "agent [Revision]" in first.stdout and "verdict Fail" in first.stdout, first.stdout
    proposal_1 = first.stdout.split("proposal: ", 1)[1].split()[0]
    again = docrelay("fix", failed, "-n", ns, expect=1)
    assert f"the fix thread {failed}-fix has begun" in again.stderr

    guided = docrelay(
        "fix", failed, "-n", ns, "--wait", "150",
        "--message", "The key is invoiceNumber, not invoiceNumbr.",
    )  # fmt: skip
    assert "verdict Pass" in guided.stdout, guided.stdout
    proposal_2 = guided.stdout.split("proposal: ", 1)[1].split()[0]
    assert proposal_2 != proposal_1 and "test run: " in guided.stdout
    assert 'invoiceNumber"]' in get_code(api, ns, proposal_2)
    thread = get_thread(api, ns, f"{failed}-fix")
    assert (thread["spec"]["purpose"], thread["spec"]["run"]) == ("Fix", failed)
    said = [t["text"] for t in thread["spec"]["turns"]]
    assert said == ["Fix this run.", "The key is invoiceNumber, not invoiceNumbr."]

    read_only = [
        {"apiGroups": [GROUP], "resources": ["integrations", "integrationruns", PLURAL],
         "verbs": ["get", "list", "watch"]},
    ]  # fmt: skip
    grant(api, ns, "viewer", read_only)
    kubeconfig = token_kubeconfig(api, ns, "viewer", tmp_path / "viewer", ns)
    refused = docrelay(
        "fix", failed, "--message", "deploy it", "--kubeconfig", str(kubeconfig), expect=1
    )
    assert "you may not add turns to" in refused.stderr
    assert "patch on integrationconversations" in refused.stderr
    assert len(get_thread(api, ns, f"{failed}-fix")["spec"]["turns"]) == 2


def test_a_thread_idle_past_the_integrations_run_retention_is_deleted(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    """Threads are kept like runs: one idle (its newest turn) longer than the Integration's
    runRetention.maxAgeDays is deleted by the operator; a recent one stays."""
    ns = stack.ns
    agent_integration(api, ns, "kept", code=FIXED_CODE, runRetention={"maxAgeDays": 2})
    for name in ("kept-old", "kept-new"):
        thread = _thread(name)
        thread["spec"] = {"integration": "kept", "purpose": "Change", "turns": []}
        custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, thread)
    # As the operator would have written them: the old thread's last turn three days ago.
    for name, at in (("kept-old", "2020-01-01T00:00:00Z"), ("kept-new", None)):
        custom(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, name,
            {"status": {"state": "WaitingForUser", "lastTurnAt": at or time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}},
        )  # fmt: skip
    eventually(
        lambda: [t["metadata"]["name"] for t in custom(api).list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL)["items"]],
        lambda names: names == ["kept-new"],
        "the idle thread to be deleted",
    )  # fmt: skip
    time.sleep(2)  # several looks later the recent one is still there
    assert get_thread(api, ns, "kept-new")["status"]["state"] == "WaitingForUser"


def get_code(api: client.ApiClient, ns: str, revision: str) -> str:
    ref = get_revision(api, ns, revision)["spec"]["codeConfigMap"]
    data = client.CoreV1Api(api).read_namespaced_config_map(ref["name"], ns).data
    return str(data[ref.get("key", "handler.py")])


def test_a_user_who_may_not_edit_cannot_add_turns(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Adding a turn is a patch of the thread: a user with read rights only is refused, and
    `docrelay chat` says what right is missing."""
    custom(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _thread("invoices-build")
    )
    read_only = [
        {
            "apiGroups": [GROUP],
            "resources": ["integrations", PLURAL],
            "verbs": ["get", "list", "watch"],
        }
    ]
    grant(api, namespace, "viewer", read_only)
    kubeconfig = token_kubeconfig(api, namespace, "viewer", tmp_path / "viewer", namespace)
    refused = docrelay(
        "chat", "invoices", "--message", "deploy it", "--kubeconfig", str(kubeconfig),
        expect=None,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "you may not add turns to invoices-build" in refused.stderr
    assert "patch on integrationconversations" in refused.stderr
    turns = get_thread(api, namespace, "invoices-build")["spec"]["turns"]
    assert [t["id"] for t in turns] == ["u-1"]
    # It may still read the thread.
    shown = docrelay("chat", "invoices", "--show", "--kubeconfig", str(kubeconfig))
    assert "state: new" in shown.stdout


def test_the_turns_policy_lets_only_who_may_edit_the_integration_add_turns(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """The chart's conversation-turns policy (agent.turnPolicy), as a tenant release in this
    namespace installs it, on the real API server: a user who may patch conversations but not
    the Integration they are about is refused a turn (RBAC alone would let them); one who may
    patch both adds it."""
    custom(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _thread("invoices-build")
    )
    threads = {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "patch"]}
    grant(api, namespace, "chatter", [threads])
    grant(api, namespace, "editor", [
        threads, {"apiGroups": [GROUP], "resources": ["integrations"], "verbs": ["patch"]},
    ])  # fmt: skip
    chatter = config.new_client_from_config(
        str(token_kubeconfig(api, namespace, "chatter", tmp_path / "chatter", namespace))
    )
    editor = config.new_client_from_config(
        str(token_kubeconfig(api, namespace, "editor", tmp_path / "editor", namespace))
    )
    said = {"id": "u-1", "text": "Post each invoice to the ERP."}
    _patch(chatter, namespace, "invoices-build", [said, {"id": "u-2", "text": "before"}])

    policy, binding = chart_objects(namespace, "conversation-policy.yaml")
    admission = client.AdmissionregistrationV1Api(api)
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)
    try:
        turns = [said, {"id": "u-2", "text": "before"}, {"id": "u-3", "text": "deploy it"}]

        def refusal() -> str:
            try:
                client.CustomObjectsApi(chatter).patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, "invoices-build",
                    {"spec": {"turns": turns}}, dry_run="All",
                )  # fmt: skip
            except ApiException as exc:
                return f"{exc.status} {exc.body}"
            return ""

        refused = eventually(refusal, bool, "the policy to be in force")
        assert refused.startswith("403 ")
        assert "a turn about the integration invoices needs patch on that integration" in refused
        stored = get_thread(api, namespace, "invoices-build")["spec"]["turns"]
        assert [t["id"] for t in stored] == ["u-1", "u-2"]
        cli = docrelay(
            "chat", "invoices", "--message", "deploy it", "--wait", "0", "--kubeconfig",
            str(tmp_path / "chatter"), expect=1,
        )  # fmt: skip
        assert "you may not add turns to invoices-build" in cli.stderr

        _patch(editor, namespace, "invoices-build", turns)  # may edit the Integration: allowed
        stored = get_thread(api, namespace, "invoices-build")["spec"]["turns"]
        assert [t["id"] for t in stored] == ["u-1", "u-2", "u-3"]
    finally:
        admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
        admission.delete_validating_admission_policy(policy["metadata"]["name"])


class Terminal:
    """`docrelay chat` on a pseudo-terminal: typed input, the screen read back."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "docrelay.cli", "chat", *args],
            stdin=slave, stdout=slave, stderr=slave,
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
        )  # fmt: skip
        os.close(slave)
        self.screen = ""
        self.cursor = 0

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, text: str, seconds: float = 150) -> str:
        """The screen from where the last match ended to the end of `text`'s next appearance."""
        start = self.cursor
        deadline = time.monotonic() + seconds
        while text not in self.screen[start:]:
            assert time.monotonic() < deadline, f"{text!r} never appeared:\n{self.screen}"
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the program ended
                    assert text in self.screen[start:], self.screen
        self.cursor = self.screen.index(text, start) + len(text)
        return self.screen[start : self.cursor]

    def close(self) -> int:
        code = self.process.wait(timeout=30)
        os.close(self.master)
        return code


def test_the_terminal_chat_asks_proposes_tests_and_deploys_as_a_person_types(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    ns, llm = stack.ns, stack.llm
    agent_integration(api, ns, "notes", code=FIXED_CODE)
    eventually(
        lambda: get_integration(api, ns, "notes"),
        lambda o: bool((o.get("status") or {}).get("deployedRevision")),
        "the inline code to be deployed",
    )
    v2 = FIXED_CODE.replace('"exported "', '"exported v2 "')
    llm.script(
        Reply.question("Should the prefix go before the number, as in `exported v2 INV-1`?"),
        Reply(fenced(v2, "The summary now reads 'exported v2 <number>'.")),
        Reply.judgement(True, "the summary says exported v2"),
        Reply.judgement(True, "the summary still says exported v2"),
    )
    terminal = Terminal("notes", "--change", "-n", ns)
    try:
        terminal.read_until("/test (dry), /live-test (sends for real), /diff, /show, /quit")
        terminal.type("Mark the summary as version 2.\nKeep the rest.\n\n")
        screen = terminal.read_until("agent [Question]")
        assert "thinking ..." in screen
        terminal.read_until("> ")
        terminal.type("Yes, exactly so.\n\n")
        screen = terminal.read_until("verdict Pass")
        assert "agent [Revision]" in screen and "exported v2 <number>" in screen
        assert "testing ..." in screen
        terminal.read_until("> ")
        terminal.type("/diff\n")
        assert '+    return {"summary": "exported v2 "' in terminal.read_until("> ")
        terminal.type("/test\n")  # once more, dry: a new round of test runs, judged again
        screen = terminal.read_until("verdict Pass")
        assert "testing revision" in screen and "again, dry" in screen
        terminal.read_until("> ")
        terminal.type("/approve\n")
        assert "agent [Deploy]" in terminal.read_until("> ")
        terminal.type("/quit\n")
        assert terminal.close() == 0
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
    thread = get_thread(api, ns, "notes-change")
    assert thread["spec"]["purpose"] == "Change"
    said = thread["spec"]["turns"][0]
    assert said["text"] == "Mark the summary as version 2.\nKeep the rest."
    assert thread["metadata"]["ownerReferences"][0]["name"] == "notes"
    eventually(
        lambda: get_integration(api, ns, "notes"),
        lambda o: o["status"].get("deployedRevision") == thread["status"]["revision"],
        "the approved revision to be deployed",
    )


QUIET_CODE = """
from docrelay.sdk import get_document


def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    return {"summary": "exported " + document["data"]["invoiceNumber"]}
"""


def test_a_revision_that_ignores_the_instructions_is_judged_failed_until_overridden(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    """Code that runs without an error but sends nothing where a POST was asked for: its test
    runs succeed, the judge (shown the empty outbound record) fails it, the revision is not
    Tested and Approve is refused; a user's override, with a reason, lets it deploy."""
    ns, llm = stack.ns, stack.llm
    llm.script(
        Reply(fenced(QUIET_CODE, "This reads each invoice's number.")),
        Reply.judgement(
            False,
            "no POST to the bills API was made; the instructions ask for one",
            "API_KEY was never used",
        ),
    )
    set_secret(api, ns, "quiet", "API_KEY", canary())
    agent_integration(
        api, ns, "quiet", code=FIXED_CODE, secrets=["API_KEY"], egress=sink_egress(stack.sink)
    )
    thread = _thread("quiet-change")
    thread["spec"] = {"integration": "quiet", "purpose": "Change", "turns": []}
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, thread)

    answered = say(
        api, ns, "quiet-change", text="POST each invoice's number to the bills API with API_KEY."
    )
    revision, verdict = agent_turns(answered)[-2:]
    assert revision["kind"] == "Revision"
    for name in verdict["verdict"]["testRuns"]:
        run = custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", name)
        assert run["status"]["phase"] == "Succeeded"  # no error ...
    assert verdict["verdict"]["verdict"] == "Fail"  # ... and still not what was asked
    assert "no POST to the bills API was made" in verdict["verdict"]["reasons"][0]
    assert "does not do what you asked" in verdict["text"]
    assert "outbound connections:\n(none)" in llm.requests[-1].prompt
    tested = next(
        c
        for c in get_revision(api, ns, revision["revision"])["status"]["conditions"]
        if c["type"] == "Tested"
    )
    assert (tested["status"], tested["reason"]) == ("False", "JudgedFailed")
    revisions = docrelay("revisions", "quiet", "-n", ns).stdout
    line = next(x for x in revisions.splitlines() if x.startswith(revision["revision"]))
    assert line.split()[4:6] == ["no", "fail"]  # TESTED, VERDICT

    refused = say(api, ns, "quiet-change", action="Approve")
    assert "failed its tests" in agent_turns(refused)[-1]["text"]

    overridden = say(
        api, ns, "quiet-change", action="Override", text="Reading is all we need this week."
    )
    recorded = agent_turns(overridden)[-1]["verdict"]
    assert recorded["overriddenBy"] == "alice"
    assert recorded["overrideReason"] == "Reading is all we need this week."
    revisions = docrelay("revisions", "quiet", "-n", ns).stdout
    line = next(x for x in revisions.splitlines() if x.startswith(revision["revision"]))
    assert line.split()[4:6] == ["yes", "overridden"]
    approved = say(api, ns, "quiet-change", action="Approve")
    assert agent_turns(approved)[-1]["kind"] == "Deploy"
    eventually(
        lambda: get_integration(api, ns, "quiet"),
        lambda o: (o.get("status") or {}).get("deployedRevision") == revision["revision"],
        "the overridden revision to be deployed",
    )
