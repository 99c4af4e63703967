"""What the agent tells the model. Pure: requests in, prompt text out.

A request carries names, never values: the secrets' variable names and the connected
accounts' names and ids (an account id is not a credential; the broker holds those). Document
values reach a prompt only when the install allows it (`allow_document_values`, off by
default). Logs handed to the fix prompt are expected masked already (the operator stores
them masked); they are cut to their last 10,000 characters.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from docrelay.agent.chat import Message
from docrelay.agent.codecheck import (
    DEFAULT_PACKAGES,
    JS_SDK_MODULE,
    ImportPolicy,
    Problem,
)
from docrelay.models.common import EnvVarName

MAX_LOG_CHARS = 10_000  # what the platform's run list keeps, and what the model sees
MAX_SCHEMA_CHARS = 60_000
MAX_DOCUMENT_CHARS = 20_000
MAX_ERROR_CHARS = 4_000

Text = Annotated[str, StringConstraints(min_length=1, max_length=65_536)]


class CatalogProp(BaseModel):
    """One configurable prop of a Pipedream action, as the catalog describes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: str = "string"
    label: str = ""
    description: str = ""
    optional: bool = False
    # Values the prop takes ("label=value"): its static options, or the remote options
    # Pipedream listed for this account (configure-prop). Not secrets: channel names, ids.
    options: tuple[str, ...] = ()


class CatalogAction(BaseModel):
    """A Pipedream action of an account's app, from Connect's catalog: the real key the code
    passes to execute_action, and (for the actions looked up in full) its props."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    name: str = ""
    description: str = ""
    version: str = ""
    props: tuple[CatalogProp, ...] = ()  # the app prop left out: the broker sets it
    detailed: bool = False  # retrieved with its props, not only listed


class AccountRef(BaseModel):
    """A ConnectedAccount the code may use: its name, app and platform account id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    app: str | None = Field(default=None, description="The app slug, e.g. xero_accounting_api.")
    account_id: str | None = Field(default=None, description="apn_...: passed to the helpers.")
    # The app's actions in Pipedream's catalog, when they were looked up (docs/agent.md).
    actions: tuple[CatalogAction, ...] = ()


class _Request(BaseModel):
    """What both prompts say about the integration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    integration: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    workspace: str
    document_type: str
    trigger: str
    document_schema: dict[str, Any] | None = Field(
        default=None, description="The document type's JSON schema from the platform API."
    )
    # Names only: the type refuses anything that is not a variable name.
    secret_names: tuple[EnvVarName, ...] = ()
    accounts: tuple[AccountRef, ...] = ()
    egress_hosts: tuple[str, ...] = ()
    # Entries of egress_hosts a dry test run reaches over HTTPS for real (docs/egress.md).
    dry_run_safe_hosts: tuple[str, ...] = ()
    python_version: str = "3.12"
    # Set for a Node.js integration (spec.runtime.nodejs): the model writes JavaScript.
    nodejs_version: str | None = None
    allowed_packages: tuple[str, ...] = tuple(sorted(DEFAULT_PACKAGES))
    allow_document_values: bool = False

    @property
    def language(self) -> str:
        return "nodejs" if self.nodejs_version else "python"

    def import_policy(self) -> ImportPolicy:
        return ImportPolicy(packages=frozenset(self.allowed_packages))


class GenerateRequest(_Request):
    """Write an integration from its instructions."""

    instructions: Text
    # Used only when allow_document_values is set; otherwise never read.
    sample_documents: tuple[dict[str, Any], ...] = ()


class FixRequest(_Request):
    """Fix the code of a revision after a failed run."""

    run: str
    revision: str
    code: Text
    error_class: str
    exception_type: str | None = None
    error_message: str = ""
    logs: str = Field(default="", description="The run's logs, masked by the operator.")
    instructions: str | None = None
    # The failed run's document, used only when allow_document_values is set.
    document: dict[str, Any] | None = None


@dataclass(frozen=True)
class Prompt:
    system: str
    messages: tuple[Message, ...]


def prompt_hash(prompt: Prompt) -> str:
    """`sha256:<hex>` of the prompt (system and turns), as a revision records it."""
    canonical = json.dumps(
        {"system": prompt.system, "messages": [[m.role, m.content] for m in prompt.messages]},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# --- the system prompt: the runtime contract ---------------------------------------------------

SDK_REFERENCE = """\
Helpers, imported from docrelay.sdk (e.g. `from docrelay.sdk import get_document, api_request`):
- get_document(identifier) -> dict: {"data": {...fields of the document type...},
  "meta": {"identifier", "fileName", "documentType", "workspace", "isConfirmed", "reviewUrl",
  ...}, "error": {"errorCode", "errorDetail"}, "warnings": [...]}. Keys are camelCase.
