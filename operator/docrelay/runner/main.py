"""Load the revision's code, call `lambda_handler(event, context)` under a deadline, write the
termination message, exit with the documented code (docs/runner.md)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from docrelay.runner import contract
from docrelay.runner.contract import Outcome

# Leave the deadline a little before the Job's activeDeadlineSeconds so the runner, not the
# Job controller, reports a timeout (and the log can still be read).
DEFAULT_TIMEOUT = 300.0


class Context:
    """The Lambda-style context object the code receives."""

    def __init__(self, run: str, attempt: int, deadline: float) -> None:
        self.run_name = run
        self.attempt = attempt
        self.function_name = run
        self.aws_request_id = f"{run}-{attempt}"
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class ConfigurationProblem(Exception):
    """The code or the run's settings cannot be used; the message is ours."""


def load_handler(path: Path, expected_hash: str = "") -> Callable[[Any, Any], Any]:
    try:
        source = path.read_text()
    except OSError:
        raise ConfigurationProblem(f"the code file {path.name} cannot be read") from None
    digest = "sha256:" + hashlib.sha256(source.encode()).hexdigest()
    if expected_hash and digest != expected_hash:
        raise ConfigurationProblem("the mounted code does not match the revision's codeHash")
    namespace: dict[str, Any] = {"__name__": "integration", "__file__": str(path)}
    try:
        compiled = compile(source, "handler.py", "exec")
    except SyntaxError as exc:
        raise ConfigurationProblem(f"SyntaxError at line {exc.lineno}: {exc.msg}") from None
    exec(compiled, namespace)  # the integration's own code: what this process exists to run
    handler = namespace.get("lambda_handler")
    if not callable(handler):
        raise ConfigurationProblem("the code defines no lambda_handler(event, context)")
    return handler


def summarize(result: Any) -> str | None:
    """A short text of what the code returned: its 'summary' if it gave one, else JSON."""
    if result is None:
        return None
    if isinstance(result, Mapping) and isinstance(result.get("summary"), str):
        return str(result["summary"])[: contract.MAX_SUMMARY]
    try:
        text = json.dumps(result, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(result)
    return text[: contract.MAX_SUMMARY]


def describe(exc: BaseException) -> tuple[str, str]:
    """(exception type, one-line message) of an exception; the operator masks secrets."""
    kind = type(exc)
    module = kind.__module__
    name = (
        kind.__qualname__ if module in ("builtins", "integration") else f"{module}.{kind.__name__}"
    )
    text = " ".join(str(exc).split())
    return name, f"{kind.__name__}: {text}" if text else kind.__name__


def call_with_deadline(
    handler: Callable[[Any, Any], Any], event: Any, context: Context, timeout: float
) -> Outcome:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = handler(event, context)
        except BaseException as exc:  # everything the code raises is reported, nothing escapes
            box["error"] = exc
            traceback.print_exc()

    thread = threading.Thread(target=target, name="lambda_handler", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return Outcome(
            "Failed",
            contract.TIMEOUT,
            "TimeoutError",
            f"the code did not finish within {timeout:g} s (timeoutSeconds)",
        )
    if "error" in box:
        exc = box["error"]
        kind, message = describe(exc)
        return Outcome("Failed", contract.classify(exc), kind, message)
    return Outcome("Succeeded", result_summary=summarize(box.get("result")))


def write_termination(outcome: Outcome, path: str) -> None:
    try:
        Path(path).write_text(outcome.to_json())
    except OSError as exc:  # the exit code still tells the operator what happened
        print(f"docrelay runner: cannot write the termination message: {exc}", file=sys.stderr)


def exit_code(outcome: Outcome) -> int:
    if outcome.status == "Succeeded":
        return contract.EXIT_SUCCEEDED
    return contract.EXIT_CODES.get(outcome.error_class or "", contract.EXIT_CODE_ERROR)


def run(environ: Mapping[str, str]) -> Outcome:
    try:
        timeout = float(environ.get(contract.ENV_TIMEOUT, DEFAULT_TIMEOUT))
        event = json.loads(environ.get(contract.ENV_EVENT, "{}"))
        attempt = int(environ.get(contract.ENV_ATTEMPT, "1"))
    except ValueError:
        return Outcome(
            "Failed", contract.CONFIGURATION_ERROR, None, "the run's settings are not valid"
        )
    deadline = time.monotonic() + timeout
    code_path = Path(
        environ.get(contract.ENV_CODE_PATH, f"{contract.CODE_DIR}/{contract.CODE_FILE}")
    )
    try:
        handler = load_handler(code_path, environ.get(contract.ENV_CODE_HASH, ""))
    except ConfigurationProblem as exc:
        return Outcome("Failed", contract.CONFIGURATION_ERROR, "ConfigurationError", str(exc))
    except BaseException as exc:  # the module body raised
        traceback.print_exc()
        kind, message = describe(exc)
        return Outcome("Failed", contract.CONFIGURATION_ERROR, kind, f"loading the code: {message}")
    context = Context(environ.get(contract.ENV_RUN, "run"), attempt, deadline)
    return call_with_deadline(handler, event, context, max(0.0, deadline - time.monotonic()))


def main() -> int:
    outcome = run(os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    write_termination(
        outcome, os.environ.get(contract.ENV_TERMINATION_PATH, contract.TERMINATION_MESSAGE_PATH)
    )
    code = exit_code(outcome)
    if outcome.error_class == contract.TIMEOUT:
        os._exit(code)  # the code's thread may still run; end the process now
    return code
