"""The console's pages: API objects in, HTML out. Pure: no I/O.

Every value from the cluster goes through `esc` (names, logs and messages may hold `<script>`;
they render as text). No inline script and no inline style: the Content-Security-Policy
allows only the package's own files.
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from docrelay.actions.runs import REPLAYABLE, broker_target

FINISHED = ("Succeeded", "Failed", "TimedOut", "DeadLettered", "Cancelled")
FAILED = ("Failed", "TimedOut", "DeadLettered")
PHASES = ("Queued", "Pending", "Running", *FINISHED)


CURRENT = ' aria-current="page"'


def _names(values: Any) -> str:
    return esc(", ".join(values or []) or "none")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def q(value: Any) -> str:
    """A path segment."""
    return quote(str(value), safe="")


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def layout(title: str, body: str, *, namespace: str, user: str = "", active: str = "") -> str:
    nav = "".join(
        f'<li><a href="{href}"{CURRENT if key == active else ""}>{label}</a></li>'
        for key, href, label in (
            ("integrations", "/", "Integrations"),
            ("runs", "/runs", "Runs"),
        )
    )
    who = f'<span class="who">{esc(user)} in {esc(namespace)}</span>' if user else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · docrelay</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script type="module" src="/static/console.js"></script>'
        "</head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><nav aria-label="Main"><span class="brand">docrelay</span><ul>{nav}</ul>'
        f"</nav>{who}</header>"
        f'<main id="main" tabindex="-1"><h1>{esc(title)}</h1>{body}</main>'
        "</body></html>\n"
    )


def message_page(title: str, message: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · docrelay</title>"
        '<link rel="stylesheet" href="/static/console.css"></head><body>'
        f'<main id="main"><h1>{esc(title)}</h1><p role="alert">{esc(message)}</p></main>'
        "</body></html>\n"
    )


def login_page(namespace: str, login_token: str) -> str:
    body = (
        '<form class="stack" method="post" action="/login">'
        f'<input type="hidden" name="login" value="{esc(login_token)}">'
        f"<p>Sign in to namespace {esc(namespace)} with a bearer token the Kubernetes API "
        "accepts (a ServiceAccount token, or an OIDC ID token). Every page and action uses it: "
        "what you may see and do is what RBAC grants that token.</p>"
        '<label for="token">Token</label>'
        '<input id="token" name="token" type="password" required autocomplete="off">'
        '<button type="submit">Sign in</button></form>'
    )
    return layout("Sign in", body, namespace=namespace)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def duration(status: dict[str, Any], now: datetime) -> str:
    start = _time(status.get("startTime"))
    if start is None:
        return ""
    end = _time(status.get("completionTime")) or now
    seconds = int((end - start).total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def integration_state(obj: dict[str, Any]) -> str:
    """Suspended (the user's switch), Paused (the operator's), else Ready or its reason."""
    if (obj.get("spec") or {}).get("suspend"):
        return "Suspended"
    paused = _condition(obj, "Paused")
    if paused.get("status") == "True":
        return "Paused"
    ready = _condition(obj, "Ready")
    if ready.get("status") == "True":
        return "Ready"
    return str(ready.get("reason") or "Unknown")


def success_rate(status: dict[str, Any]) -> tuple[int, int]:
    """(succeeded, finished) of the non-test runs the operator counted."""
    counts = status.get("runCounts") or {}
    finished = sum(int(v or 0) for v in counts.values())
    return int(counts.get("succeeded") or 0), finished


def rate_bar(succeeded: int, finished: int) -> str:
    """A small chart: the share of successes as a bar, with its number as text."""
    if not finished:
        return '<span class="muted">no runs yet</span>'
    percent = round(100 * succeeded / finished)
    width = max(0, min(100, percent))
    return (
        f'<span class="rate"><svg class="bar" viewBox="0 0 100 8" width="80" height="8" '
        f'aria-hidden="true"><rect width="100" height="8" class="bar-bg"/>'
        f'<rect width="{width}" height="8" class="bar-ok"/></svg> '
        f"{percent}% of {finished}</span>"
    )


def _badge(text: str) -> str:
    cls = {
        "Ready": "ok",
        "Succeeded": "ok",
        "Active": "ok",
        "Running": "info",
        "Pending": "info",
        "Queued": "info",
        "Paused": "warn",
        "Suspended": "warn",
        "Superseded": "muted",
    }.get(text, "bad" if text in FAILED or text else "muted")
    return f'<span class="badge {cls}">{esc(text)}</span>'


def _table(caption: str, headers: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    return (
        f'<div class="scroll"><table><caption>{esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def integrations_page(integrations: list[dict[str, Any]]) -> str:
    rows = []
    for obj in sorted(integrations, key=lambda o: o["metadata"]["name"]):
        name, spec = obj["metadata"]["name"], obj.get("spec") or {}
        status = obj.get("status") or {}
        last = status.get("lastRun") or {}
        last_cell = (
            f'<a href="/runs/{q(last["name"])}">{_badge(str(last.get("phase") or ""))}</a> '
            f'<span class="muted">{esc(last.get("completionTime"))}</span>'
            if last.get("name")
            else '<span class="muted">none</span>'
        )
        rows.append(
            "<tr>"
            f'<th scope="row"><a href="/integrations/{q(name)}">{esc(name)}</a></th>'
            f"<td>{esc(spec.get('workspace'))} / {esc(spec.get('documentType'))}</td>"
            f"<td>{esc(spec.get('trigger'))}</td>"
            f"<td>{_badge(integration_state(obj))}</td>"
            f"<td><code>{esc(status.get('deployedRevision') or '')}</code></td>"
            f"<td>{last_cell}</td>"
            f"<td>{rate_bar(*success_rate(status))}</td>"
            "</tr>"
        )
    return _table(
        "Integrations in this namespace",
        ("Name", "Scope", "Trigger", "State", "Deployed revision", "Last run", "Success rate"),
        rows,
        "No integrations in this namespace.",
    )


def csrf_input(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(csrf)}">'


def revision_rows(
    revisions: list[dict[str, Any]], deployed: str | None, integration: str, csrf: str
) -> list[str]:
    rows = []
    for rev in reversed(revisions):  # newest first
        name = rev["metadata"]["name"]
        status = rev.get("status") or {}
        validation = status.get("validation") or {}
        tested = _condition(rev, "Tested").get("status") or ""
        is_deployed = name == deployed
        action = (
            '<span class="badge ok">deployed</span>'
            if is_deployed
            else (
                f'<form method="post" action="/integrations/{q(integration)}/deploy">'
                f'{csrf_input(csrf)}<input type="hidden" name="revision" value="{esc(name)}">'
                f'<button type="submit" aria-label="Deploy revision {esc(name)}">Deploy'
                "</button></form>"
            )
        )
        diff_link = (
            ""
            if is_deployed or not deployed
            else f' <a href="/integrations/{q(integration)}?diff={q(name)}#code">diff</a>'
        )
        rows.append(
            "<tr>"
            f'<th scope="row"><code>{esc(name)}</code>{diff_link}</th>'
            f"<td>{esc(((rev.get('spec') or {}).get('source') or {}).get('type'))}</td>"
            f"<td>{esc(validation.get('valid'))}</td>"
            f"<td>{esc(tested)}</td>"
            f"<td>{esc(rev['metadata'].get('creationTimestamp'))}</td>"
            f"<td>{action}</td>"
            "</tr>"
        )
    return rows


def diff_html(old_name: str, old: str, new_name: str, new: str) -> str:
    lines = []
    for line in difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_name, tofile=new_name, lineterm=""
    ):
        cls = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else "del"
            if line.startswith("-") and not line.startswith("---")
            else "ctx"
        )
        lines.append(f'<span class="{cls}">{esc(line)}</span>')
    if not lines:
        return '<p class="muted">The two revisions have the same code.</p>'
    return f'<pre class="diff" aria-label="Changes">{chr(10).join(lines)}</pre>'


def secret_rows(history: list[list[str]]) -> list[str]:
    """From `docrelay secret history`'s rows: integration, key, name, state, fingerprint,
    sealed, created. Never a value, never ciphertext."""
    return [
        "<tr>"
        f'<th scope="row">{esc(key)}</th><td><code>{esc(name)}</code></td>'
        f"<td>{_badge(state)}</td><td><code>{esc(fingerprint)}</code></td>"
        f"<td>{esc(sealed)}</td><td>{esc(created)}</td></tr>"
        for _integration, key, name, state, fingerprint, sealed, created in history
    ]


def add_secret_form(integration: str, namespace: str, csrf: str, sealing: dict[str, str] | None):
    if sealing is None:
        return (
            '<p class="muted">Add secret is unavailable: the sealing certificate '
            "(ConfigMap docrelay-sealing-cert) cannot be read here.</p>"
        )
    return (
        '<form id="add-secret" class="stack" method="post" '
        f'action="/integrations/{q(integration)}/secrets" '
        f'data-namespace="{esc(namespace)}" data-integration="{esc(integration)}" '
        f'data-spki="{esc(sealing["spki"])}" data-key-id="{esc(sealing["keyId"])}">'
        f"{csrf_input(csrf)}"
        "<h3>Add secret</h3>"
        '<p class="muted">The value is sealed in this browser with the install\'s public key; '
        "only ciphertext leaves it. A secret with an existing key supersedes the old one.</p>"
        '<label for="secret-key">Key (environment variable name)</label>'
        '<input id="secret-key" name="key" required pattern="[A-Z_][A-Z0-9_]*" '
        'autocomplete="off" spellcheck="false">'
        '<label for="secret-value">Value</label>'
        '<input id="secret-value" type="password" required minlength="4" autocomplete="off">'
        '<input type="hidden" name="encryptedValue" value="">'
        '<button type="submit">Seal and add</button>'
        '<p class="status" role="status" aria-live="polite"></p>'
        "</form>"
    )


def integration_page(
    obj: dict[str, Any],
    *,
    namespace: str,
    revisions: list[dict[str, Any]],
    secrets: list[list[str]],
    runs: list[dict[str, Any]],
    code: str | None,
    diff: str,
    csrf: str,
    sealing: dict[str, str] | None,
    now: datetime,
    accounts: str = "",
) -> str:
    name, spec, status = obj["metadata"]["name"], obj.get("spec") or {}, obj.get("status") or {}
    deployed = status.get("deployedRevision")
    history = status.get("history") or []
    last = history[-1] if history else {}
    can_revert = bool(last.get("previousRevision")) and last.get("revision") == deployed
    revert = (
        f'<form method="post" action="/integrations/{q(name)}/revert">{csrf_input(csrf)}'
        f'<button type="submit">Revert to {esc(last.get("previousRevision"))}</button></form>'
        if can_revert
        else ""
    )
    overview = (
        '<section aria-labelledby="overview"><h2 id="overview">Overview</h2><dl class="facts">'
        f"<dt>State</dt><dd>{_badge(integration_state(obj))} "
        f"{esc(_condition(obj, 'Ready').get('message'))}</dd>"
        f"<dt>Scope</dt><dd>{esc(spec.get('workspace'))} / {esc(spec.get('documentType'))}</dd>"
        f"<dt>Trigger</dt><dd>{esc(spec.get('trigger'))}</dd>"
        f"<dt>Success rate</dt><dd>{rate_bar(*success_rate(status))}</dd>"
        f"<dt>Active runs</dt><dd>{esc(status.get('activeRuns', 0))}</dd>"
        f"<dt>Consecutive failures</dt><dd>{esc(status.get('consecutiveFailures', 0))}</dd>"
        f"</dl>{figures_html(run_figures(runs, now))}</section>"
    )
    code_section = (
        '<section aria-labelledby="code"><h2 id="code">Code</h2>'
        f"<p>Deployed revision: <code>{esc(deployed or 'none')}</code></p>{revert}"
        + (f'<pre class="code" aria-label="Deployed code">{esc(code)}</pre>' if code else "")
        + diff
        + test_run_form(name, [r["metadata"]["name"] for r in revisions], csrf)
        + _table(
            "Revisions, newest first",
            ("Revision", "Source", "Valid", "Tested", "Created", "Deploy"),
            revision_rows(revisions, deployed, name, csrf),
            "No revisions yet.",
        )
        + "</section>"
    )
    retry = spec.get("retry") or {}
    egress = spec.get("egress") or {}
    settings = (
        '<section aria-labelledby="settings"><h2 id="settings">Settings</h2><dl class="facts">'
        f"<dt>Suspended</dt><dd>{esc(bool(spec.get('suspend')))}</dd>"
        f"<dt>Egress hosts</dt><dd>{esc(', '.join(egress.get('hosts') or []) or 'none')}</dd>"
        f"<dt>Egress CIDRs</dt><dd>{esc(', '.join(egress.get('cidrs') or []) or 'none')}</dd>"
        f"<dt>Retry</dt><dd>{esc(retry.get('maxAttempts', 3))} attempts, backoff "
        f"{esc(retry.get('backoffBaseSeconds', 30))}s to "
        f"{esc(retry.get('backoffCapSeconds', 3600))}s</dd>"
        f"<dt>Concurrency</dt><dd>{esc(spec.get('maxConcurrency', 5))}</dd>"
        f"<dt>Secrets the code reads</dt><dd>{_names(spec.get('secrets'))}</dd>"
        "</dl>"
        + accounts
        + '<h3 id="secrets">Secrets</h3>'
        + _table(
            "Secrets: names, fingerprints, dates (never values)",
            ("Key", "Name", "State", "Fingerprint", "Sealed", "Created"),
            secret_rows(secrets),
            "No secrets.",
        )
        + add_secret_form(name, namespace, csrf, sealing)
        + "</section>"
    )
    recent = sorted(runs, key=lambda r: r["metadata"].get("creationTimestamp", ""), reverse=True)
    runs_section = (
        '<section aria-labelledby="runs"><h2 id="runs">Runs</h2>'
        f'<p><a href="/runs?{urlencode({"integration": name})}">All runs of {esc(name)}</a></p>'
        + runs_table(recent[:20], now)
        + "</section>"
    )
    return overview + code_section + settings + runs_section


def runs_table(runs: list[dict[str, Any]], now: datetime) -> str:
    rows = []
    for item in runs:
        name, spec, status = (
            item["metadata"]["name"],
            item.get("spec") or {},
            item.get("status") or {},
        )
        phase = str(status.get("phase") or "Queued")
        error = " ".join(str(status.get("errorMessage") or "").split())[:120]
        rows.append(
            "<tr>"
            f'<th scope="row"><a href="/runs/{q(name)}">{esc(name)}</a></th>'
            f'<td><a href="/integrations/{q(spec.get("integration", ""))}">'
            f"{esc(spec.get('integration'))}</a></td>"
            f"<td>{esc(spec.get('documentIdentifier'))}</td>"
            f"<td>{_badge(phase)}{' (test)' if spec.get('test') else ''}</td>"
            f"<td>{esc(status.get('attempt', 0))}</td>"
            f"<td>{esc(duration(status, now))}</td>"
            f"<td>{esc(item['metadata'].get('creationTimestamp'))}</td>"
            f"<td>{esc(status.get('errorClass'))}{': ' if error else ''}{esc(error)}</td>"
            "</tr>"
        )
    return _table(
        "Runs, newest first",
        ("Run", "Integration", "Document", "Phase", "Attempt", "Duration", "Created", "Error"),
        rows,
        "No runs match.",
    )


def filter_runs(
    runs: list[dict[str, Any]],
    *,
    phase: str = "",
    integration: str = "",
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    chosen = []
    for item in runs:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        if phase and str(status.get("phase") or "Queued") != phase:
            continue
        if integration and spec.get("integration") != integration:
            continue
        created = _time(item["metadata"].get("creationTimestamp"))
        if since is not None and (created is None or created < since):
            continue
        chosen.append(item)
    return sorted(chosen, key=lambda r: r["metadata"].get("creationTimestamp", ""), reverse=True)


def runs_page(
    runs_html: str, *, phase: str, integration: str, since: str, integrations: list[str]
) -> str:
    phase_options = "".join(
        f'<option value="{p}"{" selected" if p == phase else ""}>{p or "any"}</option>'
        for p in ("", *PHASES)
    )
    integration_options = "".join(
        f'<option value="{esc(n)}"{" selected" if n == integration else ""}>{esc(n or "any")}'
        "</option>"
        for n in ("", *integrations)
    )
    since_options = "".join(
        f'<option value="{v}"{" selected" if v == since else ""}>{label}</option>'
        for v, label in (
            ("", "any time"),
            ("1h", "last hour"),
            ("1d", "last day"),
            ("7d", "last week"),
        )
    )
    query = urlencode(
        {k: v for k, v in (("phase", phase), ("integration", integration), ("since", since)) if v}
    )
    return (
        '<form class="filters" method="get" action="/runs">'
        '<label for="f-phase">Phase</label>'
        f'<select id="f-phase" name="phase">{phase_options}</select>'
        f'<label for="f-integration">Integration</label>'
        f'<select id="f-integration" name="integration">{integration_options}</select>'
        '<label for="f-since">Created</label>'
        f'<select id="f-since" name="since">{since_options}</select>'
        '<button type="submit">Filter</button></form>'
        f'<div id="live" data-events="/events/runs" data-fragment="/runs/fragment?{esc(query)}" '
        f'aria-live="polite">{runs_html}</div>'
    )


def egress_html(record: dict[str, Any] | None) -> str:
    if record is None:
        return '<p class="muted">No connection through the egress proxy.</p>'
    rows = [
        "<tr>"
        f"<td>{esc(e.get('at'))}</td><td>{'yes' if e.get('allowed') else 'no'}</td>"
        f"<td>{esc(e.get('status'))}</td><td>{esc(e.get('method'))}</td>"
        f'<th scope="row">{esc(e.get("host"))}:{esc(e.get("port"))}</th>'
        f"<td>{esc(e.get('bytesOut'))}</td><td>{esc(e.get('bytesIn'))}</td>"
        f"<td>{esc(e.get('reason') or e.get('path'))}</td></tr>"
        for e in record.get("entries") or []
    ]
    summary = (
        f"<p>{esc(record.get('connections'))} connection(s), {esc(record.get('denied'))} denied, "
        f"{esc(record.get('bytesOut'))} bytes out, {esc(record.get('bytesIn'))} bytes in"
        + (f"; the {esc(record['dropped'])} oldest not listed" if record.get("dropped") else "")
        + "</p>"
    )
    return summary + _table(
        "Connections, oldest first",
        (
            "Time",
            "Allowed",
            "Status",
            "Method",
            "Destination",
            "Bytes out",
            "Bytes in",
            "Path or reason",
        ),
        rows,
        "No connections listed.",
    )


def broker_html(record: dict[str, Any] | None) -> str:
    """The attempt's account actions through the broker (`docrelay logs --broker`)."""
    if record is None:
        return '<p class="muted">No account action through the broker.</p>'
    rows = [
        "<tr>"
        f"<td>{esc(e.get('at'))}</td><td>{esc(e.get('action'))}</td>"
        f'<th scope="row">{esc(e.get("account"))}</th><td>{esc(e.get("outcome"))}</td>'
        f"<td>{esc(e.get('status'))}</td><td>{esc(broker_target(e))}</td></tr>"
        for e in record.get("entries") or []
    ]
    summary = (
        f"<p>{esc(record.get('actions'))} action(s), {esc(record.get('simulated'))} simulated "
        "(dry run)"
        + (f"; the {esc(record['dropped'])} oldest not listed" if record.get("dropped") else "")
        + "</p>"
    )
    return summary + _table(
        "Account actions, oldest first",
        ("Time", "Action", "Account", "Outcome", "Status", "Target"),
        rows,
        "No actions listed.",
    )


