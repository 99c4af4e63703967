"""Load the revision's code, call `lambda_handler(event, context)` under a deadline, write the
termination message, exit with the documented code (docs/runner.md)."""

from __future__ import annotations

import os
import sys
import threading
import time

from docrelay.runner import contract
from docrelay.runner.contract import Outcome

# Everything before the handler is the run's start (bench/bench_runner.py): at import, only
# what every run needs. json (the event is read by contract.load_event), hashlib, traceback,
# collections.abc and the rest are imported where they are used, and typing never
# (annotations are not evaluated).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any

    from docrelay.masking import Masker, StreamMasker

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


def load_handler(path: str | Path, expected_hash: str = "") -> Callable[[Any, Any], Any]:
    try:
        with open(path, encoding="utf-8") as file:
            source = file.read()
    except OSError:
        name = os.path.basename(path)
        raise ConfigurationProblem(f"the code file {name} cannot be read") from None
    if expected_hash:
        import hashlib

        digest = "sha256:" + hashlib.sha256(source.encode()).hexdigest()
        if digest != expected_hash:
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


def print_exception() -> None:
    """The exception being handled, with its traceback, to stderr (the run's log)."""
    import traceback

    traceback.print_exc()


def summarize(result: Any) -> str | None:
    """A short text of what the code returned: its 'summary' if it gave one, else JSON."""
    if result is None:
        return None
    from collections.abc import Mapping

    if isinstance(result, Mapping) and isinstance(result.get("summary"), str):
        return str(result["summary"])[: contract.MAX_SUMMARY]
    import json

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


def traceback_tail(exc: BaseException, frames: int = 5) -> str:
    """The innermost frames, file:line in function; no source lines, no locals."""
    import traceback

    entries = traceback.extract_tb(exc.__traceback__)[-frames:]
    return " <- ".join(
        f"{os.path.basename(e.filename)}:{e.lineno} in {e.name}" for e in reversed(entries)
    )


def seconds_text(seconds: float) -> str:
    """A duration as a person reads it: "6 s", not "5.99975 s" (what remains of the deadline
    is a float); under a second, one decimal."""
    return f"{round(seconds)} s" if seconds >= 1 else f"{max(seconds, 0.0):.1f} s"


