"""The runner's contract with the operator: paths, variables, exit codes, error classes and the
termination message. Pure and standard library only: the operator imports it too.

Imported before every run's handler, so it imports nothing at start (no json, dataclasses,
typing or re: each costs the run's start milliseconds; bench/bench_runner.py): `json` is
imported by the functions that use it, which run after the handler or in the operator.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CODE_DIR = "/var/run/docrelay/code"
CODE_FILE = "handler.py"
# The Node.js runner (operator/docrelay/runner/node, installed at this path in its image) and
# the file it loads the code from (ES module or CommonJS, told apart by the runner).
NODE_RUNNER = "/opt/docrelay/node/runner.mjs"
NODE_RUNNER_DIR = "/opt/docrelay/node"
NODE_CODE_FILE = "handler.js"
BROKER_TOKEN_DIR = "/var/run/secrets/docrelay/broker"
BROKER_TOKEN_FILE = "token"
BROKER_AUDIENCE = "docrelay-broker"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# Variables the operator sets on the run container (values are never secrets).
ENV_EVENT = "DOCRELAY_EVENT"  # the event, JSON
ENV_TIMEOUT = "DOCRELAY_TIMEOUT_SECONDS"
ENV_RUN = "DOCRELAY_RUN"
ENV_ATTEMPT = "DOCRELAY_ATTEMPT"
ENV_IDEMPOTENCY_KEY = "DOCRELAY_IDEMPOTENCY_KEY"
ENV_CODE_PATH = "DOCRELAY_CODE_PATH"
ENV_CODE_HASH = "DOCRELAY_CODE_HASH"  # sha256:<hex> of the revision's code
ENV_TERMINATION_PATH = "DOCRELAY_TERMINATION_MESSAGE_PATH"
# The container's memory limit in MiB (downward API), for the Node.js runner's heap size.
ENV_MEMORY_LIMIT_MIB = "DOCRELAY_MEMORY_LIMIT_MIB"
# The names of the variables that hold sealed (per-run ciphertext) values, comma separated.
ENV_SEALED_KEYS = "DOCRELAY_SEALED_KEYS"
# The run broker's base URL (docs/broker.md); without it sealed values stay ciphertext.
ENV_BROKER_URL = "DOCRELAY_BROKER_URL"
ENV_BROKER_TOKEN_PATH = "DOCRELAY_BROKER_TOKEN_PATH"
# The egress proxy (docs/egress.md): the operator sets these (without credentials) to the
# proxy's URL, and NO_PROXY to the broker's host; the runner adds the pod's broker token as
# the proxy password in its own process environment.
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")
PROXY_USER = "run"
# How long the runner waits, before the code, for the egress proxy to answer (seconds; at most
# half the run's deadline). A new pod's network may be ready for its policies only after its
# container started: NetworkPolicy controllers such as kube-router (k3s's) program a pod once
# its address is published, and until then the gateway refuses it (docs/runner.md). The
# operator does not set it; the default holds.
ENV_EGRESS_WAIT = "DOCRELAY_EGRESS_WAIT_SECONDS"
EGRESS_WAIT_SECONDS = 10.0

# Exit codes (docs/runner.md). The kernel's OOM kill shows as 137 with reason OOMKilled.
EXIT_SUCCEEDED = 0
EXIT_CODE_ERROR = 1
EXIT_CONFIGURATION_ERROR = 2
EXIT_TRANSIENT_ERROR = 3
EXIT_OUT_OF_MEMORY = 4
EXIT_EGRESS_DENIED = 5
EXIT_TIMEOUT = 124

# Error classes: the same strings as docrelay.models.run.ErrorClass.
CODE_ERROR = "CodeError"
TRANSIENT_ERROR = "TransientError"
TIMEOUT = "Timeout"
OUT_OF_MEMORY = "OutOfMemory"
CONFIGURATION_ERROR = "ConfigurationError"
INFRASTRUCTURE_ERROR = "InfrastructureError"
EGRESS_DENIED = "EgressDenied"  # the egress proxy refused a destination: permanent
RETRYABLE_CLASSES = frozenset({TRANSIENT_ERROR, TIMEOUT, OUT_OF_MEMORY, INFRASTRUCTURE_ERROR})

EXIT_CODES = {
    CODE_ERROR: EXIT_CODE_ERROR,
    CONFIGURATION_ERROR: EXIT_CONFIGURATION_ERROR,
    TRANSIENT_ERROR: EXIT_TRANSIENT_ERROR,
    OUT_OF_MEMORY: EXIT_OUT_OF_MEMORY,
    TIMEOUT: EXIT_TIMEOUT,
    EGRESS_DENIED: EXIT_EGRESS_DENIED,
}

MESSAGE_VERSION = 1
MAX_TERMINATION_BYTES = 4096  # the kubelet keeps at most 4096 bytes
MAX_MESSAGE = 1500
MAX_SUMMARY = 1024
MAX_EXCEPTION_TYPE = 256
MAX_TRACEBACK = 1000


_OUTCOME_FIELDS = (  # in the constructor's order
    "status",
    "error_class",
    "exception_type",
    "message",
    "result_summary",
    "traceback_tail",
)


class Outcome:
    """What one attempt reported: the termination message, parsed. Immutable, compared by
    value (what a frozen dataclass would be, without importing dataclasses)."""

    __slots__ = _OUTCOME_FIELDS
    status: str  # "Succeeded" or "Failed"
    error_class: str | None
    exception_type: str | None
    message: str | None
    result_summary: str | None
    traceback_tail: str | None  # the last frames, masked; not kept in the run's status

    def __init__(
        self,
        status: str,
        error_class: str | None = None,
        exception_type: str | None = None,
        message: str | None = None,
        result_summary: str | None = None,
        traceback_tail: str | None = None,
    ) -> None:
        values = (status, error_class, exception_type, message, result_summary, traceback_tail)
        for name, value in zip(_OUTCOME_FIELDS, values, strict=True):
            object.__setattr__(self, name, value)

    def _fields(self) -> tuple[str | None, ...]:
        return tuple(getattr(self, name) for name in _OUTCOME_FIELDS)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Outcome is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Outcome:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in _OUTCOME_FIELDS)
        return f"Outcome({shown})"

    def replace(self, **changes: str | None) -> Outcome:
        """A copy with some fields changed (dataclasses.replace)."""
        values = {name: getattr(self, name) for name in _OUTCOME_FIELDS}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"Outcome has no field {sorted(unknown)[0]}")
        values.update(changes)
        return Outcome(**values)

    @property
    def retryable(self) -> bool:
        return self.error_class in RETRYABLE_CLASSES

    def to_json(self) -> str:
        """At most MAX_TERMINATION_BYTES of UTF-8, whatever the message holds."""
        import json

        body: dict[str, Any] = {"v": MESSAGE_VERSION, "status": self.status}
        if self.error_class:
            body["errorClass"] = self.error_class
            body["retryable"] = self.retryable
        if self.exception_type:
            body["exceptionType"] = self.exception_type[:MAX_EXCEPTION_TYPE]
        if self.message:
            body["message"] = self.message[:MAX_MESSAGE]
        if self.result_summary:
            body["resultSummary"] = self.result_summary[:MAX_SUMMARY]
        if self.traceback_tail:
            body["tracebackTail"] = self.traceback_tail[-MAX_TRACEBACK:]
        text = json.dumps(body, separators=(",", ":"))
        while len(text.encode()) > MAX_TERMINATION_BYTES:  # non-ASCII text can be wide
            for field in ("tracebackTail", "message", "resultSummary"):
                if field in body:
                    body[field] = body[field][: len(body[field]) // 2]
            text = json.dumps(body, separators=(",", ":"))
        return text


def parse_outcome(text: str | None) -> Outcome | None:
    """The termination message, or None if there is none or it is not ours."""
    if not text or not text.strip():
        return None
    import json

    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("status") not in ("Succeeded", "Failed"):
        return None

    def text_field(name: str, limit: int) -> str | None:
        value = body.get(name)
        return value[:limit] if isinstance(value, str) and value else None

    error_class = text_field("errorClass", 64)
    if (
        error_class is not None
        and error_class not in EXIT_CODES
        and (error_class != INFRASTRUCTURE_ERROR)
    ):
        error_class = CODE_ERROR  # an unknown class is not trusted to be retryable
    if body["status"] == "Failed" and error_class is None:
        error_class = CODE_ERROR
    return Outcome(
        status=body["status"],
        error_class=error_class if body["status"] == "Failed" else None,
        exception_type=text_field("exceptionType", MAX_EXCEPTION_TYPE),
        message=text_field("message", MAX_MESSAGE),
        result_summary=text_field("resultSummary", MAX_SUMMARY),
        traceback_tail=text_field("tracebackTail", MAX_TRACEBACK),
    )


# --- classifying an exception ------------------------------------------------------------

# Exception type names (anywhere in the MRO) of HTTP clients' network failures.
_NETWORK_NAMES = frozenset(
    {
        "TimeoutError",
        "ConnectionError",
        "TransportError",  # httpx
        "NetworkError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "RemoteProtocolError",
        "ReadError",
        "WriteError",
        "Timeout",  # requests
        "URLError",  # urllib
        "IncompleteRead",
        "RemoteDisconnected",
        "ClientConnectionError",  # aiohttp
        "ProtocolError",  # urllib3
        "NewConnectionError",
        "MaxRetryError",
    }
)


def status_code_of(exc: BaseException) -> int | None:
    """An HTTP status the exception carries: `status_code`, `status`, urllib's `code`, or
    its `response.status_code` (httpx.HTTPStatusError, requests.HTTPError)."""
    candidates: list[Any] = [getattr(exc, "status_code", None), getattr(exc, "status", None)]
    if type(exc).__name__ == "HTTPError":
        candidates.append(getattr(exc, "code", None))
    response = getattr(exc, "response", None)
    if response is not None:
        candidates.append(getattr(response, "status_code", None))
        candidates.append(getattr(response, "status", None))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


# What the egress proxy puts in a refusal's status line and header (docrelay.gateway.egress).
EGRESS_DENIED_PHRASE = "Egress Denied: "
EGRESS_DENIED_HEADER = "X-Docrelay-Egress-Denied"


def _related(exc: BaseException) -> list[BaseException]:
    """The exception and those it wraps (cause, context, urllib's and urllib3's `reason`,
    exceptions in its args), breadth first, at most 16."""
    seen: list[BaseException] = []
    queue: list[Any] = [exc]
    while queue and len(seen) < 16:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        queue += [item.__cause__, item.__context__, getattr(item, "reason", None)]
        queue += [a for a in getattr(item, "args", ()) if isinstance(a, BaseException)]
    return seen


def egress_denial(exc: BaseException) -> str | None:
    """The egress proxy's reason if the exception (or one it wraps) is the proxy refusing a
    destination: a CONNECT refusal shows in the message ("Tunnel connection failed: 403
    Egress Denied: ..."), a plain HTTP one in the response's header."""
    related = _related(exc)
    for item in related:
        for holder in (item, getattr(item, "response", None)):
            headers = getattr(holder, "headers", None)
            get = getattr(headers, "get", None)
            if callable(get):
                try:
                    value = get(EGRESS_DENIED_HEADER)
                except Exception:  # a foreign headers object
                    value = None
                if isinstance(value, str) and value:
                    return value[:MAX_MESSAGE]
    for item in related:
        text = str(item)
        if EGRESS_DENIED_PHRASE in text:
            # The proxy's reasons hold no quotes: a client's quoting ends them.
            import re  # only here: the run's start stays short

            reason = re.split(r"['\"\n>]", text.split(EGRESS_DENIED_PHRASE, 1)[1])[0]
            return reason.strip().rstrip(")").strip()[:MAX_MESSAGE]
    return None


def classify(exc: BaseException) -> str:
    """The error class of an exception the code raised (docs/runner.md)."""
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    if egress_denial(exc) is not None:
        return EGRESS_DENIED
    explicit = getattr(exc, "retryable", None)
    if isinstance(explicit, bool):
        return TRANSIENT_ERROR if explicit else CODE_ERROR
    status = status_code_of(exc)
    if status is not None:
        return TRANSIENT_ERROR if status == 429 or status >= 500 else CODE_ERROR
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _NETWORK_NAMES:
        return TRANSIENT_ERROR
    return CODE_ERROR


def load_event(text: str) -> Any:
    """The event JSON (DOCRELAY_EVENT), parsed before the handler runs, by the C scanner the
    json module itself uses, without importing json (and with it re and enum: about a third of
    the runner's start). Raises ValueError as json.loads does; json.loads where the scanner is
    not there (another Python implementation)."""
    try:
        from _json import make_scanner
    except ImportError:
        import json

        return json.loads(text)

    class Context:  # what json.JSONDecoder gives the scanner, with json.loads's defaults
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = float  # NaN, Infinity, -Infinity

    text = text.strip(" \t\n\r")
    try:
        value, end = make_scanner(Context())(text, 0)  # type: ignore[arg-type]
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value