def run_page(
    run: dict[str, Any],
    *,
    log: str | None,
    live: bool,
    egress: dict[str, Any] | None,
    broker: dict[str, Any] | None,
    csrf: str,
    now: datetime,
) -> str:
    name, spec, status = run["metadata"]["name"], run.get("spec") or {}, run.get("status") or {}
    phase = str(status.get("phase") or "Queued")
    reached = PHASES.index(phase if phase in PHASES else "Queued")
    timeline = (
        "".join(
            f'<li class="{"done" if i <= reached else ""}">{esc(p)}</li>'
            for i, p in enumerate(("Queued", "Pending", "Running"))
        )
        + f"<li>{_badge(phase) if phase in FINISHED else 'finished'}</li>"
    )
    attempts = "".join(
        f"<li>attempt {esc(a.get('attempt'))}: {esc(a.get('phase') or a.get('outcome'))} "
        f"{esc(a.get('errorClass'))} {esc(a.get('startTime'))}</li>"
        for a in status.get("attempts") or []
        if isinstance(a, dict)
    )
    error = (
        f'<section aria-labelledby="error"><h2 id="error">Error</h2>'
        f"<p><strong>{esc(status.get('errorClass'))}</strong></p>"
        f'<pre class="log">{esc(status.get("errorMessage"))}</pre></section>'
        if status.get("errorClass")
        else ""
    )
    replay = (
        f'<form method="post" action="/runs/{q(name)}/replay">{csrf_input(csrf)}'
        f'<button type="submit">Replay this run</button></form>'
        if phase in REPLAYABLE and not spec.get("test")
        else ""
    )
    log_label = "Live log (from the pod)" if live else "Log (stored, masked)"
    return (
        '<section aria-labelledby="phases"><h2 id="phases">Phases</h2>'
        f'<ol class="timeline" data-phase="{esc(phase)}">{timeline}</ol>'
        '<dl class="facts">'
        f'<dt>Integration</dt><dd><a href="/integrations/{q(spec.get("integration", ""))}">'
        f"{esc(spec.get('integration'))}</a></dd>"
        f"<dt>Document</dt><dd>{esc(spec.get('documentIdentifier'))}</dd>"
        f"<dt>Trigger</dt><dd>{esc(spec.get('trigger'))}</dd>"
        f"<dt>Revision</dt><dd><code>{esc(status.get('revision') or spec.get('revision'))}"
        "</code></dd>"
        f"<dt>Attempt</dt><dd>{esc(status.get('attempt', 0))}</dd>"
        f"<dt>Duration</dt><dd>{esc(duration(status, now))}</dd>"
        f"<dt>Replay of</dt><dd>{esc(spec.get('replayOf') or '')}</dd>"
        "</dl>"
        + (f"<ol>{attempts}</ol>" if attempts else "")
        + replay
        + fix_in_chat_form(run, csrf)
        + "</section>"
        + error
        + f'<section aria-labelledby="log"><h2 id="log">{esc(log_label)}</h2>'
        + (f'<pre class="log">{esc(log)}</pre>' if log else '<p class="muted">No log yet.</p>')
        + "</section>"
        + '<section aria-labelledby="egress"><h2 id="egress">Outbound connections</h2>'
        + egress_html(egress)
        + "</section>"
        + '<section aria-labelledby="broker"><h2 id="broker">Account actions</h2>'
        + broker_html(broker)
        + "</section>"
        + (
            f'<div id="live" data-events="/events/runs/{q(name)}" data-reload="1"></div>'
            if phase not in FINISHED
            else ""
        )
    )