- get_validation_results(identifier) -> list: the document's validation results.
- get_document_portal_url(identifier) -> str: a link to the document for people.
- api_request(account_id, url, method="POST", body=None, headers=None, params=None,
  files=None, data=None) -> {"success", "data", "status_code", "headers"}: an HTTP call
  through the connected account (its credentials are added for you); raises on non-2xx.
- execute_action(account_id, tool_name, tool_params) -> dict: runs a prebuilt action of the
  account's app (Xero results come back under ["result"]["ret"]).
- upload_file(account_id, content, file_name, content_type) -> str: the uploaded file's URL."""

EVENT_REFERENCE = """\
The event (a dict) has these keys:
- document_identifier: the document that fired the run (the input).
- trigger: the document event, workspace and document_type: platform identifiers.
- event_id: the delivery's id; idempotency_key: the same on every attempt of this run, send it
  as an idempotency key to systems that accept one so a retry does not act twice.
- test_run: true for a test run; attempt: 1 for the first attempt, 2 for the first retry...
`context` carries nothing the code needs."""


def _system(python_version: str, packages: Iterable[str]) -> str:
    offered = ", ".join(sorted(packages))
    return f"""\
You write Python {python_version} integrations for a document-AI platform. An integration is \
one module that runs once per document event, in a sandbox, with no person watching.

The runtime contract:
- Define a top-level, synchronous `def lambda_handler(event, context):`. It is called once per
  event.
- Raise an exception when anything fails; never return an error dict or swallow an exception.
  Retries depend on it: network errors, timeouts, 429 and 5xx are retried, everything else is
  not.
- Credentials are environment variables: read them with os.environ["NAME"], only the names
  listed for the integration. Never print, log, return or put a credential into an exception
  message.
- Imports: the standard library and these packages, nothing else is installed:
  {offered}. No subprocess, multiprocessing, ctypes or importlib.
- Direct HTTP calls (httpx or requests) only to the hosts listed for the integration, with
  timeouts: connect 5 s, read 30 s. Reach connected apps through the helpers below.
- Network: the sandbox reaches the outside only through an egress proxy that is already
  configured (HTTPS_PROXY/HTTP_PROXY; httpx, requests and urllib use it on their own). Do not
  set proxies, disable them or open raw sockets. It allows exactly the listed hosts (a host
  without a port means 443 for https://); anything else, and private or local addresses, is
  refused with "403 Egress Denied: <host> ..." and the run fails with EgressDenied, which is
  never retried: the fix is to add the host to spec.egress.hosts, not to change the code.
  Never catch that error to continue without the call.
- What the function returns is shown in the run's status: return a short summary (a dict with
  a "summary" key), never document contents in bulk.
- print() goes to the run's logs; print what helps diagnose a failure, no document contents
  in bulk.

{EVENT_REFERENCE}

{SDK_REFERENCE}

Answer with the complete module in one ```python block (code is always replaced whole, never
patched). Before the block you may explain your reasoning in a few sentences."""


SDK_REFERENCE_JS = f"""\
Helpers, imported from {JS_SDK_MODULE} (e.g. `import {{ getDocument, apiRequest }} from
"{JS_SDK_MODULE}";`); every one returns a promise:
- getDocument(identifier) -> {{data: {{...fields of the document type...}}, meta: {{identifier,
  fileName, documentType, workspace, isConfirmed, reviewUrl, ...}}, error: {{errorCode,
  errorDetail}}, warnings: [...]}}. Keys are camelCase.
- getValidationResults(identifier) -> array: the document's validation results.
- getDocumentPortalUrl(identifier) -> string: a link to the document for people.
- apiRequest(accountId, url, {{method = "POST", body, headers, params, files, data}}) ->
  {{success, data, status_code, headers}}: an HTTP call through the connected account (its
  credentials are added for you); throws ApiRequestError on non-2xx.
- executeAction(accountId, toolName, toolParams) -> object: runs a prebuilt action of the
  account's app (Xero results come back under .result.ret).
- uploadFile(accountId, content, fileName, contentType) -> string: the uploaded file's URL."""


