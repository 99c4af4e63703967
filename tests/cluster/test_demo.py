"""`make demo` end to end: `python -m devkit.demo` as a subprocess, on its own fresh cluster.

The whole story has to work (a signed event in, a run that Succeeded, the invoice's fields at
the sink, a redelivery creating nothing), the secret must never appear in what it prints, and
it must leave no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.cluster.harness import PYTHONPATH, REPO_ROOT, canary
from tests.leakcheck import assert_clean

DEMO_SECONDS = 240


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (the demo's state directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_demo_tells_the_whole_story_and_cleans_up(tmp_path: Path) -> None:
    state_dir = tmp_path / "demo"
    secret = canary(header=True)  # the demo's code sends it as a header
    process = subprocess.Popen(
        [sys.executable, "-m", "devkit.demo", "--state-dir", str(state_dir)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "DOCRELAY_DEMO_API_KEY": secret},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=DEMO_SECONDS)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the demo tears down on SIGTERM as on Ctrl-C
        output, _ = process.communicate(timeout=60)
        raise AssertionError(f"the demo took over {DEMO_SECONDS}s:\n{output}") from None

    assert process.returncode == 0, output
    assert_clean(output, [secret], "the demo's output")
    assert "LEAK" not in output, output
    for expected in (
        "subscribed document.parse.completed",
        "-> 202",
        "phase: Succeeded, attempt 1",
        # The run's log, with the key the code printed masked.
        "log  | exporting INV-2025-0418 with API key ***",
        # What the sink received: the invoice's fields and the sealed key as a header.
        '"invoiceNumber": "INV-2025-0418"',
        '"supplier": "Harbourside Office Supplies Pty Ltd"',
        '"total": 1902.84',
        "X-Api-Key: *** (the sealed API key",
        "IntegrationRuns in docrelay-demo: 1",
        "'exported INV-2025-0418 as bill-1'",
        "export KUBECONFIG=",
        "done: the operator, gateway, stand-in, sink and cluster are stopped",
    ):
        assert expected in output, f"{expected!r} missing from:\n{output}"
    assert processes_mentioning(str(state_dir)) == []