# --- conversations with the agent (IntegrationConversation, docs/api.md) ----------------------


def conversations_section(integration: str, threads: list[dict[str, Any]], csrf: str) -> str:
    rows = [
        "<tr>"
        f'<th scope="row"><a href="/chats/{q(t["metadata"]["name"])}">'
        f"{esc(t['metadata']['name'])}</a></th>"
        f"<td>{esc((t.get('spec') or {}).get('purpose'))}</td>"
        f"<td>{_badge(str((t.get('status') or {}).get('state') or 'New'))}</td>"
        f"<td>{esc((t.get('status') or {}).get('lastTurnAt'))}</td></tr>"
        for t in sorted(threads, key=lambda t: t["metadata"].get("creationTimestamp", ""))
    ]
    start = (
        f'<form class="filters" method="post" action="/integrations/{q(integration)}/chat">'
        f"{csrf_input(csrf)}"
        '<label for="chat-purpose">Talk with the agent to</label>'
        '<select id="chat-purpose" name="purpose"><option value="Build">build the code</option>'
        '<option value="Change">change it</option></select>'
        '<button type="submit">Open the conversation</button></form>'
    )
    return (
        '<section aria-labelledby="chat"><h2 id="chat">Chat</h2>'
        + _table(
            "Conversations with the agent",
            ("Conversation", "Purpose", "State", "Last turn"),
            rows,
            "No conversations yet.",
        )
        + start
        + "</section>"
    )