def _system_js(nodejs_version: str) -> str:
    return f"""\
You write JavaScript integrations for a document-AI platform, run by Node.js {nodejs_version}. \
An integration is one ES module that runs once per document event, in a sandbox, with no \
person watching.

The runtime contract:
- Export `export async function handler(event, context)`. It is called once per event; the
  run ends when its promise settles: await everything you start.
- Throw an Error when anything fails; never return an error object or swallow an error.
  Retries depend on it: network errors, timeouts, 429 and 5xx are retried (give the Error a
  `statusCode` when you throw for an HTTP answer), everything else is not.
- Credentials are environment variables: read them with process.env.NAME, only the names
  listed for the integration. Never print, log, return or put a credential into an error
  message.
- Imports: Node.js's built-in modules (as "node:..."), and {JS_SDK_MODULE}; no npm package is
  installed. No child_process, cluster, worker_threads, vm or dynamic import()/require of a
  computed name.
- Direct HTTP calls (the global fetch) only to the hosts listed for the integration, with a
  timeout (AbortSignal.timeout(30000)). Reach connected apps through the helpers below.
- Network: the sandbox reaches the outside only through an egress proxy the runtime has
  already set up for fetch and the http/https modules. Do not set proxies, agents or open raw
  sockets. It allows exactly the listed hosts (a host without a port means 443 for
  https://); anything else, and private or local addresses, is refused with "403 Egress
  Denied: <host> ..." and the run fails with EgressDenied, which is never retried: the fix is
  to add the host to spec.egress.hosts, not to change the code. Never catch that error to
  continue without the call.
- What the handler returns is shown in the run's status: return a short summary (an object
  with a "summary" string), never document contents in bulk.
- console.log goes to the run's logs; log what helps diagnose a failure, no document
  contents in bulk.

{EVENT_REFERENCE.replace("(a dict)", "(an object)")}

{SDK_REFERENCE_JS}

Answer with the complete module in one ```javascript block (code is always replaced whole,
never patched). Before the block you may explain your reasoning in a few sentences."""


def _system_for(request: _Request) -> str:
    if request.nodejs_version:
        return _system_js(request.nodejs_version)
    return _system(request.python_version, request.allowed_packages)


def _fence_tag(request: _Request) -> str:
    return "javascript" if request.nodejs_version else "python"


# --- pieces of the user prompt -----------------------------------------------------------------


