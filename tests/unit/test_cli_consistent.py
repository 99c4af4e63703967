"""One consistent CLI (no cluster; tests/cluster/test_cli_consistent.py runs the commands for
real): one way to name a revision, suspend/pause/resume, a TESTED column, docs that list every
doc and every command, durations a person reads."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pytest

from docrelay.cli import build_parser, main
from docrelay.cli.revisions import mark_tested
from docrelay.runner.main import Context, call_with_deadline, seconds_text

REPO = Path(__file__).resolve().parents[2]


def commands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted({choice for choice in action.choices if choice != "secrets"})


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["code", "deploy", "test", "diff"])
def test_every_revision_taking_command_takes_a_name_and_revision(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = help_text(capsys, command)
    assert "--revision REVISION" in text
    assert re.search(r"\b(NAME|REV1)\b", text)


def test_the_old_deploy_form_is_still_described(capsys: pytest.CaptureFixture[str]) -> None:
    assert "The old form, deploy INTEGRATION REVISION, still works" in help_text(capsys, "deploy")


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("suspend", "spec.suspend to true"),
        ("pause", "The spec is not changed"),
        ("resume", "set spec.suspend back to false"),
    ],
)
def test_suspend_pause_and_resume_exist(
    capsys: pytest.CaptureFixture[str], command: str, says: str
) -> None:
    text = help_text(capsys, command)
    assert "INTEGRATION" in text and says in text


def test_revisions_has_a_mark_tested(capsys: pytest.CaptureFixture[str]) -> None:
    assert "TESTED" in help_text(capsys, "revisions")
    assert [mark_tested(t) for t in (True, False, None)] == ["yes", "no", "-"]


# --- the docs -------------------------------------------------------------------------------


def test_the_docs_index_lists_every_doc() -> None:
    index = (REPO / "docs" / "README.md").read_text()
    docs = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    missing = [d for d in docs if d != "README.md" and f"]({d})" not in index]
    assert missing == []


def test_the_readme_links_the_index_broker_chart_and_argocd_and_lists_every_command() -> None:
    readme = (REPO / "README.md").read_text()
    for link in ("docs/README.md", "docs/broker.md", "docs/chart.md", "docs/argocd/README.md"):
        assert f"]({link})" in readme, link
    cli = readme[readme.index("## The CLI") :]
    unlisted = [c for c in commands() if not re.search(rf"`{re.escape(c)}[ `]", cli)]
    assert unlisted == []


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"), [(5.99975, "6 s"), (300.0, "300 s"), (0.2, "0.2 s"), (-0.1, "0.0 s")]
)
def test_the_runner_prints_seconds_a_person_reads(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


def test_a_timed_out_run_says_within_how_long_without_noise() -> None:
    outcome = call_with_deadline(lambda e, c: time.sleep(5), {}, Context("r", 1, 0.0), 0.2)
    assert outcome.message == "the code did not finish within 0.2 s (timeoutSeconds)"