def fix_in_chat_form(run: dict[str, Any], csrf: str) -> str:
    status, spec = run.get("status") or {}, run.get("spec") or {}
    if status.get("phase") not in FAILED or spec.get("test"):
        return ""
    return (
        f'<form method="post" action="/runs/{q(run["metadata"]["name"])}/fix-in-chat">'
        f'{csrf_input(csrf)}<button type="submit">Fix in Chat</button></form>'
    )


VERDICT = {"Pass": "ok", "Fail": "bad", "NeedsLiveTest": "info"}


def _turn(turn: dict[str, Any], integration: str) -> str:
    if turn.get("role") == "User":
        action = turn.get("action") or "Say"
        head = f"{esc(turn.get('by') or 'a user')}" + (
            f' <span class="badge info">{esc(action)}</span>' if action != "Say" else ""
        )
        cls = "user"
    else:
        head = f'agent <span class="badge muted">{esc(turn.get("kind"))}</span>'
        cls = "agent"
    extra = ""
    if turn.get("revision"):
        rev = str(turn["revision"])
        extra += (
            f"<p>Revision <code>{esc(rev)}</code> "
            f'<a href="/integrations/{q(integration)}?diff={q(rev)}#code">diff against the '
            "deployed code</a></p>"
        )
    verdict = turn.get("verdict") or {}
    if verdict.get("verdict"):
        reasons = "".join(f"<li>{esc(r)}</li>" for r in verdict.get("reasons") or [])
        extra += (
            f'<p>Test verdict: <span class="badge {VERDICT.get(str(verdict["verdict"]), "bad")}">'
            f"{esc(verdict['verdict'])}</span></p>" + (f"<ul>{reasons}</ul>" if reasons else "")
        )
    text = f'<pre class="turn-text">{esc(turn.get("text"))}</pre>' if turn.get("text") else ""
    return f'<li class="turn {cls}"><p class="turn-head">{head}</p>{text}{extra}</li>'


