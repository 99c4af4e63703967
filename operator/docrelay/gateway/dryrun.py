"""Dry test runs and the broker's record of a run's actions, pure (docs/runner.md "Dry runs").

A dry run (`spec.dryRun` of a test run; the agent's automatic test runs are dry) sends nothing
that could change a downstream system:

- the broker answers `execute_action`, `upload_file` and an `api_request` with a writing method
  (POST, PUT, PATCH, DELETE) with a simulated reply marked `dry_run: true`, without calling
  Pipedream or storing the file; reads (`api_request` GET, HEAD, OPTIONS; documents) are served;
- the egress proxy relays plain-HTTP reads, answers a plain-HTTP write itself with a simulated
  reply (header `X-Docrelay-Dry-Run: simulated`), and stops at an HTTPS tunnel (CONNECT): it
  cannot see whether what goes through it reads or writes, so it opens none and refuses with
  `403 Egress Denied: dry run: ...`; the run ends `EgressDenied` and its verdict is
  "needs a live test". Only a host the user marked safe (`spec.egress.dryRunSafeHosts`) is
  tunnelled to for real, recorded as `dry run: sent live (marked safe)`.

Every broker action of a run, sent or simulated, is recorded (`<job>-broker`, as the proxy
records connections in `<job>-egress`) without bodies, values or query strings. What the code
names freely (a request's path, a file name, an action key, prop names) is kept with the run's
broker token masked; the operator masks the run's secret values in it when it collects the
attempt, and a gateway writing after that leaves it out (`mask_record_part`, as for egress).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

from docrelay.gateway.records import BoundedRecord, merge_parts

WRITING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DRY_RUN_HEADER = "X-Docrelay-Dry-Run"
NOT_SENT = "dry run: simulated, not sent"
SIMULATED_UPLOAD_BASE = "https://dry-run.docrelay.invalid/not-stored/"
BROKER_RECORD_SUFFIX = "-broker"
MAX_ACTION_ENTRIES = 200
MAX_PROPS = 50
MAX_PATH_CHARS = 200


def writes(method: str) -> bool:
    """A method that may change what it is sent to (anything but a read)."""
    return method.upper() not in READING_METHODS


def simulated_request(method: str, url: str) -> dict[str, Any]:
    """api_request's answer in a dry run: the SDK's success shape, marked."""
    return {
        "success": True,
        "dry_run": True,
        "status_code": 200,
        "headers": {DRY_RUN_HEADER.lower(): "simulated"},
        "data": {"dryRun": True, "simulated": f"{method.upper()} {_target(url)}: {NOT_SENT}"},
    }


def simulated_action(tool: str) -> dict[str, Any]:
    """execute_action's answer in a dry run: `result.ret` says it was simulated."""
    return {
        "success": True,
        "dry_run": True,
        "result": {
            "ret": {"dryRun": True, "simulated": f"action {tool}: {NOT_SENT}"},
            "exports": {"$summary": f"dry run: the action {tool} was not run"},
            "os": [],
        },
    }


def simulated_upload(file_name: str) -> dict[str, Any]:
    """upload_file's answer in a dry run: a URL under `.invalid` (it never resolves)."""
    return {"url": SIMULATED_UPLOAD_BASE + quote(file_name, safe=""), "dry_run": True}


def simulated_http_response(method: str, host: str, port: int) -> bytes:
    """The egress proxy's own answer to a plain-HTTP write in a dry run."""
    body = json.dumps(
        {"dryRun": True, "simulated": f"{method} {host}:{port}: {NOT_SENT}"},
        separators=(",", ":"),
    ).encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{DRY_RUN_HEADER}: simulated\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


SENT_LIVE = "dry run: sent live (marked safe)"
"""The record's reason for a dry run's HTTPS tunnel to a host in spec.egress.dryRunSafeHosts."""


def tunnel_stopped_reason(host: str, port: int) -> str:
    """Why a dry run's HTTPS tunnel was not opened (no quote characters: a status line)."""
    return (
        f"dry run: {host}:{port} was not contacted; a dry test run opens no HTTPS connection, "
        "whose requests the proxy cannot see; this needs a live test"
    )


def is_dry_stop(reason: str) -> bool:
    return reason.startswith("dry run: ") and reason.endswith("this needs a live test")


def _target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}{parts.path[:MAX_PATH_CHARS] or '/'}"


# --- the record of a run's broker actions -----------------------------------------------------


@dataclass(frozen=True)
class BrokerAction:
    """One thing a run asked the broker to do with a connected account. Names only: no body,
    no parameter values, no query string (tokens live there)."""

    at: float
    action: str  # api_request, execute_action, upload_file
    account: str
    outcome: str  # sent, simulated, refused:<status>, unavailable
    dry_run: bool
    method: str | None = None
    host: str | None = None
    path: str | None = None
    status: int | None = None  # the target's (api_request), or ours for a refusal
    tool: str | None = None
    props: tuple[str, ...] = ()
    file_name: str | None = None

    @classmethod
    def request(cls, at: float, account: str, method: str, url: str, dry_run: bool) -> BrokerAction:
        parts = urlsplit(url)
        return cls(
            at, "api_request", account, "", dry_run,
            method=method.upper(), host=parts.hostname, path=parts.path[:MAX_PATH_CHARS] or "/",
        )  # fmt: skip

    def masked(self, mask: Callable[[str], str]) -> BrokerAction:
        """The entry with what the code named freely masked (the gateway's: the run's token)."""
        return replace(
            self,
            account=mask(self.account),
            host=mask(self.host) if self.host is not None else None,
            path=mask(self.path) if self.path is not None else None,
            tool=mask(self.tool) if self.tool is not None else None,
            props=tuple(mask(p) for p in self.props),
            file_name=mask(self.file_name) if self.file_name is not None else None,
        )

    def to_json(self, paths: bool = True) -> dict[str, Any]:
        """`paths=False`: without what the code named freely (written after the operator
        collected the record, when the gateway cannot mask the run's values)."""
        body: dict[str, Any] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "action": self.action,
            "outcome": self.outcome,
            "dryRun": self.dry_run,
        }
        optional: dict[str, Any] = {
            "method": self.method,
            "status": self.status,
        }
        if paths:  # the account's and the request's host names are the code's text too
            optional.update(
                account=self.account,
                host=self.host,
                path=self.path,
                tool=self.tool,
                props=list(self.props[:MAX_PROPS]) or None,
                fileName=self.file_name,
            )
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


ACTION_RECORD_COUNTS = ("actions", "simulated")


@dataclass
class ActionRecord(BoundedRecord[BrokerAction]):
    """A run attempt's broker actions, bounded: counts of all, the last `limit` entries."""

    limit: int = MAX_ACTION_ENTRIES
    actions: int = 0
    simulated: int = 0

    def count(self, entry: BrokerAction) -> None:
        self.actions += 1
        self.simulated += entry.outcome == "simulated"

    def counts(self) -> dict[str, int]:
        return {"actions": self.actions, "simulated": self.simulated}


def merge_actions(parts: Iterable[Mapping[str, Any]], limit: int = MAX_ACTION_ENTRIES) -> dict:
    """One broker record from the parts several gateway replicas wrote: counts summed,
    entries merged by time, the last `limit` kept."""
    return merge_parts(parts, ACTION_RECORD_COUNTS, limit)


def broker_record_name(job: str) -> str:
    """A run attempt's broker record sits next to its egress record: `<job>-broker`."""
    return f"{job}{BROKER_RECORD_SUFFIX}"
