"""The CLI without a cluster: help, usage errors, settings errors, missing kubeconfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from docrelay.cli import main
from docrelay.cli.common import print_table


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse: --help and usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["--help"], ["operator", "revisions", "code", "deploy", "revert", "Exit codes"]),
        (["revisions", "--help"], ["--kubeconfig", "--context", "-n NAMESPACE", "-o {yaml,json}"]),
        (["code", "--help"], ["--revision REVISION", "default: the deployed revision"]),
        (["deploy", "--help"], ["INTEGRATION", "REVISION", "status.history", "--timeout"]),
        (["revert", "--help"], ["deployed before the current one", "--timeout"]),
        (["operator", "--help"], ["--all-namespaces", "--health-port", "DOCRELAY_HEALTH_PORT"]),
        (
            ["secret", "history", "--help"],
            ["KEY", "--integration", "newest", "fingerprint", "not shown", "No value"],
        ),
    ],
)
def test_help(capsys: pytest.CaptureFixture[str], command: list[str], expected: list[str]) -> None:
    code, out, _ = run(capsys, *command)
    assert code == 0
    flat = " ".join(out.split())
    for text in expected:
        assert text in flat


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["revisions"], "the following arguments are required: INTEGRATION"),
        (["revisions", "x", "-o", "xml"], "invalid choice: 'xml'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


def test_operator_bad_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "operator", "-n", "team", "--all-namespaces")
    assert code == 2
    assert err.startswith("error: invalid operator settings:")
    assert "choose either a namespace or all namespaces, not both" in err


def test_missing_kubeconfig_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.kubeconfig"
    code, out, err = run(capsys, "revisions", "orders", "--kubeconfig", str(missing))
    assert code == 1
    assert out == ""
    assert err.strip() == f"error: cannot load the kubeconfig {missing}"


def test_table_columns_align(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(["NAME", "VALID"], [["orders-abc", "yes"], ["o", "no: line 2: bad"]])
    assert capsys.readouterr().out.splitlines() == [
        "NAME         VALID",
        "orders-abc   yes",
        "o            no: line 2: bad",
    ]