def conversation_page(thread: dict[str, Any], csrf: str) -> str:
    name, spec, status = (
        thread["metadata"]["name"],
        thread.get("spec") or {},
        thread.get("status") or {},
    )
    integration = str(spec.get("integration") or "")
    state = str(status.get("state") or ("Thinking" if spec.get("turns") else "New"))
    turns = "".join(_turn(t, integration) for t in status.get("turns") or [])
    shown = {str(t.get("id")) for t in status.get("turns") or []}
    waiting = "".join(
        _turn({**t, "role": "User"}, integration)
        for t in spec.get("turns") or []
        if str(t.get("id")) not in shown
    )  # the user's turns the agent has not copied into the thread yet
    approve = (
        f'<form method="post" action="/chats/{q(name)}/turns">{csrf_input(csrf)}'
        '<input type="hidden" name="action" value="Approve">'
        f'<input type="hidden" name="revision" value="{esc(status["revision"])}">'
        f'<button type="submit">Approve and deploy {esc(status["revision"])}</button></form>'
        if status.get("revision") and state not in ("Deployed", "Closed", "Thinking", "Testing")
        else ""
    )
    say = (
        f'<form class="stack" method="post" action="/chats/{q(name)}/turns">{csrf_input(csrf)}'
        '<input type="hidden" name="action" value="Say">'
        '<label for="chat-text">Message to the agent</label>'
        '<textarea id="chat-text" name="text" rows="4" maxlength="4000" required></textarea>'
        '<button type="submit">Send</button></form>'
        if state != "Closed"
        else ""
    )
    about = (
        f'<p>{esc(spec.get("purpose"))} of <a href="/integrations/{q(integration)}">'
        f"{esc(integration)}</a>"
        + (
            f' from run <a href="/runs/{q(spec["run"])}">{esc(spec["run"])}</a>'
            if spec.get("run")
            else ""
        )
        + f" · {_badge(state)}</p>"
    )
    return (
        about
        + f'<div id="live" data-events="/events/chats/{q(name)}">'
        + f'<ol class="thread" aria-label="The conversation">{turns}{waiting}</ol>'
        + (
            '<p class="muted" role="status">The agent is working on it…</p>'
            if state in ("Thinking", "Testing")
            else ""
        )
        + approve
        + "</div>"
        + say
    )