def _fenced(text: str, language: str = "") -> str:
    """`text` in a fence longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


def _json(value: Any, limit: int) -> str:
    # Compact and sorted: fewer tokens, and the same input gives the same prompt hash.
    return _cut(json.dumps(value, sort_keys=True, ensure_ascii=False), limit)


def last_chars(text: str, limit: int = MAX_LOG_CHARS) -> str:
    """The end of `text`, at most `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters not shown]\n" + text[-limit:]


def _context(request: _Request) -> list[str]:
    parts = [
        f"Workspace: {request.workspace}. Document type: {request.document_type}. "
        f"Fires on: {request.trigger}."
    ]
    if request.document_schema is not None:
        parts.append(
            '## The document type\'s JSON schema (the shape of get_document(...)["data"])\n'
            + _fenced(_json(request.document_schema, MAX_SCHEMA_CHARS), "json")
        )
    else:
        parts.append("## The document type's JSON schema\nNot available: read fields defensively.")
    if request.secret_names:
        names = "\n".join(f"- {name}" for name in request.secret_names)
        how = "process.env.NAME" if request.nodejs_version else 'os.environ["NAME"]'
        parts.append(
            f"## Secrets (environment variables; read with {how}, values are "
            f"never shown to you)\n{names}"
        )
    else:
        parts.append("## Secrets\nNone: the code reads no environment variables.")
    if request.accounts:
        lines = []
        for account in request.accounts:
            app = f" ({account.app})" if account.app else ""
            ident = f": account_id {account.account_id!r}" if account.account_id else ""
            lines.append(f"- {account.name}{app}{ident}")
        parts.append(
            "## Connected accounts (pass the account_id to api_request, execute_action and "
            "upload_file)\n" + "\n".join(lines)
        )
        parts += [_catalog(request, account) for account in request.accounts if account.actions]
    else:
        parts.append("## Connected accounts\nNone.")
    if request.egress_hosts:
        safe = set(request.dry_run_safe_hosts)
        hosts = "\n".join(
            f"- {host}"
            + (" (marked safe: the agent's dry test runs call it for real)" if host in safe else "")
            for host in request.egress_hosts
        )
        parts.append(f"## Hosts the code may call directly\n{hosts}")
    else:
        parts.append("## Hosts the code may call directly\nNone: use the helpers only.")
    return parts


MAX_CATALOG_CHARS = 12_000


def _catalog(request: _Request, account: AccountRef) -> str:
    """The account's actions from Pipedream's catalog: the keys execute_action accepts."""
    helper = "executeAction" if request.nodejs_version else "execute_action"
    lines = []
    for action in account.actions:
        title = f"{action.name}: {action.description}" if action.description else action.name
        lines.append(f"- `{action.key}`" + (f" ({title})" if title else ""))
        for prop in action.props:
            what = prop.type + (", optional" if prop.optional else "")
            about = f": {prop.description}" if prop.description else ""
            values = f" Values for this account: {', '.join(prop.options)}." if prop.options else ""
            lines.append(f"  - {prop.name} ({what}){about}{values}")
    listing = _cut("\n".join(lines), MAX_CATALOG_CHARS)
    return (
        f"## Pipedream actions of {account.app} for the account {account.name} (Connect's "
        f"catalog)\nCall {helper}(account_id, <key>, <props>) with one of these keys exactly "
        "(never another: an action key that is not listed does not exist), and its props by "
        f"name; the {account.app} prop itself is set for you. If you use an action, say in your "
        "explanation which key and which props you chose.\n" + listing
    )


def _documents(request: _Request, documents: Sequence[dict[str, Any]], what: str) -> str:
    if not request.allow_document_values:
        return (
            f"## {what}\nDocument values are not shared with you (this install keeps them "
            "private): rely on the schema."
        )
    if not documents:
        return f"## {what}\nNone available: rely on the schema."
    shown = "\n".join(_fenced(_json(d, MAX_DOCUMENT_CHARS), "json") for d in documents)
    return f"## {what} (as get_document returns them)\n{shown}"


# --- the prompts -------------------------------------------------------------------------------


def build_generate_prompt(request: GenerateRequest) -> Prompt:
    """The first prompt for writing `request.integration` from its instructions."""
    parts = [
        f"# Write the integration {request.integration!r}",
        "## What it should do (the user's words)\n" + _fenced(request.instructions, "text"),
        *_context(request),
        _documents(request, request.sample_documents, "Sample documents"),
        "Write the module now.",
    ]
    text = "\n\n".join(parts)
    return Prompt(_system_for(request), (Message("user", text),))


def build_fix_prompt(request: FixRequest) -> Prompt:
    """The first prompt for fixing `request.revision` after `request.run` failed."""
    error = f"Class: {request.error_class}"
    if request.exception_type:
        error += f"\nException: {request.exception_type}"
    if request.error_message:
        error += "\nMessage:\n" + _fenced(_cut(request.error_message, MAX_ERROR_CHARS), "text")
    logs = request.logs.strip()
    log_part = (
        "## The run's logs (secret values masked as ***; the last "
        f"{MAX_LOG_CHARS:,} characters)\n" + _fenced(last_chars(logs), "text")
        if logs
        else "## The run's logs\nEmpty."
    )
    parts = [
        f"# Fix the integration {request.integration!r}: run {request.run} failed",
        f"## The code of revision {request.revision}\n"
        + _fenced(request.code, _fence_tag(request)),
        "## The error\n" + error,
        log_part,
    ]
    if request.instructions:
        parts.append(
            "## What it should do (the user's words)\n" + _fenced(request.instructions, "text")
        )
    parts += _context(request)
    document = [request.document] if request.document is not None else []
    parts.append(_documents(request, document, "The failed run's document"))
    parts.append(
        "Diagnose the failure from the error and the logs, then answer with the whole corrected "
        "module. Change what causes the failure and keep what works."
    )
    text = "\n\n".join(parts)
    return Prompt(_system_for(request), (Message("user", text),))


def problems_message(problems: Sequence[Problem], language: str = "python") -> str:
    """The follow-up turn when the code was refused: each problem, then what to send."""
    lines = "\n".join(f"- {p.describe()}" for p in problems)
    tag = "javascript" if language == "nodejs" else "python"
    return (
        f"Your code was not accepted:\n{lines}\n\n"
        f"Answer with the whole corrected module in one ```{tag} block."
    )


CHAT_RULES = """

You are talking with the user in a conversation about this integration. If the request leaves
something essential ambiguous (which field holds a value, which account or endpoint to use),
answer with one short question and no code block at all. Otherwise answer with the whole module
in one fenced block and, outside it, a few sentences saying what the code does and which
choices you made. When the user gives guidance, revise the last code accordingly."""


def build_chat_prompt(
    request: GenerateRequest | FixRequest, turns: Sequence[tuple[str, str]]
) -> Prompt:
    """The first prompt of a generation (or fix) followed by the conversation so far, as
    alternating user and assistant turns (consecutive turns of one role are joined)."""
    base = (
        build_fix_prompt(request)
        if isinstance(request, FixRequest)
        else (build_generate_prompt(request))
    )
    messages = list(base.messages)
    for role, text in turns:
        if messages and messages[-1].role == role:
            messages[-1] = Message(messages[-1].role, messages[-1].content + "\n\n" + text)
        else:
            messages.append(Message(role, text))  # type: ignore[arg-type]
    if messages[-1].role != "user":
        messages.append(Message("user", "Go on."))
    return Prompt(base.system + CHAT_RULES, tuple(messages))
