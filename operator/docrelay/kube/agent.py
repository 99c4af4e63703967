"""The agent worker's API calls (handlers/agent.py and handlers/conversation.py decide with
reconcile/agent.py and call these): its Secrets, the revisions' code, the runs' stored logs,
the statuses it writes, and the platform reads for a prompt. No secret value is logged."""

from __future__ import annotations

import base64
import gzip
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from docrelay.agent.prompts import MAX_LOG_CHARS, AccountRef
from docrelay.builders.agent import build_test_run
from docrelay.builders.revision import build_code_config_map
from docrelay.kube import ACCOUNTS, INTEGRATIONS, REVISIONS, Kube, KubeError
from docrelay.kube import runs as kube_runs
from docrelay.models.agent import RunFixStatus
from docrelay.platform.client import PlatformClient
from docrelay.platform.errors import PlatformError
from docrelay.reconcile.agent import fix_unchanged, listed_document_ids
from docrelay.reconcile.codecheck import check_code
from docrelay.reconcile.revision import revision_status

log = logging.getLogger("docrelay.agent")


def secret_values(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    """A Secret's values (none if it does not exist), decoded. Callers never log them."""
    return {
        key: base64.b64decode(value).decode("utf-8", errors="replace")
        for key, value in (kube.read_secret_data(namespace, name) or {}).items()
    }


def platform_client(
    kube: Kube, namespace: str, secret: str, default_url: str | None
) -> PlatformClient | None:
    """A platform client from the namespace's platform Secret; None without credentials."""
    data = secret_values(kube, namespace, secret)
    token, url = data.get("token"), data.get("url") or default_url
    if not token or not url:
        return None
    return PlatformClient(url, token)


def document_schema(
    platform: PlatformClient | None, document_type: str, about: str
) -> dict[str, Any] | None:
    """The document type's schema for a prompt; None (logged) when it cannot be read."""
    if platform is None:
        log.warning("agent: %s: no platform credentials; no schema", about)
        return None
    try:
        with platform:
            return platform.get_document_type_schema(document_type)
    except PlatformError as exc:
        log.warning("agent: %s: no schema: %s", about, exc)
        return None


def document_ids(
    platform: PlatformClient | None, workspace: str, document_type: str, limit: int, about: str
) -> list[str]:
    """Documents of the type the platform lists, to test on; none when it cannot say."""
    if platform is None:
        return []
    try:
        with platform:
            listed = platform.list_documents(workspace, document_type, limit=limit)
    except PlatformError as exc:
        log.warning("agent: %s: listing documents: %s", about, exc)
        return []
    return listed_document_ids(listed, limit)


def documents(platform: PlatformClient | None, identifiers: list[str]) -> list[dict[str, Any]]:
    """Documents for a prompt: only called when the install allows document values."""
    if platform is None:
        return []
    found = []
    with platform:
        for identifier in identifiers:
            try:
                found.append(platform.get_document(identifier))
            except PlatformError as exc:
                log.warning("agent: document %s: %s", identifier, exc)
    return found


def account_refs(kube: Kube, namespace: str, names: list[str]) -> list[AccountRef]:
    """The connected accounts a prompt names: name, app and account id, no credential."""
    refs = []
    for account in names:
        spec = (kube.get(ACCOUNTS, namespace, account) or {}).get("spec") or {}
        refs.append(AccountRef(name=account, app=spec.get("app"), account_id=spec.get("accountId")))
    return refs


def revision_code(kube: Kube, namespace: str, revision: dict[str, Any] | None) -> str | None:
    """A revision's code, from its ConfigMap; None when the revision or the code is gone."""
    if revision is None:
        return None
    ref = (revision.get("spec") or {}).get("codeConfigMap") or {}
    data = kube.read_config_map_data(namespace, str(ref.get("name", ""))) or {}
    return data.get(str(ref.get("key", "handler.py")))


def run_log(kube: Kube, namespace: str, run: str, attempt: int) -> str | None:
    """The run's stored log (masked when it was stored), its last characters for a prompt."""
    if attempt < 1:
        return None
    data = kube_runs.read_config_map_binary(kube, namespace, f"{run}-{attempt}-log", "log.gz")
    if data is None:
        return None
    return gzip.decompress(data).decode("utf-8", errors="replace")[-MAX_LOG_CHARS:]


def write_run_fix(kube: Kube, namespace: str, raw: dict[str, Any], fix: RunFixStatus) -> None:
    """A run's `status.fix`, when it changed; `raw` is updated to what was written."""
    if fix_unchanged(raw, fix):
        return
    name = raw["metadata"]["name"]
    kube.patch_status(
        kube_runs.RUNS, namespace, name, {"fix": fix.model_dump(mode="json", by_alias=True)}
    )
    raw.setdefault("status", {})["fix"] = fix.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def write_revision_status(
    kube: Kube, namespace: str, revision: dict[str, Any], patch: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Patch a revision's status (`revision` is updated to it); nothing when `patch` is None.
    The revision as the API server stored it."""
    if patch is None:
        return None
    stored = kube.patch_status(REVISIONS, namespace, revision["metadata"]["name"], patch)
    revision.setdefault("status", {}).update(patch)
    return stored


def create_revision(
    kube: Kube,
    namespace: str,
    manifest: dict[str, Any],
    code: str,
    language: str,
    now: datetime,
) -> dict[str, Any]:
    """Create (or find) the revision, its code ConfigMap, and its code-check status."""
    revision = kube.create_or_get(REVISIONS, namespace, manifest)
    name = str(revision["metadata"]["name"])
    if revision.get("spec", {}).get("codeHash") != manifest["spec"]["codeHash"]:
        raise KubeError(f"an IntegrationRevision named {name} already exists with other code")
    kube.create_config_map(
        namespace,
        build_code_config_map(
            integration=manifest["spec"]["integration"],
            revision=name,
            revision_uid=revision["metadata"]["uid"],
            code=code,
        ),
    )
    if not (revision.get("status") or {}).get("validation"):
        kube.patch_status(
            REVISIONS,
            namespace,
            name,
            revision_status(
                check_code(code, language), now, revision["metadata"].get("generation")
            ),
        )
        revision = kube.get(REVISIONS, namespace, name) or revision
    return revision


def write_integration_status(
    kube: Kube,
    obj: dict[str, Any],
    patch_for: Callable[[dict[str, Any]], dict[str, Any]],
    attempts: int = 5,
) -> None:
    """Patch an Integration's status with `patch_for(the Integration)`, guarded by its
    resourceVersion; read again on a conflict. Nothing when the patch is empty."""
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    for _ in range(attempts):
        patch = patch_for(obj)
        if not patch:
            return
        if kube_runs.patch_integration_status(
            kube, ns, name, patch, obj["metadata"]["resourceVersion"]
        ):
            return
        fresh = kube.get(INTEGRATIONS, ns, name)
        if fresh is None:
            return
        obj = fresh


def create_test_runs(
    kube: Kube,
    namespace: str,
    integration: str,
    revision: str,
    plan: list[tuple[str, str]],
    *,
    dry_run: bool = True,
    round_: int = 0,
) -> list[str]:
    """A test run of the revision per (document, trigger), dry unless asked otherwise; their
    names (one that exists already is kept: the names are per revision, document and round)."""
    names = []
    for document, trigger in plan:
        body = build_test_run(
            namespace=namespace,
            integration=integration,
            revision=revision,
            document=document,
            trigger=trigger,
            dry_run=dry_run,
            round_=round_,
        )
        names.append(str(kube.create_or_get(kube_runs.RUNS, namespace, body)["metadata"]["name"]))
    return names