# --- overview figures and test runs ---------------------------------------------------------


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (share in 0..1) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(share * 100) * len(ordered) // 100))  # ceil(share * n)
    return ordered[min(rank, len(ordered)) - 1]


def run_figures(runs: list[dict[str, Any]], now: datetime, days: int = 14) -> dict[str, Any]:
    """Finished non-test runs still kept (retention applies) per day by outcome, oldest day
    first, and duration percentiles in seconds."""
    per_day: dict[str, dict[str, int]] = {}
    for back in range(days - 1, -1, -1):
        per_day[(now - timedelta(days=back)).date().isoformat()] = {}
    durations = []
    for item in runs:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        phase = status.get("phase")
        if spec.get("test") or phase not in FINISHED:
            continue
        done = _time(status.get("completionTime"))
        start = _time(status.get("startTime"))
        if done is not None and done.date().isoformat() in per_day:
            day = per_day[done.date().isoformat()]
            day[str(phase)] = day.get(str(phase), 0) + 1
        if done is not None and start is not None:
            durations.append((done - start).total_seconds())
    return {
        "perDay": per_day,
        "p50": percentile(durations, 0.5),
        "p95": percentile(durations, 0.95),
        "count": len(durations),
    }


def figures_html(figures: dict[str, Any]) -> str:
    per_day: dict[str, dict[str, int]] = figures["perDay"]
    highest = max([sum(d.values()) for d in per_day.values()] + [1])
    bars = []
    for index, (day, counts) in enumerate(per_day.items()):
        y = 40
        for phase, cls in (("Succeeded", "bar-ok"), *((p, "bar-bad") for p in FAILED)):
            height = round(40 * counts.get(phase, 0) / highest)
            if height:
                y -= height
                bars.append(
                    f'<rect x="{index * 10}" y="{y}" width="8" height="{height}" class="{cls}">'
                    f"<title>{esc(day)}: {counts.get(phase, 0)} {esc(phase)}</title></rect>"
                )
    rows = "".join(
        f'<tr><th scope="row">{esc(day)}</th><td>{counts.get("Succeeded", 0)}</td>'
        f"<td>{sum(counts.get(p, 0) for p in FAILED)}</td></tr>"
        for day, counts in per_day.items()
        if counts
    )

    def seconds(value: float | None) -> str:
        return "" if value is None else f"{value:.0f}s"

    chart = (
        f'<svg class="chart" viewBox="0 0 {len(per_day) * 10} 40" width="{len(per_day) * 14}" '
        'height="56" role="img" aria-label="Runs per day by outcome, last 14 days">'
        f"{''.join(bars)}</svg>"
    )
    table = (
        '<table class="compact"><caption>Runs per day (kept runs)</caption><thead><tr>'
        '<th scope="col">Day</th><th scope="col">Succeeded</th><th scope="col">Failed</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return (
        f"{chart}<p>Duration of {figures['count']} finished run(s): median "
        f"{seconds(figures['p50']) or '-'}, 95th percentile {seconds(figures['p95']) or '-'}</p>"
        f'<div class="scroll">{table}</div>'
    )