def call_with_deadline(
    handler: Callable[[Any, Any], Any], event: Any, context: Context, timeout: float
) -> Outcome:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = handler(event, context)
        except BaseException as exc:  # everything the code raises is reported, nothing escapes
            box["error"] = exc
            print_exception()

    thread = threading.Thread(target=target, name="lambda_handler", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return Outcome(
            "Failed",
            contract.TIMEOUT,
            "TimeoutError",
            f"the code did not finish within {seconds_text(timeout)} (timeoutSeconds)",
        )
    if "error" in box:
        exc = box["error"]
        kind, message = describe(exc)
        error_class = contract.classify(exc)
        if error_class == contract.EGRESS_DENIED:
            message = egress_message(exc, kind)
        elif error_class == contract.TRANSIENT_ERROR:
            message = with_proxy_hint(message)
        return Outcome("Failed", error_class, kind, message, traceback_tail=traceback_tail(exc))
    return Outcome("Succeeded", result_summary=summarize(box.get("result")))


def egress_message(exc: BaseException, kind: str) -> str:
    """What the user reads for a destination the egress proxy refused: the host and the fix."""
    return f"EgressDenied: {contract.egress_denial(exc)} (the egress proxy refused; {kind})"


def with_proxy_hint(message: str) -> str:
    """A network failure while the egress proxy itself is away (restarting): say so."""
    if not any(os.environ.get(name) for name in contract.PROXY_VARIABLES):
        return message
    from docrelay.runner.egress import proxy_unreachable

    where = proxy_unreachable(os.environ)
    if where is None:
        return message
    return f"{message} (the egress proxy at {where} is not reachable; retried)"


def write_termination(outcome: Outcome, path: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(outcome.to_json())
    except OSError as exc:  # the exit code still tells the operator what happened
        print(f"docrelay runner: cannot write the termination message: {exc}", file=sys.stderr)


def exit_code(outcome: Outcome) -> int:
    if outcome.status == "Succeeded":
        return contract.EXIT_SUCCEEDED
    return contract.EXIT_CODES.get(outcome.error_class or "", contract.EXIT_CODE_ERROR)


def egress_wait(environ: Mapping[str, str], timeout: float) -> float:
    """How long to wait for the egress proxy at start: DOCRELAY_EGRESS_WAIT_SECONDS (default
    contract.EGRESS_WAIT_SECONDS), at most half the run's deadline."""
    try:
        bound = float(environ.get(contract.ENV_EGRESS_WAIT, contract.EGRESS_WAIT_SECONDS))
    except ValueError:
        bound = contract.EGRESS_WAIT_SECONDS
    return max(0.0, min(bound, timeout / 2))


def wait_for_network(environ: Mapping[str, str], timeout: float) -> None:
    """Wait until the egress proxy answers (egress.wait_for_proxy); say so in the run's log
    when it did not at once. The code runs either way: a proxy that stays away fails its
    calls as TransientError, with the message saying so."""
    from docrelay.runner.egress import wait_for_proxy

    bound = egress_wait(environ, timeout)
    waited, probes, away = wait_for_proxy(environ, bound)
    if away is not None:
        print(
            f"docrelay runner: the egress proxy at {away} did not answer within "
            f"{seconds_text(bound)}; running the code anyway",
            file=sys.stderr,
            flush=True,
        )
    elif probes > 1:
        print(
            f"docrelay runner: the egress proxy answered after {seconds_text(waited)} "
            "(this pod's network was not ready when it started)",
            file=sys.stderr,
            flush=True,
        )


def run(environ: Mapping[str, str]) -> Outcome:
    try:
        timeout = float(environ.get(contract.ENV_TIMEOUT, DEFAULT_TIMEOUT))
        event = contract.load_event(environ.get(contract.ENV_EVENT, "{}"))
        attempt = int(environ.get(contract.ENV_ATTEMPT, "1"))
    except ValueError:
        return Outcome(
            "Failed", contract.CONFIGURATION_ERROR, None, "the run's settings are not valid"
        )
    deadline = time.monotonic() + timeout
    # The egress proxy answering first: the broker (secrets) is in the same gateway pods.
    if any(environ.get(name) for name in contract.PROXY_VARIABLES):
        wait_for_network(environ, timeout)
    # Secrets first: the code's module body may read os.environ at import.
    masked: list[str] = []
    if environ.get(contract.ENV_SEALED_KEYS, "").strip():
        from docrelay.runner.secrets import SecretsProblem, open_secrets

        try:
            masked += open_secrets(environ, os.environ, attempt)
        except SecretsProblem as exc:
            return Outcome("Failed", exc.error_class, exc.kind, str(exc))
    # The egress proxy (docs/egress.md): the broker token as the proxy password; masked too.
    if any(environ.get(name) for name in contract.PROXY_VARIABLES):
        from docrelay.runner.egress import install_proxy_credentials

        token = install_proxy_credentials(environ, os.environ)
        if token:
            masked.append(token)
    if masked:
        install_masking(masked)
    code_path = environ.get(contract.ENV_CODE_PATH, f"{contract.CODE_DIR}/{contract.CODE_FILE}")
    try:
        handler = load_handler(code_path, environ.get(contract.ENV_CODE_HASH, ""))
    except ConfigurationProblem as exc:
        return Outcome("Failed", contract.CONFIGURATION_ERROR, "ConfigurationError", str(exc))
    except BaseException as exc:  # the module body raised
        print_exception()
        kind, message = describe(exc)
        if contract.classify(exc) == contract.EGRESS_DENIED:
            return Outcome("Failed", contract.EGRESS_DENIED, kind, egress_message(exc, kind))
        return Outcome("Failed", contract.CONFIGURATION_ERROR, kind, f"loading the code: {message}")
    context = Context(environ.get(contract.ENV_RUN, "run"), attempt, deadline)
    return call_with_deadline(handler, event, context, max(0.0, deadline - time.monotonic()))


class MaskedStream:
    """A text stream that masks every form of the run's secret values before writing on.

    Split writes are caught (the tail that could start a value is held back); a full line is
    released at once so logs stay live. Writes to the file descriptors themselves (os.write,
    subprocesses) bypass it: docs/runner.md says so."""

    def __init__(self, target: Any, masker: Masker | Callable[[], Masker]) -> None:
        """`masker`, or what makes it on the first write (building the masker imports and
        computes every form of every value: not before the handler, if nothing is written)."""
        self._target = target
        self._masker = masker
        self._stream: StreamMasker | None = None
        self._lock = threading.Lock()

    def _masking(self) -> StreamMasker:
        if self._stream is None:
            masker = self._masker if not callable(self._masker) else self._masker()
            self._stream = masker.stream()
        return self._stream

    def write(self, text: str) -> int:
        with self._lock:
            out = self._masking().feed_lines(str(text))
            if out:
                self._target.write(out)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._target.flush()

    def close_masking(self) -> None:
        """End of the run: write out what was held back (masked)."""
        with self._lock:
            out = self._stream.flush() if self._stream is not None else ""
            if out:
                self._target.write(out)
            self._target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ...
        return getattr(self._target, name)


_masker: Masker | None = None
_masked_values: list[str] = []
_masker_lock = threading.Lock()


def current_masker() -> Masker | None:
    """The run's masker, made on first use from the values install_masking was given."""
    global _masker
    with _masker_lock:
        if _masker is None and _masked_values:
            from docrelay.masking import Masker

            _masker = Masker(_masked_values)
        return _masker


def install_masking(values: list[str]) -> None:
    """From now on stdout and stderr mask `values`; the masker is made at the first write
    (or for the termination message), so a handler is not kept waiting for it."""
    global _masker
    _masker = None
    _masked_values[:] = values

    def made() -> Masker:
        masker = current_masker()
        assert masker is not None
        return masker

    sys.stdout = MaskedStream(sys.stdout, made)  # __getattr__ supplies the rest of TextIO
    sys.stderr = MaskedStream(sys.stderr, made)  # __getattr__ supplies the rest of TextIO


def mask_outcome(outcome: Outcome) -> Outcome:
    """The operator masks too; the runner does it first so no value leaves the pod."""
    masker = current_masker()
    if masker is None:
        return outcome

    def m(text: str | None) -> str | None:
        return None if text is None else masker.mask(text)

    return outcome.replace(
        message=m(outcome.message),
        result_summary=m(outcome.result_summary),
        traceback_tail=m(outcome.traceback_tail),
    )


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, MaskedStream):
            stream.close_masking()
        else:
            stream.flush()


def main() -> int:
    outcome = mask_outcome(run(os.environ))
    _flush_streams()
    write_termination(
        outcome, os.environ.get(contract.ENV_TERMINATION_PATH, contract.TERMINATION_MESSAGE_PATH)
    )
    code = exit_code(outcome)
    if outcome.error_class == contract.TIMEOUT:
        os._exit(code)  # the code's thread may still run; end the process now
    return code
