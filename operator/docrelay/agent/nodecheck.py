"""`node --check` for JavaScript a model wrote (spec.runtime.nodejs): the agent's syntax check.

The one part of the agent's checks that runs something (Node.js parses the code; nothing of it
executes), so it lives apart from the pure checks in `docrelay.agent.codecheck`, which take it
as their `syntax_check`. The operator image holds the official Node.js binary as
/usr/local/bin/node (images/Dockerfile.operator), on PATH. Without a `node` on the operator's
PATH (an operator run elsewhere) the check is skipped (logged once): the revision's test run
still reports a syntax error as a ConfigurationError.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from docrelay.agent.codecheck import Problem, Rule

log = logging.getLogger(__name__)

# The runner's rule (runner/node/runner.mjs): import/export statements make an ES module.
_ESM = re.compile(r"^\s*(?:export\s|import\s*(?:[\w*{]|[\"'])|import\.meta\b)", re.M)
_warned = False


def node_syntax_check(source: str, timeout: float = 20.0) -> Problem | None:
    """A SyntaxError problem (with its line) if Node.js cannot parse `source`, else None."""
    global _warned
    node = shutil.which("node")
    if node is None:
        if not _warned:
            log.warning("agent: no node on PATH; JavaScript syntax is checked by test runs only")
            _warned = True
        return None
    suffix = ".mjs" if _ESM.search(source) else ".cjs"
    with tempfile.TemporaryDirectory(prefix="docrelay-check-") as directory:
        path = Path(directory) / f"handler{suffix}"
        path.write_text(source)
        try:
            done = subprocess.run(
                [node, "--check", str(path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Problem(Rule.SYNTAX_ERROR, "node --check did not finish")
    if done.returncode == 0:
        return None
    lines = done.stderr.splitlines()
    where = re.search(rf"handler{re.escape(suffix)}:(\d+)", done.stderr)
    message = next((line for line in lines if re.match(r"^\w*Error\b", line)), "")
    message = message.removeprefix("SyntaxError: ") or "the code does not parse"
    return Problem(Rule.SYNTAX_ERROR, message, int(where.group(1)) if where else None)