def _revision_options(revisions: list[str]) -> str:
    return '<option value="">the deployed revision</option>' + "".join(
        f'<option value="{esc(r)}">{esc(r)}</option>' for r in reversed(revisions)
    )


def test_run_form(integration: str, revisions: list[str], csrf: str) -> str:
    options = _revision_options(revisions)
    return (
        f'<form class="stack" method="post" action="/integrations/{q(integration)}/test">'
        f"{csrf_input(csrf)}<h3>Test run</h3>"
        '<p class="muted">One run on an existing document, as <code>docrelay test</code>: never '
        "retried, not counted in the integration's status. "
        f'<a id="pick-document" href="/integrations/{q(integration)}/test">Pick the document '
        "from the platform</a>, or type its identifier.</p>"
        '<label for="test-document">Document identifier</label>'
        '<input id="test-document" name="document" required autocomplete="off">'
        '<label for="test-revision">Revision</label>'
        f'<select id="test-revision" name="revision">{options}</select>'
        '<button type="submit">Run the test</button></form>'
    )


def accounts_html(names: list[str], accounts: dict[str, dict[str, Any]]) -> str:
    """The integration's connected accounts with their health (as `docrelay accounts`)."""
    rows = []
    for name in names:
        obj = accounts.get(name)
        if obj is None:
            rows.append(
                f'<tr><th scope="row">{esc(name)}</th><td></td><td>'
                f"{_badge('Missing')}</td><td></td></tr>"
            )
            continue
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        ready = _condition(obj, "Ready")
        state = "Ready" if ready.get("status") == "True" else str(ready.get("reason") or "Unknown")
        rows.append(
            f'<tr><th scope="row">{esc(name)}</th><td>{esc(spec.get("app"))}</td>'
            f"<td>{_badge(state)} {esc(ready.get('message') if state != 'Ready' else '')}</td>"
            f"<td>{esc(status.get('lastCheckedAt'))}</td></tr>"
        )
    return '<h3 id="accounts">Connected accounts</h3>' + _table(
        "Connected accounts and their health",
        ("Account", "App", "Health", "Last checked"),
        rows,
        "No connected accounts.",
    )


def connect_account_form(
    integration: str, csrf: str, *, account: str = "", app: str = "", external_user: str = ""
) -> str:
    """Connect an account through Pipedream Connect: the console makes a single-use Connect
    link with the tenant's Pipedream credentials and, when Pipedream sends the browser back,
    creates (or points) the ConnectedAccount at the account Pipedream reports."""

    def field(key: str, label: str, value: str, hint: str) -> str:
        return (
            f'<label for="connect-{key}">{esc(label)}</label>'
            f'<input id="connect-{key}" name="{key}" value="{esc(value)}" required '
            f'autocomplete="off" aria-describedby="connect-{key}-hint">'
            f'<small id="connect-{key}-hint" class="muted">{esc(hint)}</small>'
        )

    return (
        f'<form class="stack" id="connect-form" method="post" '
        f'action="/integrations/{q(integration)}/accounts/connect">{csrf_input(csrf)}'
        "<h4>Connect an account through Pipedream Connect</h4>"
        + field("account", "ConnectedAccount name", account, "the name the integration lists")
        + field("app", "App", app, "Pipedream's app slug, e.g. xero_accounting_api")
        + field("external_user", "External user", external_user, "whose account it is at Pipedream")
        + '<button type="submit">Make a Connect link</button></form>'
    )


