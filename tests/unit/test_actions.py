"""What the CLI and the console share (docrelay.actions): the names of conversation threads,
which revision a revert goes back to, the test-run manifest, the refusals a person reads."""

from __future__ import annotations

import pytest

from docrelay.actions import Refused
from docrelay.actions.accounts import check_account, with_app
from docrelay.actions.conversations import thread_name
from docrelay.actions.revisions import revert_target
from docrelay.actions.runs import new_test_run
from docrelay.cli.common import CliError


def test_thread_names_are_those_docrelay_chat_and_the_console_both_use() -> None:
    assert thread_name("orders", "Build") == "orders-build"
    assert thread_name("orders", "Change") == "orders-change"
    assert thread_name("orders", "Fix", "orders-r-1") == "orders-r-1-fix"
    with pytest.raises(Refused, match="names the run it fixes"):
        thread_name("orders", "Fix")


def test_revert_goes_back_to_the_revision_deployed_before() -> None:
    def integration(**status: object) -> dict:
        return {"metadata": {"name": "orders"}, "status": status}

    deployed = integration(
        deployedRevision="r2", history=[{"revision": "r2", "previousRevision": "r1"}]
    )
    assert revert_target(deployed) == "r1"
    for nothing in (
        integration(),
        integration(deployedRevision="r1", history=[{"revision": "r1"}]),
        integration(deployedRevision="r3", history=[{"revision": "r2", "previousRevision": "r1"}]),
    ):
        with pytest.raises(Refused, match="orders has no previously deployed revision"):
            revert_target(nothing)


def test_a_test_run_is_a_test_named_from_its_event() -> None:
    body = new_test_run("team-a", "orders", "XqLmNoPa", "DocumentValidated", "orders-r1")
    spec = body["spec"]
    assert (spec["test"], spec["documentIdentifier"], spec["revision"]) == (
        True,
        "XqLmNoPa",
        "orders-r1",
    )
    assert spec["eventId"].startswith("test-")
    assert body["metadata"]["name"].startswith("orders-")
    assert "revision" not in new_test_run("team-a", "orders", "d", "DocumentValidated")["spec"]


def test_the_cli_error_is_the_shared_refusal_and_keeps_its_exit_code() -> None:
    assert CliError is Refused
    with pytest.raises(CliError) as raised:
        check_account("Not A Slug", "finance-team")
    assert raised.value.exit_code == 2
    assert "invalid account" in str(raised.value)
    assert with_app("https://pd/connect.html?token=t", "slack").endswith("?token=t&app=slack")