def connect_link_page(
    integration: str, app: str, external_user: str, link: str, expires: str
) -> str:
    return (
        f"<p>A single-use Pipedream Connect link for {esc(app)}, for {esc(external_user)} "
        f"(valid until {esc(expires)}). Pipedream asks you to sign in to {esc(app)} and sends "
        "you back here; the console then asks Pipedream which account was connected and "
        "creates the ConnectedAccount with your rights.</p>"
        f'<p><a class="button" id="connect-link" href="{esc(link)}">Continue to Pipedream '
        "Connect</a></p>"
        f'<p><a href="/integrations/{q(integration)}#accounts">Back to {esc(integration)}</a></p>'
    )


def _choices(
    items: list[dict[str, Any]], chosen: str, field: str, label: str, everything: str
) -> str:
    known = {str(i.get("identifier") or "") for i in items}
    options = [f'<option value="">{esc(everything)}</option>'] + [
        f'<option value="{esc(i.get("identifier"))}"'
        f"{' selected' if str(i.get('identifier') or '') == chosen else ''}>"
        f"{esc(i.get('name') or i.get('identifier'))} ({esc(i.get('identifier'))})</option>"
        for i in items
    ]
    if chosen and chosen not in known:  # the integration's own scope, even if not listed
        options.append(f'<option value="{esc(chosen)}" selected>{esc(chosen)}</option>')
    return (
        f'<label for="pick-{field}">{esc(label)}</label>'
        f'<select id="pick-{field}" name="{field}">{"".join(options)}</select>'
    )


def pick_document_page(
    integration: str,
    *,
    workspaces: list[dict[str, Any]],
    document_types: list[dict[str, Any]],
    workspace: str,
    document_type: str,
    documents: list[dict[str, Any]],
    revisions: list[str],
    csrf: str,
    problem: str = "",
) -> str:
    """A test run on a document picked from the platform's list, by workspace and type."""
    scope = (
        f'<form class="stack" method="get" action="/integrations/{q(integration)}/test">'
        + _choices(workspaces, workspace, "workspace", "Workspace", "every workspace")
        + _choices(document_types, document_type, "document_type", "Document type", "every type")
        + '<button type="submit">Show documents</button></form>'
    )
    rows: list[str] = []
    for number, document in enumerate(documents):
        meta = document.get("meta") or document
        identifier = str(meta.get("identifier") or "")
        if not identifier:
            continue
        rows.append(
            f'<tr><td><input type="radio" name="document" id="doc-{number}" '
            f'value="{esc(identifier)}"{" checked" if not rows else ""} required></td>'
            f'<th scope="row"><label for="doc-{number}">{esc(meta.get("fileName") or identifier)}'
            f"</label></th><td><code>{esc(identifier)}</code></td>"
            f"<td>{esc(meta.get('state'))}</td><td>{esc(meta.get('createdDt'))}</td></tr>"
        )
    listing = _table(
        "The platform's documents, newest first",
        ("", "File", "Identifier", "State", "Created"),
        rows,
        "The platform lists no documents here.",
    )
    run = (
        f'<form class="stack" id="pick-run" method="post" '
        f'action="/integrations/{q(integration)}/test">{csrf_input(csrf)}{listing}'
        '<label for="pick-revision">Revision</label>'
        f'<select id="pick-revision" name="revision">{_revision_options(revisions)}</select>'
        '<button type="submit">Run the test on the chosen document</button></form>'
        if rows
        else listing
    )
    note = f'<p class="flash" role="alert">{esc(problem)}</p>' if problem else ""
    return (
        f'<p><a href="/integrations/{q(integration)}#code">Back to {esc(integration)}</a></p>'
        '<p class="muted">One run on a document the platform holds, as <code>docrelay test'
        "</code>: never retried, not counted in the integration's status. The list comes from "
        "the platform with the tenant's platform credentials (Secret docrelay-platform), read "
        "with your own rights.</p>" + note + scope + run
    )


def continue_page(target: str) -> str:
    """A same-site step after a navigation from another site (which sends no SameSite=Strict
    cookie): a refresh, and a link for a browser that does not follow it."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={esc(target)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Back from Pipedream · docrelay</title>"
        '<link rel="stylesheet" href="/static/console.css"></head><body>'
        f'<main id="main"><h1>Back from Pipedream</h1><p><a id="continue" href="{esc(target)}">'
        "Continue</a></p></main></body></html>\n"
    )
